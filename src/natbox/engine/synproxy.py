"""SYNPROXY's per-namespace state, the segments it sends and its hook (net/netfilter/nf_synproxy_core.c).

`SynproxyNet` is `struct synproxy_net` (the statistics of /proc/net/stat/synproxy and the template ct whose
extensions a proxied connection's ct gets) plus the cookie secret, and the IPv4 functions of
nf_synproxy_core.c: `synproxy_send_client_synack`, `synproxy_recv_client_ack` (with
`synproxy_send_server_syn`), `synproxy_send_server_ack`, `synproxy_send_client_ack`, `synproxy_send_tcp` and
`ipv4_synproxy_hook`, which the engine registers at LOCAL_IN and POST_ROUTING at priority
NF_IP_PRI_CONNTRACK_CONFIRM - 1 while a SYNPROXY rule exists (`nf_synproxy_ipv4_init`, engine/hooks.py).

The target (`synproxy_tg4`, rules/targets/synproxy.py) calls the first two through the rules' XtContext.
Every segment is sent as `synproxy_send_tcp` does: routed by its destination (`ip_route_me_harder`,
a non-local source kept), with the ct and ctinfo given (or none), through LOCAL_OUT and POST_ROUTING at
once, in the middle of the packet that caused it (`LocalStack.send_skb`). The cookie secret is drawn from
the engine's random source on first use (`net_get_random_once`); time is the injected clock.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from natbox.conntrack.conn import Conn
from natbox.conntrack.seqadj import NfConnSeqadj, nf_ct_seqadj_init
from natbox.conntrack.syncookies import (
    SyncookieSecret,
    cookie_v4_check,
    cookie_v4_init_sequence,
    cookie_v6_check,
    cookie_v6_init_sequence,
)
from natbox.conntrack.synproxy import (
    NF_SYNPROXY_OPT_ECN,
    NF_SYNPROXY_OPT_MSS,
    NF_SYNPROXY_OPT_SACK_PERM,
    NF_SYNPROXY_OPT_TIMESTAMP,
    NF_SYNPROXY_OPT_WSCALE,
    NfConnSynproxy,
    SynproxyOptions,
    SynproxyStats,
    build_segment,
    build_segment6,
    synproxy_check_timestamp_cookie,
    synproxy_parse_options,
    synproxy_tstamp_adjust,
)
from natbox.conntrack.tuple import ConnTuple
from natbox.engine.host import Host
from natbox.engine.path import NF_STOLEN
from natbox.netfilter import (
    IPPROTO_TCP,
    NF_ACCEPT,
    NF_DROP,
    NFPROTO_IPV6,
    CtInfo,
    CtStatus,
    Direction,
    Hook,
    TcpState,
)
from natbox.rand import RandomSource
from natbox.skb import Skb, Skb6
from natbox.wire.layout import TCPH_ACK_SEQ, TCPH_DEST, TCPH_FLAGS, TCPH_MIN_LEN, TCPH_SEQ, TCPH_SOURCE, TCPH_WINDOW
from natbox.wire.tcp import ACK, CWR, ECE, RST, SYN

__all__ = ["SynproxyNet", "nf_is_loopback_packet"]

_U32: Final = 0xFFFFFFFF
DEFAULT_TTL: Final = 64  # net.ipv4.ip_default_ttl


def nf_is_loopback_packet(skb: Skb, host: Host) -> bool:
    """`nf_is_loopback_packet()`: received (skb_iif set) and on a loopback device now (the input device at
    LOCAL_IN, the output device after routing)."""
    if not skb.iif:
        return False
    dev = host.interfaces.get(skb.iif if skb.hook == Hook.LOCAL_IN else skb.oif)
    return dev is not None and dev.kind == "loopback"


def _u32(data: bytes | bytearray, off: int) -> int:
    return int.from_bytes(data[off:off + 4], "big")


def _u16(data: bytes | bytearray, off: int) -> int:
    return (data[off] << 8) | data[off + 1]


class SynproxyNet:
    """`struct synproxy_net` and the IPv4 half of nf_synproxy_core.c (see the module docstring)."""

    def __init__(self, host: Host, rnd: RandomSource, clock: Callable[[], float]) -> None:
        self.host, self._rnd, self._clock = host, rnd, clock
        self.stats = SynproxyStats()
        self._secrets: list[SyncookieSecret | None] = [None, None]  # syncookie_secret, syncookie6_secret
        # snet->tmpl: a confirmed template carrying both extensions (synproxy_net_init)
        tmpl = self.tmpl = Conn(ConnTuple(0, 0, 0, 0, IPPROTO_TCP), ConnTuple(0, 0, 0, 0, IPPROTO_TCP), now=0.0,
                                ct_id=0)
        tmpl.status = CtStatus.TEMPLATE | CtStatus.CONFIRMED
        tmpl.seqadj, tmpl.synproxy = NfConnSeqadj(), NfConnSynproxy()
        # ip_local_out of a segment in the middle of another packet's path (LocalStack.send_skb, bound by
        # the engine)
        self.send: Callable[[Skb], None] = lambda skb: None
        self.send6: Callable[[Skb6], None] = lambda skb: None  # ip6_local_out (Ip6Output.send_skb6)

    @property
    def secret(self) -> SyncookieSecret:
        """`syncookie_secret` (IPv4), drawn once (`net_get_random_once`)."""
        return self._secret_of(0)

    @property
    def secret6(self) -> SyncookieSecret:
        """`syncookie6_secret` (IPv6), drawn once."""
        return self._secret_of(1)

    def _secret_of(self, v6: int) -> SyncookieSecret:
        secret = self._secrets[v6]
        if secret is None:
            w, m = self._rnd.getrandbits(256), (1 << 64) - 1
            secret = self._secrets[v6] = SyncookieSecret((w & m, (w >> 64) & m, (w >> 128) & m, (w >> 192) & m))
        return secret

    def _cookie(self, skb: Skb, mss: int) -> int:
        """`__cookie_v4_init_sequence` / `nf_ipv6_cookie_init_sequence` for the SYN in `skb`."""
        data, th = skb.data, skb.ihl
        args = (skb.saddr, skb.daddr, _u16(data, th + TCPH_SOURCE), _u16(data, th + TCPH_DEST),
                _u32(data, th + TCPH_SEQ), mss, self._clock())
        if skb.family == NFPROTO_IPV6:
            return cookie_v6_init_sequence(self.secret6, *args)[0]
        return cookie_v4_init_sequence(self.secret, *args)[0]

    def _check(self, skb: Skb) -> int:
        """`__cookie_v4_check` / `nf_cookie_v6_check` for the ACK in `skb`: the MSS, or 0."""
        data, th = skb.data, skb.ihl
        args = (skb.saddr, skb.daddr, _u16(data, th + TCPH_SOURCE), _u16(data, th + TCPH_DEST),
                _u32(data, th + TCPH_SEQ), _u32(data, th + TCPH_ACK_SEQ), self._clock())
        if skb.family == NFPROTO_IPV6:
            return cookie_v6_check(self.secret6, *args)
        return cookie_v4_check(self.secret, *args)

    @staticmethod
    def _build(skb: Skb, saddr: int, daddr: int, sport: int, dport: int, seq: int, ack: int, flags: int,
               window: int, opts: SynproxyOptions) -> bytearray:
        """`synproxy_build_ip` (TTL) or `synproxy_build_ip_ipv6` (hop limit) and the TCP header."""
        build = build_segment6 if skb.family == NFPROTO_IPV6 else build_segment
        return build(saddr, daddr, sport, dport, seq, ack, flags, window, opts, DEFAULT_TTL)

    # --- sending ---------------------------------------------------------------------------------

    def _send_tcp(self, skb: Skb, data: bytearray, ct: Conn | None, ctinfo: CtInfo, what: str) -> None:
        """Mirrors `synproxy_send_tcp()`: the segment leaves through LOCAL_OUT with `ct` attached."""
        v6 = skb.family == NFPROTO_IPV6
        nskb = Skb6(data, pkt_id=skb.pkt_id) if v6 else Skb(data, pkt_id=skb.pkt_id)
        if ct is not None:
            nskb.ct, nskb.ctinfo = ct, ctinfo  # nf_ct_set
        if skb.trace is not None:
            skb.add_trace(f"SYNPROXY: sends {what}")
            nskb.trace = []
        if isinstance(nskb, Skb6):
            self.send6(nskb)  # synproxy_send_tcp_ipv6
        else:
            self.send(nskb)

    def send_client_synack(self, skb: Skb, opts: SynproxyOptions) -> None:
        """Mirrors `synproxy_send_client_synack()`: SYN-ACK with the cookie as ISN, window 0, ECE if ECN."""
        data, th = skb.data, skb.ihl
        sport, dport, seq = _u16(data, th + TCPH_SOURCE), _u16(data, th + TCPH_DEST), _u32(data, th + TCPH_SEQ)
        cookie = self._cookie(skb, opts.mss_encode)
        flags = SYN | ACK | (ECE if opts.options & NF_SYNPROXY_OPT_ECN else 0)
        seg = self._build(skb, skb.daddr, skb.saddr, dport, sport, cookie, seq + 1, flags, 0, opts)
        self._send_tcp(skb, seg, skb.ct, CtInfo.ESTABLISHED_REPLY, f"the client a SYN-ACK with cookie {cookie}")

    def recv_client_ack(self, skb: Skb, opts: SynproxyOptions, recv_seq: int) -> bool:
        """Mirrors `synproxy_recv_client_ack()`: check the cookie (counted valid or invalid); if it is
        valid, the client's options come back from the cookie and its timestamp echo, and
        `synproxy_send_server_syn` opens the server side."""
        data, th = skb.data, skb.ihl
        mss = self._check(skb)
        if mss == 0:
            self.stats.cookie_invalid += 1
            skb.note = "SYNPROXY: the ACK's cookie does not check"
            return False
        self.stats.cookie_valid += 1
        opts.mss_option = mss
        opts.options |= NF_SYNPROXY_OPT_MSS
        if opts.options & NF_SYNPROXY_OPT_TIMESTAMP:
            synproxy_check_timestamp_cookie(opts)
        # synproxy_send_server_syn: the client's ISN, our ISN relayed in ack_seq (not an ACK) to the hook
        flags = SYN | (ECE | CWR if opts.options & NF_SYNPROXY_OPT_ECN else 0)
        seg = self._build(skb, skb.saddr, skb.daddr, _u16(data, th + TCPH_SOURCE), _u16(data, th + TCPH_DEST),
                          recv_seq - 1, _u32(data, th + TCPH_ACK_SEQ) - 1, flags, _u16(data, th + TCPH_WINDOW), opts)
        self._send_tcp(skb, seg, self.tmpl, CtInfo.NEW, f"the server a SYN (cookie valid, mss {mss})")
        return True

    def _send_server_ack(self, ct: Conn, skb: Skb, opts: SynproxyOptions) -> None:
        """Mirrors `synproxy_send_server_ack()`: ACK of the server's SYN-ACK, as from the client (no ct
        attached: conntrack finds it), the window the client's side announced at most."""
        data, th = skb.data, skb.ihl
        assert ct.tcp is not None
        seg = self._build(skb, skb.daddr, skb.saddr, _u16(data, th + TCPH_DEST), _u16(data, th + TCPH_SOURCE),
                          _u32(data, th + TCPH_ACK_SEQ), _u32(data, th + TCPH_SEQ) + 1, ACK,
                          ct.tcp.seen[Direction.ORIGINAL].td_maxwin, opts)
        self._send_tcp(skb, seg, None, CtInfo.NEW, "the server the ACK")

    def _send_client_ack(self, skb: Skb, opts: SynproxyOptions) -> None:
        """Mirrors `synproxy_send_client_ack()`: the window update to the client, as from the server."""
        data, th = skb.data, skb.ihl
        seg = self._build(skb, skb.saddr, skb.daddr, _u16(data, th + TCPH_SOURCE), _u16(data, th + TCPH_DEST),
                          _u32(data, th + TCPH_SEQ) + 1, _u32(data, th + TCPH_ACK_SEQ), ACK,
                          _u16(data, th + TCPH_WINDOW) >> opts.wscale, opts)
        self._send_tcp(skb, seg, skb.ct, CtInfo.ESTABLISHED_REPLY, "the client the window update")

    # --- the hook --------------------------------------------------------------------------------

    def ipv4_synproxy_hook(self, skb: Skb) -> int:
        """Mirrors `ipv4_synproxy_hook()` and `ipv6_synproxy_hook()` (the same steps; IPv6's transport header is
        the one after the extension headers, `skb.ihl`) at LOCAL_IN and POST_ROUTING, just before confirm: for
        a ct with the
        synproxy extension, note our ISN from the SYN to the server, answer the server's SYN-ACK (ACK to
        the server, seqadj, window update to the client; the SYN-ACK is consumed), send a new SYN for a
        client keep-alive in SYN_SENT, handle a reopen from CLOSE, and adjust timestamps otherwise."""
        ct = skb.ct
        if ct is None or ct.synproxy is None or ct.tcp is None or ct.status & CtStatus.TEMPLATE:
            return NF_ACCEPT
        if nf_is_loopback_packet(skb, self.host) or skb.protocol != IPPROTO_TCP:
            return NF_ACCEPT
        data, thoff = skb.data, skb.ihl
        if len(data) < thoff + TCPH_MIN_LEN:
            return NF_DROP
        synproxy = ct.synproxy
        direction = skb.ctinfo.direction
        flags = data[thoff + TCPH_FLAGS]
        seq = _u32(data, thoff + TCPH_SEQ)
        state = ct.tcp.state
        if state == TcpState.CLOSE:
            if flags & RST and direction != Direction.ORIGINAL:
                nf_ct_seqadj_init(ct, direction, synproxy.isn - seq + 1)
            elif flags & (SYN | ACK) == SYN and direction == Direction.ORIGINAL:
                # a reopened connection: reset the adjustments (seqadj_init with 0 changes nothing, as in
                # the kernel); they are set again when the connection is re-established
                nf_ct_seqadj_init(ct, direction, 0)
                synproxy.tsoff = 0
                self.stats.conn_reopened += 1
                state = TcpState.SYN_SENT
        if state == TcpState.SYN_SENT:
            opts = synproxy_parse_options(data, thoff)
            if opts is None:
                return NF_DROP
            if flags & (SYN | ACK) == ACK and direction == Direction.ORIGINAL:
                # a keep-alive (SEG.SEQ = SND.NXT - 1): + 1 makes it the first SYN's sequence number
                if self.recv_client_ack(skb, opts, seq + 1):
                    self.stats.cookie_retrans += 1
                    return NF_STOLEN
                return NF_DROP
            synproxy.isn = _u32(data, thoff + TCPH_ACK_SEQ)
            if opts.options & NF_SYNPROXY_OPT_TIMESTAMP:
                synproxy.its = opts.tsecr
        elif state == TcpState.SYN_RECV and flags & (SYN | ACK) == SYN | ACK:
            opts = synproxy_parse_options(data, thoff)
            if opts is None:
                return NF_DROP
            if opts.options & NF_SYNPROXY_OPT_TIMESTAMP:
                synproxy.tsoff = (opts.tsval - synproxy.its) & _U32
            opts.options &= ~(NF_SYNPROXY_OPT_MSS | NF_SYNPROXY_OPT_WSCALE | NF_SYNPROXY_OPT_SACK_PERM)
            opts.tsval, opts.tsecr = opts.tsecr, opts.tsval
            self._send_server_ack(ct, skb, opts)
            nf_ct_seqadj_init(ct, direction, synproxy.isn - seq)
            opts.tsval, opts.tsecr = opts.tsecr, opts.tsval
            self._send_client_ack(skb, opts)
            if skb.trace is not None:
                skb.add_trace(f"SYNPROXY: the server's SYN-ACK is consumed; seqadj {(synproxy.isn - seq) & _U32} "
                              "in the reply direction")
            return NF_STOLEN
        synproxy_tstamp_adjust(data, thoff, direction == Direction.REPLY, synproxy, skb.csum_partial)
        return NF_ACCEPT

    def ipv6_synproxy_hook(self, skb: Skb) -> int:
        """Mirrors `ipv6_synproxy_hook()`: the same steps as `ipv4_synproxy_hook`, for an Skb6."""
        return self.ipv4_synproxy_hook(skb)
