"""The kernel data path itself: build the BPF program, attach it with tc, fill its maps (adapter layer).

`Datapath(workdir)` builds natbox_offload.bpf.c with clang (`-O2 -g -target bpf`, cached in the workdir
by the source's hash), mounts a bpffs of its own under the workdir and creates the two maps there, pinned
where iproute2's libbpf loader looks for `LIBBPF_PIN_BY_NAME` maps (`$TC_BPF_MNT/tc/globals/NAME`), so
every device's program shares them. `attach(ifname)` adds a clsact qdisc when the device has none and the
program as a direct-action cls_bpf filter on its ingress (`tc filter replace ... bpf da obj F sec tc`);
the calling thread's network namespace is the one used (natbox.adapters.netns.enter_netns). Entries are
written through the bpf() system call (offload/bpf.py). A private bpffs also survives `ip netns exec`,
which remounts /sys (and with it /sys/fs/bpf).

Counters: `nb_stats` is a per-CPU map beside `nb_flows`; `install` creates a key's counters at zero only
when it has none, so rewriting an entry (a new MAC, a new MTU) keeps them, and `remove` deletes them. It is
not preallocated (BPF_F_NO_PREALLOC: a preallocated per-CPU map would take 65536 × 24 bytes per possible
CPU); only Python adds elements, the program only looks them up. IPv6 entries (`OffloadKey.family`
NFPROTO_IPV6) live in maps of their own, nb_flows6 and nb_stats6, made and read the same way.

Errors are one line: `OffloadUnavailable` says what is missing (a program, headers, a kernel feature,
permission), `OffloadError` what failed later (`OffloadMapFull`: a full map; a device gone).
"""

from __future__ import annotations

import ctypes
import errno
import gzip
import hashlib
import os
import shutil
import socket
import struct
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

from natbox.errors import NatboxError
from natbox.netfilter import NFPROTO_IPV6
from natbox.offload import bpf
from natbox.offload.entry import (
    ACTION6_SIZE,
    ACTION_SIZE,
    KEY6_SIZE,
    KEY_SIZE,
    MAX_FLOWS,
    STATS_SIZE,
    FlowStats,
    OffloadAction,
    OffloadKey,
    decode_key,
    encode_action,
    encode_key,
)
from natbox.offload.newflows import (
    CLAIM_NATBOX,
    CLAIM_REOPEN,
    CT_KEY_SIZE,
    EVENTS_SIZE,
    MAX_CTS,
    MAX_TEMPLATES,
    TMPL_SIZE,
)

__all__ = ["SOURCE", "Datapath", "OffloadError", "OffloadMapFull", "OffloadUnavailable", "detach_stale", "ifindex",
           "probe"]

SOURCE = Path(__file__).with_name("natbox_offload.bpf.c")
CFLAGS = ("-O2", "-g", "-target", "bpf", "-Wall")
TC_PREF = 0x4E42  # the tc filter's preference ("NB") and handle: natbox's filter among a device's others
TC_HANDLE = 1
FLOWS_MAP, STATS_MAP = "nb_flows", "nb_stats"  # the map names in the C source
FLOWS6_MAP, STATS6_MAP = "nb_flows6", "nb_stats6"  # IPv6's
TMPL_MAP, CT_MAP, EVENTS_MAP = "nb_tmpl", "nb_ct", "nb_events"  # the new-connections build's (offload/newflows.py)
NEW_FLOWS_DEFINE = "-DNB_NEW_FLOWS"
BPF_MAP_TYPE_RINGBUF = 27
COMMAND_TIMEOUT = 60.0  # seconds for clang or tc
_MNT_DETACH = 2
_HEADERS = (("bpf/bpf_helpers.h", "libbpf-dev"), ("linux/bpf.h", "linux-libc-dev"))
_KCONFIG = (("CONFIG_BPF_SYSCALL", "bpf()"), ("CONFIG_NET_CLS_BPF", "cls_bpf"),
            ("CONFIG_NET_SCH_INGRESS", "clsact"))


