"""kernel/abi.py is the Python mirror of bpf/socketsnoop.h: the same constants (values parsed from the header),
the same struct layouts (sizes, offsets and member sizes read from the committed object's BTF), the same map,
program and read-only variable names (read from the object). Any difference either way fails here."""

import ast
import os
import re
import struct
from importlib import resources
from pathlib import Path

import pytest
from socketsnoop.kernel import abi, libbpf
from socketsnoop.kernel.bpfobject import BpfObject
from socketsnoop.kernel.libbpf import Btf
from socketsnoop.pipeline import decode

BPF = resources.files("socketsnoop.kernel").joinpath("bpf")
OBJ = str(BPF.joinpath("socketsnoop.bpf.o"))
HEADER = BPF.joinpath("socketsnoop.h").read_text()
PACKAGE = Path(abi.__file__).resolve().parents[1]


def btf_struct(name, path=OBJ):
    """({member: (byte offset, byte size)}, size) of struct `name` in the BTF of `path`."""
    with Btf(path) as btf:
        assert btf.btf, f"cannot read BTF from {path}"
        layout = btf.struct_layout(name)
    assert layout, f"struct {name} not in BTF"
    return layout


def python_fields(fmt, names):
    """{name: (offset, size)} of each named field of a struct format (pad bytes 'x' have no name), and the size."""
    out, pos = {}, 0
    it = iter(names)
    for count, code in re.findall(r"(\d*)([a-zA-Z?])", fmt.lstrip("<")):
        n = int(count or 1)
        size = struct.calcsize("<" + count + code)
        if code == "s":
            out[next(it)] = (pos, n)
        elif code != "x":
            for k in range(n):
                out[next(it)] = (pos + k * struct.calcsize("<" + code), struct.calcsize("<" + code))
        pos += size
    return out, pos


def _c_value(expr):
    """A constant expression of the header: 16, (1u << 3), (4 << 20)."""
    expr = re.sub(r"(\d+)u\b", r"\1", expr.strip())
    assert re.fullmatch(r"[\d\s()<|+*-]+", expr), expr
    return eval(expr, {"__builtins__": {}})  # digits and operators only, checked above


def header_constants():
    """Every SS_ name of the header, enum members and #defines, with its value."""
    body = re.sub(r"/\*.*?\*/", "", HEADER, flags=re.S)
    consts = {}
    for m in re.finditer(r"#define (SS_\w+)\s+([^\n]+)", body):
        consts[m[1]] = _c_value(m[2])
    for enum in re.findall(r"enum \w+ \{(.*?)\};", body, flags=re.S):
        for name, value in re.findall(r"(SS_\w+)\s*=\s*([^,\n]+)", enum):
            consts[name] = _c_value(value)
    return consts


def abi_constants():
    return {name: value for name, value in vars(abi).items()
            if re.fullmatch(r"[A-Z][A-Z0-9_]*", name) and type(value) is int}


def test_every_header_constant_is_mirrored_with_its_value():
    consts = header_constants()
    assert len(consts) > 40
    mine = abi_constants()
    for name, value in consts.items():
        assert name.startswith("SS_")
        assert mine.get(name[3:]) == value, name
    assert set(mine) == {n[3:] for n in consts}, "abi.py has constants the header does not"


@pytest.mark.parametrize("name", sorted(abi.STRUCTS))
def test_struct_layout_matches_btf(name):
    packer, fields = abi.STRUCTS[name]
    c, size = btf_struct(name)
    assert packer.size == size
    py, total = python_fields(packer.format, fields)
    assert total == size
    pads = {n for n in {*py, *c} if n.startswith("pad")}
    assert set(py) - pads == set(c) - pads, "fields differ"
    for f, (off, width) in py.items():
        assert c[f] == (off, width), f


def test_event_is_112_bytes_and_row_decoding_matches_c():
    """A row is struct event with pid .. family taken as one string (abi.IDENT_STRUCT): those fields must be
    contiguous in C, in IDENT's order, and the row's other fields where the event has them (uid and cgroup
    after the identity, so that TS .. IDENT keep their positions)."""
    c, size = btf_struct("event")
    assert size == abi.EVENT.size == 112
    assert abi.ROW.size == size and abi.RECORD.size == size + 8
    py, total = python_fields(abi.ROW_FORMAT, abi.Row._fields)
    assert total == size
    for name in abi.Row._fields:
        if name != "ident":
            assert c[name][0] == py[name][0], name
    start = py["ident"][0]
    assert c["pid"][0] == start
    inner, length = python_fields(abi.IDENT_FORMAT, abi.Ident._fields)
    assert length == abi.IDENT_STRUCT.size == struct.calcsize(f"<{length}s")
    for name, (off, width) in inner.items():
        assert c[name] == (start + off, width), name
    assert abi.ROW_FORMAT.count(f"{length}s") == 1
    assert decode.IDENT == abi.Row._fields.index("ident") == 9
    assert (decode.UID, decode.CGROUP) == (abi.Row._fields.index("uid"), abi.Row._fields.index("cgroup"))
    assert c["uid"][0] > c["family"][0] and c["cgroup"][0] > c["uid"][0]


