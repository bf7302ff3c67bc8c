"""The traffic behind `natbox conntrack --control S ARGS` against the real `conntrack ARGS`, for both families
(tests/live/test_conntrack_cli.py, tests/live/test_gateway_live6.py): a replied UDP exchange, a UDP datagram
to a closed port and a TCP connection held ESTABLISHED, the client ports shifted by `off` in the second run;
and the listing normalised so that two runs compare."""

from __future__ import annotations

import re
import subprocess
import sys

from natbox.lab.model import Lab
from natbox.testing.live import ns_popen

UDP_ECHO = """
import socket
s = socket.socket({af}, socket.SOCK_DGRAM); s.bind(("{any}", 5002)); s.settimeout(20)
print("listening", flush=True)
data, peer = s.recvfrom(2048)
s.sendto(data, peer)
"""
TCP_HOLD_SERVER = """
import socket
s = socket.socket({af}); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("{any}", 5001))
s.listen(1); s.settimeout(30)
print("listening", flush=True)
c, _ = s.accept(); c.settimeout(60)
c.recv(10)
c.recv(10)
"""
# "held" once the TCP connection's byte is acknowledged (SIOCOUTQ 0): nothing is in flight when it is listed
TRAFFIC = """
import fcntl, socket, struct, sys, termios, time
off = int(sys.argv[1])
u = socket.socket({af}, socket.SOCK_DGRAM); u.bind(("{any}", 42001 + off)); u.settimeout(5)
for _ in range(3):
    u.sendto(b"hi", ("{dst}", 5002))
    try:
        u.recvfrom(100); break
    except TimeoutError:
        pass
c = socket.socket({af}, socket.SOCK_DGRAM); c.bind(("{any}", 42003 + off)); c.sendto(b"x", ("{dst}", 5999))
t = socket.create_connection(("{dst}", 5001), timeout=10, source_address=("{any}", 42002 + off))
t.send(b"x")
end = time.monotonic() + 10
while struct.unpack("i", fcntl.ioctl(t, termios.TIOCOUTQ, bytes(4)))[0] and time.monotonic() < end:
    time.sleep(0.01)
print("held", flush=True)
sys.stdin.readline()
"""


def _script(template: str, server: str) -> str:
    v6 = ":" in server
    return (template.replace("{af}", "socket.AF_INET6" if v6 else "socket.AF_INET")
            .replace("{any}", "::" if v6 else "0.0.0.0").replace("{dst}", server))


def start_traffic(lab: Lab, server: str, off: int) -> tuple[subprocess.Popen[bytes], list[subprocess.Popen[bytes]]]:
    """The servers on node "server" (listening), then the client on node "client" once it holds the TCP
    connection: (client, servers), ended by end_traffic."""
    servers = []
    for code in (UDP_ECHO, TCP_HOLD_SERVER):
        p = ns_popen(lab, "server", [sys.executable, "-c", _script(code, server)])
        assert p.stdout is not None and p.stdout.readline().strip() == b"listening"
        servers.append(p)
    client = subprocess.Popen(["ip", "netns", "exec", lab.netns("client"), sys.executable, "-c",
                               _script(TRAFFIC, server), str(off)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert client.stdout is not None and client.stdout.readline().strip() == b"held", client.stderr
    return client, servers


def end_traffic(client: subprocess.Popen[bytes], servers: list[subprocess.Popen[bytes]]) -> None:
    for p in (client, *servers):
        p.kill()
        p.wait()


def with_ports(args: list[str], off: int) -> list[str]:
    """A command line with CLIENT_PORT as the replied UDP exchange's client port of that run."""
    return [str(42001 + off) if a == "CLIENT_PORT" else a for a in args]


def normalise(text: str, off: int) -> list[str]:
    """Lines sorted, with what legitimately differs between two runs made equal: the client ports of the
    second run shifted back, timeouts, ids (ping's echo id is its own in each run)."""
    out = []
    for line in text.splitlines():
        line = re.sub(r"\b(420\d\d)\b", lambda m: str(int(m.group(1)) - off), line)
        line = re.sub(r"((?:tcp|udp|icmpv6|icmp)\s+\d+ )\d+ ", r"\1T ", line)
        line = re.sub(r"<timeout>\d+</timeout>", "<timeout>T</timeout>", line)
        line = re.sub(r"-t \d+ ", "-t T ", line)
        line = re.sub(r"\bid=\d+$", "id=ID", line)
        line = re.sub(r"\bid=\d+ ", "id=PING ", line)
        line = re.sub(r"--icmpv6-id \d+", "--icmpv6-id PING", line)
        line = re.sub(r"<id>\d+</id>", "<id>ID</id>", line)
        out.append(line)
    return sorted(out)



_TIMEOUT_STATE = re.compile(r"\b((?:tcp|udp|udplite|icmp|icmpv6|sctp|dccp|unknown)\s+\d+ )(?:T |\d+ )(?:[A-Z_]+ )?")


def offloaded_form(line: str) -> str:
    """A `conntrack -L` line (default, extended, xml or save output, normalised) as ctnetlink lists the same
    entry once it is offloaded (`ctnetlink_dump_info`: no timeout and no protoinfo, so no TCP state; IPS_OFFLOAD
    prints `[OFFLOAD]` where `[ASSURED]` stood; the flowtable holds a reference: `use` one more; xml and save
    print only the attributes the dump carried). docs/differences.md, "Flow offload"."""
    if line.startswith("<flow>"):
        line = re.sub(r"<state>[A-Z_]+</state>|<timeout>\w+</timeout>", "", line)
        return re.sub(r"<use>(\d+)</use>", lambda m: f"<use>{int(m.group(1)) + 1}</use>", line)
    if line.startswith("-A "):
        return re.sub(r" --state [A-Z_]+", "", re.sub(r"^-A -t \w+ ", "-A ", line))
    line = _TIMEOUT_STATE.sub(r"\1", line, count=1)
    if "[ASSURED] " in line:
        line = line.replace("[ASSURED] ", "[OFFLOAD] ")
    else:
        line = line.replace("mark=", "[OFFLOAD] mark=", 1)
    return re.sub(r"\buse=(\d+)", lambda m: f"use={int(m.group(1)) + 1}", line)


def expect_offloaded(kernel: list[str], ours: list[str]) -> list[str]:
    """The kernel's normalised listing with each entry natbox lists in its offloaded form (see offloaded_form)
    taken in that form: what a gateway run with --offload must print for the same traffic. Every other line,
    and the offloaded ones but for those fields, must still be the kernel's."""
    listed = set(ours)
    return sorted(off if line not in listed and (off := offloaded_form(line)) in listed else line for line in kernel)
