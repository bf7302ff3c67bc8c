"""print-esp.c without decryption and isakmp_rfc3948_print (ESP-in-UDP, NAT-T keepalives)."""

from __future__ import annotations

from natbox.render.dissect import Packet, Truncated


def esp_print(p: Packet, off: int, length: int) -> None:
    """esp_print() without decryption: SPI, sequence number, length."""
    p.proto = "esp"
    if off + 8 >= p.end:
        raise Truncated
    p.w(f"ESP(spi=0x{p.u32(off):08x},seq=0x{p.u32(off + 4):x}), length {length}")


def isakmp_rfc3948_print(p: Packet, off: int, length: int) -> None:
    """isakmp_rfc3948_print(): NAT-T keepalive, ESP-in-UDP; IKE (non-ESP marker) is not decoded."""
    p.proto = "isakmp_rfc3948"
    if length == 1 and p.u8(off) == 0xFF:
        p.w("isakmp-nat-keep-alive")
        return
    if length < 4:
        raise Truncated
    if p.u32(off) == 0:
        # An IKE message behind the non-ESP marker: tcpdump goes on with isakmp_print(), not done here.
        p.w("NONESP-encap: ")
        return
    p.w("UDP-encap: ")
    esp_print(p, off, length)

