"""The bpf() system call for BPF maps, through ctypes (include/uapi/linux/bpf.h, kernel/bpf/syscall.c).

Only what natbox's data path needs: create a hash map and pin it in a bpffs (BPF_MAP_CREATE, BPF_OBJ_PIN),
open a pinned one (BPF_OBJ_GET), update, delete and look up elements, read a whole map in batches
(BPF_MAP_LOOKUP_BATCH) and delete many keys in one call (BPF_MAP_DELETE_BATCH). Each `union bpf_attr` is
packed with `struct` in the layout of the kernel's header; errors are `OSError`s with the errno the kernel returned.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import struct
from collections.abc import Iterator

__all__ = [
    "BPF_ANY",
    "BPF_F_NO_PREALLOC",
    "BPF_MAP_TYPE_HASH",
    "BPF_MAP_TYPE_PERCPU_HASH",
    "BPF_NOEXIST",
    "MapFd",
    "map_create",
    "nr_possible_cpus",
    "obj_get",
    "obj_pin",
]

# enum bpf_cmd
BPF_MAP_CREATE = 0
BPF_MAP_LOOKUP_ELEM = 1
BPF_MAP_UPDATE_ELEM = 2
BPF_MAP_DELETE_ELEM = 3
BPF_OBJ_PIN = 6
BPF_OBJ_GET = 7
BPF_MAP_LOOKUP_BATCH = 24
BPF_MAP_UPDATE_BATCH = 26
BPF_MAP_DELETE_BATCH = 27
# enum bpf_map_type
BPF_MAP_TYPE_HASH = 1
BPF_MAP_TYPE_ARRAY = 2
BPF_MAP_TYPE_PERCPU_HASH = 5
# update flags
BPF_ANY = 0
BPF_NOEXIST = 1
BPF_EXIST = 2
BPF_F_NO_PREALLOC = 1  # map_flags: elements allocated when added

_SYS_BPF = {"x86_64": 321, "aarch64": 280, "riscv64": 280, "i686": 357, "i386": 357, "armv7l": 386,
            "ppc64le": 361, "s390x": 351}
_ATTR_SIZE = 128  # bigger than every attr used here; the kernel checks the bytes past its own are zero
_CREATE = struct.Struct("=IIIIIII16s")  # map_type, key_size, value_size, max_entries, map_flags, inner_map_fd,
# numa_node, map_name
_ELEM = struct.Struct("=IIQQQ")  # map_fd, pad, key, value (or next_key), flags
_OBJ = struct.Struct("=QII")  # pathname, bpf_fd, file_flags
_BATCH = struct.Struct("=QQQQIIQQ")  # in_batch, out_batch, keys, values, count, map_fd, elem_flags, flags
BATCH_COUNT = 4096  # elements asked for per BPF_MAP_LOOKUP_BATCH call

class _Syscall:
    """bpf() through libc's syscall(), looked up once (the system call number of this machine)."""

    def __init__(self) -> None:
        nr = _SYS_BPF.get(platform.machine())
        if nr is None:
            raise OSError(errno.ENOSYS, f"bpf(): no system call number known for {platform.machine()}")
        fn = ctypes.CDLL(None, use_errno=True).syscall
        fn.restype = ctypes.c_long
        fn.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_uint]
        self.nr = nr
        self.fn = fn


_SYSCALL: list[_Syscall] = []


def _call(cmd: int, attr: ctypes.Array[ctypes.c_char]) -> int:
    """bpf(cmd, attr, sizeof attr): the result, or OSError with the kernel's errno."""
    if not _SYSCALL:
        _SYSCALL.append(_Syscall())
    sc = _SYSCALL[0]
    ret: int = sc.fn(sc.nr, cmd, ctypes.addressof(attr), len(attr))
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"bpf({cmd}): {os.strerror(err)}")
    return ret


def _sys_bpf(cmd: int, attr: bytes | bytearray) -> int:
    """bpf() with a fresh attr holding `attr`; a bytearray `attr` receives what the kernel wrote back (the
    batch calls' count)."""
    buf = ctypes.create_string_buffer(bytes(attr).ljust(_ATTR_SIZE, b"\0"), _ATTR_SIZE)
    try:
        return _call(cmd, buf)
    finally:
        if isinstance(attr, bytearray):
            attr[:] = buf.raw[:len(attr)]


def _addr(buf: ctypes.Array[ctypes.c_char] | None) -> int:
    return 0 if buf is None else ctypes.addressof(buf)


