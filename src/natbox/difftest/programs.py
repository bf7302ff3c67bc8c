"""The programs difftest steps run inside end-host namespaces (`run = "ping"`, servers, clients): one Python
script (stdlib only) taking one JSON argument; the address family follows the addresses (or `v6`)."""

from __future__ import annotations

__all__ = ["PROGRAM"]

# the program steps run inside end-host namespaces (stdlib only; one JSON argument)
PROGRAM = r"""
import json, socket, sys
a = json.loads(sys.argv[1]); role = a["role"]
V6 = ":" in str(a.get("dst", "")) + str(a.get("bind", "")) + str(a.get("src", "")) or a.get("v6", False)
FAM = socket.AF_INET6 if V6 else socket.AF_INET; ANY = "::" if V6 else "0.0.0.0"
def bound(kind):
    s = socket.socket(FAM, kind)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if a.get("src") or a.get("sport"):
        s.bind((a.get("src", ANY), a.get("sport", 0)))
    return s
if role == "udp_server":
    s = socket.socket(FAM, socket.SOCK_DGRAM); s.bind((a.get("bind", ANY), a["port"]))
    print("ready", flush=True)
    while True:
        d, peer = s.recvfrom(65535); s.sendto(d, peer)
elif role == "tcp_server":
    s = socket.socket(FAM, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind((a.get("bind", ANY), a["port"]))
    s.listen(8); print("ready", flush=True)
    while True:
        c, _ = s.accept()
        while True:
            d = c.recv(65535)
            if not d: break
            c.sendall(d)
        c.close()
elif role == "udp_client":
    s = bound(socket.SOCK_DGRAM); s.settimeout(a.get("timeout", 1.0))
    for i in range(a.get("count", 1)):
        s.sendto(a.get("payload", "ping").encode(), (a["dst"], a["dport"]))
        try: print(s.recvfrom(65535)[0].decode(errors="replace"), flush=True)
        except OSError as e: print("no reply:", e, flush=True)
elif role == "ping":
    import struct, time
    def csum(b):
        t = sum(struct.unpack("!%dH" % (len(b) // 2), b + b"\0" * (len(b) % 2)))
        while t >> 16: t = (t & 0xFFFF) + (t >> 16)
        return ~t & 0xFFFF
    s = socket.socket(FAM, socket.SOCK_RAW, socket.IPPROTO_ICMPV6 if V6 else socket.IPPROTO_ICMP)
    s.settimeout(1.0)
    if a.get("src"): s.bind((a["src"], 0))
    ident = a.get("icmp_id", 0x1234); body = bytes(i & 0xFF for i in range(a.get("size", 56)))
    for seq in range(1, a.get("count", 1) + 1):
        m = struct.pack("!BBHHH", 128 if V6 else 8, 0, 0, ident, seq) + body
        s.sendto(m if V6 else m[:2] + struct.pack("!H", csum(m)) + m[4:], (a["dst"], 0))
        try: print("reply from", s.recvfrom(65535)[1][0], flush=True)
        except OSError as e: print("no reply:", e, flush=True)
        time.sleep(a.get("interval", 0.2))
elif role == "tcp_client":
    s = bound(socket.SOCK_STREAM); s.settimeout(a.get("timeout", 2.0))
    s.connect((a["dst"], a["dport"])); data = a.get("payload", "hello").encode()
    for i in range(a.get("count", 1)):
        s.sendall(data); got = b""
        while len(got) < len(data): got += s.recv(65535)
        print(got.decode(errors="replace"), flush=True)
    s.shutdown(socket.SHUT_WR)
    while s.recv(65535): pass
    s.close()
"""
