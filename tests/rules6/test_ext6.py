"""The IPv6 forms of extensions first built for IPv4: `recent` (128-bit masks, lists shared with iptables but
keyed by family), `hashlimit` (masks up to 128, ip6tables' own tables), `connlimit` (--connlimit-mask up to
128), and ip6tables refusing `osf` (libxt_osf is IPv4 only). Parse and `-S` byte for byte against what the
real ip6tables 1.8.9 printed (data/ext6_1.8.9.json, record_ext6.py), evaluation as the kernel modules do."""

from __future__ import annotations

import io
import json
import shlex
from pathlib import Path
from typing import Any

import pytest

from natbox.cli.ip6tables import ip6tables_main
from natbox.netfilter import NFPROTO_IPV6, Hook
from natbox.rules.api import NF_DROP
from natbox.rules.evaluate import Ruleset
from natbox.rules.parser import parse_argv
from natbox.skb import Skb6
from natbox.testing.rules_fakes import FakeCtx
from natbox.wire.ipv6 import build_ipv6, parse_addr6

DATA = json.loads((Path(__file__).parent / "data" / "ext6_1.8.9.json").read_text())
# the extensions whose IPv6 forms natbox has recorded lines for (ipvs: tested below, no ip_vs module to record)
DONE = ("-m recent", "-m hashlimit", "-m connlimit", "-m osf", "-m rpfilter", "-m cluster", "-j HMARK", "-j TEE",
        "-j TPROXY", "-m socket")
LINES = [x for x in DATA["lines"] if any(f"{e} " in " ".join(x["argv"]) + " " for e in DONE)]


@pytest.mark.parametrize("rec", LINES, ids=[" ".join(x["argv"][2:])[:60] for x in LINES])
def test_line_and_listing_match_ip6tables(rec: dict[str, Any], tmp_path: Path) -> None:
    path = str(tmp_path / "r.v6")
    out, err = io.StringIO(), io.StringIO()
    rc = ip6tables_main(rec["argv"], rules_path=path, stdout=out, stderr=err)
    assert (rc, out.getvalue(), err.getvalue()) == (rec["rc"], rec["stdout"], rec["stderr"])
    listing = io.StringIO()
    assert ip6tables_main(["-t", rec["argv"][1], "-S"], rules_path=path, stdout=listing, stderr=io.StringIO()) == 0
    assert [x for x in listing.getvalue().splitlines() if x.startswith("-A ")] == rec["rules"]


def _rs(*rules: str, table: str = "filter") -> Ruleset:
    rs = Ruleset(NFPROTO_IPV6)
    for r in rules:
        rs.execute(parse_argv(["-t", table, *shlex.split(r)], family=NFPROTO_IPV6))
    return rs


def _udp(src: str, dst: str = "2001:db8::10", sport: int = 40000, dport: int = 53) -> Skb6:
    payload = sport.to_bytes(2, "big") + dport.to_bytes(2, "big") + b"\0\x0c\0\0abcd"
    return Skb6(build_ipv6(parse_addr6(src), parse_addr6(dst), 17, payload), iif="lan")


def _ctx(now: float, rs: Ruleset) -> FakeCtx:
    ctx = FakeCtx(Hook.LOCAL_IN, now=now)
    ctx.xt.sync([rs.tables[t] for t in rs.present], now)
    return ctx


