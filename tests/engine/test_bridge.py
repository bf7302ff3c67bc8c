"""A bridge in the host model with br_netfilter (engine/bridge.py): learning, forwarding, flooding, the IPv4
hooks on bridged frames (physdev in FORWARD, conntrack), routed traffic through the bridge device with NAT."""

from __future__ import annotations

import pytest

from natbox.conntrack.tuple import parse_addr
from natbox.engine.bridge import BR_DEFAULT_AGEING_TIME, BR_FDB_MAX, Fdb
from natbox.engine.engine import Engine, Output
from natbox.engine.hostfile import HostFileError, host_ipsets, parse_host_toml
from natbox.ipset.scope import using_sets
from natbox.rules.evaluate import Ruleset
from natbox.rules.parser import parse_restore
from natbox.wire import ethernet, ipv4, udp
from natbox.wire.layout import ETH_HDR_LEN, IPH_TTL

HOST = """
ip_forward = true
[[interface]]
name = "br0"
kind = "bridge"
mac = "02:00:00:00:00:01"
addresses = ["10.1.0.1/24"]
[[interface]]
name = "lan1"
master = "br0"
mac = "02:00:00:00:01:01"
[[interface]]
name = "lan2"
master = "br0"
mac = "02:00:00:00:01:02"
[[interface]]
name = "wan"
mac = "02:00:00:00:00:02"
addresses = ["198.51.100.2/24"]
[[route]]
dst = "default"
via = "198.51.100.1"
[[neighbour]]
dev = "wan"
addr = "198.51.100.1"
mac = "02:00:00:00:99:99"
"""

RULES = """*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A POSTROUTING -o wan -j MASQUERADE
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
-A FORWARD -m physdev --physdev-in lan1 --physdev-out lan2 --physdev-is-bridged -j ACCEPT
-A FORWARD -m physdev --physdev-in lan2 --physdev-out lan1 -m conntrack --ctstate ESTABLISHED -j ACCEPT
-A FORWARD -i br0 -o wan -m physdev --physdev-in lan1 ! --physdev-is-bridged -j ACCEPT
-A FORWARD -i wan -o br0 -m conntrack --ctstate ESTABLISHED -j ACCEPT
COMMIT
"""

BR_MAC = ethernet.mac_from_str("02:00:00:00:00:01")
A_MAC = ethernet.mac_from_str("02:aa:00:00:00:01")  # 10.1.0.10 behind lan1
B_MAC = ethernet.mac_from_str("02:bb:00:00:00:02")  # 10.1.0.20 behind lan2
GW_MAC = ethernet.mac_from_str("02:00:00:00:99:99")


def _engine(host_text: str = HOST, rules: str = RULES) -> Engine:
    hf = parse_host_toml(host_text, "bridge.toml")
    rs = Ruleset()
    rs.restore(parse_restore(rules, file="rules"))
    return Engine(hf.host, ruleset=rs, seed=1)


def _udp_frame(dst_mac: bytes, src_mac: bytes, src: str, dst: str, sport: int = 4000, dport: int = 53) -> bytes:
    s, d = parse_addr(src), parse_addr(dst)
    dgram = ipv4.build_ipv4(s, d, 17, udp.build_udp(s, d, sport, dport, b"hello"), ttl=64)
    return bytes(ethernet.build_ethernet(dst_mac, src_mac, ethernet.ETH_P_IP, dgram))


def _sent(out: Output) -> list[str]:
    return [e.iface for e in out.emitted]


def _fwd_counts(eng: Engine) -> list[int]:
    return [r.packets for r in eng.rules.tables["filter"].chains["FORWARD"].rules]


