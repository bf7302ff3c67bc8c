"""`--user NAME`: give up root once the devices and the control socket are open.

The kernel keeps already-open sockets usable after the switch, so the gateway goes on forwarding and
answering its control socket; it can open nothing new that needs root. Before switching, every
capability is removed from the bounding set (prctl PR_CAPBSET_DROP, capabilities(7)), so nothing the
process executes later can regain one through file capabilities, and PR_SET_NO_NEW_PRIVS is set, so
neither can a set-user-ID program.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import pwd

from natbox.gateway.kernel import read_sysctl
from natbox.gateway.log import say

__all__ = ["PR_CAPBSET_DROP", "PR_SET_NO_NEW_PRIVS", "drop_privileges", "prctl"]

PR_CAPBSET_READ = 23  # <linux/prctl.h>
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_GET_NO_NEW_PRIVS = 39
CAP_LAST_CAP_DEFAULT = 40  # CAP_CHECKPOINT_RESTORE (Linux 5.9); the kernel says its own in cap_last_cap


def prctl(option: int, arg2: int = 0) -> int:
    """prctl(2) through libc; raises OSError with the errno on failure."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    fn = libc.prctl
    fn.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    fn.restype = ctypes.c_int
    rc = int(fn(option, arg2, 0, 0, 0))
    if rc < 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))
    return rc


def _drop_bounding_set() -> None:
    """Remove every capability from the bounding set (needs CAP_SETPCAP, so: while still root)."""
    last = read_sysctl("/proc/sys/kernel/cap_last_cap")
    top = int(last) if last is not None and last.isdigit() else CAP_LAST_CAP_DEFAULT
    for cap in range(top + 1):
        try:
            prctl(PR_CAPBSET_DROP, cap)
        except OSError as exc:
            if exc.errno != 22:  # EINVAL: a capability this kernel does not know
                raise


def drop_privileges(user: str) -> str | None:
    """Bounding set emptied, no_new_privs set, then setgroups([]), setgid, setuid to `user`. Returns why
    it failed, or None."""
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        return f"--user {user}: no such user"
    try:
        _drop_bounding_set()
        prctl(PR_SET_NO_NEW_PRIVS, 1)
    except OSError as exc:
        return f"--user {user}: cannot drop capabilities ({exc.strerror or exc})"
    try:
        os.setgroups([])
        os.setgid(pw.pw_gid)
        os.setuid(pw.pw_uid)
    except OSError as exc:
        return f"--user {user}: cannot switch to it ({exc.strerror or exc})"
    if os.getuid() == 0 or os.geteuid() == 0:
        return f"--user {user}: still root after switching"
    say(f"running as {user} (uid {pw.pw_uid}, gid {pw.pw_gid}; no capabilities, no_new_privs)")
    return None
