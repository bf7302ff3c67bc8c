"""The gateway's `ip addr add|del` control command (what `natbox difftest --live` mirrors of a scenario's
`ip addr` steps): natbox's own addresses change, both families, with ip's messages for bad input."""

from __future__ import annotations

import io

from natbox.engine.engine import Engine
from natbox.engine.host import Host, Interface
from natbox.gateway.commands import ip_addr_command
from natbox.wire.ipv6 import parse_addr6


def _engine() -> Engine:
    host = Host(ip_forward=True, ipv6_forward=True)
    host.add_interface(Interface("wan0", mac=b"\x02\x00\x00\x00\x00\x02"))
    host.add_address("wan0", 0xC6336401, 24)  # 198.51.100.1/24
    host.add_address6("wan0", parse_addr6("2001:db8:100::1"), 64)
    return Engine(host)


def _run(engine: Engine, *argv: str) -> tuple[int, str]:
    err = io.StringIO()
    return ip_addr_command(engine, list(argv), err), err.getvalue()


def test_ip_addr_add_and_del_both_families() -> None:
    eng = _engine()
    wan = eng.host.interfaces["wan0"]
    assert _run(eng, "addr", "add", "2001:db8:100::7/64", "dev", "wan0") == (0, "")
    assert parse_addr6("2001:db8:100::7") in [a.addr for a in wan.addresses6]
    assert _run(eng, "addr", "del", "2001:db8:100::1/64", "dev", "wan0") == (0, "")
    assert parse_addr6("2001:db8:100::1") not in [a.addr for a in wan.addresses6]
    assert _run(eng, "addr", "add", "198.51.100.5/24", "dev", "wan0") == (0, "")
    assert _run(eng, "addr", "del", "198.51.100.1/24", "dev", "wan0") == (0, "")
    assert [a.addr for a in wan.addresses] == []  # .5 was its secondary: gone with it (promote_secondaries=0)


def test_ip_addr_refuses_what_it_does_not_serve() -> None:
    eng = _engine()
    assert _run(eng, "link", "set", "wan0", "down")[0] == 2
    assert _run(eng, "addr", "add", "10.0.0.1/8", "dev", "eth9") == (1, 'Cannot find device "eth9"\n')
    assert _run(eng, "addr", "add", "fd00::zz/64", "dev", "wan0") == (
        1, 'Error: any valid prefix is expected rather than "fd00::zz/64".\n')