def test_bridged_frames_flood_learn_and_pass_forward_with_physdev() -> None:
    eng = _engine()
    a_to_b = _udp_frame(B_MAC, A_MAC, "10.1.0.10", "10.1.0.20")
    out = eng.receive(a_to_b, "lan1", 1.0)
    assert _sent(out) == ["lan2"]  # B unknown: flooded, never back out of lan1
    assert out.emitted[0].frame == a_to_b  # bridged: MACs and TTL unchanged
    assert _fwd_counts(eng) == [1, 0, 0, 0]
    assert eng.bridges is not None
    assert eng.bridges.fdb("br0").lookup(A_MAC, 1.0) == "lan1"
    out = eng.receive(_udp_frame(A_MAC, B_MAC, "10.1.0.20", "10.1.0.10", 53, 4000), "lan2", 2.0)
    assert _sent(out) == ["lan1"]  # A was learned behind lan1
    assert _fwd_counts(eng) == [1, 1, 0, 0]  # the reply is ESTABLISHED: the ct saw both directions
    assert len(eng.table) == 1
    # a new flow from lan2 to lan1 meets the DROP policy
    out = eng.receive(_udp_frame(A_MAC, B_MAC, "10.1.0.20", "10.1.0.10", 5000, 6000), "lan2", 3.0)
    assert _sent(out) == [] and [d.where for d in out.dropped] == ["FORWARD/filter"]


def test_a_frame_for_a_station_behind_the_input_port_is_not_sent() -> None:
    eng = _engine()
    eng.receive(_udp_frame(B_MAC, A_MAC, "10.1.0.10", "10.1.0.20"), "lan1", 1.0)
    c_mac = ethernet.mac_from_str("02:cc:00:00:00:03")
    out = eng.receive(_udp_frame(A_MAC, c_mac, "10.1.0.30", "10.1.0.10"), "lan1", 1.5)  # C also on lan1
    assert _sent(out) == [] and out.dropped[0].where == "br_forward"
    assert _fwd_counts(eng) == [1, 0, 0, 0]  # br_forward refuses it before FORWARD


def test_fdb_entries_age_out_and_then_frames_flood() -> None:
    eng = _engine()
    eng.receive(_udp_frame(B_MAC, A_MAC, "10.1.0.10", "10.1.0.20"), "lan1", 1.0)
    eng.receive(_udp_frame(A_MAC, B_MAC, "10.1.0.20", "10.1.0.10", 53, 4000), "lan2", 2.0)
    assert eng.bridges is not None
    fdb = eng.bridges.fdb("br0")
    assert fdb.lookup(B_MAC, 2.0 + BR_DEFAULT_AGEING_TIME - 0.5) == "lan2"
    assert fdb.lookup(B_MAC, 2.0 + BR_DEFAULT_AGEING_TIME) is None
    fdb.update(A_MAC, "lan2", 5.0)  # a station that moved is moved
    assert fdb.lookup(A_MAC, 5.0) == "lan2"


def test_fdb_is_bounded() -> None:
    fdb = Fdb()
    for i in range(BR_FDB_MAX + 10):
        fdb.update(i.to_bytes(6, "big"), "p", 0.0)
    assert len(fdb.entries) == BR_FDB_MAX
    assert fdb.lookup((0).to_bytes(6, "big"), 0.0) is None  # the oldest went first
    assert fdb.lookup((BR_FDB_MAX + 9).to_bytes(6, "big"), 0.0) == "p"


def test_routed_through_the_bridge_device_with_masquerade() -> None:
    eng = _engine()
    out = eng.receive(_udp_frame(BR_MAC, A_MAC, "10.1.0.10", "8.8.8.8"), "lan1", 1.0)
    assert _sent(out) == ["wan"]
    frame = out.emitted[0].frame
    assert frame[ETH_HDR_LEN + IPH_TTL] == 63  # routed: the TTL is decremented
    assert frame[ETH_HDR_LEN + 12:ETH_HDR_LEN + 16] == bytes([198, 51, 100, 2])  # MASQUERADE
    assert _fwd_counts(eng) == [0, 0, 1, 0]  # physindev lan1, no physoutdev: not bridged
    # the reply is routed to br0, and leaves by the port A was learned on (lan1 only)
    reply = _udp_frame(ethernet.mac_from_str("02:00:00:00:00:02"), GW_MAC, "8.8.8.8", "198.51.100.2", 53, 4000)
    out = eng.receive(reply, "wan", 1.1)
    assert _sent(out) == ["lan1"]
    back = out.emitted[0].frame
    assert back[:6] == A_MAC and back[6:12] == BR_MAC
    assert back[ETH_HDR_LEN + 16:ETH_HDR_LEN + 20] == bytes([10, 1, 0, 10])
    assert _fwd_counts(eng) == [0, 0, 1, 1]


