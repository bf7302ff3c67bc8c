"""The comparison rules of §10: port bijection, ignored ID/TTL of generated ICMP, conntrack timeout
window (from the measured listing times), exact counters. Kernel runs are synthesised from crafted frames (no
namespaces needed)."""

from __future__ import annotations

from typing import Any

from natbox.difftest.compare import compare, compare_conntrack, compare_counters, timeout_window
from natbox.difftest.kernel import Captured, KernelRun
from natbox.difftest.natbox_side import NatboxRun, frame_skew
from natbox.difftest.packets import build_crafted
from natbox.difftest.portmap import PortMap

CLI_MAC, RTR_LAN = bytes.fromhex("020000000201"), bytes.fromhex("020000000101")
SRV_MAC, RTR_WAN = bytes.fromhex("020000000202"), bytes.fromhex("020000000102")


def _udp(src: str, dst: str, sport: int, dport: int, *, smac: bytes, dmac: bytes, ttl: int = 64,
         ip_id: int = 1000, **more: Any) -> bytes:
    args = {"dst": dst, "sport": sport, "dport": dport, "ttl": ttl, "ip_id": ip_id, "payload": "p", **more}
    (f,) = build_crafted("udp", args, src=src, src_mac=smac, dst_mac=dmac, default_id=ip_id)
    return f


def _run(frames: list[Captured], ct: list[str] | None = None, save: str = "") -> KernelRun:
    return KernelRun("t", {}, frames=frames, conntrack=ct or [], iptables_save=save)


def _masq_case(natbox_port: int, reply_port: int) -> tuple[KernelRun, NatboxRun]:
    """Kernel: 192.168.50.2:40010 -> MASQUERADE picked 6517; the reply comes back to 6517."""
    k_in = _udp("192.168.50.2", "198.51.100.2", 40010, 5000, smac=CLI_MAC, dmac=RTR_LAN)
    k_out = _udp("198.51.100.1", "198.51.100.2", 6517, 5000, smac=RTR_WAN, dmac=SRV_MAC, ttl=63)
    r_in = _udp("198.51.100.2", "198.51.100.1", 5000, 6517, smac=SRV_MAC, dmac=RTR_WAN, ip_id=7)
    r_out = _udp("198.51.100.2", "192.168.50.2", 5000, 40010, smac=RTR_LAN, dmac=CLI_MAC, ttl=63, ip_id=7)
    kernel = _run([Captured(0.0, "lan0", False, k_in), Captured(0.001, "wan0", True, k_out),
                   Captured(0.002, "wan0", False, r_in), Captured(0.003, "lan0", True, r_out)])
    n_out = _udp("198.51.100.1", "198.51.100.2", natbox_port, 5000, smac=RTR_WAN, dmac=SRV_MAC, ttl=63)
    n_reply = _udp("198.51.100.2", "192.168.50.2", 5000, reply_port, smac=RTR_LAN, dmac=CLI_MAC, ttl=63, ip_id=7)
    natbox = NatboxRun(sent={"wan0": [(0.0, n_out)], "lan0": [(0.002, n_reply)]})
    return kernel, natbox


def test_random_port_maps_through_a_bijection() -> None:
    kernel, natbox = _masq_case(natbox_port=31000, reply_port=40010)
    assert compare(kernel, natbox) == []


def test_kept_port_is_not_a_random_choice() -> None:
    # natbox kept 40010 where the kernel picked 6517: 40010 was on the input, so it cannot be mapped (§10)
    kernel, natbox = _masq_case(natbox_port=40010, reply_port=40010)
    diffs = compare(kernel, natbox)
    assert [d.kind for d in diffs] == ["frame"] and "sport: 6517 | 40010" in diffs[0].detail


def test_wrong_unnat_is_a_difference() -> None:
    kernel, natbox = _masq_case(natbox_port=31000, reply_port=40011)
    diffs = compare(kernel, natbox)
    assert len(diffs) == 1 and "dport: 40010 | 40011" in diffs[0].detail
    assert "kernel: 198.51.100.2 > 192.168.50.2 proto 17 5000 > 40010" in str(diffs[0])


def test_missing_and_extra_frames() -> None:
    kernel, natbox = _masq_case(natbox_port=31000, reply_port=40010)
    natbox.sent["lan0"] = []
    natbox.sent["wan0"].append(natbox.sent["wan0"][0])
    assert sorted(d.kind for d in compare(kernel, natbox)) == ["extra", "missing"]


def test_ttl_and_ip_id_matter_for_forwarded_packets() -> None:
    kernel, natbox = _masq_case(natbox_port=31000, reply_port=40010)
    f = natbox.sent["lan0"][0][1]
    natbox.sent["lan0"] = [(0.0, _udp("198.51.100.2", "192.168.50.2", 5000, 40010, smac=RTR_LAN, dmac=CLI_MAC,
                                      ttl=64, ip_id=7))]
    assert f != natbox.sent["lan0"][0][1]
    (d,) = compare(kernel, natbox)
    assert "ip.ttl: 63 | 64" in d.detail and "ip.csum" in d.detail


def test_generated_icmp_ignores_id_and_ttl() -> None:
    k_in = _udp("192.168.50.2", "198.51.100.2", 40300, 33434, smac=CLI_MAC, dmac=RTR_LAN, ttl=1)

    def time_exceeded(ip_id: int, ttl: int) -> bytes:
        (f,) = build_crafted("icmp_echo", {"dst": "192.168.50.2", "icmp_type": 11, "code": 0, "icmp_id": 0,
                                           "seq": 0, "payload_hex": k_in[14:42].hex(), "ttl": ttl,
                                           "ip_id": ip_id}, src="192.168.50.1", src_mac=RTR_LAN,
                             dst_mac=CLI_MAC, default_id=ip_id)
        return f

    kernel = _run([Captured(0.0, "lan0", False, k_in), Captured(0.001, "lan0", True, time_exceeded(51234, 64))])
    natbox = NatboxRun(sent={"lan0": [(0.0, time_exceeded(0, 255))]})
    assert compare(kernel, natbox) == []


