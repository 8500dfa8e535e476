"""A thin ctypes binding to the system's libbpf (libbpf.so.1).

Only what socket-snoop needs: open an object from memory, set its read-only
variables, resize maps, load, attach, read and write maps, and a perf buffer.
The ring buffer is read directly through mmap (see ringbuf.py), which is what
libbpf's own ring_buffer__poll does, without a Python callback per event.
"""

import ctypes
import ctypes.util
import errno
import os
from collections import deque

from ..errors import SnoopError

LIBBPF_SONAME = "libbpf.so.1"
BPF_ANY = 0
LIBBPF_INFO = 1  # enum libbpf_print_level: WARN 0, INFO 1, DEBUG 2
BTF_KIND_PTR = 2
BTF_KIND_TYPEDEF = 8
BTF_KIND_FUNC = 12
BTF_KIND_FUNC_PROTO = 13
BTF_KIND_VAR = 14
BTF_KIND_DATASEC = 15
# struct bpf_prog_info (uapi linux/bpf.h): its size here and where recursion_misses is
PROG_INFO_SIZE = 232
RECURSION_MISSES_OFF = 208
# uapi linux/bpf.h: enum bpf_prog_type, enum bpf_attach_type
BPF_PROG_TYPE_TRACING = 26
BPF_TRACE_FENTRY = 24

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


def _proto(lib, name, restype, *argtypes):
    fn = getattr(lib, name)
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
        self.obj_btf = _proto(lib, "bpf_object__btf", vp, vp)
        self.map_fd = _proto(lib, "bpf_map__fd", i, vp)
        self.map_set_max_entries = _proto(lib, "bpf_map__set_max_entries", i, vp, u32)
        self.map_set_autocreate = _proto(lib, "bpf_map__set_autocreate", i, vp, ctypes.c_bool)
        self.map_initial_value = _proto(lib, "bpf_map__initial_value", vp, vp, ctypes.POINTER(sz))
        self.prog_attach = _proto(lib, "bpf_program__attach", vp, vp)
        self.prog_set_autoload = _proto(lib, "bpf_program__set_autoload", i, vp, ctypes.c_bool)
        self.prog_fd = _proto(lib, "bpf_program__fd", i, vp)
        self.obj_get_info = _proto(lib, "bpf_obj_get_info_by_fd", i, i, vp, ctypes.POINTER(u32))
        self.link_destroy = _proto(lib, "bpf_link__destroy", i, vp)
        self.map_update = _proto(lib, "bpf_map_update_elem", i, i, vp, vp, ctypes.c_uint64)
        self.map_lookup = _proto(lib, "bpf_map_lookup_elem", i, i, vp, vp)
        self.map_delete = _proto(lib, "bpf_map_delete_elem", i, i, vp)
        self.num_possible_cpus = _proto(lib, "libbpf_num_possible_cpus", i)
        self.btf_find = _proto(lib, "btf__find_by_name_kind", i, vp, cp, u32)
        self.btf_type = _proto(lib, "btf__type_by_id", ctypes.POINTER(_BtfType), vp, u32)
        self.btf_name = _proto(lib, "btf__name_by_offset", cp, vp, u32)
        self.btf_load_vmlinux = _proto(lib, "btf__load_vmlinux_btf", vp)
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
        except AttributeError:
            return "unknown"

    def _install_printer(self):
        """Collect libbpf's messages (verifier log included) instead of letting it print."""
        libc = ctypes.CDLL(None)
        vsnprintf = libc.vsnprintf
        vsnprintf.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_void_p]
        buf = ctypes.create_string_buffer(4096)
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


class KernelBtf:
    """The running kernel's BTF (/sys/kernel/btf/vmlinux), to look up its functions and tracepoints."""

    def __init__(self):
        self.bpf = Libbpf.get()
        self.btf = self.bpf.btf_load_vmlinux()  # NULL where the kernel has no (readable) BTF

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.btf:
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


def _err(what, rc=None):
    e = ctypes.get_errno() if rc is None or rc == -1 else -rc
    return e, f"{what}: {os.strerror(e)}" if e else what


