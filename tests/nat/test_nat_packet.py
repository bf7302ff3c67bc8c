"""nf_nat_packet (§4.7): one rewrite for traced and untraced packets."""

from __future__ import annotations

from natbox.conntrack.tuple import ConnTuple
from natbox.netfilter import CtInfo, Hook
from natbox.skb import Skb
from natbox.testing.natpkt import UDP, A, Lab, snat_to, tcp_packet, udp_packet

C = A("192.168.1.2")
S = A("198.51.100.7")


def test_traced_and_untraced_packets_get_the_same_rewrite() -> None:
    """nf_nat_packet runs one rewrite (nf_nat_manip_pkt) whether or not the packet is traced (--explain)."""
    lab = Lab()
    for proto, orig_port in ((UDP, 5353), (6, 40000)):
        ct = lab.flow(ConnTuple(C, orig_port, S, 80, proto), snat=snat_to("203.0.113.1", 20000, 20000))
        for partial in (False, True):
            outs = []
            traces: tuple[list[str] | None, ...] = (None, [])
            for trace in traces:
                data = (udp_packet(C, orig_port, S, 80, b"payload") if proto == UDP
                        else tcp_packet(C, orig_port, S, 80, b"payload", flags=0x10))
                skb = Skb(bytearray(data))
                skb.trace = trace
                skb.csum_partial = partial
                assert lab.nat.nat_packet(skb, ct, CtInfo.NEW, Hook.POST_ROUTING) == 1
                outs.append(bytes(skb.data))
                if trace is not None:
                    assert any("-> 203.0.113.1:20000" in line for line in trace)
            assert outs[0] == outs[1]
            assert outs[0][12:16] == A("203.0.113.1").to_bytes(4, "big")