class MapFd:
    """An open BPF map: its file descriptor and element sizes (a per-CPU map's values are `ncpus` values,
    each rounded up to 8 bytes). The element calls reuse one attr, key and value buffer each (a map is
    used from one thread)."""

    def __init__(self, fd: int, key_size: int, value_size: int, ncpus: int = 1) -> None:
        self.fd = fd
        self.key_size = key_size
        self.value_size = value_size
        self.ncpus = ncpus
        self.stride = (value_size + 7) // 8 * 8 if ncpus > 1 else value_size
        self.total_value = self.stride * ncpus
        self._attr = ctypes.create_string_buffer(_ATTR_SIZE)
        self._key = ctypes.create_string_buffer(key_size)
        self._value = ctypes.create_string_buffer(self.total_value)

    def _elem(self, cmd: int, key: bytes, value: bool, flags: int = 0) -> int:
        if len(key) != self.key_size:
            raise ValueError(f"a key of {len(key)} bytes for a map of {self.key_size}-byte keys")
        ctypes.memmove(self._key, key, self.key_size)
        _ELEM.pack_into(self._attr, 0, self.fd, 0, ctypes.addressof(self._key),
                        ctypes.addressof(self._value) if value else 0, flags)
        return _call(cmd, self._attr)

    def update(self, key: bytes, value: bytes, flags: int = BPF_ANY) -> None:
        """BPF_MAP_UPDATE_ELEM (a per-CPU map: `value` for every CPU, or one value copied to each)."""
        if len(value) == self.value_size and self.ncpus > 1:
            value = value.ljust(self.stride, b"\0") * self.ncpus
        if len(value) != self.total_value:
            raise ValueError(f"a value of {len(value)} bytes for a map of {self.total_value}-byte values")
        ctypes.memmove(self._value, value, self.total_value)
        self._elem(BPF_MAP_UPDATE_ELEM, key, True, flags)

    def delete(self, key: bytes) -> bool:
        """BPF_MAP_DELETE_ELEM; False when the key was not there."""
        try:
            self._elem(BPF_MAP_DELETE_ELEM, key, False)
        except OSError as e:
            if e.errno == errno.ENOENT:
                return False
            raise
        return True

    def delete_many(self, keys: list[bytes]) -> int:
        """Delete `keys` with BPF_MAP_DELETE_BATCH (`generic_map_delete_batch`, hash maps since Linux 5.6),
        BATCH_COUNT keys per system call: one call for all of them, one more per key that was not there
        (the kernel stops at it and says how many it deleted before). Returns how many were deleted. A kernel
        without the command (EINVAL) gets one BPF_MAP_DELETE_ELEM each."""
        return self._batch(BPF_MAP_DELETE_BATCH, keys, None, 0, (errno.ENOENT,))

    def update_many(self, keys: list[bytes], value: bytes, flags: int = BPF_ANY) -> int:
        """Set `keys` to `value` with BPF_MAP_UPDATE_BATCH (`generic_map_update_batch`, Linux 5.6+), `flags`
        (BPF_EXIST: only keys that are there) for each, as `delete_many` walks them: a key the flags refuse
        (ENOENT, EEXIST) is passed over. Returns how many were set. A kernel without the command (EINVAL) gets
        one BPF_MAP_UPDATE_ELEM each. Not for per-CPU maps."""
        if len(value) != self.total_value:
            raise ValueError(f"a value of {len(value)} bytes for a map of {self.total_value}-byte values")
        return self._batch(BPF_MAP_UPDATE_BATCH, keys, value, flags, (errno.ENOENT, errno.EEXIST))

    def _batch(self, cmd: int, keys: list[bytes], value: bytes | None, flags: int, passed: tuple[int, ...]) -> int:
        """`keys` through batch command `cmd` (with `value` for each, for an update), BATCH_COUNT per system
        call; a key refused with an errno in `passed` is passed over (the kernel says how many it did before
        it). EINVAL on the first call (a kernel without batches): one element command per key."""
        done = i = 0
        size = self.key_size
        while i < len(keys):
            chunk = keys[i:i + BATCH_COUNT]
            if any(len(k) != size for k in chunk):
                raise ValueError(f"a key of the wrong size for a map of {size}-byte keys")
            kbuf = ctypes.create_string_buffer(b"".join(chunk), size * len(chunk))
            vbuf = None if value is None else ctypes.create_string_buffer(value * len(chunk), len(value) * len(chunk))
            attr = bytearray(_BATCH.pack(0, 0, _addr(kbuf), 0 if vbuf is None else _addr(vbuf), len(chunk), self.fd,
                                         flags, 0))
            try:
                _sys_bpf(cmd, attr)
            except OSError as e:
                if e.errno == errno.EINVAL and i == 0 and done == 0:
                    return self._each(keys, value, flags, passed)
                if e.errno not in passed:
                    raise
                n = _BATCH.unpack(bytes(attr))[4]  # done before the refused key
                done += n
                i += n + 1
                continue
            done += len(chunk)
            i += len(chunk)
        return done

    def _each(self, keys: list[bytes], value: bytes | None, flags: int, passed: tuple[int, ...]) -> int:
        """`_batch` one element command per key."""
        if value is None:
            return sum(self.delete(k) for k in keys)
        done = 0
        for key in keys:
            try:
                self.update(key, value, flags)
            except OSError as e:
                if e.errno not in passed:
                    raise
                continue
            done += 1
        return done

    def lookup(self, key: bytes) -> bytes | None:
        """BPF_MAP_LOOKUP_ELEM: the value (every CPU's, one after the other), None when missing."""
        try:
            self._elem(BPF_MAP_LOOKUP_ELEM, key, True)
        except OSError as e:
            if e.errno == errno.ENOENT:
                return None
            raise
        return self._value.raw

    def batches(self) -> Iterator[tuple[bytes, bytes, int]]:
        """The whole map read with BPF_MAP_LOOKUP_BATCH, BATCH_COUNT elements per system call: (keys,
        values, count) per call, the keys and values one after the other (a map changing meanwhile may be
        read partly before, partly after the change)."""
        keys = ctypes.create_string_buffer(self.key_size * BATCH_COUNT)
        values = ctypes.create_string_buffer(self.total_value * BATCH_COUNT)
        token_in = ctypes.create_string_buffer(8)
        token_out = ctypes.create_string_buffer(8)
        first = True
        while True:
            attr = bytearray(_BATCH.pack(0 if first else _addr(token_in), _addr(token_out), _addr(keys),
                                         _addr(values), BATCH_COUNT, self.fd, 0, 0))
            done = False
            try:
                _sys_bpf(BPF_MAP_LOOKUP_BATCH, attr)
            except OSError as e:
                if e.errno != errno.ENOENT:
                    raise
                done = True
            count = _BATCH.unpack(bytes(attr))[4]
            if count:
                yield keys.raw[:count * self.key_size], values.raw[:count * self.total_value], count
            if done or count == 0:
                return
            ctypes.memmove(token_in, token_out, 8)
            first = False

    def items(self) -> list[tuple[bytes, bytes]]:
        """Every (key, value) of the map (see `batches`)."""
        ks, vs = self.key_size, self.total_value
        return [(kraw[i * ks:(i + 1) * ks], vraw[i * vs:(i + 1) * vs])
                for kraw, vraw, count in self.batches() for i in range(count)]

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def map_create(map_type: int, key_size: int, value_size: int, max_entries: int, name: str, flags: int = 0) -> int:
    """BPF_MAP_CREATE: the new map's file descriptor."""
    return _sys_bpf(BPF_MAP_CREATE, _CREATE.pack(map_type, key_size, value_size, max_entries, flags, 0, 0,
                                                  name.encode()[:15]))


def obj_pin(fd: int, path: str) -> None:
    """BPF_OBJ_PIN: the object as a file in a bpffs."""
    p = ctypes.create_string_buffer(os.fsencode(path))
    _sys_bpf(BPF_OBJ_PIN, _OBJ.pack(_addr(p), fd, 0))


def obj_get(path: str) -> int:
    """BPF_OBJ_GET: a file descriptor of a pinned object."""
    p = ctypes.create_string_buffer(os.fsencode(path))
    return _sys_bpf(BPF_OBJ_GET, _OBJ.pack(_addr(p), 0, 0))


def nr_possible_cpus() -> int:
    """The CPUs a per-CPU map holds a value for (libbpf_num_possible_cpus: /sys/devices/system/cpu/possible)."""
    try:
        with open("/sys/devices/system/cpu/possible") as f:
            text = f.read().strip()
    except OSError:
        return os.cpu_count() or 1
    top = 0
    for part in text.split(","):
        last = part.rpartition("-")[2]
        if last.isdigit():
            top = max(top, int(last) + 1)
    return top or (os.cpu_count() or 1)
