"""The Python mirror of the C structs matches what clang laid out (read from the object's BTF)."""

import ctypes
import os
import re
import struct
from importlib import resources

import pytest

from socketsnoop import events, filters, libbpf, probe
from socketsnoop.libbpf import Libbpf

BTF_KIND_STRUCT = 4
OBJ = str(resources.files("socketsnoop").joinpath("bpf/socketsnoop.bpf.o"))


class _Member(ctypes.Structure):
    _fields_ = [("name_off", ctypes.c_uint32), ("type", ctypes.c_uint32), ("offset", ctypes.c_uint32)]


def btf_struct(name, path=OBJ):
    """{member: byte offset} and the size of struct `name` in the BTF of `path` (the committed object)."""
    bpf = Libbpf.get()
    parse = bpf.lib.btf__parse
    parse.restype, parse.argtypes = ctypes.c_void_p, [ctypes.c_char_p, ctypes.c_void_p]
    btf = parse(path.encode(), None)
    assert btf, "cannot read BTF from the object"
    tid = bpf.btf_find(btf, name.encode(), BTF_KIND_STRUCT)
    assert tid > 0, f"struct {name} not in BTF"
    t = bpf.btf_type(btf, tid).contents
    members = ctypes.cast(ctypes.addressof(t) + 12, ctypes.POINTER(_Member))
    out = {bpf.btf_name(btf, members[i].name_off).decode(): members[i].offset // 8 for i in range(t.info & 0xFFFF)}
    return out, t.size_or_type


def python_offsets(fmt, names):
    """Offsets of each named field of a struct format (pad bytes 'x' have no name)."""
    out, pos = {}, 0
    tokens = re.findall(r"(\d*)([a-zA-Z?])", fmt.lstrip("<"))
    it = iter(names)
    for count, code in tokens:
        n = int(count or 1)
        size = struct.calcsize("<" + count + code)
        if code != "x":
            if code == "s":
                out[next(it)] = pos
            else:
                for k in range(n):
                    out[next(it)] = pos + k * struct.calcsize("<" + code)
        pos += size
    return out, pos


def test_event_matches_c():
    c, size = btf_struct("event")
    assert size == events.EVENT.size == 96
    py, total = python_offsets(events.EVENT_FORMAT, events.Event._fields)
    assert total == size
    for name, off in py.items():
        assert c[name] == off, name


def test_row_decoding_matches_c():
    """A row is struct event with pid .. family taken as one string (events.IDENT): those fields must be
    contiguous in C, in IDENT's order, and the row's other fields where the event has them."""
    c, size = btf_struct("event")
    assert events.ROW.size == size and events.RECORD.size == size + 8
    py, total = python_offsets(events.ROW_FORMAT, events.Row._fields)
    assert total == size
    for name in events.Row._fields[:-1]:
        assert c[name] == py[name], name
    start = py["ident"]
    assert c["pid"] == start
    inner, length = python_offsets(events.IDENT_FORMAT, events.Ident._fields)
    assert length == events.IDENT_STRUCT.size == struct.calcsize(f"<{length}s")
    for name, off in inner.items():
        assert c[name] == start + off, name
    assert events.ROW_FORMAT.count(f"{length}s") == 1


def test_make_row_decodes_back():
    row = events.make_row(ts_ns=7, skaddr=8, pid=9, sport=10, dport=11, saddr=b"\x01" * 16, daddr=b"\x02" * 16,
                          comm=b"x", family=6, newstate=1)
    packed = events.EVENT.pack(7, 8, 0, 0, 1, 0, 1, 0, 0, 9, 10, 11, b"\x01" * 16, b"\x02" * 16, b"x", 6)
    assert events.ROW.unpack(packed) == tuple(row)
    assert events.ident_of(row) == (9, 10, 11, b"\x01" * 16, b"\x02" * 16, b"x".ljust(16, b"\0"), 6)


@pytest.mark.parametrize("name,packer,fields", [
    ("owner", probe.OWNER, ("pid", "pad", "comm")),
    ("listen_key", probe.LISTEN_KEY, ("netns", "port", "family", "addr")),
    ("filter_key", filters.FILTER_KEY, ("prefixlen", "kind", "family", "addr")),
])
def test_map_keys_match_c(name, packer, fields):
    c, size = btf_struct(name)
    assert packer.size == size
    py, _ = python_offsets(packer.format, fields)
    for f, off in py.items():
        assert c[f] == off, f


@pytest.mark.skipif(not os.path.exists("/sys/kernel/btf/vmlinux"), reason="kernel has no BTF")
def test_prog_info_offsets_match_the_kernel():
    c, size = btf_struct("bpf_prog_info", "/sys/kernel/btf/vmlinux")
    assert c["recursion_misses"] == libbpf.RECURSION_MISSES_OFF
    assert size >= libbpf.PROG_INFO_SIZE


def test_constants_match_header():
    text = resources.files("socketsnoop").joinpath("bpf/socketsnoop.h").read_text()
    consts = {m[0]: int(m[1]) for m in re.findall(r"\b(SS_\w+) = (\d+)", text)}
    bits = {m[0]: 1 << int(m[1]) for m in re.findall(r"#define (SS_FILT_\w+) \(1u << (\d+)\)", text)}
    assert consts["SS_EV_STATE"] == events.STATE_CHANGE and consts["SS_EV_RETRANSMIT"] == events.RETRANSMIT
    assert consts["SS_EV_RESET_SENT"] == events.RESET_SENT
    assert consts["SS_EV_RESET_RECEIVED"] == events.RESET_RECEIVED
    assert consts["SS_OWNER_NONE"] == events.OWNER_NONE and consts["SS_OWNER_LISTENER"] == events.OWNER_LISTENER
    assert consts["SS_C_LOST"] == events.C_LOST and consts["SS_C_MAX"] == events.C_MAX
    assert bits["SS_FILT_SKIP_UNSPEC"] == filters.FILT_SKIP_UNSPEC and bits["SS_FILT_PID"] == filters.FILT_PID
    assert bits["SS_FILT_NO_RESET"] == filters.FILT_NO_RESET and bits["SS_FILT_IPV6"] == filters.FILT_IPV6
