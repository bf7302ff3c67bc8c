"""ip6tables rules evaluated on hand-built IPv6 packets (ipv6-semantics.md §1.6, §3.5, §3.7, §5): the standard
selectors with `meta l4proto` semantics, the extension header matches (found with ipv6_find_hdr), icmp6, hl,
mh, eui64, srh, and the targets HL, REJECT, NETMAP, REDIRECT, SNAT/DNAT/MASQUERADE and SNPT/DNPT."""

from __future__ import annotations

import shlex

import pytest

from natbox.netfilter import Hook, ManipType
from natbox.rules.api import NF_ACCEPT, NF_DROP
from natbox.rules.evaluate import Ruleset
from natbox.rules.model import NFPROTO_IPV6
from natbox.rules.parser import parse_argv
from natbox.skb import Skb6
from natbox.testing.rules_fakes import FakeCtx
from natbox.wire.ipv6 import (
    NEXTHDR_AUTH,
    NEXTHDR_DEST,
    NEXTHDR_FRAGMENT,
    NEXTHDR_HOP,
    NEXTHDR_ICMP,
    NEXTHDR_NONE,
    NEXTHDR_ROUTING,
    NEXTHDR_TCP,
    NEXTHDR_UDP,
    build_frag_hdr,
    build_ipv6,
    parse_addr6,
)

A = parse_addr6("fd00::2")
B = parse_addr6("2001:db8::10")
UDP = bytes.fromhex("9c400035000c0000") + b"abcd"  # 40000 -> 53
TCP_SYN = bytes.fromhex("9c40005000000001000000005002ffff00000000")  # 40000 -> 80, SYN