def test_conntrack_timeout_tolerance_and_use() -> None:
    k = ["udp      17 29 src=10.0.0.2 dst=198.51.100.2 sport=40010 dport=5000 src=198.51.100.2 "
         "dst=198.51.100.1 sport=5000 dport=6517 mark=0 use=1"]
    pm = PortMap({})
    pm.accept(6517, 31000, 0.0)

    def n(timeout: int, use: int = 2, port: int = 31000) -> list[str]:
        return [k[0].replace(" 29 ", f" {timeout} ").replace("use=1", f"use={use}").replace("6517", str(port))]

    window = (-2, 1)
    assert compare_conntrack(k, n(27), pm, window) == []  # kernel - 2
    assert compare_conntrack(k, n(30), pm, window) == []  # kernel + 1
    assert len(compare_conntrack(k, n(26), pm, window)) == 1
    (d,) = compare_conntrack(k, n(31), pm, window)
    assert d.detail == "timeout 31 outside 27..30"
    assert [d.where for d in compare_conntrack(k, n(29, port=6517), pm, window)] == ["entry"]  # unmapped port
    assert len(compare_conntrack(k, [], pm, window)) == 1 and len(compare_conntrack([], k, pm, window)) == 1


def test_timeout_window_follows_the_measured_listing_times() -> None:
    # a replay lists at the moment the kernel's `conntrack -L` started: natbox may be above the kernel by as
    # much time as passed until the kernel printed, and one below (a jiffy at a second's boundary)
    assert timeout_window(KernelRun("t", {}, conntrack_time=1.0, conntrack_end=1.05), NatboxRun()) == (-1, 1)
    slow = KernelRun("t", {}, conntrack_time=1.0, conntrack_end=3.5)
    assert timeout_window(slow, NatboxRun()) == (-1, 3)
    # unmeasured end (a run made before conntrack_end existed): the listing took no time
    assert timeout_window(KernelRun("t", {}, conntrack_time=1.0), NatboxRun()) == (-1, 1)
    # live (the masq6-ptb-translated case, kernel 27, natbox 29): the kernel's listing took 2.1 s, natbox's
    # 0.4 s; natbox handled packets up to 5 ms from the kernel's times
    live = NatboxRun(listed=(0.5, 0.9), skew=0.005)
    kernel = KernelRun("t", {}, conntrack_time=0.5, conntrack_end=2.6)
    assert timeout_window(kernel, live) == (-1, 3)
    # the same runs with a quick kernel listing: natbox 2 above the kernel is a difference
    assert timeout_window(KernelRun("t", {}, conntrack_time=0.5, conntrack_end=0.55), live) == (-1, 1)
    # natbox listing later than the kernel's: its timeouts may be that much lower
    assert timeout_window(KernelRun("t", {}, conntrack_time=0.5, conntrack_end=0.55), NatboxRun(
        listed=(1.5, 2.8))) == (-3, 0)


def test_frame_skew_pairs_frames_by_interface_and_direction() -> None:
    k_in = _udp("192.168.50.2", "198.51.100.2", 40010, 5000, smac=CLI_MAC, dmac=RTR_LAN)
    k_out = _udp("198.51.100.1", "198.51.100.2", 6517, 5000, smac=RTR_WAN, dmac=SRV_MAC, ttl=63)
    a = _run([Captured(0.10, "lan0", False, k_in), Captured(0.101, "wan0", True, k_out),
              Captured(0.30, "lan0", False, k_in)])
    b = _run([Captured(0.12, "lan0", False, k_in), Captured(0.16, "wan0", True, k_out),
              Captured(0.29, "lan0", False, k_in), Captured(0.5, "lan0", False, k_in)])  # unpaired: not counted
    assert abs(frame_skew(a, b) - 0.059) < 1e-9
    assert frame_skew(a, _run([])) == 0.0


def test_counters_exact_per_table_ignoring_comments_and_order() -> None:
    kern = ("# Generated by iptables-save v1.8.9 (nf_tables) on x\n*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n"
            "*nat\n:PREROUTING ACCEPT [2:127]\n[1:43] -A POSTROUTING -o wan0 -j MASQUERADE\nCOMMIT\n")
    same = ("*nat\n:PREROUTING ACCEPT [2:127]\n[1:43] -A POSTROUTING -o wan0 -j MASQUERADE\nCOMMIT\n"
            "# Completed\n*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n")
    assert compare_counters(kern, same) == []
    (d,) = compare_counters(kern, same.replace("[1:43]", "[1:44]"))
    assert d.kernel.startswith("[1:43]") and d.natbox.startswith("[1:44]")
    assert [d.where for d in compare_counters(kern, "*nat\n:PREROUTING ACCEPT [2:127]\n[1:43] -A POSTROUTING "
                                                    "-o wan0 -j MASQUERADE\nCOMMIT\n")] == ["table filter"]


def test_portmap_is_a_bijection() -> None:
    pm = PortMap({40010: 0.0})
    assert pm.accept(6517, 31000, 1.0)
    assert pm.accept(6517, 31000, 2.0)
    assert not pm.accept(6517, 31001, 2.0)  # one kernel value, one natbox value
    assert not pm.accept(6518, 31000, 2.0)
    assert not pm.accept(40010, 31002, 2.0)  # seen on input before: not random
    assert pm.map_kernel(6517) == 31000 and pm.map_kernel(1) == 1
