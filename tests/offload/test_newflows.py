"""The new-connections build's records (offload/newflows.py) against natbox_offload.bpf.c, and a template's
map entry made from an engine template, with no kernel."""

from __future__ import annotations

import mmap
import os
import re
import struct
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from natbox.engine.engine import Engine
from natbox.engine.template import TemplateAdd
from natbox.offload import bpf, newflows
from natbox.offload.datapath import SOURCE
from natbox.offload.entry import KEY_SIZE, OffloadKey, decode_action, decode_key, offload_entry
from natbox.offload.newflows import decode_event, encode_ct_key, template_entry
from natbox.testing.offload import CLIENT, PUBLIC, SERVER, RouterFlows

MACS = (bytes.fromhex("020000000001"), bytes.fromhex("020000000101"), bytes.fromhex("02000000c002"),
        bytes.fromhex("02000000aa02"))
IFINDEX = {"eth0": 4, "eth1": 5}


def test_c_source_has_the_same_sizes_and_bounds() -> None:
    src = SOURCE.read_text()
    defines = dict(re.findall(r"#define (NB_\w+) \(?([0-9x<() ]+)\)?", src))
    assert int(defines["NB_TMPL_SIZE"]) == newflows.TMPL_SIZE
    assert int(defines["NB_CT_KEY_SIZE"]) == newflows.CT_KEY_SIZE
    assert int(defines["NB_EVENT_SIZE"]) == newflows.EVENT_SIZE
    assert int(defines["NB_MAX_TEMPLATES"]) == newflows.MAX_TEMPLATES
    assert int(defines["NB_MAX_CTS"]) == newflows.MAX_CTS
    assert int(defines["NB_EV_COPY"]) == newflows.EV_COPY
    assert int(defines["NB_EV_CREATED"]) == newflows.EV_CREATED
    assert int(defines["NB_CT_REOPEN"]) == newflows.CLAIM_REOPEN
    assert int(defines["NB_F_TRACKED"]) == newflows.F_TRACKED
    assert re.search(r"#define NB_EVENTS_SIZE \(1 << 20\)", src) and newflows.EVENTS_SIZE == 1 << 20
    assert newflows.TMPL_SIZE == 2 * 48 + KEY_SIZE


def _template_entry() -> tuple[newflows.TemplateEntry, RouterFlows]:
    flows = RouterFlows(*MACS)
    engine = Engine(flows.engine.host, ruleset=flows.engine.rules, seed=1, templates=True, offload=True)
    flows.engine = engine
    flows.tcp(41000, 5001)
    (req,) = engine.template_requests()
    assert isinstance(req, TemplateAdd)
    entry = template_entry(req.template, IFINDEX.__getitem__)
    assert entry is not None
    return entry, flows


def test_a_template_entry_is_both_directions_entries_with_the_port_a_wildcard() -> None:
    entry, flows = _template_entry()
    assert entry.key == OffloadKey(4, 6, CLIENT, SERVER, 0, 5001)
    assert entry.reply_key == OffloadKey(5, 6, SERVER, PUBLIC, 5001, 0)
    orig, reply = decode_action(entry.value[:48]), decode_action(entry.value[48:96])
    assert decode_key(entry.value[96:]) == entry.reply_key
    # what the program makes of it for the client's port 41000 is what --offload installs for that flow
    plans = flows.flow_plans(6, 41000)
    compiled = [offload_entry(p, IFINDEX.__getitem__) for p in plans]
    assert compiled[0] is not None and compiled[1] is not None
    assert compiled[0] == (entry.key._replace(sport=41000), orig)
    assert compiled[1] == (entry.reply_key._replace(dport=41000), reply._replace(dport=41000))


def test_events_and_tuple_keys() -> None:
    frame = bytes(range(96))
    raw = struct.pack("=IHHI4xQ", 7, 60, 1, 74, 123) + frame
    ev = decode_event(raw)
    assert ev is not None and (ev.ifindex, ev.created, ev.length, ev.ts_ns, ev.data) == (7, True, 74, 123, frame[:60])
    assert decode_event(raw[:50]) is None
    assert encode_ct_key(CLIENT, SERVER, 1, 2, 6) == (CLIENT.to_bytes(4, "big") + SERVER.to_bytes(4, "big")
                                                     + b"\x00\x01\x00\x02\x06\x00\x00\x00")


