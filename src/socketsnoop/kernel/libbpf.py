"""The ctypes binding to the system's libbpf (libbpf.so.1): the one place its prototypes are declared.

Only what socket-snoop and its tests need: open an object from memory, set its read-only variables, resize
maps, load, attach and detach programs, read and write maps, read BTF (the kernel's, or a file's), and try
what the kernel allows (fentry programs, ring buffers). The object's wrapper is bpfobject.py's, the perf
buffer perfbuf.py's; the ring buffer is read directly through mmap (ringbuf.py), which is what libbpf's own
ring_buffer__poll does, without a Python callback per event.
"""

import ctypes
import os
from collections import deque

from ..errors import SnoopError

LIBBPF_SONAME = "libbpf.so.1"
BPF_ANY = 0
LIBBPF_INFO = 1  # enum libbpf_print_level: WARN 0, INFO 1, DEBUG 2
BTF_KIND_PTR = 2
BTF_KIND_STRUCT = 4
BTF_KIND_ENUM = 6
BTF_KIND_TYPEDEF = 8
BTF_KIND_FUNC = 12
BTF_KIND_FUNC_PROTO = 13
BTF_KIND_DATASEC = 15
# struct bpf_prog_info (uapi linux/bpf.h): its size here and where recursion_misses is
PROG_INFO_SIZE = 232
RECURSION_MISSES_OFF = 208
# uapi linux/bpf.h: enum bpf_prog_type, enum bpf_attach_type
BPF_PROG_TYPE_TRACING = 26
BPF_TRACE_FENTRY = 24
BPF_MAP_TYPE_RINGBUF = 27

_PRINT_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)
PERF_SAMPLE_FN = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_uint32)
PERF_LOST_FN = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int, ctypes.c_uint64)


class _BtfType(ctypes.Structure):
    _fields_ = [("name_off", ctypes.c_uint32), ("info", ctypes.c_uint32), ("size_or_type", ctypes.c_uint32)]


class _ProgLoadOpts(ctypes.Structure):
    """struct bpf_prog_load_opts (libbpf 1.x bpf.h), up to the fields we set; sz says how much of it we pass."""
    _fields_ = [("sz", ctypes.c_size_t), ("attempts", ctypes.c_int), ("expected_attach_type", ctypes.c_uint32),
                ("prog_btf_fd", ctypes.c_uint32), ("prog_flags", ctypes.c_uint32), ("prog_ifindex", ctypes.c_uint32),
                ("kern_version", ctypes.c_uint32), ("attach_btf_id", ctypes.c_uint32),
                ("attach_btf_obj_fd", ctypes.c_uint32), ("attach_prog_fd", ctypes.c_int)]


class _BtfVarSecinfo(ctypes.Structure):
    _fields_ = [("type", ctypes.c_uint32), ("offset", ctypes.c_uint32), ("size", ctypes.c_uint32)]


class _BtfEnum(ctypes.Structure):
    _fields_ = [("name_off", ctypes.c_uint32), ("val", ctypes.c_int32)]


class _BtfMember(ctypes.Structure):
    _fields_ = [("name_off", ctypes.c_uint32), ("type", ctypes.c_uint32), ("offset", ctypes.c_uint32)]


def _proto(lib, name, restype, *argtypes):
    try:
        fn = getattr(lib, name)
    except AttributeError:
        raise SnoopError(f"{LIBBPF_SONAME} has no function {name}: libbpf 1.0 or newer is needed") from None
    fn.restype = restype
    fn.argtypes = list(argtypes)
    return fn


