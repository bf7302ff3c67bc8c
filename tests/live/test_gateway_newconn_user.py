"""`natbox gateway --offload-new --user nobody`: the new-connections datapath run by an unprivileged gateway.

Everything --offload-new does after the start goes through descriptors opened as root: the maps' (nb_flows,
nb_tmpl, nb_ct: BPF_MAP_UPDATE/DELETE/LOOKUP and their batches on an fd check no capability since Linux 6.5,
whatever kernel.unprivileged_bpf_disabled says; BPF_MAP_CREATE and BPF_PROG_LOAD do, BPF_OBJ_GET needs the
pinned path, gone with the sealed bpffs, and the gateway needs none of them once it is attached) and the ring
buffer's (mapped when EventRing starts, by natbox on x86-64 or by libbpf's ring_buffer__new; consuming reads
that memory and writes the consumer position, no system call). So the gateway keeps CAP_NET_ADMIN only,
as with --offload (its stop runs tc).

The lab of test_gateway_newconn: a client connects, sends a line and closes, again and again. Checked: the
gateway runs as nobody with CAP_NET_ADMIN alone; every connection succeeds; the program opened them from the
template and natbox agreed with every binding (the ring buffer read as nobody); their entries went at
TIME_WAIT and their tuples' nb_ct claims were written and released (map writes as nobody) without one error;
`natbox status` and `conntrack -L` answer; at the stop the filters go.
"""

from __future__ import annotations

import pwd
import re
import sys
from pathlib import Path

from tests.live.test_gateway_newconn import LINE_SERVER, PORT, _connections, _figure, _status, lab, pytestmark

from natbox.lab.model import Lab
from natbox.testing.live import gateway_argv, ns_popen, ns_run, run_natbox, stop, wait_ready
from natbox.testing.paths import LAB_EXAMPLES as EXAMPLES

__all__ = ["lab", "pytestmark"]  # the fixture and the marks (netns), shared with test_gateway_newconn

NET_ADMIN = 1 << 12


def test_offload_new_runs_as_an_unprivileged_user(lab: Lab, tmp_path: Path) -> None:
    nobody = pwd.getpwnam("nobody")
    ctl = tmp_path / "ctl.sock"
    gw = ns_popen(lab, "gw", gateway_argv(EXAMPLES / "basic-gw.toml", "--offload-new", "--control", str(ctl),
                                          "--user", "nobody"))
    said = wait_ready(gw)
    assert "with new connections" in said and "running as nobody" in said, said
    server = ns_popen(lab, "server", [sys.executable, "-c", LINE_SERVER.format(port=PORT, wait_close=False, line=True)])
    try:
        status = dict(line.split(":", 1) for line in Path(f"/proc/{gw.pid}/status").read_text().splitlines())
        assert set(status["Uid"].split()) == {str(nobody.pw_uid)} and status["NoNewPrivs"].strip() == "1"
        assert [int(status[k], 16) for k in ("CapBnd", "CapPrm", "CapEff", "CapAmb")] == [NET_ADMIN] * 4, status
        assert server.stdout is not None and server.stdout.readline().strip() == b"listening"
        _connections(lab, 40, 43000)
        text = _status(ctl)
        assert _figure(text, "templates") == 1, text
        assert _figure(text, "created") >= 35, text  # opened by the program, read back from the ring as nobody
        assert _figure(text, "disagree") == 0 and _figure(text, "bad_events") == 0, text
        assert _figure(text, "errors") == 0 and _figure(text, "claims") >= 1, text  # nb_ct written as nobody
        assert re.search(r"offload-new: 1 templates, 0 tracked flows", text), text  # every entry gone at TIME_WAIT
        assert _figure(text, "closed") >= _figure(text, "created"), text
        offload = re.search(r"offload: \d+ flows offloaded, \d+ map entries, .*errors (\d+)", text)
        assert offload and offload.group(1) == "0", text
        listed = run_natbox("conntrack", "--control", str(ctl), "-L", "-p", "tcp", "--dport", str(PORT)).stdout
        assert sum(f"dport={PORT}" in line and " TIME_WAIT " in line for line in listed.splitlines()) == 40, listed
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        rest = stop(gw)
    assert gw.returncode == 0 and "Traceback" not in rest and "warning" not in rest, rest
    for dev in ("lan0", "wan0"):  # tc, run as nobody with the ambient CAP_NET_ADMIN, removed the filters
        assert b"natbox_offload" not in ns_run(lab, "gw", ["tc", "filter", "show", "dev", dev, "ingress"]).stdout
