"""What iptables 1.8.9 (nf_tables) printed for the SCTP match and the SECMARK, CONNSECMARK, TEE, NFQUEUE,
TPROXY, SYNPROXY, HMARK and CT targets beyond their .t files (recorded in a scratch network namespace)."""

from __future__ import annotations

import shlex

import pytest

from natbox.rules.evaluate import Ruleset
from natbox.rules.listing import list_table
from natbox.rules.model import RulesError
from natbox.rules.parser import parse_argv
from natbox.rules.printer import save_table

SAVED = [
    ("-p sctp --dport 80 ! --chunk-types any DATA:Be,INIT,ABORT:T,I_DATA:I",
     "-p sctp -m sctp --dport 80 ! --chunk-types any DATA:Be,INIT,ABORT:T,I_DATA"),
    ("-p sctp -m sctp --chunk-types any data,shutdown_complete:t,SACK",
     "-p sctp -m sctp --chunk-types any DATA,SACK,SHUTDOWN_COMPLETE:t"),
    ("-p sctp -m sctp --chunk-types any DATA:I,DATA:u", "-p sctp -m sctp --chunk-types any DATA:Iu"),
    ("-p sctp -m sctp --dport 1024:", "-p sctp -m sctp --dport 1024:65535"),
    ("-j TEE --gateway localhost", "-j TEE --gateway 127.0.0.1"),
    ("-j TEE --gateway 1.1.1.1 --oif abcdefghijklmnopq", "-j TEE --gateway 1.1.1.1 --oif abcdefghijklmno"),
    ("-j NFQUEUE --queue-balance 0:6 --queue-cpu-fanout --queue-bypass",
     "-j NFQUEUE --queue-balance 0:6 --queue-bypass --queue-cpu-fanout"),
    ("-j HMARK --hmark-tuple src,dst,sport,dport,proto --hmark-rnd 0xfeedcafe --hmark-mod 10 --hmark-offset 100",
     "-j HMARK --hmark-src-prefix 32 --hmark-dst-prefix 32 --hmark-sport-mask 0xffff --hmark-dport-mask 0xffff "
     "--hmark-proto-mask 0xffff --hmark-rnd 0xfeedcafe --hmark-mod 10 --hmark-offset 100"),
    ("-j HMARK --hmark-tuple s --hmark-rnd 1 --hmark-mod 10", "-j HMARK --hmark-src-prefix 32 --hmark-rnd 0x00000001 "
     "--hmark-mod 10"),
    ("-j HMARK --hmark-src-prefix 1000 --hmark-rnd 1 --hmark-mod 3",
     "-j HMARK --hmark-src-prefix 32 --hmark-rnd 0x00000001 --hmark-mod 3"),
    ("-j HMARK --hmark-tuple dst --hmark-spi-mask 0xffff --hmark-rnd 1 --hmark-mod 3 --hmark-sport 1",
     "-j HMARK --hmark-dst-prefix 32 --hmark-spi-mask 0x0000ffff --hmark-sport 0x0001 --hmark-rnd 0x00000001 "
     "--hmark-mod 3"),
    ("-p tcp -j SYNPROXY --ecn --mss 70000", "-p tcp -j SYNPROXY --mss 4464 --ecn"),
]
SAVED_MANGLE = [
    ("-A PREROUTING -p tcp -j TPROXY --on-port 12345",
     "-A PREROUTING -p tcp -j TPROXY --on-port 12345 --on-ip 0.0.0.0 --tproxy-mark 0x0/0x0"),
    ("-A PREROUTING -p udp -j TPROXY --on-port 70000 --tproxy-mark 0x1",
     "-A PREROUTING -p udp -j TPROXY --on-port 4464 --on-ip 0.0.0.0 --tproxy-mark 0x1/0xffffffff"),
]
SAVED_RAW = [
    ("-A PREROUTING -j CT --zone-orig 5 --zone-reply 6", "-A PREROUTING -j CT --zone 6"),
    ("-A PREROUTING -j CT --zone-orig MARK", "-A PREROUTING -j CT --zone-orig mark"),
    ("-A PREROUTING -j CT --zone 0x10", "-A PREROUTING -j CT --zone 16"),
    ("-A PREROUTING -j CT --zone 0", "-A PREROUTING -j CT"),
    ("-A PREROUTING -j CT --zone 5 --notrack", "-A PREROUTING -j CT --notrack --zone 5"),
]
REFUSED = [
    ("-A INPUT -p sctp -m sctp --sport 5:3", "invalid portrange (min > max)"),
    ("-A INPUT -p sctp -m sctp --chunk-types some DATA", 'Match type has to be one of "ALL", "ANY" or "ONLY"'),
    ("-A INPUT -p sctp -m sctp --chunk-types all DATA:X", "Invalid flags for chunk type 0"),
    ("-A INPUT -p sctp -m sctp --chunk-types all", "--chunk-types requires two args"),
    ("-A INPUT -p sctp -m sctp --sport 1 --sport 2", "Only one `--source-port' allowed"),
    ("-A FORWARD -j TEE --gateway 10.0.0.0/8", "getaddrinfo: Name or service not known\n"),
    ("-A INPUT -j NFQUEUE --queue-cpu-fanout",
     'NFQUEUE: option "--queue-cpu-fanout" also requires "--queue-balance".\n'),
    ("-A INPUT -j NFQUEUE --queue-balance 3:3", "3 should be less than 3"),
    ("-A INPUT -j NFQUEUE --queue-balance 3", 'Bad range "3"'),
    ("-A INPUT -j NFQUEUE --queue-balance 0:65535", " RULE_APPEND failed (Invalid argument): rule in chain INPUT"),
    ("-A INPUT -j HMARK --hmark-tuple src, --hmark-rnd 1 --hmark-mod 10",
     '"--hmark-tuple" requires a list of types with no spaces, e.g. src,dst,sport,dport,proto'),
    ("-A INPUT -j HMARK --hmark-tuple foo --hmark-rnd 1 --hmark-mod 10", 'Bad type "foo"'),
    ("-A INPUT -j HMARK --hmark-rnd 1 --hmark-mod 10", "you have to specify --hmark-tuple at least"),
    ("-A INPUT -j HMARK --hmark-tuple ct --hmark-rnd 1 --hmark-mod 10 --hmark-sport 0x10 --hmark-spi 5",
     " RULE_APPEND failed (Invalid argument): rule in chain INPUT"),
    ("-t mangle -A PREROUTING -p udp -j TPROXY --on-port nosuchservice",
     'Port "nosuchservice" does not resolve to anything.\n'),
    ("-t mangle -A INPUT -p udp -j TPROXY --on-port 1", " RULE_APPEND failed (Invalid argument): rule in chain INPUT"),
    ("-A OUTPUT -p tcp -j SYNPROXY", " RULE_APPEND failed (Invalid argument): rule in chain OUTPUT"),
    ("-t raw -A PREROUTING -j CT --zone 5 --zone 6", 'CT: option "--zone" can only be used once.\n'),
]