def test_identity_head_and_rest_decode_as_the_identity():
    """The formatters read an identity as (pid, sport, dport, rest) and the rest apart (logformat/base.py): the same
    fields, in the same order, as IDENT_STRUCT's."""
    ident = abi.IDENT_STRUCT.pack(4242, 40000, 443, bytes(range(16)), bytes(range(16, 32)), b"curl", 6)
    pid, sport, dport, rest = abi.IDENT_HEAD.unpack(ident)
    assert (pid, sport, dport, *abi.IDENT_REST.unpack(rest)) == abi.IDENT_STRUCT.unpack(ident)


def test_make_row_decodes_back():
    row = decode.make_row(ts_ns=7, skaddr=8, pid=9, sport=10, dport=11, saddr=b"\x01" * 16, daddr=b"\x02" * 16,
                          comm=b"x", family=6, newstate=1, uid=65534, cgroup=2**40 + 5)
    packed = abi.EVENT.pack(7, 8, 0, 0, 1, 0, 1, 0, 0, 9, 10, 11, b"\x01" * 16, b"\x02" * 16, b"x", 6, 65534,
                            2**40 + 5)
    assert abi.ROW.unpack(packed) == tuple(row)
    assert decode.ident_of(row) == (9, 10, 11, b"\x01" * 16, b"\x02" * 16, b"x".ljust(16, b"\0"), 6)


def _object_names():
    """(maps, programs) of the committed object, as libbpf opens it (no load)."""
    obj = BpfObject(open(OBJ, "rb").read())
    try:
        return obj.map_names(), obj.program_names()
    finally:
        obj.close()


def test_map_and_program_names_match_the_object():
    maps, progs = _object_names()
    assert sorted(maps) == sorted(abi.MAPS)
    assert sorted(progs) == sorted([*abi.PROGRAMS, *abi.FENTRY_PROGRAMS, *abi.DROP_PROGRAMS])
    assert set(abi.REQUIRED) <= set(abi.PROGRAMS)
    for name in abi.MAPS:
        assert getattr(abi, "MAP_" + name.upper()) == name


def program_sources():
    """socketsnoop.bpf.c and every header of ours it includes, in the order met (vmlinux.h is not shipped)."""
    names, todo = [], ["socketsnoop.bpf.c"]
    while todo:
        name = todo.pop(0)
        if name in names or name == "vmlinux.h":
            continue
        names.append(name)
        todo += re.findall(r'^#include "([^"]+)"', BPF.joinpath(name).read_text(), flags=re.M)
    return names


def test_the_package_ships_the_programs_source():
    """Each header the program includes is in the installed package (pyproject.toml's package-data)."""
    names = program_sources()
    assert {"socketsnoop.h", "config.h", "filters.h", "rings.h"} <= set(names)
    for name in names:
        assert BPF.joinpath(name).is_file(), name


def test_rodata_variables_match_the_source():
    src = "\n".join(BPF.joinpath(name).read_text() for name in program_sources())
    sizes = {"__u32": "<I", "__u64": "<Q", "bool": "<?"}
    consts = header_constants()
    found = {}
    for typ, name, dims in re.findall(r"^const volatile (\w+) (\w+)((?:\[\w+\])*) = ", src, flags=re.M):
        n = 1
        for dim in re.findall(r"\[(\w+)\]", dims):  # an array: its dimensions are the header's constants
            n *= consts[dim]
        found[name] = sizes[typ] if not dims else f"<{n}{sizes[typ][1:]}"
    assert found == abi.RODATA


@pytest.mark.skipif(not os.path.exists("/sys/kernel/btf/vmlinux"), reason="kernel has no BTF")
def test_prog_info_offsets_match_the_kernel():
    c, size = btf_struct("bpf_prog_info", "/sys/kernel/btf/vmlinux")
    assert c["recursion_misses"][0] == libbpf.RECURSION_MISSES_OFF
    assert size >= libbpf.PROG_INFO_SIZE


def test_no_other_module_defines_a_layout():
    """Struct formats are abi.py's; only the ring buffer's own header words (not our header's) are elsewhere."""
    allowed = {PACKAGE / "kernel" / "abi.py", PACKAGE / "kernel" / "ringbuf.py"}
    for path in PACKAGE.rglob("*.py"):
        if path in allowed:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "Struct":
                pytest.fail(f"{path.relative_to(PACKAGE)}:{node.lineno}: a struct layout outside kernel/abi.py")
