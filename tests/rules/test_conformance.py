"""iptables 1.8.9's own `.t` rule tests, slow mode (one iptables -A per line) and fast mode (restore)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from natbox.testing.rules_conformance import (
    T_DIR,
    TFile,
    fast_mode_ok,
    read_t,
    run_fast,
    run_slow,
    unsupported_reason,
)

T_FILES = sorted(T_DIR.glob("*.t")) if T_DIR.is_dir() else []

# Lines whose expectation is not what iptables 1.8.9 (nf_tables) prints, with what it does print (recorded
# in a scratch network namespace): libxt_NFLOG.t expects xt_NFLOG's 63-character prefix, while iptables-nft
# keeps up to 127 characters (issue #14).
RECORDED: dict[tuple[str, int], str] = {
    ("libxt_NFLOG.t", 18): "-j NFLOG --nflog-prefix " + "x" * 65,
}

# Lines whose result on Linux 6.x is not the .t file's (recorded in a scratch network namespace, kernel 6.18):
# xt_recent accepts hit counts up to 65535 since Linux 4.16 (XT_RECENT_MAX_NSTAMPS), the .t still expects the
# old ip_pkt_list_tot=20 limit to refuse 999.
RECORDED_RESULT: dict[tuple[str, int], tuple[str, str]] = {
    ("libxt_recent.t", 7): ("OK", "-m recent --rcheck --hitcount 999 --name foo --mask 255.255.255.255 --rsource"),
}


def read(path: Path) -> TFile:
    tf = read_t(path)
    tf.cases = [dataclasses.replace(c, expect=RECORDED.get((path.name, c.lineno), c.expect)) for c in tf.cases]
    tf.cases = [dataclasses.replace(c, result=RECORDED_RESULT[(path.name, c.lineno)][0],
                                    expect=RECORDED_RESULT[(path.name, c.lineno)][1])
                if (path.name, c.lineno) in RECORDED_RESULT else c for c in tf.cases]
    return tf


def _id(p: Path) -> str:
    return p.name


@pytest.mark.skipif(not T_FILES, reason="shared/conformance not present beside the repository")
@pytest.mark.parametrize("path", T_FILES, ids=_id)
def test_t_file_slow(path: Path) -> None:
    reason = unsupported_reason(path)
    if reason:
        pytest.skip(reason)
    tf = read(path)
    errors = [e for case in tf.cases for chain in case.chains if (e := run_slow(case, chain)) is not None]
    assert not errors, "\n".join(errors)


@pytest.mark.skipif(not T_FILES, reason="shared/conformance not present beside the repository")
@pytest.mark.parametrize("path", T_FILES, ids=_id)
def test_t_file_fast(path: Path) -> None:
    reason = unsupported_reason(path)
    if reason:
        pytest.skip(reason)
    tf = read(path)
    if not fast_mode_ok(tf):
        pytest.skip("fast mode does not apply (several tables, @ commands or variants)")
    err = run_fast(tf)
    assert err is None, err