class Libbpf:
    """The library and the prototypes we call. One per process (see get())."""

    _instance = None

    def __init__(self):
        try:
            lib = ctypes.CDLL(LIBBPF_SONAME, use_errno=True)
        except OSError:
            raise SnoopError(
                f"{LIBBPF_SONAME} not found: install it with 'apt-get install libbpf1' "
                "(Debian/Ubuntu) or 'dnf install libbpf' (Fedora/RHEL)"
            ) from None
        vp, cp, i, u32, sz = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_uint32, ctypes.c_size_t
        self.lib = lib
        self.set_print = _proto(lib, "libbpf_set_print", vp, _PRINT_FN)
        self.open_mem = _proto(lib, "bpf_object__open_mem", vp, vp, sz, vp)
        self.load = _proto(lib, "bpf_object__load", i, vp)
        self.close = _proto(lib, "bpf_object__close", None, vp)
        self.find_map = _proto(lib, "bpf_object__find_map_by_name", vp, vp, cp)
        self.find_prog = _proto(lib, "bpf_object__find_program_by_name", vp, vp, cp)
        self.next_map = _proto(lib, "bpf_object__next_map", vp, vp, vp)
        self.next_prog = _proto(lib, "bpf_object__next_program", vp, vp, vp)
        self.obj_btf = _proto(lib, "bpf_object__btf", vp, vp)
        self.map_name = _proto(lib, "bpf_map__name", cp, vp)
        self.map_is_internal = _proto(lib, "bpf_map__is_internal", ctypes.c_bool, vp)
        self.map_fd = _proto(lib, "bpf_map__fd", i, vp)
        self.map_set_max_entries = _proto(lib, "bpf_map__set_max_entries", i, vp, u32)
        self.map_set_autocreate = _proto(lib, "bpf_map__set_autocreate", i, vp, ctypes.c_bool)
        self.map_initial_value = _proto(lib, "bpf_map__initial_value", vp, vp, ctypes.POINTER(sz))
        self.prog_attach = _proto(lib, "bpf_program__attach", vp, vp)
        self.prog_set_autoload = _proto(lib, "bpf_program__set_autoload", i, vp, ctypes.c_bool)
        self.prog_fd = _proto(lib, "bpf_program__fd", i, vp)
        self.prog_name = _proto(lib, "bpf_program__name", cp, vp)
        self.obj_get_info = _proto(lib, "bpf_obj_get_info_by_fd", i, i, vp, ctypes.POINTER(u32))
        self.link_destroy = _proto(lib, "bpf_link__destroy", i, vp)
        self.map_update = _proto(lib, "bpf_map_update_elem", i, i, vp, vp, ctypes.c_uint64)
        self.map_lookup = _proto(lib, "bpf_map_lookup_elem", i, i, vp, vp)
        self.map_delete = _proto(lib, "bpf_map_delete_elem", i, i, vp)
        self.map_next_key = _proto(lib, "bpf_map_get_next_key", i, i, vp, vp)
        self.map_key_size = _proto(lib, "bpf_map__key_size", u32, vp)
        self.map_value_size = _proto(lib, "bpf_map__value_size", u32, vp)
        self.map_create = _proto(lib, "bpf_map_create", i, i, cp, u32, u32, u32, vp)
        self.num_possible_cpus = _proto(lib, "libbpf_num_possible_cpus", i)
        self.btf_find = _proto(lib, "btf__find_by_name_kind", i, vp, cp, u32)
        self.btf_type = _proto(lib, "btf__type_by_id", ctypes.POINTER(_BtfType), vp, u32)
        self.btf_name = _proto(lib, "btf__name_by_offset", cp, vp, u32)
        self.btf_load_vmlinux = _proto(lib, "btf__load_vmlinux_btf", vp)
        self.btf_parse = _proto(lib, "btf__parse", vp, cp, vp)
        self.btf_resolve_size = _proto(lib, "btf__resolve_size", ctypes.c_long, vp, u32)
        self.btf_free = _proto(lib, "btf__free", None, vp)
        self.raw_prog_load = _proto(lib, "bpf_prog_load", i, i, cp, cp, vp, sz, ctypes.POINTER(_ProgLoadOpts))
        self.raw_tracepoint_open = _proto(lib, "bpf_raw_tracepoint_open", i, cp, i)
        self.perf_new = _proto(lib, "perf_buffer__new", vp, i, sz, PERF_SAMPLE_FN, PERF_LOST_FN, vp, vp)
        self.perf_poll = _proto(lib, "perf_buffer__poll", i, vp, i)
        self.perf_consume = _proto(lib, "perf_buffer__consume", i, vp)
        self.perf_free = _proto(lib, "perf_buffer__free", None, vp)
        self.version = self._version()
        self.messages = deque(maxlen=200)
        self._install_printer()

    def _version(self):
        try:
            major = _proto(self.lib, "libbpf_major_version", ctypes.c_uint32)()
            minor = _proto(self.lib, "libbpf_minor_version", ctypes.c_uint32)()
            return f"{major}.{minor}"
        except SnoopError:
            return "unknown"

    def _install_printer(self):
        """Collect libbpf's messages (verifier log included) instead of letting it print."""
        libc = ctypes.CDLL(None)
        vsnprintf = libc.vsnprintf
        vsnprintf.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_void_p]
        buf = ctypes.create_string_buffer(1 << 20)
        messages = self.messages

        def printer(level, fmt, args):
            if level > LIBBPF_INFO:  # debug: every relocation, thousands of lines
                return 0
            vsnprintf(buf, len(buf), fmt, args)
            messages.append(buf.value.decode("utf-8", "replace").rstrip("\n"))
            return 0

        self._printer = _PRINT_FN(printer)  # keep a reference: libbpf holds the pointer
        self.set_print(self._printer)

    @classmethod
    def get(cls):
        if cls._instance is None:
            cls._instance = cls()
        return cls._instance


