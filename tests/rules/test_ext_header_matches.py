"""ah/esp/ipcomp, tos/TOS, ecn/ECN, tcpmss, realm, cpu, policy evaluated on packets (the kernel's xt modules)."""

from __future__ import annotations

import shlex
import struct

from natbox.netfilter import Hook
from natbox.rules.evaluate import Ruleset
from natbox.rules.parser import parse_argv
from natbox.skb import Skb
from natbox.testing.rules_fakes import FakeCtx, ipv4, tcp, udp
from natbox.wire.checksum import internet_checksum, l4_checksum


def rules(table: str, *lines: str) -> Ruleset:
    rs = Ruleset()
    for line in lines:
        rs.execute(parse_argv(["-t", table, *shlex.split(line)]))
    return rs


def hits(rs: Ruleset, table: str, hook: Hook, skb: Skb) -> list[int]:
    before = [r.packets for r in rs.tables[table].chains[hook.chain_name].rules]
    rs.run(table, hook, skb, FakeCtx(hook))
    return [r.packets - b for r, b in zip(rs.tables[table].chains[hook.chain_name].rules, before, strict=True)]


def spi_packet(proto: int, payload: bytes, frag_off: int = 0) -> Skb:
    return Skb(ipv4("10.0.0.1", "10.0.0.2", proto, payload, frag_off=frag_off))


def test_ah_spi_range_and_inversion() -> None:
    rs = rules("filter", "-A INPUT -p ah -m ah --ahspi 5", "-A INPUT -p ah -m ah ! --ahspi 5",
               "-A INPUT -p ah -m ah --ahspi 4:6", "-A INPUT -p ah -m ah")
    ah = struct.pack("!BBHII", 6, 4, 0, 5, 1)
    assert hits(rs, "filter", Hook.LOCAL_IN, spi_packet(51, ah)) == [1, 0, 1, 1]
    ah = struct.pack("!BBHII", 6, 4, 0, 0xFFFFFFFF, 1)
    assert hits(rs, "filter", Hook.LOCAL_IN, spi_packet(51, ah)) == [0, 1, 0, 1]
    # a later fragment never matches, not even inverted (ah_mt: fragoff != 0); a cut header neither
    assert hits(rs, "filter", Hook.LOCAL_IN, spi_packet(51, ah, frag_off=10)) == [0, 0, 0, 0]
    assert hits(rs, "filter", Hook.LOCAL_IN, spi_packet(51, ah[:8])) == [0, 0, 0, 0]


def test_esp_and_ipcomp() -> None:
    rs = rules("filter", "-A INPUT -p esp -m esp --espspi 0x100:0x1ff", "-A INPUT -p esp -m esp ! --espspi 0x100")
    assert hits(rs, "filter", Hook.LOCAL_IN, spi_packet(50, struct.pack("!II", 0x100, 7))) == [1, 0]
    assert hits(rs, "filter", Hook.LOCAL_IN, spi_packet(50, struct.pack("!II", 0x200, 7))) == [0, 1]
    rs = rules("filter", "-A INPUT -p ipcomp -m ipcomp --ipcompspi 18", "-A INPUT -p ipcomp -m ipcomp",
               "-A INPUT -p ipcomp -m ipcomp ! --ipcompspi 18")
    # ipcomp's CPI is 16 bits at offset 2; without --ipcompspi the range is 0:0 (no init in libxt_ipcomp)
    assert hits(rs, "filter", Hook.LOCAL_IN, spi_packet(108, struct.pack("!BBH", 4, 0, 18))) == [1, 0, 0]
    assert hits(rs, "filter", Hook.LOCAL_IN, spi_packet(108, struct.pack("!BBH", 4, 0, 0))) == [0, 1, 1]


def tos_packet(tos: int) -> Skb:
    skb = udp("10.0.0.1", 1, "10.0.0.2", 2)
    skb.data[1] = tos
    skb.data[10:12] = b"\0\0"
    skb.data[10:12] = internet_checksum(skb.data[:20]).to_bytes(2, "big")
    return skb


