"""util-print.c's txtproto_print (HTTP, WHOIS, SMTP, FTP, SIP first lines) and print-ssh.c."""

from __future__ import annotations

from natbox.render.dissect import Packet, Truncated

HTTP_CMDS = frozenset({
    "GET", "PUT", "COPY", "HEAD", "LOCK", "MOVE", "POLL", "POST", "BCOPY", "BMOVE", "MKCOL", "TRACE", "LABEL",
    "MERGE", "DELETE", "SEARCH", "UNLOCK", "REPORT", "UPDATE", "NOTIFY", "BDELETE", "CONNECT", "OPTIONS",
    "CHECKIN", "PROPFIND", "CHECKOUT", "CCM_POST", "SUBSCRIBE", "PROPPATCH", "BPROPFIND", "BPROPPATCH",
    "UNCHECKOUT", "MKACTIVITY", "MKWORKSPACE", "UNSUBSCRIBE", "RPC_CONNECT", "VERSION-CONTROL",
    "BASELINE-CONTROL",
})
SIP_CMDS = frozenset({"ACK", "BYE", "CANCEL", "DO", "INFO", "INVITE", "MESSAGE", "NOTIFY", "OPTIONS", "PRACK",
                       "QAUTH", "REFER", "REGISTER", "SPRACK", "SUBSCRIBE", "UPDATE", "PUBLISH"})


def txtproto_print(p: Packet, off: int, length: int, proto: str, cmds: frozenset[str] | None) -> None:
    """txtproto_print() at default verbosity: PROTO, then `: first line` if it is a request/response."""
    p.proto = proto
    b = p.b
    print_this = cmds is None
    if cmds is not None:
        idx, tok = _fetch_token(p, off, 0, length)
        if idx:
            if tok.upper() in cmds:
                print_this = True
            idx, tok = _fetch_token(p, off, idx, length)
            if idx and len(tok) == 3 and tok.isdigit():
                print_this = True
    p.w(proto.upper())
    if not print_this:
        return
    idx = 0
    while idx < length:
        c = p.u8(off + idx)
        if c == 0x0A:
            break
        if c == 0x0D:
            if idx + 1 >= length:
                return
            if p.u8(off + idx + 1) == 0x0A:
                break
            return
        if not (0x20 <= c <= 0x7E) and c != 0x09:
            return
        idx += 1
    else:
        p.w(": " + b[off:off + idx].decode("ascii"))
        raise Truncated
    p.w(": " + b[off:off + idx].decode("ascii"))


def _fetch_token(p: Packet, off: int, idx: int, length: int) -> tuple[int, str]:
    """fetch_token(): (index after the token and following blanks, token) or (0, "")."""
    start = idx
    while idx < length:
        if not p.has(off + idx, 1):
            return 0, ""
        c = p.b[off + idx]
        if c >= 0x80:
            return 0, ""
        if c in (0x20, 0x09, 0x0D, 0x0A):
            break
        if not 0x20 <= c <= 0x7E:
            return 0, ""
        if idx - start + 2 > 129:
            return 0, ""
        idx += 1
    if idx == start:
        return 0, ""
    tok = p.b[off + start:off + idx].decode("ascii")
    while idx < length and p.has(off + idx, 1):
        c = p.b[off + idx]
        if c in (0x0D, 0x0A) or not 0x20 <= c <= 0x7E or c not in (0x20, 0x09):
            break
        idx += 1
    return idx, tok


def ssh_print(p: Packet, off: int, length: int) -> None:
    """ssh_print(): the identification line (`SSH-…`) only."""
    p.proto = "ssh"
    for i, ch in enumerate(b"SSH-"):
        if p.u8(off + i) != ch:
            return
    idx = 4
    while idx < length:
        c = p.u8(off + idx)
        if c == 0x0A:
            break
        if c == 0x0D:
            if idx + 1 >= length or p.u8(off + idx + 1) != 0x0A:
                return
            break
        if not 0x20 <= c <= 0x7E:
            return
        idx += 1
    else:
        return
    p.w(": SSH: " + p.b[off:off + idx].decode("ascii"))