class Btf:
    """BTF type information: the running kernel's (Btf()), a file's (Btf(path): an object file, or raw BTF
    such as /sys/kernel/btf/vmlinux), or an open object's (Btf(handle=...): the object's, never freed here)."""

    def __init__(self, path=None, handle=None):
        self.bpf = Libbpf.get()
        self.owned = handle is None
        if handle is not None:
            self.btf = handle
        elif path is not None:
            self.btf = self.bpf.btf_parse(os.fsencode(path), None)  # NULL if unreadable
        else:
            self.btf = self.bpf.btf_load_vmlinux()  # NULL where the kernel has no (readable) BTF

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        if self.btf and self.owned:
            self.bpf.btf_free(self.btf)
        self.btf = None

    def find(self, name, kind):
        """The type id of name (of that BTF kind), or None."""
        if not self.btf:
            return None
        tid = self.bpf.btf_find(self.btf, name.encode(), kind)
        return tid if tid > 0 else None

    def _type(self, tid, kind):
        t = self.bpf.btf_type(self.btf, tid)
        return t.contents if t and (t.contents.info >> 24) & 0x1F == kind else None

    def _entries(self, t, entry):
        """The vlen entries (members, variables...) that follow the type t in the BTF."""
        return ctypes.cast(ctypes.addressof(t) + ctypes.sizeof(_BtfType), ctypes.POINTER(entry))[:t.info & 0xFFFF]

    def _name(self, off):
        return self.bpf.btf_name(self.btf, off).decode()

    def tracepoint_args(self, name):
        """How many arguments the tracepoint passes (to a tp_btf program), from its typedef btf_trace_NAME:
        a pointer to a function whose first parameter is the context. None if the BTF has no such tracepoint."""
        tid = self.find("btf_trace_" + name, BTF_KIND_TYPEDEF)
        if tid is None:
            return None
        typedef = self.bpf.btf_type(self.btf, tid).contents
        ptr = self._type(typedef.size_or_type, BTF_KIND_PTR)
        proto = ptr and self._type(ptr.size_or_type, BTF_KIND_FUNC_PROTO)
        return (proto.info & 0xFFFF) - 1 if proto else None

    def struct_layout(self, name):
        """({member: (byte offset, byte size)}, size) of struct name, or None if the BTF has no such struct."""
        tid = self.find(name, BTF_KIND_STRUCT)
        if tid is None:
            return None
        t = self._type(tid, BTF_KIND_STRUCT)
        members = {self._name(m.name_off): (m.offset // 8, self.bpf.btf_resolve_size(self.btf, m.type))
                   for m in self._entries(t, _BtfMember)}
        return members, t.size_or_type

    def enum_values(self, name):
        """{value: member name} of enum name (32-bit values, read as unsigned), or None if the BTF has no such enum."""
        tid = self.find(name, BTF_KIND_ENUM)
        if tid is None:
            return None
        t = self._type(tid, BTF_KIND_ENUM)
        return {e.val & 0xFFFFFFFF: self._name(e.name_off) for e in self._entries(t, _BtfEnum)}  # (unsigned here)

    def section_vars(self, name):
        """{variable: (offset, size)} of a data section (.rodata, .bss...), empty if there is none."""
        tid = self.find(name, BTF_KIND_DATASEC)
        if tid is None:
            return {}
        sec = self._type(tid, BTF_KIND_DATASEC)
        return {self._name(self.bpf.btf_type(self.btf, v.type).contents.name_off): (v.offset, v.size)
                for v in self._entries(sec, _BtfVarSecinfo)}


def fentry_works(func_btf_id):
    """Load and attach an empty fentry program on the kernel function of that BTF id, then detach it:
    (True, "") or (False, why). The kernel may refuse fentry (no direct-call trampolines, lockdown...)."""
    bpf = Libbpf.get()
    insns = (ctypes.c_uint64 * 2)(0xB7, 0x95)  # r0 = 0; exit
    opts = _ProgLoadOpts(sz=ctypes.sizeof(_ProgLoadOpts), expected_attach_type=BPF_TRACE_FENTRY,
                         attach_btf_id=func_btf_id)
    fd = bpf.raw_prog_load(BPF_PROG_TYPE_TRACING, b"ss_probe", b"GPL", insns, 2, ctypes.byref(opts))
    if fd < 0:
        return False, f"load: {os.strerror(-fd)}"
    try:
        link = bpf.raw_tracepoint_open(None, fd)
        if link < 0:
            return False, f"attach: {os.strerror(-link)}"
        os.close(link)
        return True, ""
    finally:
        os.close(fd)


def ringbuf_works():
    """Create a small BPF ring buffer, then close it: (True, "") or (False, why). Needs privileges."""
    fd = Libbpf.get().map_create(BPF_MAP_TYPE_RINGBUF, b"ss_check", 0, 0, 4096, None)
    if fd < 0:
        return False, os.strerror(-fd)
    os.close(fd)
    return True, ""


def possible_cpus():
    """The number of possible CPUs: the length of a per-CPU map's value, one slot each."""
    return Libbpf.get().num_possible_cpus()


def libbpf_error(what, rc=None):
    e = ctypes.get_errno() if rc is None or rc == -1 else -rc
    return e, f"{what}: {os.strerror(e)}" if e else what

