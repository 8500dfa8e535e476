"""One BPF object file through libbpf: configure it, load it, attach and detach its programs, use its maps."""

import ctypes

from ..errors import SnoopError
from .libbpf import BPF_ANY, PROG_INFO_SIZE, RECURSION_MISSES_OFF, Btf, Libbpf, libbpf_error


class BpfObject:
    """One BPF object file: configure, load, attach, then use its maps. Its programs and maps are known by
    name; the raw handles stay inside."""

    def __init__(self, data: bytes):
        self.bpf = Libbpf.get()
        self._data = ctypes.create_string_buffer(data, len(data))  # must outlive the object
        self.obj = self.bpf.open_mem(self._data, len(data), None)
        if not self.obj:
            _, msg = libbpf_error("cannot open the BPF object")
            raise SnoopError(msg)
        self.links = {}  # program name -> its link, while attached

    def _map(self, name):
        m = self.bpf.find_map(self.obj, name.encode())
        if not m:
            raise SnoopError(f"BPF object has no map {name!r}")
        return m

    def _prog(self, name):
        """The program's handle, or None if the object has no such program."""
        return self.bpf.find_prog(self.obj, name.encode()) or None

    def has_program(self, name):
        return self._prog(name) is not None

    def program_names(self):
        names, p = [], None
        while p := self.bpf.next_prog(self.obj, p):
            names.append(self.bpf.prog_name(p).decode())
        return names

    def map_names(self):
        """The object's own maps (not the ones libbpf makes for its global variables: .rodata...)."""
        names, m = [], None
        while m := self.bpf.next_map(self.obj, m):
            if not self.bpf.map_is_internal(m):
                names.append(self.bpf.map_name(m).decode())
        return names

    def _rodata_offsets(self):
        """name -> (offset, size) of each read-only global, from the object's BTF."""
        return Btf(handle=self.bpf.obj_btf(self.obj)).section_vars(".rodata")

    def set_rodata(self, values: dict):
        """Set `const volatile` globals before load. values: name -> bytes of the right size."""
        offsets = self._rodata_offsets()
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
            raise SnoopError(libbpf_error(f"cannot size map {name}", rc)[1])

    def set_autocreate(self, name, on):
        self.bpf.map_set_autocreate(self._map(name), on)

    def set_autoload(self, prog_name, on):
        """Whether load() loads the program (before load). A program the object lacks is passed over."""
        p = self._prog(prog_name)
        if p:
            self.bpf.prog_set_autoload(p, on)

    def load(self):
        self.bpf.messages.clear()
        rc = self.bpf.load(self.obj)
        if rc:
            code, msg = libbpf_error("cannot load the BPF program", rc)
            return code, msg, list(self.bpf.messages)
        return 0, "", []

    def attach(self, prog_name):
        p = self._prog(prog_name)
        if not p:
            raise SnoopError(f"BPF object has no program {prog_name!r}")
        ctypes.set_errno(0)
        link = self.bpf.prog_attach(p)
        if not link:
            code, msg = libbpf_error(f"cannot attach {prog_name}")
            return code, msg
        self.links[prog_name] = link
        return 0, ""

    def detach(self, prog_names=None):
        """Detach those programs (default: all), where attached."""
        for name in list(self.links) if prog_names is None else prog_names:
            link = self.links.pop(name, None)
            if link:
                self.bpf.link_destroy(link)

    def recursion_misses(self, prog_name):
        """Runs the kernel skipped because the program was already running on that CPU
        (struct bpf_prog_info.recursion_misses, Linux 5.12+; 0 where the kernel has no such field)."""
        p = self._prog(prog_name)
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
            raise SnoopError(libbpf_error(f"cannot fill map {name}", rc)[1])

    def delete(self, name, key: bytes):
        return self.bpf.map_delete(self.map_fd(name), key) == 0

    def lookup(self, name, key: bytes, value_size: int):
        buf = ctypes.create_string_buffer(value_size)
        rc = self.bpf.map_lookup(self.map_fd(name), key, buf)
        if rc:
            return None
        return buf.raw

    def items(self, name, limit=1 << 16):
        """(key, value) of a hash map's entries (at most limit: the map's own bound), as bytes."""
        m = self._map(name)
        fd = self.bpf.map_fd(m)
        ksize, vsize = self.bpf.map_key_size(m), self.bpf.map_value_size(m)
        key, nxt, out = None, ctypes.create_string_buffer(ksize), []
        while len(out) < limit and self.bpf.map_next_key(fd, key, nxt) == 0:
            key = ctypes.create_string_buffer(nxt.raw, ksize)
            value = ctypes.create_string_buffer(vsize)
            if self.bpf.map_lookup(fd, key, value) == 0:  # (gone since: skipped)
                out.append((key.raw, value.raw))
        return out

    def close(self):
        self.detach()
        if self.obj:
            self.bpf.close(self.obj)
            self.obj = None