def test_recent_counts_hits_per_masked_ipv6_source() -> None:
    """ufw's limit in ip6tables: --set, then --update --seconds 30 --hitcount 3; sources in one /64 share an entry."""
    rs = _rs("-A INPUT -m recent --set --name lim --mask ffff:ffff:ffff:ffff::",
             "-A INPUT -m recent --update --seconds 30 --hitcount 3 --name lim --mask ffff:ffff:ffff:ffff:: -j DROP")
    ctx = _ctx(1.0, rs)
    verdicts = [rs.run("filter", Hook.LOCAL_IN, _udp(f"fd00::{i + 1}"), ctx) for i in range(4)]
    assert verdicts[:2] != [NF_DROP, NF_DROP] and verdicts[2:] == [NF_DROP, NF_DROP]
    assert rs.run("filter", Hook.LOCAL_IN, _udp("fd00:0:0:1::1"), ctx) != NF_DROP  # another /64
    (line,) = [x for x in ctx.xt.recent["lim"].proc_lines() if x.startswith("src=fd00:0000:0000:0000:")]
    assert line.startswith("src=fd00:0000:0000:0000:0000:0000:0000:0000 ttl: 64 ")


def test_recent_lists_are_shared_but_keyed_by_family() -> None:
    """One list named by an iptables and an ip6tables rule: ::10.0.0.1 is not 10.0.0.1 (recent_entry_lookup)."""
    from natbox.testing.rules_fakes import udp as udp4

    rs6 = _rs("-A INPUT -m recent --set --name both")
    rs4 = Ruleset()
    rs4.execute(parse_argv(["-A", "INPUT", "-m", "recent", "--rcheck", "--name", "both", "-j", "DROP"]))
    ctx = FakeCtx(Hook.LOCAL_IN, now=1.0)
    ctx.xt.sync([*(rs4.tables[t] for t in rs4.present), *(rs6.tables[t] for t in rs6.present)], 1.0)
    rs6.run("filter", Hook.LOCAL_IN, _udp("::10.0.0.1"), ctx)
    assert rs4.run("filter", Hook.LOCAL_IN, udp4("10.0.0.1", 1, "10.0.0.2", 2), ctx) != NF_DROP
    assert len(ctx.xt.recent["both"].entries) == 1


def test_hashlimit_buckets_ipv6_sources_by_prefix() -> None:
    rs = _rs("-A INPUT -m hashlimit --hashlimit-above 2/min --hashlimit-burst 2 --hashlimit-mode srcip "
             "--hashlimit-srcmask 64 --hashlimit-name h6 -j DROP")
    ctx = _ctx(1.0, rs)
    got = [rs.run("filter", Hook.LOCAL_IN, _udp(f"fd00::{i + 1}"), ctx) == NF_DROP for i in range(3)]
    assert got == [False, False, True]  # one bucket for fd00::/64: the third is over the burst
    assert rs.run("filter", Hook.LOCAL_IN, _udp("fd00:0:0:7::1"), ctx) != NF_DROP
    t = ctx.xt.hashlimit["h6/ip6t"]
    assert t.v6 and sorted(k[0] for k in t.entries) == [parse_addr6("fd00::"), parse_addr6("fd00:0:0:7::")]
    assert t.proc_lines(100)[0].split()[1].startswith("fd00:0000:0000:0000:0000:0000:0000:0000:0->")


def test_connlimit_counts_connections_per_ipv6_prefix() -> None:
    from natbox.conntrack.conn import Conn
    from natbox.conntrack.tuple import ConnTuple
    from natbox.netfilter import CtInfo

    rs = _rs("-A INPUT -p udp -m connlimit --connlimit-above 1 --connlimit-mask 64 -j DROP")
    ctx = _ctx(1.0, rs)
    verdicts = []
    for i, src in enumerate(("fd00::1", "fd00::2", "fd00:0:0:1::1")):
        skb = _udp(src, sport=40000 + i)
        a, b = parse_addr6(src), parse_addr6("2001:db8::10")
        skb.ct = Conn(ConnTuple(a, 40000 + i, b, 53, 17), ConnTuple(b, 53, a, 40000 + i, 17), now=0.0, ct_id=i + 1)
        skb.ctinfo = CtInfo.NEW
        verdicts.append(rs.run("filter", Hook.LOCAL_IN, skb, ctx) == NF_DROP)
    assert verdicts == [False, True, False]  # fd00::2 is the second in fd00::/64
    m = rs.tables["filter"].chains["INPUT"].rules[0].matches[-1]
    assert sorted(k[0] for k in m.data.lists) == [parse_addr6("fd00::"), parse_addr6("fd00:0:0:1::")]  # type: ignore[attr-defined]


