"""Checks that read other rules, recorded with the real iptables v1.8.9 (nf_tables) on Linux 6.18 in a scratch
network namespace: rate estimators (a RATEEST rule creates one, -m rateest needs it, a second RATEEST must give
the same parameters; restore checks its lines in file order) and hashlimit tables shared by name (the kernel's
htable_find_get takes the first rule's table whatever the later rules say)."""

from __future__ import annotations

import io
import shlex
from pathlib import Path

from natbox.cli.iptables import iptables_main, iptables_restore_main

HEAD = "iptables v1.8.9 (nf_tables): "
RE1 = "-j RATEEST --rateest-name RE1 --rateest-interval 250.0ms --rateest-ewmalog 500.0ms"
MATCH = "-m rateest --rateest RE1 --rateest-lt --rateest-bps 8bit"


def run(path: Path, cmd: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    rc = iptables_main(shlex.split(cmd), rules_path=str(path), stdout=out, stderr=err)
    return rc, out.getvalue(), err.getvalue()


def failed(errno: str, chain: str = "INPUT") -> tuple[int, str, str]:
    return 4, "", HEAD + f" RULE_APPEND failed ({errno}): rule in chain {chain}\n"


def test_rate_estimators_across_commands(tmp_path: Path) -> None:
    path = tmp_path / "r"
    assert run(path, f"-A INPUT {MATCH}") == failed("No such file or directory")
    assert run(path, f"-A INPUT {RE1}") == (0, "", "")
    assert run(path, f"-A INPUT {MATCH}") == (0, "", "")
    assert run(path, "-A INPUT -j RATEEST --rateest-name RE1 --rateest-interval 1s --rateest-ewmalog 2s") == \
        failed("Invalid argument")
    assert run(path, f"-A FORWARD {RE1}") == (0, "", "")  # the same parameters: the same estimator
    assert run(path, "-A INPUT -m rateest --rateest1 RE1 --rateest-lt --rateest-bps --rateest2 RE2") == \
        failed("No such file or directory")
    assert run(path, "-A INPUT -m nfacct --nfacct-name foo") == failed("No such file or directory")
    # the estimator lives while a rule names it: the creating rule deleted, the match keeps it
    assert run(path, f"-D INPUT {RE1}") == (0, "", "")
    assert run(path, f"-D FORWARD {RE1}") == (0, "", "")
    assert run(path, f"-A OUTPUT {MATCH}") == (0, "", "")
    assert run(path, "-S")[1] == (f"-P INPUT ACCEPT\n-P FORWARD ACCEPT\n-P OUTPUT ACCEPT\n-A INPUT {MATCH}\n"
                                  f"-A OUTPUT {MATCH}\n")
    # ... and goes with the last one
    assert run(path, f"-D INPUT {MATCH}") == (0, "", "")
    assert run(path, f"-D OUTPUT {MATCH}") == (0, "", "")
    assert run(path, f"-A OUTPUT {MATCH}") == failed("No such file or directory", "OUTPUT")


def _restore(path: Path, body: str) -> tuple[int, str]:
    err = io.StringIO()
    text = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n" + body + "COMMIT\n"
    rc = iptables_restore_main([], rules_path=str(path), stdin=io.StringIO(text), stdout=io.StringIO(), stderr=err)
    return rc, err.getvalue()


def test_restore_checks_estimators_in_file_order(tmp_path: Path) -> None:
    assert _restore(tmp_path / "a", f"-A INPUT {MATCH}\n-A FORWARD {RE1}\n") == (
        4, "iptables-restore v1.8.9 (nf_tables): \nline 4: RULE_APPEND failed (No such file or directory): rule in "
           "chain INPUT\n")
    assert _restore(tmp_path / "b", f"-A FORWARD {RE1}\n-A INPUT {MATCH}\n-A INPUT -j RATEEST --rateest-name RE1 "
                                    "--rateest-interval 1s --rateest-ewmalog 2s\n") == (
        4, "iptables-restore v1.8.9 (nf_tables): \nline 6: RULE_APPEND failed (Invalid argument): rule in chain "
           "INPUT\n")
    assert _restore(tmp_path / "c", f"-A FORWARD {RE1}\n-A INPUT {MATCH}\n") == (0, "")
    assert run(tmp_path / "c", "-S INPUT")[1] == f"-P INPUT ACCEPT\n-A INPUT {MATCH}\n"


def test_hashlimit_rules_with_one_name_share_a_table(tmp_path: Path) -> None:
    path = tmp_path / "r"
    for cmd in ("-A INPUT -m hashlimit --hashlimit-upto 2/sec --hashlimit-name foo",
                "-A INPUT -m hashlimit --hashlimit-upto 5/sec --hashlimit-burst 9 --hashlimit-mode srcip "
                "--hashlimit-name foo",
                "-A FORWARD -m hashlimit --hashlimit-above 1/min --hashlimit-mode dstip,dstport -p tcp "
                "--hashlimit-htable-size 64 --hashlimit-name foo"):
        assert run(path, cmd) == (0, "", ""), cmd
    assert run(path, "-S")[1] == (
        "-P INPUT ACCEPT\n-P FORWARD ACCEPT\n-P OUTPUT ACCEPT\n"
        "-A INPUT -m hashlimit --hashlimit-upto 2/sec --hashlimit-burst 5 --hashlimit-name foo\n"
        "-A INPUT -m hashlimit --hashlimit-upto 5/sec --hashlimit-burst 9 --hashlimit-mode srcip --hashlimit-name foo\n"
        "-A FORWARD -p tcp -m hashlimit --hashlimit-above 1/min --hashlimit-burst 5 --hashlimit-mode dstip,dstport "
        "--hashlimit-name foo --hashlimit-htable-size 64\n")