def opts_hdr(nexthdr: int, body: bytes) -> bytes:
    """A Hop-by-Hop / Destination options header: nexthdr, length in 8-byte units after the first, options."""
    total = 2 + len(body)
    assert total % 8 == 0
    return bytes((nexthdr, total // 8 - 1)) + body


def ah_hdr(nexthdr: int, spi: int, reserved: int = 0) -> bytes:
    """AH with a 4-byte ICV: 16 bytes, hdrlen (16 / 4) - 2 = 2."""
    return bytes((nexthdr, 2)) + reserved.to_bytes(2, "big") + spi.to_bytes(4, "big") + bytes(8)


def rt_hdr(nexthdr: int, rt_type: int, segs_left: int, addrs: list[int], reserved: int = 0) -> bytes:
    body = reserved.to_bytes(4, "big") + b"".join(a.to_bytes(16, "big") for a in addrs)
    return bytes((nexthdr, (4 + len(body)) // 8 - 1 if addrs else 0, rt_type, segs_left)) + body


def pkt(nexthdr: int, payload: bytes, *, saddr: int = A, daddr: int = B, hop_limit: int = 64) -> Skb6:
    skb = Skb6(build_ipv6(saddr, daddr, nexthdr, payload, hop_limit=hop_limit), iif="lan")
    skb.oif = "wan"
    return skb


def ruleset(*rules: str, table: str = "filter") -> Ruleset:
    rs = Ruleset(NFPROTO_IPV6)
    for r in rules:
        rs.execute(parse_argv(["-t", table, *shlex.split(r)], family=NFPROTO_IPV6))
    return rs


def verdict(rule: str, skb: Skb6, *, table: str = "filter", hook: Hook = Hook.FORWARD,
            ctx: FakeCtx | None = None) -> bool:
    """Whether `rule` (appended with -j DROP to a chain with policy ACCEPT) matches `skb`."""
    chain = hook.chain_name
    rs = ruleset(f"-A {chain} {rule} -j DROP", table=table)
    return rs.run(table, hook, skb, ctx or FakeCtx(hook)) == NF_DROP


def test_addresses_and_masks() -> None:
    skb = pkt(NEXTHDR_UDP, UDP)
    assert verdict("-s fd00::/64 -d 2001:db8::10", skb)
    assert not verdict("-s fd00:1::/64", skb)
    assert verdict("! -s fd00:1::/64", skb)
    assert verdict("-d 2001:db8:1::10/ffff:ffff::ffff:ff", skb)  # non-contiguous mask: word 2 ignored
    assert not verdict("-d 2001:db8::11/ffff:ffff::ffff:ff", skb)


def test_protocol_skips_extension_headers_but_not_ah() -> None:
    """`meta l4proto` (ipv6_find_hdr with IP6_FH_F_AUTH): HBH and DEST skipped, AH stops the walk."""
    behind_opts = pkt(NEXTHDR_HOP, opts_hdr(NEXTHDR_DEST, bytes(6)) + opts_hdr(NEXTHDR_UDP, bytes(6)) + UDP)
    assert verdict("-p udp", behind_opts)
    assert verdict("-p udp --dport 53", behind_opts)
    behind_ah = pkt(NEXTHDR_AUTH, ah_hdr(NEXTHDR_UDP, 7) + UDP)
    assert not verdict("-p udp", behind_ah)
    assert verdict("-p ah", behind_ah)
    assert verdict("-p all", behind_ah)


def test_protocol_of_a_later_fragment_and_of_a_cut_chain() -> None:
    later = pkt(NEXTHDR_FRAGMENT, build_frag_hdr(NEXTHDR_UDP, 1232, False, 9) + bytes(16))
    assert verdict("-p udp", later)  # the Fragment header's next header (§1.6)
    assert not verdict("-p udp --dport 53", later)  # ports only in an unfragmented or first fragment
    none = pkt(NEXTHDR_NONE, b"")
    assert verdict("-p ipv6-nonxt", none)
    cut = pkt(NEXTHDR_HOP, bytes((NEXTHDR_UDP,)))  # the options header is cut: l4proto unset
    assert not verdict("-p udp", cut) and not verdict("! -p udp", cut) and verdict("-p all", cut)


def test_interfaces() -> None:
    skb = pkt(NEXTHDR_UDP, UDP)
    assert verdict("-i lan -o wa+", skb) and not verdict("-i wan", skb) and verdict("! -o lan", skb)


def icmp6(t: int, code: int = 0) -> bytes:
    return bytes((t, code, 0, 0)) + bytes(4)


def test_icmp6_type_and_code() -> None:
    echo = pkt(NEXTHDR_ICMP, icmp6(128))
    assert verdict("-p ipv6-icmp --icmpv6-type echo-request", echo)
    assert not verdict("-p ipv6-icmp --icmpv6-type echo-reply", echo)
    assert verdict("-p ipv6-icmp ! --icmpv6-type echo-reply", echo)
    unreach = pkt(NEXTHDR_ICMP, icmp6(1, 4))
    assert verdict("-p icmpv6 --icmpv6-type destination-unreachable", unreach)
    assert verdict("-p icmpv6 --icmpv6-type port-unreachable", unreach)
    assert not verdict("-p icmpv6 --icmpv6-type no-route", unreach)
    assert verdict("-p icmpv6 --icmpv6-type 1/3:5", unreach)
    short = pkt(NEXTHDR_ICMP, bytes((128, 0, 0, 0)))
    assert not verdict("-p icmpv6 --icmpv6-type 128", short)
    assert not verdict("-p icmpv6 ! --icmpv6-type 1", short)  # the kernel's hotdrop


def test_hl_match() -> None:
    skb = pkt(NEXTHDR_UDP, UDP, hop_limit=5)
    assert verdict("-m hl --hl-eq 5", skb) and verdict("-m hl ! --hl-eq 4", skb)
    assert verdict("-m hl --hl-lt 6", skb) and not verdict("-m hl --hl-gt 5", skb)


def test_frag_match() -> None:
    first = pkt(NEXTHDR_FRAGMENT, build_frag_hdr(NEXTHDR_UDP, 0, True, 0x1234) + UDP)
    later = pkt(NEXTHDR_FRAGMENT, build_frag_hdr(NEXTHDR_UDP, 16, False, 0x1234) + bytes(8))
    whole = pkt(NEXTHDR_UDP, UDP)
    assert verdict("-m frag", first) and not verdict("-m frag", whole)
    assert verdict("-m frag --fragid 0x1234", first) and not verdict("-m frag --fragid 1:10", first)
    assert verdict("-m frag ! --fragid 1:10", later)
    assert verdict("-m frag --fragfirst --fragmore", first) and not verdict("-m frag --fragfirst", later)
    assert verdict("-m frag --fraglast", later) and not verdict("-m frag --fraglast", first)
    assert verdict("-m frag --fraglen 99", first)  # parsed, never compared by the kernel
    assert verdict("-m frag --fragres", first)  # --fragres: the reserved fields are zero
    res = pkt(NEXTHDR_FRAGMENT, bytes((NEXTHDR_UDP, 1)) + build_frag_hdr(NEXTHDR_UDP, 0, True, 1)[2:] + UDP)
    assert not verdict("-m frag --fragres", res)


def test_hbh_and_dst_options() -> None:
    # PadN of 4 then a router alert (type 5, length 2)
    hbh = opts_hdr(NEXTHDR_UDP, bytes((1, 2, 0, 0, 5, 2, 0, 0)) + bytes((0, 0, 0, 0, 1, 0)))
    skb = pkt(NEXTHDR_HOP, hbh + UDP)
    assert verdict("-m hbh", skb) and not verdict("-m dst", skb)
    assert verdict("-m hbh --hbh-len 16", skb) and not verdict("-m hbh --hbh-len 8", skb)
    assert verdict("-m hbh ! --hbh-len 8", skb)
    assert verdict("-m hbh --hbh-opts 1:2,5:2", skb)
    assert verdict("-m hbh --hbh-opts 1,5", skb)  # no length given: any length
    assert not verdict("-m hbh --hbh-opts 1:3", skb) and not verdict("-m hbh --hbh-opts 5", skb)
    dst = pkt(NEXTHDR_DEST, opts_hdr(NEXTHDR_UDP, bytes((0, 1, 4, 0, 0, 0, 0))[:6]) + UDP)
    assert verdict("-m dst --dst-len 8 --dst-opts 0,1:4", dst)


def test_rt_match() -> None:
    r1, r2 = parse_addr6("2001:db8::1"), parse_addr6("2001:db8::2")
    skb = pkt(NEXTHDR_ROUTING, rt_hdr(NEXTHDR_UDP, 0, 1, [r1, r2]) + UDP)
    assert verdict("-m rt --rt-type 0 --rt-segsleft 1 --rt-len 40", skb)
    assert not verdict("-m rt --rt-type 2", skb) and verdict("-m rt ! --rt-segsleft 2:9", skb)
    assert verdict("-m rt --rt-type 0 --rt-0-res", skb)
    assert verdict("-m rt --rt-type 0 --rt-0-addrs 2001:db8::1,2001:db8::2", skb)
    assert not verdict("-m rt --rt-type 0 --rt-0-addrs 2001:db8::1", skb)  # strict: all of them
    assert verdict("-m rt --rt-type 0 --rt-0-addrs 2001:db8::2 --rt-0-not-strict", skb)
    assert not verdict("-m rt --rt-type 0 --rt-0-addrs 2001:db8::2,2001:db8::1 --rt-0-not-strict", skb)
    reserved = pkt(NEXTHDR_ROUTING, rt_hdr(NEXTHDR_UDP, 0, 1, [r1], reserved=1) + UDP)
    assert not verdict("-m rt --rt-type 0 --rt-0-res", reserved)


def test_ipv6header_hard_and_soft() -> None:
    frag_udp = pkt(NEXTHDR_HOP, opts_hdr(NEXTHDR_FRAGMENT, bytes(6)) + build_frag_hdr(NEXTHDR_UDP, 0, True, 1) + UDP)
    assert verdict("-m ipv6header --header hop,frag,prot", frag_udp)
    assert not verdict("-m ipv6header --header frag", frag_udp)  # hard mode wants the exact set (§5.1)
    assert verdict("-m ipv6header --header frag --soft", frag_udp)
    assert not verdict("-m ipv6header ! --header frag --soft", frag_udp)
    assert verdict("-m ipv6header ! --header frag", frag_udp)
    none = pkt(NEXTHDR_DEST, opts_hdr(NEXTHDR_NONE, bytes(6)))
    assert verdict("-m ipv6header --header dst,none", none)


def test_ah_match() -> None:
    skb = pkt(NEXTHDR_AUTH, ah_hdr(NEXTHDR_TCP, 500) + TCP_SYN)
    assert verdict("-m ah --ahspi 500", skb) and verdict("-m ah --ahspi 400:600", skb)
    assert not verdict("-m ah ! --ahspi 500", skb)
    assert verdict("-m ah --ahlen 16", skb) and not verdict("-m ah --ahlen 12", skb)
    assert verdict("-m ah --ahres", skb)
    assert not verdict("-m ah --ahres", pkt(NEXTHDR_AUTH, ah_hdr(NEXTHDR_TCP, 500, reserved=1) + TCP_SYN))


def test_mh_match() -> None:
    bu = pkt(135, bytes((NEXTHDR_NONE, 1, 5, 0, 0, 0)) + bytes(10))
    assert verdict("-p mh --mh-type binding-update", bu) and not verdict("-p mh --mh-type 6", bu)
    assert verdict("-p mh ! --mh-type 6:7", bu)
    bad_proto = pkt(135, bytes((NEXTHDR_UDP, 1, 5, 0, 0, 0)) + bytes(10))
    assert not verdict("-p mh --mh-type 5", bad_proto)  # payload proto must be NONE (else hotdrop)


def test_eui64() -> None:
    saddr = parse_addr6("fe80::0211:22ff:fe33:4455")
    skb = pkt(NEXTHDR_UDP, UDP, saddr=saddr)
    skb.src_mac = bytes.fromhex("001122334455")
    assert verdict("-m eui64", skb)
    skb.src_mac = bytes.fromhex("001122334456")
    assert not verdict("-m eui64", skb)
    skb.src_mac = b""
    assert not verdict("-m eui64", skb)


def srh(segs_left: int, last: int, sids: list[int], *, tag: int = 0) -> bytes:
    body = b"".join(s.to_bytes(16, "big") for s in sids)
    return bytes((NEXTHDR_UDP, len(body) // 8, 4, segs_left, last, 0)) + tag.to_bytes(2, "big") + body


def test_srh() -> None:
    s0, s1, s2 = (parse_addr6(x) for x in ("fc00::a", "fc00::b", "fc00::c"))
    skb = pkt(NEXTHDR_ROUTING, srh(1, 2, [s0, s1, s2], tag=7) + UDP)
    assert verdict("-m srh --srh-next-hdr 17 --srh-segs-left-eq 1 --srh-last-entry-eq 2 --srh-tag 7", skb)
    assert verdict("-m srh --srh-hdr-len-gt 5 --srh-hdr-len-lt 7 ! --srh-segs-left-gt 1", skb)
    assert not verdict("-m srh ! --srh-tag 7", skb)
    assert verdict("-m srh --srh-psid fc00::c --srh-nsid fc00::a --srh-lsid fc00::/16", skb)
    assert not verdict("-m srh --srh-nsid fc00::b", skb) and verdict("-m srh ! --srh-nsid fc00::b", skb)
    rt0 = pkt(NEXTHDR_ROUTING, rt_hdr(NEXTHDR_UDP, 0, 1, [s0]) + UDP)
    assert not verdict("-m srh", rt0)  # routing type 0 is not an SRH


def test_hl_target() -> None:
    skb = pkt(NEXTHDR_UDP, UDP, hop_limit=250)
    rs = ruleset("-A FORWARD -j HL --hl-inc 10", "-A FORWARD -j HL --hl-dec 3", table="mangle")
    assert rs.run("mangle", Hook.FORWARD, skb, FakeCtx(Hook.FORWARD)) == NF_ACCEPT
    assert skb.ttl == 252  # 255 (saturated) - 3
    ruleset("-A FORWARD -j HL --hl-set 1", table="mangle").run("mangle", Hook.FORWARD, skb, FakeCtx())
    assert skb.ttl == 1


@pytest.mark.parametrize(("spec", "canonical"), [("", "icmp6-port-unreachable"), ("no-route", "icmp6-no-route"),
                                                  ("icmp6-adm", "icmp6-adm-prohibited")])
def test_reject_asks_the_host_with_the_canonical_name(spec: str, canonical: str) -> None:
    ctx = FakeCtx(Hook.FORWARD)
    rs = ruleset("-A FORWARD -j REJECT" + (f" --reject-with {spec}" if spec else ""))
    assert rs.run("filter", Hook.FORWARD, pkt(NEXTHDR_UDP, UDP), ctx) == NF_DROP
    assert ctx.rejects == [canonical]


def test_reject_tcp_reset() -> None:
    ctx = FakeCtx(Hook.LOCAL_IN)
    rs = ruleset("-A INPUT -p tcp -j REJECT --reject-with tcp-reset")
    assert rs.run("filter", Hook.LOCAL_IN, pkt(NEXTHDR_TCP, TCP_SYN), ctx) == NF_DROP
    assert ctx.rejects == ["tcp-reset"]


def test_nat_targets_pass_128_bit_ranges() -> None:
    ctx = FakeCtx(Hook.PRE_ROUTING)
    rs = ruleset("-A PREROUTING -p tcp -j DNAT --to-destination [fd00::5-fd00::6]:8080-8081", table="nat")
    assert rs.run("nat", Hook.PRE_ROUTING, pkt(NEXTHDR_TCP, TCP_SYN), ctx) == NF_ACCEPT
    rng, manip = ctx.nat_calls[0]
    assert (rng.min_addr, rng.max_addr, rng.min_proto, rng.max_proto) == (
        parse_addr6("fd00::5"), parse_addr6("fd00::6"), 8080, 8081)
    assert manip == ManipType.DST
    post = FakeCtx(Hook.POST_ROUTING)
    rs = ruleset("-A POSTROUTING -s fd00::/64 -j MASQUERADE --random-fully", table="nat")
    rs.run("nat", Hook.POST_ROUTING, pkt(NEXTHDR_UDP, UDP), post)
    assert len(post.masq_calls) == 1


def test_netmap6_keeps_host_bits() -> None:
    ctx = FakeCtx(Hook.POST_ROUTING)
    rs = ruleset("-A POSTROUTING -j NETMAP --to 2001:db8:77::/64", table="nat")
    rs.run("nat", Hook.POST_ROUTING, pkt(NEXTHDR_UDP, UDP, saddr=parse_addr6("fd00::1:2:3:4")), ctx)
    rng, manip = ctx.nat_calls[0]
    assert rng.min_addr == rng.max_addr == parse_addr6("2001:db8:77:0:1:2:3:4") and manip == ManipType.SRC


def test_redirect6() -> None:
    out = FakeCtx(Hook.LOCAL_OUT)
    ruleset("-A OUTPUT -p tcp -j REDIRECT --to-ports 3128", table="nat").run(
        "nat", Hook.LOCAL_OUT, pkt(NEXTHDR_TCP, TCP_SYN), out)
    assert out.nat_calls[0][0].min_addr == 1  # ::1
    pre = FakeCtx(Hook.PRE_ROUTING)
    rs = ruleset("-A PREROUTING -p tcp -j REDIRECT", table="nat")
    assert rs.run("nat", Hook.PRE_ROUTING, pkt(NEXTHDR_TCP, TCP_SYN), pre) == NF_DROP  # no address on lan
    pre.iface_addrs["lan"] = parse_addr6("fd00::1")
    assert rs.run("nat", Hook.PRE_ROUTING, pkt(NEXTHDR_TCP, TCP_SYN), pre) == NF_ACCEPT


def test_snpt_dnpt_checksum_neutral() -> None:
    """§3.7 [V]: fd00:77::2 with fd00:77::/64 -> 2001:db8:77::/64 becomes 2001:db8:77:0:cf47::2."""
    skb = pkt(NEXTHDR_UDP, UDP, saddr=parse_addr6("fd00:77::2"))
    rs = ruleset("-A POSTROUTING -j SNPT --src-pfx fd00:77::/64 --dst-pfx 2001:db8:77::/64", table="mangle")
    assert rs.run("mangle", Hook.POST_ROUTING, skb, FakeCtx(Hook.POST_ROUTING)) == NF_ACCEPT
    assert skb.saddr == parse_addr6("2001:db8:77:0:cf47::2")
    back = pkt(NEXTHDR_UDP, UDP, daddr=skb.saddr)
    rs = ruleset("-A PREROUTING -j DNPT --src-pfx 2001:db8:77::/64 --dst-pfx fd00:77::/64", table="mangle")
    rs.run("mangle", Hook.PRE_ROUTING, back, FakeCtx(Hook.PRE_ROUTING))
    assert back.daddr == parse_addr6("fd00:77::2")


def test_npt_map_failure_sends_parameter_problem() -> None:
    ctx = FakeCtx(Hook.POST_ROUTING)
    skb = pkt(NEXTHDR_UDP, UDP, saddr=parse_addr6("fd00:77::ffff:ffff:ffff:ffff"))
    rs = ruleset("-A POSTROUTING -j SNPT --src-pfx fd00:77::/64 --dst-pfx 2001:db8:77::/64", table="mangle")
    assert rs.run("mangle", Hook.POST_ROUTING, skb, ctx) == NF_DROP
    assert ctx.rejects == ["npt-paramprob-saddr"]


def test_npt_maps_the_packet_an_icmpv6_error_quotes() -> None:
    """ip6t_NPT's icmpv6_bounced_ipv6hdr (6.x): SNPT on an ICMPv6 error also maps the quoted packet's
    destination when it lies in --src-pfx; DNPT maps the quoted source; other addresses stay."""
    inner_out = build_ipv6(parse_addr6("2001:db8:100::10"), parse_addr6("fd00:77::2"), NEXTHDR_UDP, UDP)
    err = bytes([1, 4, 0, 0, 0, 0, 0, 0]) + inner_out  # port unreachable (checksum not read by NPT)
    skb = pkt(NEXTHDR_ICMP, err, saddr=parse_addr6("fd00:77::2"), daddr=parse_addr6("2001:db8:100::10"))
    rs = ruleset("-A POSTROUTING -j SNPT --src-pfx fd00:77::/64 --dst-pfx 2001:db8:77::/64", table="mangle")
    rs.run("mangle", Hook.POST_ROUTING, skb, FakeCtx(Hook.POST_ROUTING))
    quoted = Skb6(bytearray(skb.data[48:]), iif="lan")
    assert skb.saddr == quoted.daddr == parse_addr6("2001:db8:77:0:cf47::2")
    assert quoted.saddr == parse_addr6("2001:db8:100::10")
    inner_in = build_ipv6(parse_addr6("2001:db8:77:0:cf47::2"), parse_addr6("2001:db8:100::10"), NEXTHDR_UDP, UDP)
    back = pkt(NEXTHDR_ICMP, bytes([1, 4, 0, 0, 0, 0, 0, 0]) + inner_in, saddr=parse_addr6("2001:db8:100::10"),
               daddr=parse_addr6("2001:db8:77:0:cf47::2"))
    rs = ruleset("-A PREROUTING -j DNPT --src-pfx 2001:db8:77::/64 --dst-pfx fd00:77::/64", table="mangle")
    rs.run("mangle", Hook.PRE_ROUTING, back, FakeCtx(Hook.PRE_ROUTING))
    assert back.daddr == Skb6(bytearray(back.data[48:]), iif="wan").saddr == parse_addr6("fd00:77::2")
    other = build_ipv6(parse_addr6("2001:db8:100::10"), parse_addr6("fd00:99::2"), NEXTHDR_UDP, UDP)
    skb = pkt(NEXTHDR_ICMP, bytes([1, 4, 0, 0, 0, 0, 0, 0]) + other, saddr=parse_addr6("fd00:77::2"))
    ruleset("-A POSTROUTING -j SNPT --src-pfx fd00:77::/64 --dst-pfx 2001:db8:77::/64", table="mangle").run(
        "mangle", Hook.POST_ROUTING, skb, FakeCtx(Hook.POST_ROUTING))
    assert Skb6(bytearray(skb.data[48:]), iif="lan").daddr == parse_addr6("fd00:99::2")


def test_tos_dscp_ecn_read_the_traffic_class() -> None:
    skb = Skb6(build_ipv6(A, B, NEXTHDR_UDP, UDP, tclass=0x2A), iif="lan")  # DSCP 10, ECT(0)
    assert verdict("-m dscp --dscp 10", skb) and not verdict("-m dscp --dscp 11", skb)
    assert verdict("-m tos --tos 0x28/0xfc", skb)
    assert verdict("-m ecn --ecn-ip-ect 2", skb) and not verdict("-m ecn --ecn-ip-ect 1", skb)


def test_dscp_and_tos_targets_write_the_traffic_class() -> None:
    skb = Skb6(build_ipv6(A, B, NEXTHDR_UDP, UDP, tclass=0x01, flowlabel=0xABCDE), iif="lan")
    ruleset("-A FORWARD -j DSCP --set-dscp 0x2e", table="mangle").run("mangle", Hook.FORWARD, skb, FakeCtx())
    assert skb.tos == 0xB9 and skb.data[:4] == bytes.fromhex("6b9abcde")  # ECN bits and flow label kept
    ruleset("-A FORWARD -j TOS --set-tos 0x10/0xf0", table="mangle").run("mangle", Hook.FORWARD, skb, FakeCtx())
    assert skb.tos == 0x19


def test_why_a_header_match_failed() -> None:
    """`natbox explain` names the missing header or the field that differed."""
    rs = ruleset("-A FORWARD -m frag --fragid 5 -j DROP", "-A FORWARD -m rt --rt-type 2 -j DROP",
                 "-A FORWARD -m hbh -j DROP", "-A FORWARD -m ipv6header --header frag -j DROP",
                 "-A FORWARD -m ah --ahspi 5 -j DROP", "-A FORWARD -p mh --mh-type 6 -j DROP")
    [frag, rt, hbh, hdr, ah, mh] = [r.matches[-1] for r in rs.tables["filter"].chains["FORWARD"].rules]
    udp, ctx = pkt(NEXTHDR_UDP, UDP), FakeCtx(Hook.FORWARD)
    assert frag.why(udp, ctx) == "no match (no fragment header)"
    assert rt.why(udp, ctx) == "no match (no routing header)"
    assert hbh.why(udp, ctx) == "no match (no hop-by-hop header)"
    assert hdr.why(udp, ctx) == "no match (headers 0x01)"
    assert ah.why(pkt(NEXTHDR_AUTH, ah_hdr(NEXTHDR_UDP, 7) + UDP), ctx) == "no match (spi 7)"
    assert mh.why(pkt(135, bytes((NEXTHDR_NONE, 1, 5, 0, 0, 0))), ctx) == "no match (type 5)"
    assert frag.why(pkt(NEXTHDR_FRAGMENT, build_frag_hdr(NEXTHDR_UDP, 0, True, 9) + UDP), ctx) == (
        "no match (fragment header fields)")
