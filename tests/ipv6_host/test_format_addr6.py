"""One IPv6 address printer for all of natbox: glibc's inet_ntop6 (conntrack -L, ip6tables -n)."""

from __future__ import annotations

import random
import socket

import pytest

from natbox.rules import addr6
from natbox.wire.ipv6 import format_addr6


@pytest.mark.parametrize(("text", "expected"), [
    ("::ffff:1.2.3.4", "::ffff:1.2.3.4"),
    ("::1.2.3.4", "::1.2.3.4"),
    ("::2", "::2"),
    ("::", "::"),
    ("fd00::2", "fd00::2"),
    ("2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"),
    ("::5efe:102:304", "::5efe:102:304"),
])
def test_known_forms(text: str, expected: str) -> None:
    assert format_addr6(int.from_bytes(socket.inet_pton(socket.AF_INET6, text), "big")) == expected


def test_rules_and_wire_share_the_function() -> None:
    assert addr6.format_addr6 is format_addr6


def test_random_words_as_glibc() -> None:
    rng = random.Random(7)
    for _ in range(20000):
        words = [rng.choice((0, 0, 0, 1, 0xFFFF, rng.randrange(65536))) for _ in range(8)]
        a = 0
        for w in words:
            a = a << 16 | w
        assert format_addr6(a) == socket.inet_ntop(socket.AF_INET6, a.to_bytes(16, "big"))
