"""The floor for `bench/live_bench.py`: natbox's own I/O with no engine behind it.

    python bench/bare_forwarder.py LAN_IF LAN_PEER_MAC WAN_IF WAN_PEER_MAC SECONDS

Frames read on one interface leave on the other with the Ethernet addresses rewritten (destination: the
peer's MAC given on the command line; source: the out interface's own), nothing else: no conntrack, no
NAT, no routing, no TTL. It reads and writes exactly as the gateway does (natbox.adapters.packet_socket:
TPACKET_V2 rings, vnet headers, partial checksums left partial, long frames sent from the ring where
they arrived, one sendmsg per frame), so its rate is
what natbox's I/O layer can move on this machine, and natbox's rate divided by it is the engine's share.
The peers need static neighbour entries and routes through it (live_bench sets them up). Stops after
SECONDS or on SIGTERM; prints the number of frames forwarded to stderr.
"""

from __future__ import annotations

import selectors
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from natbox.adapters.packet_socket import PacketSocket


def main(argv: list[str]) -> int:
    if len(argv) != 5:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    lan, lan_peer, wan, wan_peer, seconds = argv
    ports = {lan: PacketSocket(lan, vnet_hdr=True, ring=True, complete_csum=False, zero_copy=True),
             wan: PacketSocket(wan, vnet_hdr=True, ring=True, complete_csum=False, zero_copy=True)}
    own = {name: bytes.fromhex(Path(f"/sys/class/net/{name}/address").read_text().strip().replace(":", ""))
           for name in ports}
    # for a frame read on X: (the port it leaves by, its new Ethernet addresses)
    route = {lan: (ports[wan], bytes.fromhex(wan_peer.replace(":", "")) + own[wan]),
             wan: (ports[lan], bytes.fromhex(lan_peer.replace(":", "")) + own[lan])}
    sel = selectors.DefaultSelector()
    for name, port in ports.items():
        sel.register(port.fileno(), selectors.EVENT_READ, name)
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    end = time.monotonic() + float(seconds)
    forwarded = 0
    while not stopping and time.monotonic() < end:
        for key, _mask in sel.select(0.2):
            out, macs = route[key.data]
            send = out.send
            for frame, gso_type, gso_size, partial in ports[key.data].recv_batch(64):
                if type(frame) is memoryview:  # a long frame, still in the ring: only the addresses are new
                    forwarded += send(macs, gso_type, gso_size, partial, True, frame[12:])
                else:
                    forwarded += send(b"".join((macs, frame[12:])), gso_type, gso_size, partial, True)
    print(f"bare forwarder: forwarded {forwarded}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