def _ct6(src: str) -> object:
    from natbox.conntrack.conn import Conn
    from natbox.conntrack.tuple import ConnTuple

    a, b = parse_addr6(src), parse_addr6("fd00::1")
    return Conn(ConnTuple(a, 7, b, 128 << 8, 58), ConnTuple(b, 7, a, 129 << 8, 58), now=0.0, ct_id=1)


@pytest.mark.parametrize(("src", "node"), [("fd00::3:3", 2), ("fd00::c:c", 2), ("2001:db8::2", 3), ("fd01::3", 2),
                                           ("fc00:1::4", 3), ("2001:db9::5", 3), ("fd12:3456::6", 4)])
def test_cluster_hashes_the_first_word_of_an_ipv6_source(src: str, node: int) -> None:
    """Recorded on 6.18 (pings over lo, one rule per node of 4, seed 0xdeadbeef): the node each source fell
    on. Only the first 32 bits count (xt_cluster_hash_ipv6 hashes one word)."""
    rs = _rs(*(f"-A PREROUTING -m cluster --cluster-total-nodes 4 --cluster-local-node {n} "
               "--cluster-hash-seed 0xdeadbeef" for n in (1, 2, 3, 4)), table="mangle")
    skb = _udp(src, "fd00::1")
    skb.ct = _ct6(src)  # type: ignore[assignment]
    rs.run("mangle", Hook.PRE_ROUTING, skb, FakeCtx(Hook.PRE_ROUTING))
    hits = [r.packets for r in rs.tables["mangle"].chains["PREROUTING"].rules]
    assert hits == [int(n == node) for n in (1, 2, 3, 4)]


def _engine6(rules6: str) -> Any:
    from natbox.engine.engine import Engine
    from natbox.engine.host import Host, Interface, Route6
    from natbox.rules.parser import parse_restore

    host = Host(ipv6_forward=True)
    host.add_interface(Interface("lan0", mac=b"\x02\0\0\0\0\x01"))
    host.add_interface(Interface("wan0", mac=b"\x02\0\0\0\0\x02"))
    host.add_address6("lan0", parse_addr6("fd00:77::1"), 64)
    host.add_address6("wan0", parse_addr6("2001:db8:100::1"), 64)
    host.routes6.append(Route6(0, 0, "wan0", gateway=parse_addr6("2001:db8:100::10")))
    host.routes6.append(Route6(parse_addr6("2001:db8:300::"), 48, None, type="unreachable"))
    rs = Ruleset(NFPROTO_IPV6)
    rs.restore(parse_restore(rules6, file="<test>", family=NFPROTO_IPV6))
    return Engine(host, ruleset6=rs)


def test_rpfilter_routes_the_ipv6_source_back() -> None:
    """ip6t_rpfilter: a LAN source arriving on the WAN fails, a source routed by the default route passes on
    wan0, link-local and :: pass, an unreachable route fails, --loose accepts any device."""
    from natbox.wire.ethernet import ETH_P_IPV6, build_ethernet

    rules = ("*raw\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n-A PREROUTING -m rpfilter --invert -j DROP\n"
             "COMMIT\n")
    eng = _engine6(rules)

    def sent(src: str, iface: str, dst: str = "fd00:77::2") -> bool:
        dg = bytes(_udp(src, dst).data)
        frame = bytes(build_ethernet(b"\x02\0\0\0\0\x02" if iface == "wan0" else b"\x02\0\0\0\0\x01",
                                     b"\x02\xaa\0\0\0\x01", ETH_P_IPV6, dg))
        return any(d.reason == "rule_drop" for d in eng.receive(frame, iface, 1.0).dropped)

    assert sent("fd00:77::5", "wan0")  # spoofed: fd00:77::/64 is lan0's
    assert not sent("2001:db8:55::1", "wan0", "fd00:77::2")
    assert not sent("fd00:77::5", "lan0", "2001:db8:55::1")
    assert sent("2001:db8:300::1", "wan0")  # an unreachable route
    assert not sent("fe80::99", "lan0", "fd00:77::2")
    loose = _engine6(rules.replace("--invert", "--loose --invert"))
    eng = loose
    assert not sent("fd00:77::5", "wan0")