@contextmanager
def _ct_map() -> Iterator[tuple[bpf.MapFd, list[bytes]]]:
    """A hash map of nb_ct's shape (root: the bpf() system call) holding 5 of 7 keys: all but keys[2], keys[6]."""
    if os.geteuid() != 0:
        pytest.skip("needs root (the bpf() system call)")
    try:
        fd = bpf.map_create(bpf.BPF_MAP_TYPE_HASH, newflows.CT_KEY_SIZE, 4, 64, "nb_test", bpf.BPF_F_NO_PREALLOC)
    except OSError as e:
        pytest.skip(f"bpf(BPF_MAP_CREATE): {e}")
    m = bpf.MapFd(fd, newflows.CT_KEY_SIZE, 4)
    try:
        keys = [encode_ct_key(CLIENT, SERVER, 40000 + i, 80, 6) for i in range(7)]
        for key in keys[:2] + keys[3:6]:
            m.update(key, b"\x02\0\0\0")
        yield m, keys
    finally:
        m.close()


def test_this_kernel_deletes_hash_map_keys_in_batches() -> None:
    """BPF_MAP_DELETE_BATCH on a hash map (Linux 5.6+, what NewConnections.flush uses): every key present goes,
    a missing key costs one more call and is skipped, not an error (root: the bpf() system call)."""
    with _ct_map() as (m, keys):
        assert m.delete_many(keys) == 5  # keys[2] and keys[6] were not there
        assert m.items() == []
        assert m.delete_many([]) == 0
        m.update(keys[0], b"\x01\0\0\0")
        assert m.delete_many(keys[:1]) == 1 and m.lookup(keys[0]) is None


def test_this_kernel_updates_existing_hash_map_keys_in_batches() -> None:
    """BPF_MAP_UPDATE_BATCH with BPF_EXIST on a hash map (what NewConnections.flush marks closed cts' tuples
    with): every key present gets the value, a missing key is skipped and stays missing (root)."""
    with _ct_map() as (m, keys):
        reopen = newflows.CLAIM_REOPEN.to_bytes(4, sys.byteorder)
        assert m.update_many(keys, reopen, bpf.BPF_EXIST) == 5  # keys[2] and keys[6] were not there
        assert sorted(m.items()) == sorted((k, reopen) for k in keys[:2] + keys[3:6])
        assert m.lookup(keys[2]) is None and m.lookup(keys[6]) is None
        assert m.update_many([], reopen, bpf.BPF_EXIST) == 0


def test_the_mapped_ring_reads_records_as_libbpf_does() -> None:
    """EventRing's direct reading (`_consume_mapped`) on a ring laid out as the kernel lays it out, in
    anonymous memory: a record wrapping past the end (the data mapped twice), a discarded one skipped, a busy
    one (still being written) and what follows it left for the next call, the consumer position written."""
    size, page = 4096, mmap.PAGESIZE
    cons, prod = mmap.mmap(-1, page), mmap.mmap(-1, page + 2 * size)
    ring = object.__new__(newflows.EventRing)
    ring._maps, ring._data, ring._mask, ring._rb = (cons, prod), memoryview(prod)[page:], size - 1, None
    pos = size - 48  # the first record starts 48 bytes before the end: the second wraps

    def put(sample: bytes, flags: int = 0) -> None:
        nonlocal pos
        rec = struct.pack("=II", len(sample) | flags, 0) + sample.ljust((len(sample) + 7) // 8 * 8, b"\0")
        for i, byte in enumerate(rec):  # both mappings of the data
            for base in (page, page + size):
                prod[base + (pos + i) % size] = byte
        pos += len(rec)

    struct.pack_into("=Q", cons, 0, size - 48)
    put(b"a" * 20)
    put(b"b" * 40)  # wraps
    put(b"c" * 8, 1 << 30)  # discarded
    put(b"d" * 8)
    busy_at = pos
    put(b"e" * 8, 1 << 31)  # busy
    put(b"f" * 8)
    struct.pack_into("=Q", prod, 0, pos)
    assert ring.consume() == [b"a" * 20, b"b" * 40, b"d" * 8]
    assert struct.unpack_from("=Q", cons, 0)[0] == busy_at
    struct.pack_into("=I", prod, page + busy_at % size, 8)  # committed
    struct.pack_into("=I", prod, page + size + busy_at % size, 8)
    assert ring.consume() == [b"e" * 8, b"f" * 8] and ring.consume() == []
    assert struct.unpack_from("=Q", cons, 0)[0] == pos
    ring.close()
