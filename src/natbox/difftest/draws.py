"""`-m statistic --mode random` in a differential test: following the kernel's random choices (§10).

The kernel draws `get_random_u32()` for each packet a `-m statistic --mode random --probability P` rule sees
(`statistic_mt`, xt_statistic.c) and keeps no seed anyone can read, so which of kube-proxy's KUBE-SEP chains
a new connection took is random. §10's rule for random choices is to compare what must hold whatever the
draw was, and it allows an injectable RNG so that the kernel's choice can be replayed. natbox's statistic
match draws from `XtContext.random_u32()`; the replay (natbox_side) replaces that source with a `DrawScript`:

- Each input frame may have a scripted list of outcomes: `True` makes the draw 0 (below every probability
  > 0: the rule matches), `False` makes it 0x7FFFFFFF (at or above every probability < 1: no match). A frame
  without a script (or past its end) draws from a SplitMix64 seeded as the engine is.
- When a replay's output first differs from the kernel's in an address (`first_divergence`: the Ethernet and
  IP addresses of a frame at the same position on the same interface, or a frame one side lacks), and the
  latest input frame at or before it made draws, that frame's script moves to the next outcome of a chain of
  Bernoulli rules: [T], [F, T], [F, F, T], ... (the 1st, 2nd, 3rd ... rule of the chain matches). A script
  that the chain did not consume to its end was its last rule (kube-proxy's unconditional last endpoint): no
  outcome is left, and the difference stands.

So natbox is held only to choices its own rules allow, and everything after the choice (DNAT, the mark,
MASQUERADE, replies, conntrack, counters) is compared as usual. `NatboxRun.draw_script` records the outcomes
used, by input frame.
"""

from __future__ import annotations

from natbox.difftest.packets import decode_frame
from natbox.rand import SplitMix64

__all__ = ["MAX_REPLAYS", "DrawScript", "first_divergence", "next_outcomes"]

MAX_REPLAYS = 64  # whole replays one scenario may take while following the kernel's draws
DRAW_MATCH = 0  # below every probability > 0
DRAW_NO_MATCH = 0x7FFFFFFF  # `(r & 0x7FFFFFFF) < p` is false for every p <= 0x7FFFFFFF (probability < 1)
_ADDRESS_FIELDS = ("eth.dst", "eth.src", "ip.src", "ip.dst")


class DrawScript:
    """The outcomes `random_u32` gives, per input frame (see the module docstring)."""

    def __init__(self, script: dict[int, list[bool]], seed: int) -> None:
        self.script = script
        self.frame = -1  # the input frame being received
        self.used: dict[int, int] = {}  # input frame -> draws it made
        self._rnd = SplitMix64(seed)

    def random_u32(self) -> int:
        """`get_random_u32()` for `statistic_mt`: the scripted outcome, else the seeded stream."""
        n = self.used.get(self.frame, 0)
        self.used[self.frame] = n + 1
        outcomes = self.script.get(self.frame)
        if outcomes is not None and n < len(outcomes):
            return DRAW_MATCH if outcomes[n] else DRAW_NO_MATCH
        return self._rnd.getrandbits(32)


def _addresses(frame: bytes) -> tuple[object, ...]:
    fields = {name: value for name, value, _ in decode_frame(frame)}
    return tuple(fields.get(name) for name in _ADDRESS_FIELDS)


def first_divergence(kernel: dict[str, list[tuple[float, bytes]]], natbox: dict[str, list[tuple[int, bytes]]],
                     input_times: list[float]) -> int | None:
    """The earliest input frame (index) whose output differs from the kernel's in an address, or None.

    `kernel`: per interface the IPv4 frames the kernel sent (time, frame); `natbox`: per interface the IPv4
    frames natbox sent (index of the input frame that made it, frame); `input_times`: the input frames' times
    (ascending), to place a kernel frame natbox did not send."""
    earliest: int | None = None
    for iface in set(kernel) | set(natbox):
        ks, ns = kernel.get(iface, []), natbox.get(iface, [])
        for n in range(max(len(ks), len(ns))):
            if n < len(ks) and n < len(ns):
                if _addresses(ks[n][1]) == _addresses(ns[n][1]):
                    continue
                at = ns[n][0]
            elif n < len(ns):
                at = ns[n][0]
            else:
                at = max((i for i, t in enumerate(input_times) if t <= ks[n][0]), default=0)
            earliest = at if earliest is None else min(earliest, at)
            break
    return earliest


def next_outcomes(current: list[bool] | None, consumed: int) -> list[bool] | None:
    """The next outcomes to try for a frame whose draws led to a difference, or None when none are left.

    `current`: the frame's script in the replay that differed (None: it drew from the seeded stream);
    `consumed`: how many draws that frame made."""
    if current is None:
        return [True]
    if consumed < len(current):
        return None  # the chain ended before the scripted match: its last (unconditional) rule was taken
    return [False] * len(current) + [True]