def _mark(rule: str, skb: Skb6) -> int:
    rs = _rs(f"-A OUTPUT {rule}", table="mangle")
    rs.run("mangle", Hook.LOCAL_OUT, skb, FakeCtx(Hook.LOCAL_OUT))
    return skb.mark


UDP_TUPLE = ("-p udp -j HMARK --hmark-tuple src,dst,sport,dport,proto --hmark-rnd 0xcafe --hmark-mod 1000 "
             "--hmark-offset 7")
ERR_TUPLE = "-j HMARK --hmark-tuple src,dst,sport,dport,proto --hmark-rnd 0x77 --hmark-mod 50000"
FLOWS = (("2001:db8::2", 40000, 721, 32832), ("fd01::3:4", 40001, 908, 29523), ("fd00::1", 5353, 650, 16034))


@pytest.mark.parametrize(("src", "sport", "mark", "err_mark"), FLOWS)
def test_hmark_hashes_ipv6_packets_and_the_packet_an_error_quotes(src: str, sport: int, mark: int,
                                                                  err_mark: int) -> None:
    """Recorded on 6.18 (mangle OUTPUT HMARK then CONNMARK --save-mark, conntrack -L's mark=): UDP to
    [fd00::1]:9 with the 5-tuple, and the port unreachable it earned, hashed by the datagram it quotes."""
    from natbox.wire.icmpv6 import build_icmpv6_error

    skb = _udp(src, "fd00::1", sport, 9)
    quoted = bytes(skb.data)
    assert _mark(UDP_TUPLE, skb) == mark
    err = build_icmpv6_error(parse_addr6("fd00::1"), parse_addr6(src), 1, 4, quoted)
    assert _mark(ERR_TUPLE, Skb6(bytearray(err))) == err_mark


def test_hmark_masks_and_folds_ipv6_addresses() -> None:
    """Recorded: an echo request 2001:db8::2 -> fd01::3:4 with /64 and /48 prefixes, rnd 0x1234, mod 65536."""
    from natbox.wire.icmpv6 import build_icmpv6_echo

    echo = build_icmpv6_echo(parse_addr6("2001:db8::2"), parse_addr6("fd01::3:4"), 11271, 1, b"x", reply=False)
    rule = "-p icmpv6 -j HMARK --hmark-src-prefix 64 --hmark-dst-prefix 48 --hmark-rnd 0x1234 --hmark-mod 65536"
    assert _mark(rule, Skb6(bytearray(echo))) == 12576