def test_broadcast_is_flooded_and_passed_up() -> None:
    eng = _engine()
    bcast = _udp_frame(b"\xff" * 6, A_MAC, "10.1.0.10", "10.1.0.255", 68, 9)
    out = eng.receive(bcast, "lan1", 1.0)
    assert _sent(out) == ["lan2"]  # flooded (FORWARD's first rule: lan1 -> lan2), and up to br0
    assert _fwd_counts(eng) == [1, 0, 0, 0]
    assert out.delivered  # the host's stack got it (port unreachable answered or counted)


def test_arp_for_the_bridge_address_is_answered_by_the_port_it_came_from() -> None:
    eng = _engine()
    from natbox.wire import arp
    req = arp.build_arp_request(A_MAC, parse_addr("10.1.0.10"), parse_addr("10.1.0.1"))
    out = eng.receive(bytes(ethernet.build_ethernet(b"\xff" * 6, A_MAC, ethernet.ETH_P_ARP, req)), "lan1", 1.0)
    assert sorted(_sent(out)) == ["lan1", "lan2"]  # the request is flooded to lan2; the reply leaves by lan1
    reply = [e for e in out.emitted if e.frame[12:14] == b"\x08\x06" and e.frame[:6] == A_MAC]
    assert [e.iface for e in reply] == ["lan1"]


def test_without_bridge_nf_call_iptables_bridged_frames_skip_the_ipv4_hooks() -> None:
    eng = _engine(HOST + '[sysctl]\n"net.bridge.bridge-nf-call-iptables" = 0\n')
    out = eng.receive(_udp_frame(A_MAC, B_MAC, "10.1.0.20", "10.1.0.10", 5000, 6000), "lan2", 1.0)
    assert _sent(out) == ["lan1"]  # the DROP policy of FORWARD is not consulted
    assert _fwd_counts(eng) == [0, 0, 0, 0] and len(eng.table) == 0


@pytest.mark.parametrize(("extra", "message"), [
    ('[[interface]]\nname = "lan3"\nmaster = "wan"\n', "master 'wan' is not a bridge"),
    ('[[interface]]\nname = "lan3"\nmaster = "nope"\n', "master 'nope' is not a bridge"),
])
def test_a_port_needs_a_bridge(extra: str, message: str) -> None:
    with pytest.raises(HostFileError, match=message):
        _engine(HOST.replace("[[route]]", extra + "[[route]]"))


def test_ipset_netiface_sees_the_bridge_device_and_never_a_physdev_entry() -> None:
    """hash:net,iface's kadt looks a physdev name up only with IPSET_FLAG_PHYSDEV in the command flags, which
    neither `-m set` (its match flags) nor `-j SET` ever carry: a `physdev:` entry never matches a packet,
    bridged or not, and the interface compared is the bridge device (xt_set.c set_match_v4,
    ip_set_hash_netiface.c hash_netiface4_kadt)."""
    sets = ("create phys hash:net,iface family inet hashsize 1024 maxelem 65536\n"
            "add phys 10.1.0.0/24,physdev:lan1\n"
            "create dev hash:net,iface family inet hashsize 1024 maxelem 65536\n"
            "add dev 10.1.0.0/24,br0\n")
    host_text = HOST + "[ipsets]\ntext = '''\n" + sets + "'''\n"
    rules = RULES.replace(":OUTPUT ACCEPT [0:0]\n-A FORWARD -m physdev",
                          ":OUTPUT ACCEPT [0:0]\n-A FORWARD -m set --match-set phys src,src\n"
                          "-A FORWARD -m set --match-set dev src,src\n-A FORWARD -m physdev", 1)
    hf = parse_host_toml(host_text, "bridge.toml")
    rs = Ruleset()
    reg = host_ipsets(hf)
    with using_sets(reg):
        rs.restore(parse_restore(rules, file="rules"))
    eng = Engine(hf.host, ruleset=rs, seed=1)
    eng.ipsets = reg
    eng.receive(_udp_frame(B_MAC, A_MAC, "10.1.0.10", "10.1.0.20"), "lan1", 1.0)
    assert _fwd_counts(eng)[:3] == [0, 1, 1]