def test_tos_match_masks() -> None:
    rs = rules("filter", "-A INPUT -m tos --tos Minimize-Delay", "-A INPUT -m tos --tos 0x10",
               "-A INPUT -m tos ! --tos 0x11/0xff")
    # a symbolic name compares under mask 0x3f: the precedence bits are ignored, the ECN bits are not
    assert hits(rs, "filter", Hook.LOCAL_IN, tos_packet(0xD0)) == [1, 0, 1]
    assert hits(rs, "filter", Hook.LOCAL_IN, tos_packet(0x11)) == [0, 0, 0]
    assert hits(rs, "filter", Hook.LOCAL_IN, tos_packet(0x10)) == [1, 1, 1]


def test_tos_target_rewrites_and_fixes_the_header_checksum() -> None:
    rs = rules("mangle", "-A PREROUTING -j TOS --set-tos 0x08/0x3f", "-A PREROUTING -j TOS --or-tos 0x02")
    skb = tos_packet(0xD3)
    rs.run("mangle", Hook.PRE_ROUTING, skb, FakeCtx())
    assert skb.data[1] == 0xCA  # (0xD3 & ~0x3f) ^ 0x08, then | 0x02
    assert internet_checksum(skb.data[:20]) == 0


def tcp_flags(flags: int, tos: int = 0) -> Skb:
    skb = tcp("10.0.0.1", 1000, "10.0.0.2", 80, flags)
    skb.data[1] = tos
    return skb


def test_ecn_match() -> None:
    rs = rules("filter", "-A INPUT -p tcp -m ecn --ecn-tcp-ece", "-A INPUT -p tcp -m ecn ! --ecn-tcp-cwr",
               "-A INPUT -m ecn --ecn-ip-ect 2", "-A INPUT -m ecn ! --ecn-ip-ect 2")
    assert hits(rs, "filter", Hook.LOCAL_IN, tcp_flags(0x40 | 0x10, tos=0x02)) == [1, 1, 1, 0]
    assert hits(rs, "filter", Hook.LOCAL_IN, tcp_flags(0x80 | 0x10, tos=0x01)) == [0, 0, 0, 1]


def test_ecn_target_removes_ece_cwr_with_checksum() -> None:
    rs = rules("mangle", "-A FORWARD -p tcp -j ECN --ecn-tcp-remove")
    skb = tcp_flags(0xC2)
    skb.data[36:38] = l4_checksum(0x0A000001, 0x0A000002, 6, skb.data[20:]).to_bytes(2, "big")
    rs.run("mangle", Hook.FORWARD, skb, FakeCtx(Hook.FORWARD))
    assert skb.data[33] == 0x02
    seg = bytearray(skb.data[20:])
    stored = int.from_bytes(seg[16:18], "big")
    seg[16:18] = b"\0\0"
    assert l4_checksum(0x0A000001, 0x0A000002, 6, seg) == stored


def test_tcpmss_match() -> None:
    rs = rules("filter", "-A INPUT -p tcp -m tcpmss --mss 1000:1460", "-A INPUT -p tcp -m tcpmss ! --mss 1460")
    with_mss = tcp("10.0.0.1", 1, "10.0.0.2", 2, options=b"\x01\x01\x02\x04\x05\xb4\x00\x00")
    assert hits(rs, "filter", Hook.LOCAL_IN, with_mss) == [1, 0]
    small = tcp("10.0.0.1", 1, "10.0.0.2", 2, options=b"\x02\x04\x02\x00")
    assert hits(rs, "filter", Hook.LOCAL_IN, small) == [0, 1]
    # no MSS option: matches only the inverted rule (tcpmss_mt's `out: return info->invert`)
    assert hits(rs, "filter", Hook.LOCAL_IN, tcp("10.0.0.1", 1, "10.0.0.2", 2)) == [0, 1]


def test_realm_cpu_policy_in_natbox_model() -> None:
    rs = rules("filter", "-A INPUT -m realm --realm 0", "-A INPUT -m realm --realm 0x2a",
               "-A INPUT -m realm ! --realm 0x2a", "-A INPUT -m cpu --cpu 0", "-A INPUT -m cpu --cpu 1",
               "-A INPUT -m cpu ! --cpu 1", "-A INPUT -m policy --dir in --pol none",
               "-A INPUT -m policy --dir in --pol ipsec", "-A INPUT -m policy --dir in --pol ipsec --proto esp")
    assert hits(rs, "filter", Hook.LOCAL_IN, udp("10.0.0.1", 1, "10.0.0.2", 2)) == [1, 0, 1, 1, 0, 1, 1, 0, 0]