def _saved(table: str, line: str) -> str:
    rs = Ruleset()
    rs.execute(parse_argv(["-t", table, *shlex.split(line)]))
    return save_table(rs.tables[table])[-2]


@pytest.mark.parametrize(("rule", "saved"), SAVED)
def test_saved_as_iptables_prints(rule: str, saved: str) -> None:
    chain = "OUTPUT" if "TEE" in rule else "INPUT"
    assert _saved("filter", f"-A {chain} {rule}") == f"-A {chain} {saved}"


@pytest.mark.parametrize(("rule", "saved"), SAVED_MANGLE)
def test_tproxy_saved(rule: str, saved: str) -> None:
    assert _saved("mangle", rule) == saved


@pytest.mark.parametrize(("rule", "saved"), SAVED_RAW)
def test_ct_zone_saved(rule: str, saved: str) -> None:
    assert _saved("raw", rule) == saved


@pytest.mark.parametrize(("argv", "message"), REFUSED)
def test_refused_as_iptables_refuses(argv: str, message: str) -> None:
    with pytest.raises(RulesError) as e:
        Ruleset().execute(parse_argv(shlex.split(argv)))
    assert e.value.message == message


def test_list_lines() -> None:
    rs = Ruleset()
    for line in ("-A INPUT -j HMARK --hmark-tuple src,dst,sport,dport,proto --hmark-rnd 0xfeedcafe --hmark-mod 10 "
                 "--hmark-offset 100", "-A INPUT -p tcp -j SYNPROXY --ecn --mss 70000",
                 "-A INPUT -j NFQUEUE --queue-balance 0:6 --queue-cpu-fanout --queue-bypass",
                 "-A INPUT -p sctp --dport 80 ! --chunk-types any DATA:Be,INIT,ABORT:T,I_DATA:I"):
        rs.execute(parse_argv(shlex.split(line)))
    lines = list_table(rs.tables["filter"], "INPUT", numeric=True).splitlines()[2:]
    assert [x[62:] for x in lines] == [
        "HMARK mod 10 + 0x64 src-prefix 32 dst-prefix 32 sport-mask 0xffff dport-mask 0xffff proto-mask 0xffff "
        "rnd 0xfeedcafe ",
        "SYNPROXY mss 4464 ecn ",
        "NFQUEUE balance 0:6 bypass cpu-fanout",
        "sctp dpt:80 ! any 0x0000:Be,0x0001,0x0006:T,0x0040",
    ]
