"""`--user NAME`: give up root once the devices and the control socket are open.

The kernel keeps already-open sockets usable after the switch, so the gateway goes on forwarding and
answering its control socket; it can open nothing new that needs root. Before switching, every
capability is removed from the bounding set (prctl PR_CAPBSET_DROP, capabilities(7)), so nothing the
process executes later can regain one through file capabilities, and PR_SET_NO_NEW_PRIVS is set, so
neither can a set-user-ID program.

`keep` names capabilities that survive (--offload and --offload-new keep CAP_NET_ADMIN: the stop removes
their tc filters, with `tc` run as a child; their maps and ring buffer go on through the descriptors opened
as root, which need no capability): they stay in the bounding set, PR_SET_KEEPCAPS holds the permitted set
through setuid, capset(2) makes them permitted, effective and inheritable again, and PR_CAP_AMBIENT_RAISE
makes them ambient, so a program the gateway runs (tc) has them too; every other capability is gone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import pwd

from natbox.gateway.kernel import read_sysctl
from natbox.gateway.log import say

__all__ = ["CAP_NET_ADMIN", "PR_CAPBSET_DROP", "PR_SET_NO_NEW_PRIVS", "drop_privileges", "prctl"]

PR_CAPBSET_READ = 23  # <linux/prctl.h>
PR_CAPBSET_DROP = 24
PR_SET_KEEPCAPS = 8
PR_SET_NO_NEW_PRIVS = 38
PR_GET_NO_NEW_PRIVS = 39
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2
CAP_LAST_CAP_DEFAULT = 40  # CAP_CHECKPOINT_RESTORE (Linux 5.9); the kernel says its own in cap_last_cap
CAP_NET_ADMIN = 12  # <linux/capability.h>
CAP_NAMES = {CAP_NET_ADMIN: "cap_net_admin"}
_LINUX_CAPABILITY_VERSION_3 = 0x20080522


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def prctl(option: int, arg2: int = 0, arg3: int = 0) -> int:
    """prctl(2) through libc; raises OSError with the errno on failure."""
    fn = _libc().prctl
    fn.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    fn.restype = ctypes.c_int
    rc = int(fn(option, arg2, arg3, 0, 0))
    if rc < 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))
    return rc


def _capset(caps: tuple[int, ...]) -> None:
    """capset(2), version 3 (two 32-bit words per set): `caps` permitted, effective and inheritable."""
    words = [0, 0]
    for cap in caps:
        words[cap // 32] |= 1 << (cap % 32)
    header = (ctypes.c_uint32 * 2)(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (ctypes.c_uint32 * 6)(words[0], words[0], words[0], words[1], words[1], words[1])
    fn = _libc().capset
    fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    fn.restype = ctypes.c_int
    if fn(ctypes.addressof(header), ctypes.addressof(data)) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))


def _drop_bounding_set(keep: tuple[int, ...] = ()) -> None:
    """Remove every capability but `keep` from the bounding set (needs CAP_SETPCAP, so: while still root)."""
    last = read_sysctl("/proc/sys/kernel/cap_last_cap")
    top = int(last) if last is not None and last.isdigit() else CAP_LAST_CAP_DEFAULT
    for cap in range(top + 1):
        if cap in keep:
            continue
        try:
            prctl(PR_CAPBSET_DROP, cap)
        except OSError as exc:
            if exc.errno != 22:  # EINVAL: a capability this kernel does not know
                raise


def drop_privileges(user: str, keep: tuple[int, ...] = ()) -> str | None:
    """Bounding set emptied (but for `keep`), no_new_privs set, then setgroups([]), setgid, setuid to
    `user`, and `keep` permitted, effective, inheritable and ambient again. Returns why it failed, or None."""
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        return f"--user {user}: no such user"
    try:
        _drop_bounding_set(keep)
        prctl(PR_SET_NO_NEW_PRIVS, 1)
        if keep:
            prctl(PR_SET_KEEPCAPS, 1)  # the permitted set survives setuid (the effective one does not)
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
    names = ", ".join(CAP_NAMES.get(cap, f"cap {cap}") for cap in keep)
    try:
        if keep:
            _capset(keep)  # every other permitted capability goes here
            for cap in keep:
                prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap)
            prctl(PR_SET_KEEPCAPS, 0)
    except OSError as exc:
        return f"--user {user}: cannot keep {names} ({exc.strerror or exc})"
    kept = f"capabilities {names}" if keep else "no capabilities"
    say(f"running as {user} (uid {pw.pw_uid}, gid {pw.pw_gid}; {kept}, no_new_privs)")
    return None
