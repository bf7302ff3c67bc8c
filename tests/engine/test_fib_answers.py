"""`Fib.lookup` keeps its answers per destination: they must stay what `fib_lookup` would answer.

A device's `up` can change without a rebuild (the host model is plain data), and a route whose device is
down is passed over (`fib_lookup` skips it); a kept answer must follow both ways.
"""

from __future__ import annotations

from natbox.engine.host import Host, Interface, Route
from natbox.engine.routing import FIB_CACHE_MAX, Fib
from natbox.wire.ipv4 import str_to_addr

DST = str_to_addr("198.51.100.7")


def _host() -> Host:
    """eth1 holds 198.51.100.0/24 (connected); a host route sends DST by eth2 (the longer prefix)."""
    host = Host()
    for name in ("eth0", "eth1", "eth2"):
        host.add_interface(Interface(name))
    host.add_address("eth0", str_to_addr("10.0.1.1"), 24)
    host.add_address("eth1", str_to_addr("198.51.100.1"), 24)
    host.add_address("eth2", str_to_addr("192.168.9.1"), 24)
    host.routes.append(Route(DST, 32, "eth2", str_to_addr("192.168.9.2")))
    return host


def test_an_answer_follows_its_device_going_down_and_up_without_a_rebuild() -> None:
    host = _host()
    fib = Fib(host)
    first = fib.lookup(DST)
    assert first is not None and (first.dev, first.nexthop) == ("eth2", str_to_addr("192.168.9.2"))
    assert fib.lookup(DST) == first
    host.interfaces["eth2"].up = False  # no rebuild: the host route is passed over, the connected one answers
    down = fib.lookup(DST)
    assert down is not None and (down.dev, down.nexthop) == ("eth1", DST)
    host.interfaces["eth2"].up = True  # the answer found while eth2 was down was not kept
    assert fib.lookup(DST) == first


def test_a_rebuild_forgets_the_answers() -> None:
    host = _host()
    fib = Fib(host)
    assert fib.lookup(str_to_addr("172.16.0.1")) is None
    host.routes.append(Route(0, 0, "eth0", str_to_addr("10.0.1.254")))
    fib.rebuild()
    default = fib.lookup(str_to_addr("172.16.0.1"))
    assert default is not None and (default.dev, default.nexthop) == ("eth0", str_to_addr("10.0.1.254"))
    host.routes.pop(0)  # the host route via eth2 goes
    fib.rebuild()
    again = fib.lookup(DST)
    assert again is not None and again.dev == "eth1"


def test_the_answers_are_bounded() -> None:
    host = _host()
    host.routes.append(Route(0, 0, "eth0", str_to_addr("10.0.1.254")))
    fib = Fib(host)
    for i in range(FIB_CACHE_MAX + 10):
        res = fib.lookup(str_to_addr("172.16.0.0") + i)
        assert res is not None and res.dev == "eth0"
    assert len(fib._answers) <= FIB_CACHE_MAX