class OffloadError(NatboxError):
    """The kernel data path failed (a full map, a device that went away); str() is one line."""


class OffloadMapFull(OffloadError):
    """The map holds MAX_FLOWS entries already (the kernel's E2BIG): nothing more fits until some go."""


class OffloadUnavailable(OffloadError):
    """The kernel data path cannot be used here; str() is one line naming what is missing."""


def _include_dirs() -> list[str]:
    multiarch = sysconfig.get_config_var("MULTIARCH")
    dirs = [f"/usr/include/{multiarch}"] if isinstance(multiarch, str) and multiarch else []
    return [d for d in dirs if os.path.isdir(d)]


def _kernel_config() -> dict[str, str] | None:
    """/proc/config.gz as NAME → value; None when the kernel does not offer it."""
    try:
        with gzip.open("/proc/config.gz", "rt") as f:
            lines = f.read().splitlines()
    except (OSError, EOFError):
        return None
    return dict(line.split("=", 1) for line in lines if line.startswith("CONFIG_") and "=" in line)


def _tools_missing() -> str | None:
    """What probe() checks without touching the kernel: programs, headers, the kernel's configuration."""
    for prog, pkg in (("clang", "clang"), ("tc", "iproute2")):
        if shutil.which(prog) is None:
            return f"{prog} not found (Debian package {pkg})"
    for header, pkg in _HEADERS:
        if not any(os.path.exists(os.path.join(d, header)) for d in ("/usr/include", "/usr/local/include")):
            return f"{header} not found (Debian package {pkg})"
    config = _kernel_config()
    if config is not None:
        for name, what in _KCONFIG:
            if config.get(name) not in ("y", "m"):
                return f"kernel lacks {what} ({name})"
    return None


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _mount_bpffs(path: str) -> None:
    if _libc().mount(b"bpf", os.fsencode(path), b"bpf", 0, None) != 0:
        err = ctypes.get_errno()
        raise OffloadUnavailable(f"bpffs not mountable at {path}: {os.strerror(err)}")


def _umount(path: str) -> None:
    _libc().umount2(os.fsencode(path), _MNT_DETACH)


def probe() -> str | None:
    """None when the kernel data path can be used here; else one line naming what is missing: a program
    ("clang not found ..."), headers, a kernel feature ("kernel lacks cls_bpf ..."), permission for bpf(),
    a bpffs ("bpffs not mountable ...")."""
    missing = _tools_missing()
    if missing is not None:
        return missing
    try:
        os.close(bpf.map_create(bpf.BPF_MAP_TYPE_ARRAY, 4, 4, 1, "nb_probe"))
    except OSError as e:
        if e.errno in (errno.EPERM, errno.EACCES):
            return "bpf() not permitted (needs CAP_BPF and CAP_NET_ADMIN: run as root)"
        return f"kernel lacks bpf() maps ({os.strerror(e.errno or 0)})"
    tmp = tempfile.mkdtemp(prefix="natbox-bpffs-")
    try:
        _mount_bpffs(tmp)
        _umount(tmp)
    except OffloadUnavailable as e:
        return str(e)
    finally:
        os.rmdir(tmp)
    return None


def ifindex(name: str) -> int:
    """The index of a device in the calling thread's namespace, 0 when there is none (offload_entry's
    `ifindex` argument)."""
    try:
        return socket.if_nametoindex(name)
    except OSError:
        return 0