def test_tee_sends_an_untracked_copy_to_the_ipv6_gateway() -> None:
    """nf_dup_ipv6: at PREROUTING the copy's hop limit is one lower; it goes to the gateway's MAC on its link
    (the gateway is the next hop, FLOWI_FLAG_KNOWN_NH) while the original is forwarded (and NATed: the copy
    is untracked, so it keeps the inside source)."""
    from natbox.wire.ethernet import ETH_P_IPV6, build_ethernet

    rules = ("*mangle\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
             ":POSTROUTING ACCEPT [0:0]\n-A PREROUTING -i lan0 -p udp -j TEE --gateway fd00:77::99\nCOMMIT\n"
             "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n"
             "-A POSTROUTING -o wan0 -j MASQUERADE\nCOMMIT\n")
    eng = _engine6(rules)
    mon_mac, cli_mac = b"\x02\x99\0\0\0\x99", b"\x02\xc1\0\0\0\x01"

    def frame(src_mac: bytes, dg: bytes) -> bytes:
        return bytes(build_ethernet(b"\x02\0\0\0\0\x01", src_mac, ETH_P_IPV6, dg))

    eng.receive(frame(mon_mac, bytes(_udp("fd00:77::99", "fd00:77::1", 1, 9).data)), "lan0", 0.5)  # its MAC learnt
    dg = bytes(_udp("fd00:77::2", "2001:db8:55::1", 40000, 53).data)
    out = eng.receive(frame(cli_mac, dg), "lan0", 1.0)
    by_iface = {e.iface: e.frame for e in out.emitted}
    copy, fwd = by_iface["lan0"], by_iface["wan0"]
    assert copy[:6] == mon_mac and copy[14 + 7] == 63 and copy[14 + 8:] == dg[8:]  # one hop less, untouched
    assert fwd[14 + 8:14 + 24] == parse_addr6("2001:db8:100::1").to_bytes(16, "big") and fwd[14 + 7] == 63
    with pytest.raises(Exception, match="Invalid argument"):
        _engine6(rules.replace("fd00:77::99", "::"))


def test_tproxy_and_tee_list_as_ip6tables_does(tmp_path: Path) -> None:
    """ip6tables -t mangle -nL, recorded: no brackets around the IPv6 address in TPROXY's redirect."""
    path = str(tmp_path / "r.v6")
    for line in ("-p tcp -j TPROXY --on-port 3128 --on-ip fd00::1 --tproxy-mark 0x1/0x1",
                 "-p udp -j TPROXY --on-port 53", "-j TEE --gateway fd00::1 --oif eth0"):
        assert ip6tables_main(["-t", "mangle", "-A", "PREROUTING", *line.split()], rules_path=path) == 0
    out = io.StringIO()
    assert ip6tables_main(["-t", "mangle", "-nL", "PREROUTING"], rules_path=path, stdout=out) == 0
    assert out.getvalue().splitlines()[2:] == [
        "TPROXY     6    --  ::/0                 ::/0                 TPROXY redirect fd00::1:3128 mark 0x1/0x1",
        "TPROXY     17   --  ::/0                 ::/0                 TPROXY redirect :::53 mark 0x0/0x0",
        "TEE        0    --  ::/0                 ::/0                 TEE gw:fd00::1 oif=eth0"]


def test_tproxy_gives_the_packet_to_a_transparent_ipv6_listener() -> None:
    rs = _rs("-A PREROUTING -p tcp -j TPROXY --on-port 3128 --on-ip fd00::1 --tproxy-mark 0x1/0x1",
             table="mangle")
    syn = Skb6(build_ipv6(parse_addr6("fd00::2"), parse_addr6("2001:db8::80"), 6,
                          bytes.fromhex("9c40005000000001000000005002ffff00000000")), iif="lan")
    ctx = FakeCtx(Hook.PRE_ROUTING)
    assert rs.run("mangle", Hook.PRE_ROUTING, syn, ctx) == NF_DROP  # nobody listens on 3128
    ctx.listening.add((6, 3128))
    syn.mark = 0x10
    assert rs.run("mangle", Hook.PRE_ROUTING, syn, ctx) != NF_DROP and syn.mark == 0x11 and syn.sk == (6, 3128)


