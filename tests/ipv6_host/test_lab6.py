"""`natbox lab` with IPv6: addresses (ULA and 2001:db8::/32, added nodad) and IPv6 routes, only with ipv6 = true."""

from __future__ import annotations

import pytest

from natbox.lab.builder import plan_up
from natbox.lab.model import LabError, parse_lab_toml

LAB6 = """name = "six"
ipv6 = true
[[node]]
name = "client"
routes = ["default via fd00:1::1", "default via 10.0.1.1"]
[[node]]
name = "gw"
sysctls = { "net.ipv6.conf.all.forwarding" = "1" }
[[link]]
a = { node = "client", name = "eth0", addresses = ["10.0.1.2/24", "fd00:1::2/64"] }
b = { node = "gw", name = "lan0", addresses = ["10.0.1.1/24", "fd00:1::1/64"] }
"""


def test_ipv6_addresses_and_routes_planned() -> None:
    cmds = [" ".join(c) for c in plan_up(parse_lab_toml(LAB6, "six.toml"))]
    assert not any("disable_ipv6" in c for c in cmds)
    assert any(c.endswith("addr add fd00:1::2/64 dev eth0 nodad") for c in cmds)
    assert any(c.endswith("addr add 10.0.1.2/24 dev eth0") for c in cmds)
    assert any(c.endswith("-6 route add default via fd00:1::1") for c in cmds)
    assert any(c.endswith("nbx-six-client route add default via 10.0.1.1") for c in cmds)


@pytest.mark.parametrize(("text", "message"), [
    (LAB6.replace("ipv6 = true", "ipv6 = false"),
     "six.toml: fd00:1::2/64: IPv6 needs ipv6 = true (IPv6 is disabled in every node otherwise)"),
    (LAB6.replace("fd00:1::2/64", "2001:4860::2/64"),
     "only fd00::/8 and 2001:db8::/32 are allowed for IPv6 in a lab"),
    (LAB6.replace("default via fd00:1::1", "2606:4700::/32 via fd00:1::1"),
     "2606:4700::/32: only fd00::/8, 2001:db8::/32 and link-local addresses are allowed for IPv6 in a lab"),
])
def test_ipv6_refused(text: str, message: str) -> None:
    with pytest.raises(LabError) as exc:
        parse_lab_toml(text, "six.toml")
    assert message in str(exc.value)
