"""`natbox status` lists each -m hashlimit table where the kernel's /proc does: iptables tables under
/proc/net/ipt_hashlimit/NAME, ip6tables tables under /proc/net/ip6t_hashlimit/NAME (hashlimit_proc_net_init:
one directory per family), so one name may hold a table in each."""

from __future__ import annotations

import io
import json
from typing import cast

from natbox.demos.scenarios import _docker_host
from natbox.engine.engine import Engine
from natbox.gateway.commands import Commands
from natbox.gateway.loop import EventLoop


class _Loop:
    def counters(self) -> dict[str, dict[str, int]]:
        return {}

    def report(self) -> str:
        return "idle"


def test_each_family_lists_its_tables_under_its_own_proc_directory() -> None:
    host, _ = _docker_host()
    cmds = Commands(Engine(host, seed=3), cast(EventLoop, _Loop()))

    def run(cmd: str, *argv: str) -> int:
        return cmds.run_command(cmd, list(argv), io.StringIO(""), io.StringIO(), io.StringIO())

    limit = ("-m", "hashlimit", "--hashlimit-upto", "5/sec", "--hashlimit-mode", "srcip", "--hashlimit-name")
    assert run("iptables", "-A", "FORWARD", *limit, "web") == 0
    assert run("ip6tables", "-A", "FORWARD", *limit, "web") == 0
    assert run("ip6tables", "-A", "INPUT", *limit, "ssh6") == 0
    text = cmds.status()
    assert "\nipt_hashlimit/web: 0 entries\n" in text
    assert "\nip6t_hashlimit/web: 0 entries\n" in text and "\nip6t_hashlimit/ssh6: 0 entries\n" in text
    assert "/ip6t" not in text.replace("ip6t_hashlimit/", "")
    out = io.StringIO()
    assert cmds.run_command("status", ["--json"], io.StringIO(""), out, io.StringIO()) == 0
    data = json.loads(out.getvalue())
    assert data["ipt_hashlimit"] == {"web": []} and data["ip6t_hashlimit"] == {"web": [], "ssh6": []}