def test_socket_finds_the_model_listener_for_ipv6() -> None:
    """The model's listeners are bound to :: (wildcard): they count only with --nowildcard."""
    rs = _rs("-A PREROUTING -p tcp -m socket --nowildcard --restore-skmark -j MARK --set-mark 7",
             "-A PREROUTING -p tcp -m socket -j MARK --set-mark 9", table="mangle")
    syn = Skb6(build_ipv6(parse_addr6("fd00::2"), parse_addr6("2001:db8::80"), 6,
                          bytes.fromhex("9c40005000000001000000005002ffff00000000")), iif="lan")
    ctx = FakeCtx(Hook.PRE_ROUTING)
    rs.run("mangle", Hook.PRE_ROUTING, syn, ctx)
    assert syn.mark == 0  # nobody listens on 80
    ctx.listening.add((6, 80))
    rs.run("mangle", Hook.PRE_ROUTING, syn, ctx)
    assert syn.mark == 7


IPVS6 = [  # (rule, its -S line, its -L match text): libxt_ipvs's ipvs_mt_save/ipvs_mt_print for NFPROTO_IPV6
    ("-m ipvs --vaddr 2001:db8::1", "-m ipvs --vaddr 2001:db8::1", "vaddr 2001:db8::1"),
    ("-m ipvs ! --vaddr 2001:db8::7/32 --vport 80", "-m ipvs ! --vaddr 2001:db8::7/32 --vport 80",
     "! vaddr 2001:db8::7/32 vport 80"),
    ("-m ipvs --vproto tcp --vaddr fd00::1/64 --vdir REPLY", "-m ipvs --vproto 6 --vaddr fd00::1/64 --vdir REPLY",
     "vproto 6 vaddr fd00::1/64 vdir REPLY"),
    ("-m ipvs --vaddr ::/0", "-m ipvs --vaddr ::/0", "vaddr anywhere"),
]


@pytest.mark.parametrize(("rule", "saved", "listed"), IPVS6, ids=[r for r, _s, _l in IPVS6])
def test_ipvs_in_ip6tables_takes_ipv6_addresses(rule: str, saved: str, listed: str) -> None:
    """ip6tables' ipvs: --vaddr is an IPv6 host (getaddrinfo AF_INET6, the address kept unmasked) with an
    optional prefix length, printed with xtables_ip6mask_to_numeric (no /128). The recording machine had no
    ip_vs module, so these forms come from libxt_ipvs.c; the refusal of an IPv4 address is recorded
    (data/ip6tables_t.json, libxt_ipvs.t line 7). No packet is an IPVS one: such a rule never matches."""
    rs = _rs(f"-A FORWARD {rule}")
    out = io.StringIO()
    assert ip6tables_main(["-S", "FORWARD"], ruleset=rs, stdout=out, stderr=io.StringIO()) == 0
    assert out.getvalue().splitlines()[-1] == f"-A FORWARD {saved}"
    out = io.StringIO()
    assert ip6tables_main(["-L", "FORWARD"], ruleset=rs, stdout=out, stderr=io.StringIO()) == 0
    assert out.getvalue().splitlines()[-1].rstrip().endswith(listed)


def test_ipvs_in_ip6tables_never_sees_an_ipvs_packet() -> None:
    """ipvs_mt: a packet without skb->ipvs_property fails every option but a lone `! --ipvs`."""
    ctx = FakeCtx()
    rs = _rs("-A FORWARD -m ipvs --vaddr 2001:db8::10 -j DROP")
    assert rs.run("filter", Hook.FORWARD, _udp("2001:db8::1"), ctx) != NF_DROP
    rs = _rs("-A FORWARD -m ipvs ! --ipvs -j DROP")
    assert rs.run("filter", Hook.FORWARD, _udp("2001:db8::1"), ctx) == NF_DROP


def test_ipvs_in_ip6tables_refuses_an_ipv4_address() -> None:
    err = io.StringIO()
    rc = ip6tables_main(["-A", "FORWARD", "-m", "ipvs", "--vaddr", "1.2.3.4"], ruleset=Ruleset(NFPROTO_IPV6),
                        stdout=io.StringIO(), stderr=err)
    assert rc == 2
    assert err.getvalue().startswith("ip6tables v1.8.9 (nf_tables): getaddrinfo: Address family for hostname "
                                     "not supported\n")