def _run(argv: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT, env=env, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise OffloadError(f"{argv[0]} failed: {e}") from None


def detach_stale(ifname: str) -> bool:
    """Remove natbox's filter from `ifname`'s ingress if one is there (left by a natbox that did not close
    its Datapath: its program would go on forwarding the flows it held); whether there was one. A gateway
    starting on a device calls this, with --offload or without."""
    shown = _run(["tc", "filter", "show", "dev", ifname, "ingress", "pref", str(TC_PREF)])
    if shown.returncode != 0 or "natbox_offload" not in shown.stdout:
        return False
    done = _run(["tc", "filter", "del", "dev", ifname, "ingress", "pref", str(TC_PREF), "handle", str(TC_HANDLE),
                 "bpf"])
    if done.returncode != 0:
        raise OffloadError(f"tc could not remove natbox's old filter from {ifname}: {_last_line(done.stderr)}")
    return True


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no message"


def build_object(workdir: str, defines: tuple[str, ...] = ()) -> str:
    """The BPF object built from SOURCE into `workdir` (reused when one built from the same source and
    flags is there): its path. `defines`: -D options (NEW_FLOWS_DEFINE: the new-connections build)."""
    source = SOURCE.read_bytes()
    includes = [f"-I{d}" for d in _include_dirs()]
    flags = [*CFLAGS, *defines, *includes]
    digest = hashlib.sha256(source + " ".join(flags).encode()).hexdigest()[:16]
    obj = os.path.join(workdir, f"natbox_offload-{digest}.o")
    if os.path.exists(obj):
        return obj
    tmp = obj + f".{os.getpid()}.tmp"
    done = _run(["clang", *flags, "-c", str(SOURCE), "-o", tmp])
    if done.returncode != 0:
        errors = [line for line in done.stderr.splitlines() if "error" in line] or [_last_line(done.stderr)]
        raise OffloadUnavailable(f"clang could not build {SOURCE.name}: {errors[0].strip()}")
    os.replace(tmp, obj)
    return obj


class Datapath:
    """The tc BPF program on the devices natbox forwards between, and its maps (see the module docstring)."""

    def __init__(self, workdir: str, *, new_flows: bool = False) -> None:
        missing = _tools_missing()
        if missing is not None:
            raise OffloadUnavailable(missing)
        self.workdir = os.path.abspath(workdir)
        self._made = not os.path.exists(self.workdir)
        self._mounted = False
        self._sealed = False  # seal(): no bpffs any more, no attach
        self._attached: dict[str, bool] = {}  # device → whether natbox added its clsact qdisc
        self._flows: bpf.MapFd | None = None
        self._stats: bpf.MapFd | None = None
        self._flows6: bpf.MapFd | None = None
        self._stats6: bpf.MapFd | None = None
        self.new_flows: NewFlowMaps | None = None  # the new-connections build's maps (`new_flows`)
        self._installed: dict[bytes, OffloadKey] = {}  # encoded key → key, of every entry installed
        self._per_cpu = struct.Struct("=" + "QQQ" * bpf.nr_possible_cpus())  # nb_stats, every CPU's
        self.bpffs = os.path.join(self.workdir, "bpffs")
        try:
            os.makedirs(self.bpffs, exist_ok=True)
            self.object = build_object(self.workdir, (NEW_FLOWS_DEFINE,) if new_flows else ())
            _mount_bpffs(self.bpffs)
            self._mounted = True
            pins = os.path.join(self.bpffs, "tc", "globals")
            os.makedirs(pins, exist_ok=True)
            ncpus = bpf.nr_possible_cpus()
            self._flows = self._create(bpf.BPF_MAP_TYPE_HASH, ACTION_SIZE, os.path.join(pins, FLOWS_MAP), 1, 0)
            self._stats = self._create(bpf.BPF_MAP_TYPE_PERCPU_HASH, STATS_SIZE, os.path.join(pins, STATS_MAP),
                                       ncpus, bpf.BPF_F_NO_PREALLOC)
            self._flows6 = self._create(bpf.BPF_MAP_TYPE_HASH, ACTION6_SIZE, os.path.join(pins, FLOWS6_MAP), 1, 0,
                                        KEY6_SIZE)
            self._stats6 = self._create(bpf.BPF_MAP_TYPE_PERCPU_HASH, STATS_SIZE, os.path.join(pins, STATS6_MAP),
                                        ncpus, bpf.BPF_F_NO_PREALLOC, KEY6_SIZE)
            if new_flows:
                self.new_flows = NewFlowMaps(pins, self._flows)
        except OSError as e:
            self.close()
            raise OffloadUnavailable(f"offload set-up failed in {self.workdir}: {e.strerror or e}") from None
        except OffloadError:
            self.close()
            raise

    @staticmethod
    def _create(map_type: int, value_size: int, path: str, ncpus: int, flags: int,
                key_size: int = KEY_SIZE) -> bpf.MapFd:
        """A map as the C source declares it (libbpf reuses a pinned map only when type, sizes, entries and
        flags match), pinned at `path`."""
        try:
            fd = bpf.map_create(map_type, key_size, value_size, MAX_FLOWS, os.path.basename(path), flags)
        except OSError as e:
            if e.errno in (errno.EPERM, errno.EACCES):
                raise OffloadUnavailable("bpf() not permitted (needs CAP_BPF and CAP_NET_ADMIN: run as root)") from None
            raise
        bpf.obj_pin(fd, path)
        return bpf.MapFd(fd, key_size, value_size, ncpus)

    def _tc(self, *args: str) -> subprocess.CompletedProcess[str]:
        return _run(["tc", *args], env={**os.environ, "TC_BPF_MNT": self.bpffs})

    def attach(self, ifname: str) -> None:
        """The program on `ifname`'s clsact ingress, direct-action (again: nothing changes)."""
        if ifname in self._attached:
            return
        if self._flows is None or self._sealed:
            raise OffloadError(f"offload data path is {'closed' if self._flows is None else 'sealed'}")
        shown = self._tc("qdisc", "show", "dev", ifname)
        if shown.returncode != 0:
            if "cannot find device" in shown.stderr.lower():
                raise OffloadError(f"offload: no device {ifname}")
            raise OffloadError(f"tc could not list the qdiscs of {ifname}: {_last_line(shown.stderr)}")
        has_clsact = "qdisc clsact" in shown.stdout
        if not has_clsact:
            added = self._tc("qdisc", "add", "dev", ifname, "clsact")
            if added.returncode != 0:
                raise OffloadUnavailable(f"tc could not add clsact on {ifname}: {_last_line(added.stderr)}")
        self._attached[ifname] = not has_clsact
        done = self._tc("filter", "replace", "dev", ifname, "ingress", "pref", str(TC_PREF), "handle",
                        str(TC_HANDLE), "bpf", "direct-action", "object-file", self.object, "section", "tc")
        if done.returncode != 0:
            self._detach(ifname)
            raise OffloadUnavailable(f"tc could not attach the BPF program to {ifname}: "
                                     f"{_last_line(done.stderr + done.stdout)}")

    def seal(self) -> None:
        """No more devices: the private bpffs is unmounted and the workdir deleted now, while the process may
        still do both (before `--user` drops root). The maps live on, held by the attached programs and this
        object's descriptors, through which `install`, `remove` and `stats` keep working without any
        capability (since Linux 6.5 bpf() checks unprivileged_bpf_disabled at map and program creation only);
        `close` then only detaches (CAP_NET_ADMIN)."""
        if self._mounted:
            _umount(self.bpffs)
            self._mounted = False
        self._remove_workdir()
        self._sealed = True

    def _detach(self, ifname: str) -> None:
        added = self._attached.pop(ifname, False)
        self._tc("filter", "del", "dev", ifname, "ingress", "pref", str(TC_PREF), "handle", str(TC_HANDLE), "bpf")
        if added:
            self._tc("qdisc", "del", "dev", ifname, "clsact")

    def _maps(self, family: int = 0) -> tuple[bpf.MapFd, bpf.MapFd]:
        """The flows and counters maps of an address family (NFPROTO_IPV6: IPv6's, else IPv4's)."""
        flows, stats = (self._flows6, self._stats6) if family == NFPROTO_IPV6 else (self._flows, self._stats)
        if flows is None or stats is None:
            raise OffloadError("offload data path is closed")
        return flows, stats

    def install(self, key: OffloadKey, action: OffloadAction) -> None:
        """Add or replace the entry of `key` (its counters are kept when it had some)."""
        flows, stats = self._maps(key.family)
        k = encode_key(key)
        try:
            if k not in self._installed:
                try:
                    stats.update(k, bytes(STATS_SIZE), bpf.BPF_NOEXIST)
                except OSError as e:
                    if e.errno != errno.EEXIST:
                        raise
            try:
                flows.update(k, encode_action(action))
            except OSError:
                if k not in self._installed:
                    stats.delete(k)  # no counters without an entry
                raise
            self._installed[k] = key
        except OSError as e:
            if e.errno == errno.E2BIG:
                raise OffloadMapFull(f"offload map full ({MAX_FLOWS} flow directions)") from None
            raise OffloadError(f"offload map update failed: {e.strerror or e}") from None

    def remove(self, key: OffloadKey) -> None:
        """Delete the entry of `key` and its counters (a missing key is fine)."""
        flows, stats = self._maps(key.family)
        k = encode_key(key)
        self._installed.pop(k, None)
        try:
            flows.delete(k)
            stats.delete(k)
        except OSError as e:
            raise OffloadError(f"offload map delete failed: {e.strerror or e}") from None

    def stats(self) -> dict[OffloadKey, FlowStats]:
        """Every installed entry's counters, summed over CPUs, read in one batch per map (IPv4's, IPv6's)."""
        installed, per_cpu = self._installed, self._per_cpu
        out: dict[OffloadKey, FlowStats] = {}
        try:
            for stats in (self._maps()[1], self._maps(NFPROTO_IPV6)[1]):
                ks = stats.key_size
                for kraw, vraw, _ in stats.batches():
                    for i, v in enumerate(per_cpu.iter_unpack(vraw)):  # each element: every CPU's counters
                        kb = kraw[i * ks:(i + 1) * ks]
                        out[installed.get(kb) or decode_key(kb)] = FlowStats(sum(v[0::3]), sum(v[1::3]),
                                                                             max(v[2::3]))
        except OSError as e:
            raise OffloadError(f"offload map read failed: {e.strerror or e}") from None
        return out

    def action(self, key: OffloadKey) -> bytes | None:
        """The encoded action installed for `key` (None: none), as the program reads it."""
        flows, _ = self._maps(key.family)
        return flows.lookup(encode_key(key))

    def close(self) -> None:
        """Detach from every device, close and unpin the maps, unmount the bpffs and delete what this
        object made (the workdir when it created it). Safe to call twice."""
        for ifname in list(self._attached):
            try:
                self._detach(ifname)
            except OffloadError:
                self._attached.pop(ifname, None)  # tc failed to run: nothing more to do for it here
        for m in (self._flows, self._stats, self._flows6, self._stats6):
            if m is not None:
                m.close()
        if self.new_flows is not None:
            self.new_flows.close()
            self.new_flows = None
        self._flows = self._stats = self._flows6 = self._stats6 = None
        self._installed.clear()
        if self._mounted:
            _umount(self.bpffs)
            self._mounted = False
        if not self._sealed:
            self._remove_workdir()

    def _remove_workdir(self) -> None:
        if self._made:
            shutil.rmtree(self.workdir, ignore_errors=True)
        elif os.path.isdir(self.bpffs):
            shutil.rmtree(self.bpffs, ignore_errors=True)


def _pinned(map_type: int, key_size: int, value_size: int, max_entries: int, path: str, flags: int = 0) -> int:
    """A map created as the C source declares it and pinned at `path`: its descriptor."""
    fd = bpf.map_create(map_type, key_size, value_size, max_entries, os.path.basename(path), flags)
    try:
        bpf.obj_pin(fd, path)
    except OSError:
        os.close(fd)
        raise
    return fd


class NewFlowMaps:
    """The new-connections build's maps (natbox_offload.bpf.c, offload/newflows.py): templates, the tuples of
    every ct, and the ring buffer of packet copies; entries the program created are removed from nb_flows
    here too (`remove_tracked`). Map errors are OffloadErrors."""

    def __init__(self, pins: str, flows: bpf.MapFd) -> None:
        self._flows = flows
        self.templates = bpf.MapFd(_pinned(bpf.BPF_MAP_TYPE_HASH, KEY_SIZE, TMPL_SIZE, MAX_TEMPLATES,
                                           os.path.join(pins, TMPL_MAP)), KEY_SIZE, TMPL_SIZE)
        self.cts = bpf.MapFd(_pinned(bpf.BPF_MAP_TYPE_HASH, CT_KEY_SIZE, 4, MAX_CTS, os.path.join(pins, CT_MAP),
                                     bpf.BPF_F_NO_PREALLOC), CT_KEY_SIZE, 4)
        self.events_fd = _pinned(BPF_MAP_TYPE_RINGBUF, 0, 0, EVENTS_SIZE, os.path.join(pins, EVENTS_MAP))

    def install_template(self, key: OffloadKey, value: bytes) -> None:
        try:
            self.templates.update(encode_key(key), value)
        except OSError as e:
            raise OffloadError(f"offload template update failed: {e.strerror or e}") from None

    def remove_template(self, key: OffloadKey) -> None:
        try:
            self.templates.delete(encode_key(key))
        except OSError as e:
            raise OffloadError(f"offload template delete failed: {e.strerror or e}") from None

    def claim(self, ct_key: bytes) -> None:
        """A tuple of natbox's conntrack: the program's new flows must not take it."""
        try:
            self.cts.update(ct_key, _NATBOX_CLAIM)
        except OSError as e:
            raise OffloadError(f"offload tuple claim failed: {e.strerror or e}") from None

    def release(self, ct_keys: list[bytes]) -> None:
        """Tuples natbox's conntrack no longer holds (one BPF_MAP_DELETE_BATCH)."""
        try:
            self.cts.delete_many(ct_keys)
        except (OSError, ValueError) as e:
            raise OffloadError(f"offload tuple release failed: {getattr(e, 'strerror', None) or e}") from None

    def install_tracked(self, entries: list[tuple[OffloadKey, bytes]]) -> None:
        """TRACKED entries natbox made for a connection its own path opened (newflows.tracked_entries)."""
        try:
            for key, value in entries:
                self._flows.update(encode_key(key), value)
        except OSError as e:
            raise OffloadError(f"offload map update failed: {e.strerror or e}") from None

    def mark_reopen(self, ct_keys: list[bytes]) -> None:
        """Tuples of closed cts a SYN would reopen (NB_CT_REOPEN; one BPF_MAP_UPDATE_BATCH, BPF_EXIST: a tuple
        released meanwhile stays free)."""
        try:
            self.cts.update_many(ct_keys, _REOPEN_CLAIM, bpf.BPF_EXIST)
        except (OSError, ValueError) as e:
            raise OffloadError(f"offload tuple mark failed: {getattr(e, 'strerror', None) or e}") from None

    def remove_tracked(self, keys: list[OffloadKey]) -> None:
        """Delete entries the program created (they have no counters; one BPF_MAP_DELETE_BATCH)."""
        try:
            self._flows.delete_many([encode_key(key) for key in keys])
        except (OSError, ValueError) as e:
            raise OffloadError(f"offload map delete failed: {getattr(e, 'strerror', None) or e}") from None

    def close(self) -> None:
        self.templates.close()
        self.cts.close()
        if self.events_fd >= 0:
            os.close(self.events_fd)
            self.events_fd = -1


_NATBOX_CLAIM = CLAIM_NATBOX.to_bytes(4, sys.byteorder)
_REOPEN_CLAIM = CLAIM_REOPEN.to_bytes(4, sys.byteorder)
