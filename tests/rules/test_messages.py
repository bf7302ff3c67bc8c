"""iptables messages and exit codes recorded with the real iptables v1.8.9 (nf_tables) in a scratch network
namespace (`ip netns add m; ip netns exec m iptables ...; ip netns del m`): every expected text below is what
it printed."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from natbox.cli.ip6tables import ip6tables_main
from natbox.cli.iptables import iptables_main, iptables_restore_main, iptables_save_main

HEAD = "iptables v1.8.9 (nf_tables): "
TRY = "Try `iptables -h' or 'iptables --help' for more information.\n"


def run(path: Path, *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    rc = iptables_main(list(argv), rules_path=str(path), stdout=out, stderr=err)
    return rc, out.getvalue(), err.getvalue()


@pytest.mark.parametrize(("argv", "text"), [
    (["-4"], "iptables-save: invalid option -- '4'\n"),
    (["--ipv4"], "iptables-save: unrecognized option '--ipv4'\n"),
])
def test_iptables_save_refuses_the_family_options(tmp_path: Path, argv: list[str], text: str) -> None:
    err = io.StringIO()
    rc = iptables_save_main(argv, rules_path=str(tmp_path / "r"), stdout=io.StringIO(), stderr=err)
    assert (rc, err.getvalue()) == (1, text + "Look at manual page `iptables-save.8' for more information.\n")


@pytest.mark.parametrize(("argv", "text"), [
    (["-4"], "iptables-restore: invalid option -- '4'\n"),
    (["--ipv4"], ""),  # a long option xtables-restore knows but its getopt string does not: only the hint
    (["--ipv6"], ""),
])
def test_iptables_restore_refuses_the_family_options(tmp_path: Path, argv: list[str], text: str) -> None:
    err = io.StringIO()
    rc = iptables_restore_main(argv, rules_path=str(tmp_path / "r"), stdin=io.StringIO("*filter\nCOMMIT\n"),
                               stderr=err)
    assert (rc, err.getvalue()) == (1, text + "Try `iptables-restore -h' for more information.\n")


@pytest.mark.parametrize(("value", "text"), [
    ("3/3-5", "unknown character -"), ("3-5", "unknown character -"), ("3x", "unknown character x"),
    ("3/4x", "unknown character x"), ("08", "unknown character 8"), ("3/08", "unknown character 8"),
    ("0x", "unknown character x"), ("3/4 ", "unknown character  "), ("3:5", "ICMP type range not supported"),
    ("3/x", "Unknown ICMP code `3/x'"), ("3/", "Unknown ICMP code `3/'"), ("/3", "Unknown ICMP type `/3'"),
    ("300", "Unknown ICMP type `300'"), ("3/-1", "Unknown ICMP code `3/-1'"), ("-1", "Unknown ICMP type `-1'"),
    ("3/3:300", "Unknown ICMP code `3/3:300'"), ("3/4294967300", "Unknown ICMP code `3/4294967300'"),
    ("echo-request/3", "Unknown ICMP type `echo-request/3'"),
])
def test_icmp_type_refusals(tmp_path: Path, value: str, text: str) -> None:
    assert run(tmp_path / "r", "-A", "INPUT", "-p", "icmp", "--icmp-type", value) == (2, "", HEAD + text + "\n" + TRY)


def test_icmp_type_numbers_read_as_strtoul(tmp_path: Path) -> None:
    path = tmp_path / "r"
    for value in (" 3/4", "3/+4", "+3", "3/0x4", "0x3", "03/04", "3/ 4", "3/3:5"):
        assert run(path, "-A", "INPUT", "-p", "icmp", "--icmp-type", value)[0] == 0
    assert run(path, "-S", "INPUT")[1] == "-P INPUT ACCEPT\n" + "".join(
        f"-A INPUT -p icmp -m icmp --icmp-type {v}\n" for v in ("3/4", "3/4", "3", "3/4", "3", "3/4", "3/4", "3/3"))


def test_conntrack_addresses_keep_the_host_bits(tmp_path: Path) -> None:
    """XTTYPE_HOSTMASK: the address is not masked; numbers read as inet_aton, a non-contiguous mask is /32."""
    path = tmp_path / "r"
    for value in ("10.1.2.3/8", "10.1.2.3/255.0.255.0", "10.1.2.3/33", "10.1.2.3", "10.1.2", "10.1.2.3/0"):
        assert run(path, "-A", "INPUT", "-m", "conntrack", "--ctorigsrc", value)[0] == 0
    assert run(path, "-S", "INPUT")[1] == "-P INPUT ACCEPT\n" + "".join(
        f"-A INPUT -m conntrack --ctorigsrc {v}\n"
        for v in ("10.1.2.3/8", "10.1.2.3", "10.1.2.3", "10.1.2.3", "10.1.0.2", "10.1.2.3/0"))


@pytest.mark.parametrize(("value", "text"), [
    ("foo", "getaddrinfo: Temporary failure in name resolution\n"),
    ("::1", "getaddrinfo: Address family for hostname not supported\n"),
    ("10.1.2.3/x", 'conntrack: bad value for option "--ctorigsrc", neither a valid network mask nor valid CIDR '
                   "(0-32).\n"),
    ("10.1.2.3/", 'conntrack: bad value for option "--ctorigsrc", neither a valid network mask nor valid CIDR '
                  "(0-32).\n"),
    ("10.1.2.3/08", 'conntrack: bad value for option "--ctorigsrc", neither a valid network mask nor valid CIDR '
                    "(0-32).\n"),
])
def test_conntrack_address_refusals(tmp_path: Path, value: str, text: str) -> None:
    assert run(tmp_path / "r", "-A", "INPUT", "-m", "conntrack", "--ctorigsrc", value) == \
        (2, "", HEAD + text + "\n" + TRY)


XTOPT = [  # libxt lines refused alike by iptables and ip6tables (recorded with both; tests/rules6/data)
    (["-j", "NFLOG", "--nflog-group", "65536"], 'NFLOG: bad value for option "--nflog-group", or out of range '
                                                "(0-65535).\n"),
    (["-j", "NFLOG", "--nflog-range", "-1"], 'NFLOG: bad value for option "--nflog-range", or out of range '
                                             "(0-4294967295).\n"),
    (["-j", "NFLOG", "--nflog-size", "4294967296"], 'NFLOG: bad value for option "--nflog-size", or out of range '
                                                    "(0-4294967295).\n"),
    (["-p", "udp", "-m", "udp", "--sport", "-1"], 'Port "-1" does not resolve to anything.\n'),
    (["-p", "udp", "-m", "udp", "--dport", "foo:2"], 'Port "foo" does not resolve to anything.\n'),
    (["-p", "dccp", "-m", "dccp", "--dport", "-1"], 'Port "-1" does not resolve to anything.\n'),
    (["-p", "tcp", "-m", "tcp", "--sport", "-1"], "invalid port/service `-1' specified"),  # tcp is not xtopt's
    (["-m", "conntrack", "--ctexpire", "-1"], 'conntrack: bad value for option "--ctexpire" near "-1", or out of '
                                              "range (0-4294967295).\n"),
    (["-m", "length", "--length", "-1:65535"], 'length: bad value for option "--length" near "-1:65535", or out of '
                                               "range (0-65535).\n"),
    (["-m", "length", "--length", "1:2:3"], 'length: Too many components for option "--length" (max: 2)\n'),
    (["-m", "tos", "--tos", "wrong"], 'Symbolic name "wrong" is unknown'),
]


@pytest.mark.parametrize(("argv", "text"), XTOPT)
def test_shared_extension_refusals(tmp_path: Path, argv: list[str], text: str) -> None:
    """One message per extension for both families: iptables' text, and ip6tables' with its own name."""
    assert run(tmp_path / "r", "-t", "mangle", "-A", "INPUT", *argv) == (2, "", HEAD + text + "\n" + TRY)
    err = io.StringIO()
    rc = ip6tables_main(["-t", "mangle", "-A", "INPUT", *argv], rules_path=str(tmp_path / "r6"),
                        stdout=io.StringIO(), stderr=err)
    assert (rc, err.getvalue()) == (2, (HEAD + text + "\n" + TRY).replace("iptables", "ip6tables"))


def test_conntrack_expire_open_ranges(tmp_path: Path) -> None:
    path = tmp_path / "r"
    assert run(path, "-A", "INPUT", "-m", "conntrack", "--ctexpire", "5:")[0] == 0
    assert run(path, "-A", "INPUT", "-m", "conntrack", "--ctexpire", ":5")[0] == 0
    assert run(path, "-S", "INPUT")[1] == ("-P INPUT ACCEPT\n-A INPUT -m conntrack --ctexpire 5:4294967295\n"
                                           "-A INPUT -m conntrack --ctexpire 0:5\n")


@pytest.mark.parametrize(("rule", "text"), [
    ("-m statistic", "--probability must be specified when using random mode"),
    ("-m statistic --mode nth ! --every 5", 'statistic: option "--every" also requires "--packet".\n'),
    ("-m statistic --mode nth --packet 0", 'statistic: option "--packet" also requires "--every".\n'),
    ("-m statistic --mode nth --packet 1", "the --packet p must be 0 <= p <= n-1"),
    ("-m statistic --mode nth", "--every and --packet must be specified when using nth mode"),
    ("-m statistic --probability 0.5", 'statistic: option "--mode" must be specified\n'),
])
def test_statistic_checks_in_iptables_order(tmp_path: Path, rule: str, text: str) -> None:
    """statistic_check (random by default) before xtables_options_fcheck, as iptables 1.8.9 prints them."""
    assert run(tmp_path / "r", "-A", "INPUT", *rule.split()) == (2, "", HEAD + text + "\n" + TRY)
