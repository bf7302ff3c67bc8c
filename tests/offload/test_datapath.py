"""Datapath's own contract (natbox/offload/datapath.py): probe's one-line reasons, entries and counters
through the bpf() system call, attach and close on real devices (root: a namespace with a veth pair)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from natbox.adapters.netns import enter_netns, run_in_netns, temp_netns
from natbox.offload import datapath
from natbox.offload.datapath import Datapath, OffloadError, OffloadUnavailable, detach_stale, probe
from natbox.offload.entry import FlowStats, OffloadAction, OffloadKey, decode_action
from natbox.testing.live import netns_reason, require_programs

KEY = OffloadKey(2, 17, 0x0A000102, 0xC6336402, 40000, 5000)
ACTION = OffloadAction(3, 1500, bytes.fromhex("02000000aa02"), bytes.fromhex("020000000101"), 0xC6336401,
                       0xC6336402, 40000, 5000, 7731, 7987, 0, True)


def test_probe_names_a_missing_program(monkeypatch: pytest.MonkeyPatch) -> None:
    real = shutil.which
    monkeypatch.setattr(shutil, "which", lambda name: None if name == "clang" else real(name))
    assert probe() == "clang not found (Debian package clang)"
    with pytest.raises(OffloadUnavailable, match=r"^clang not found \(Debian package clang\)$"):
        Datapath("/nonexistent/natbox-offload")
    assert not os.path.exists("/nonexistent/natbox-offload")


def test_probe_names_a_missing_kernel_feature(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(datapath, "_HEADERS", ())
    monkeypatch.setattr(datapath, "_kernel_config", lambda: {"CONFIG_BPF_SYSCALL": "y", "CONFIG_NET_SCH_INGRESS": "y"})
    assert probe() == "kernel lacks cls_bpf (CONFIG_NET_CLS_BPF)"


@pytest.fixture
def netns() -> Iterator[str]:
    reason = netns_reason()
    if reason is not None:
        pytest.skip(f"live test: {reason}")
    require_programs("clang", "tc")
    missing = probe()
    if missing is not None:
        pytest.skip(f"offload unavailable: {missing}")
    with temp_netns("nbd") as (ns,):
        run_in_netns(ns, ["ip", "link", "add", "a0", "type", "veth", "peer", "name", "b0"])
        yield ns


def _qdiscs(ns: str, dev: str) -> str:
    return run_in_netns(ns, ["tc", "qdisc", "show", "dev", dev]).stdout


def test_entries_counters_attach_and_close(netns: str, tmp_path: Path) -> None:
    work = tmp_path / "dp"
    with enter_netns(netns):
        dp = Datapath(str(work))
        try:
            assert dp.stats() == {}
            dp.install(KEY, ACTION)
            assert dp.stats() == {KEY: FlowStats(0, 0, 0)}
            raw = dp.action(KEY)
            assert raw is not None and decode_action(raw) == ACTION
            dp.install(KEY, ACTION._replace(mtu=1400))  # replaced in place
            raw = dp.action(KEY)
            assert raw is not None and decode_action(raw).mtu == 1400 and len(dp.stats()) == 1
            dp.remove(KEY)
            dp.remove(KEY)  # a missing key is fine
            assert dp.stats() == {} and dp.action(KEY) is None
            many = [KEY._replace(sport=p) for p in range(1, 5001)]
            for k in many:
                dp.install(k, ACTION)
            assert set(dp.stats()) == set(many)  # several batches of the batched read
            dp.attach("a0")
            dp.attach("a0")
            run_in_netns(netns, ["tc", "qdisc", "add", "dev", "b0", "clsact"])
            dp.attach("b0")  # a clsact natbox did not add stays
            filters = run_in_netns(netns, ["tc", "filter", "show", "dev", "a0", "ingress"]).stdout
            assert "natbox_offload" in filters and "direct-action" in filters
            with pytest.raises(OffloadError, match=r"^offload: no device nosuch0$"):
                dp.attach("nosuch0")
        finally:
            dp.close()
        dp.close()
    assert "clsact" not in _qdiscs(netns, "a0")
    assert "clsact" in _qdiscs(netns, "b0")
    assert "bpf" not in run_in_netns(netns, ["tc", "filter", "show", "dev", "b0", "ingress"]).stdout
    assert not work.exists()
    with pytest.raises(OffloadError, match="closed"):
        dp.install(KEY, ACTION)


def test_a_given_workdir_is_kept_with_its_object(netns: str, tmp_path: Path) -> None:
    with enter_netns(netns):
        first = Datapath(str(tmp_path))
        obj = first.object
        first.close()
        assert os.path.exists(obj) and not os.path.exists(first.bpffs)
        built = os.stat(obj).st_mtime_ns
        second = Datapath(str(tmp_path))
        try:
            assert second.object == obj and os.stat(obj).st_mtime_ns == built  # reused, not rebuilt
        finally:
            second.close()


def test_a_filter_left_behind_is_removed(netns: str, tmp_path: Path) -> None:
    """A natbox that died without close() leaves its program forwarding: detach_stale takes it away."""
    with enter_netns(netns):
        dp = Datapath(str(tmp_path / "dp"))
        dp.attach("a0")
        dp._attached.clear()  # as if the process had died: close() no longer knows the device
        dp.close()
        assert "natbox_offload" in run_in_netns(netns, ["tc", "filter", "show", "dev", "a0", "ingress"]).stdout
        assert detach_stale("a0")
        assert not detach_stale("a0")
        assert not detach_stale("b0")
    assert "bpf" not in run_in_netns(netns, ["tc", "filter", "show", "dev", "a0", "ingress"]).stdout