class BpfObject:
    """One BPF object file: configure, load, attach, then use its maps."""

    def __init__(self, data: bytes):
        self.bpf = Libbpf.get()
        self._data = ctypes.create_string_buffer(data, len(data))  # must outlive the object
        self.obj = self.bpf.open_mem(self._data, len(data), None)
        if not self.obj:
            _, msg = _err("cannot open the BPF object")
            raise SnoopError(msg)
        self.links = []

    def _map(self, name):
        m = self.bpf.find_map(self.obj, name.encode())
        if not m:
            raise SnoopError(f"BPF object has no map {name!r}")
        return m

    def rodata_offsets(self):
        """name -> (offset, size) of each read-only global, from the object's BTF."""
        btf = self.bpf.obj_btf(self.obj)
        sec_id = self.bpf.btf_find(btf, b".rodata", BTF_KIND_DATASEC)
        if sec_id < 0:
            return {}
        sec = self.bpf.btf_type(btf, sec_id)
        vlen = sec.contents.info & 0xFFFF
        infos = ctypes.cast(
            ctypes.addressof(sec.contents) + ctypes.sizeof(_BtfType), ctypes.POINTER(_BtfVarSecinfo)
        )
        out = {}
        for k in range(vlen):
            var = self.bpf.btf_type(btf, infos[k].type)
            name = self.bpf.btf_name(btf, var.contents.name_off).decode()
            out[name] = (infos[k].offset, infos[k].size)
        return out

    def set_rodata(self, values: dict):
        """Set `const volatile` globals before load. values: name -> bytes of the right size."""
        offsets = self.rodata_offsets()
        m = self._map(".rodata")
        size = ctypes.c_size_t()
        base = self.bpf.map_initial_value(m, ctypes.byref(size))
        if not base:
            raise SnoopError("cannot set the BPF program's configuration (.rodata)")
        for name, raw in values.items():
            off, sz = offsets[name]
            if len(raw) != sz:
                raise ValueError(f"{name}: {len(raw)} bytes given, {sz} expected")
            ctypes.memmove(base + off, raw, sz)

    def set_max_entries(self, name, n):
        rc = self.bpf.map_set_max_entries(self._map(name), n)
        if rc:
            raise SnoopError(_err(f"cannot size map {name}", rc)[1])

    def set_autocreate(self, name, on):
        self.bpf.map_set_autocreate(self._map(name), on)

    def load(self):
        self.bpf.messages.clear()
        rc = self.bpf.load(self.obj)
        if rc:
            code, msg = _err("cannot load the BPF program", rc)
            return code, msg, list(self.bpf.messages)
        return 0, "", []

    def attach(self, prog_name):
        p = self.bpf.find_prog(self.obj, prog_name.encode())
        if not p:
            raise SnoopError(f"BPF object has no program {prog_name!r}")
        ctypes.set_errno(0)
        link = self.bpf.prog_attach(p)
        if not link:
            code, msg = _err(f"cannot attach {prog_name}")
            return code, msg
        self.links.append(link)
        return 0, ""

    def recursion_misses(self, prog_name):
        """Runs the kernel skipped because the program was already running on that CPU
        (struct bpf_prog_info.recursion_misses, Linux 5.12+; 0 where the kernel has no such field)."""
        p = self.bpf.find_prog(self.obj, prog_name.encode())
        fd = self.bpf.prog_fd(p) if p else -1
        if fd < 0:
            return 0
        info = ctypes.create_string_buffer(PROG_INFO_SIZE)
        size = ctypes.c_uint32(PROG_INFO_SIZE)
        if self.bpf.obj_get_info(fd, info, ctypes.byref(size)) or size.value < RECURSION_MISSES_OFF + 8:
            return 0
        return int.from_bytes(info.raw[RECURSION_MISSES_OFF:RECURSION_MISSES_OFF + 8], "little")

    def map_fd(self, name):
        return self.bpf.map_fd(self._map(name))

    def update(self, name, key: bytes, value: bytes, flags=BPF_ANY):
        rc = self.bpf.map_update(self.map_fd(name), key, value, flags)
        if rc:
            raise SnoopError(_err(f"cannot fill map {name}", rc)[1])

    def delete(self, name, key: bytes):
        return self.bpf.map_delete(self.map_fd(name), key) == 0

    def lookup(self, name, key: bytes, value_size: int):
        buf = ctypes.create_string_buffer(value_size)
        rc = self.bpf.map_lookup(self.map_fd(name), key, buf)
        if rc:
            return None
        return buf.raw

    def close(self):
        for link in self.links:
            self.bpf.link_destroy(link)
        self.links = []
        if self.obj:
            self.bpf.close(self.obj)
            self.obj = None


class PerfBuffer:
    """libbpf's perf buffer, for kernels without BPF ring buffers (--buffer perf)."""

    def __init__(self, map_fd, page_cnt, on_sample, on_lost):
        self.bpf = Libbpf.get()
        self.error = None

        def sample(ctx, cpu, data, size):
            if self.error is None:
                try:
                    on_sample(ctypes.string_at(data, size))
                except BaseException as e:  # raised again from poll(): never lost inside the C callback
                    self.error = e

        self._sample = PERF_SAMPLE_FN(sample)
        self._lost = PERF_LOST_FN(lambda ctx, cpu, n: on_lost(n)) if on_lost else PERF_LOST_FN()  # NULL: none
        ctypes.set_errno(0)
        self.pb = self.bpf.perf_new(map_fd, page_cnt, self._sample, self._lost, None, None)
        if not self.pb:
            raise SnoopError(_err("cannot create the perf buffer")[1])

    def _raise(self):
        if self.error is not None:
            e, self.error = self.error, None
            raise e

    def poll(self, timeout_ms):
        rc = self.bpf.perf_poll(self.pb, timeout_ms)
        self._raise()
        if rc < 0 and -rc != errno.EINTR:
            raise SnoopError(_err("perf buffer poll failed", rc)[1])

    def consume(self):
        self.bpf.perf_consume(self.pb)
        self._raise()

    def close(self):
        if self.pb:
            self.bpf.perf_free(self.pb)
            self.pb = None
