"""The output formats of `conntrack -L -o ...` (conntrack-tools 1.4.7, libnetfilter_conntrack 1.0.9) for the
live table: the default line (natbox.conntrack.format), `extended`, `id`, `xml` and `save`.

`xml` mirrors `__snprintf_conntrack_xml()`: one `<flow>` per line between a header and `</conntrack>`
(neither printed when nothing is listed), the original and reply tuples as `<meta direction=...>` with
their layer-3 and layer-4 parts (ICMP's layer 4 is empty there), then the independent part: TCP state,
timeout, mark, zone when set, use, id, and `<assured/>` / `<unreplied/>`. `save` mirrors
`__snprintf_conntrack_save()`: the `conntrack -A ...` arguments that would recreate the entry.
`timestamp`, `ktimestamp`, `labels` and `userspace` change nothing here (natbox keeps no start/stop
timestamps or labels, as a kernel with nf_conntrack_timestamp=0 shows none), as in conntrack.
"""

from __future__ import annotations

from natbox.conntrack.conn import Conn
from natbox.conntrack.format import PROTO_NAMES, format_conntrack
from natbox.conntrack.proto.tcp import TCP_CONNTRACK_NAMES
from natbox.conntrack.tuple import ConnTuple, format_addr
from natbox.netfilter import IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, NFPROTO_IPV4, CtStatus
from natbox.wire.ipv6 import format_addr6

__all__ = ["OUTPUT_TYPES", "XML_FOOTER", "XML_HEADER", "format_line", "format_save", "format_xml"]

OUTPUT_TYPES = frozenset({"extended", "xml", "id", "timestamp", "ktimestamp", "labels", "userspace", "save"})
XML_HEADER = '<?xml version="1.0" encoding="utf-8"?>\n<conntrack>\n'
XML_FOOTER = "</conntrack>\n"
_PORT_PROTOS = frozenset({6, 17, 33, 132, 136})


def _tcp_state(ct: Conn) -> str | None:
    if ct.tuples[0].proto != IPPROTO_TCP:
        return None
    state = int(ct.tcp.state) if ct.tcp is not None else 0
    return TCP_CONNTRACK_NAMES[state] if state < len(TCP_CONNTRACK_NAMES) else "NONE"


def format_line(ct: Conn, now: float, outputs: frozenset[str]) -> str:
    """The text line of `ct` with `-o extended` and/or `-o id` applied."""
    line = format_conntrack(ct, now, extended="extended" in outputs)
    return line + f" id={ct.ct_id}" if "id" in outputs else line


def _addr(addr: int, l3num: int) -> str:
    """An address as inet_ntop prints it for the entry's family (an IPv6 one may fit 32 bits: ::1)."""
    return format_addr(addr) if l3num == NFPROTO_IPV4 else format_addr6(addr)


def _xml_tuple(t: ConnTuple, direction: str, l3num: int) -> str:
    proto = t.proto
    l4 = ""
    if proto in _PORT_PROTOS:
        l4 = f"<sport>{t.sport}</sport><dport>{t.dport}</dport>"
    l3 = 'protonum="2" protoname="ipv4"' if l3num == NFPROTO_IPV4 else 'protonum="10" protoname="ipv6"'
    return (f'<meta direction="{direction}"><layer3 {l3}><src>{_addr(t.src, l3num)}</src>'
            f'<dst>{_addr(t.dst, l3num)}</dst></layer3><layer4 protonum="{proto}" '
            f'protoname="{PROTO_NAMES.get(proto, "unknown")}">{l4}</layer4></meta>')


def format_xml(ct: Conn, now: float) -> str:
    """One `<flow>` element (`__snprintf_conntrack_xml`)."""
    orig, reply = ct.tuples
    l3num = ct.l3num
    parts = ['<flow>', _xml_tuple(orig, "original", l3num), _xml_tuple(reply, "reply", l3num),
             '<meta direction="independent">']
    # an offloaded entry's dump has no timeout and no protoinfo (ctnetlink_dump_info), so libnetfilter_conntrack
    # prints neither; the flow entry holds a reference (use 2), as the default line shows (format_conntrack)
    offloaded = bool(ct.status & CtStatus.OFFLOAD)
    state = None if offloaded else _tcp_state(ct)
    if state is not None:
        parts.append(f"<state>{state}</state>")
    if not offloaded:
        parts.append(f"<timeout>{int(max(ct.timeout - now, 0.0))}</timeout>")
    parts.append(f"<mark>{ct.mark}</mark>")
    if ct.zone:
        parts.append(f"<zone>{ct.zone}</zone>")
    parts.append(f"<use>{2 if offloaded else 1}</use><id>{ct.ct_id}</id>")
    if ct.status & CtStatus.ASSURED:
        parts.append("<assured/>")
    if not ct.status & CtStatus.SEEN_REPLY:
        parts.append("<unreplied/>")
    parts.append("</meta></flow>")
    return "".join(parts)


def format_save(ct: Conn, now: float) -> str:
    """The `conntrack -A` arguments recreating `ct` (`__snprintf_conntrack_save`)."""
    orig, reply = ct.tuples
    flags = [name for bit, name in ((CtStatus.SEEN_REPLY, "SEEN_REPLY"), (CtStatus.ASSURED, "ASSURED"))
             if ct.status & bit]
    offloaded = bool(ct.status & CtStatus.OFFLOAD)  # no timeout, no TCP state in its dump (ctnetlink_dump_info)
    timeout = "" if offloaded else f"-t {int(max(ct.timeout - now, 0.0))} "
    parts = [f"-A {timeout}-u {','.join(flags) or 'UNSET'}"]
    if ct.mark:
        parts.append(f"-m {ct.mark}")
    if ct.zone:
        parts.append(f"-w {ct.zone}")
    # a NATed direction shows as the NAT option (-g: DNAT to reply.src, -n: SNAT to reply.dst)
    dnat = "-g" if orig.dst != reply.src else "-r"
    snat = "-n" if orig.src != reply.dst else "-q"
    l3num = ct.l3num
    parts.append(f"-s {_addr(orig.src, l3num)} -d {_addr(orig.dst, l3num)} {dnat} {_addr(reply.src, l3num)} "
                 f"{snat} {_addr(reply.dst, l3num)} -p {PROTO_NAMES.get(orig.proto, str(orig.proto))}")
    if orig.proto in _PORT_PROTOS:
        parts.append(f"--sport {orig.sport} --dport {orig.dport} --reply-port-src {reply.sport} "
                     f"--reply-port-dst {reply.dport}")
    elif orig.proto == IPPROTO_ICMP:
        parts.append(f"--icmp-type {orig.dport >> 8} --icmp-code {orig.dport & 0xFF} --icmp-id {orig.sport}")
    elif orig.proto == IPPROTO_ICMPV6:
        parts.append(f"--icmpv6-type {orig.dport >> 8} --icmpv6-code {orig.dport & 0xFF} --icmpv6-id {orig.sport}")
    state = None if offloaded else _tcp_state(ct)
    if state is not None:
        parts.append(f"--state {state}")
    return " ".join(parts)
