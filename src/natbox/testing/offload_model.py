"""A Python model of what natbox_offload.bpf.c does with a map entry (tests/offload/test_entry.py, test_entry6.py):
the engine's plans made into entries (natbox.offload.entry) and the program's rewrite applied to a frame, to be
compared with the frame the engine itself forwards.

`rewrite_l4` is the model of the program's nb_rewrite_l4, the step both of its branches share (ports or the
echo id, then the L4 checksum by the plan's differences); each test module models its family's IP header.
"""

from __future__ import annotations

from typing import TypeVar

from natbox.engine.fastpath import FlowPlan
from natbox.offload.entry import OffloadAction, OffloadKey, offload_entry
from natbox.testing.offload import RouterFlowsBase

# router eth0, router eth1, client, server
MACS = (bytes.fromhex("020000000001"), bytes.fromhex("020000000101"), bytes.fromhex("020000000a02"),
        bytes.fromhex("02000000aa02"))
INDEX = {"eth0": 2, "eth1": 3}
R = TypeVar("R", bound=RouterFlowsBase)


def fed(flows: R) -> R:
    """`flows` fed a UDP exchange (client port 40000 to 5000), a TCP connection (40001 to 5001) and echoes
    (id 0x4242)."""
    flows.udp(40000, 5000)
    flows.tcp(40001, 5001)
    flows.ping(0x4242)
    return flows


def entry_of(plan: FlowPlan) -> tuple[OffloadKey, OffloadAction]:
    """The entry of a plan the data path can carry (devices eth0 and eth1 are ifindex 2 and 3)."""
    e = offload_entry(plan, INDEX.__getitem__)
    assert e is not None
    return e


def by_diff(check: int, diff: int) -> int:
    """csum_replace_by_diff: the checksum less `diff` (one's complement), folded as the kernel does."""
    s = (~check & 0xFFFF) + diff
    s = (s & 0xFFFF) + (s >> 16)
    s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def partial_by_diff(check: int, diff: int) -> int:
    """inet_proto_csum_replace_by_diff on a CHECKSUM_PARTIAL skb with pseudohdr: the sum plus `diff`."""
    s = check + diff
    s = (s & 0xFFFF) + (s >> 16)
    return (s & 0xFFFF) + (s >> 16)


def rewrite_l4(f: bytearray, a: OffloadAction, l4: int, csum_at: int, echo_id_at: int | None, udp: bool,
               partial: bool) -> None:
    """nb_rewrite_l4 on frame `f` whose L4 header is at `l4`: the ports (an echo: the id at `echo_id_at`), then
    the checksum at `csum_at` by the entry's differences: the addresses' part on a CHECKSUM_PARTIAL packet
    (BPF_F_PSEUDO_HDR), both on a full one; a UDP datagram without a checksum keeps none, and one whose sum
    comes to 0 gets 0xFFFF (BPF_F_MARK_MANGLED_0)."""
    if echo_id_at is not None:
        f[echo_id_at:echo_id_at + 2] = a.sport.to_bytes(2, "big")
    else:
        f[l4:l4 + 4] = a.sport.to_bytes(2, "big") + a.dport.to_bytes(2, "big")
    check = int.from_bytes(f[csum_at:csum_at + 2], "big")
    if not a.l4_rewrite or (udp and check == 0):
        return
    for diff, pseudo in ((a.l4_addr_diff, True), (a.l4_port_diff, False)):
        if diff and partial and pseudo:
            check = partial_by_diff(check, diff)
        elif diff and not partial:
            check = by_diff(check, diff)
        if udp and check == 0:
            check = 0xFFFF
    f[csum_at:csum_at + 2] = check.to_bytes(2, "big")


def same(ours: bytes | bytearray, engine: bytes, checks: list[int]) -> None:
    """Equal frames, the checksum fields at `checks` as one's-complement values (0 and 0xFFFF alike)."""
    assert len(ours) == len(engine)
    for at in checks:
        a, b = int.from_bytes(ours[at:at + 2], "big"), int.from_bytes(engine[at:at + 2], "big")
        assert a % 0xFFFF == b % 0xFFFF, f"checksum at {at}: {a:#06x} vs {b:#06x}"
    masked = [i for at in checks for i in (at, at + 1)]
    assert bytes(0 if i in masked else x for i, x in enumerate(ours)) == bytes(
        0 if i in masked else x for i, x in enumerate(engine))
