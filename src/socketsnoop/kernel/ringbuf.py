"""Consumer of a BPF ring buffer (BPF_MAP_TYPE_RINGBUF) through mmap.

The kernel's layout (kernel/bpf/ringbuf.c, and what libbpf's ringbuf.c reads):
page 0 holds the consumer position (we write it), page 1 the producer
position, then the data pages. Each record has an 8-byte header: its length,
with a busy bit while the producer is writing it and a discard bit, then the
data, padded to 8.

The kernel offers the data pages twice in a row, so that a record that wraps
past the end reads as one piece; libbpf maps both. We map them once and copy
a wrapped record in two pieces: mapping them twice would count the buffer
twice in the monitor's resident memory (RSS), which is what top and systemd
show an administrator.

Reading it here, instead of a ctypes callback per record through
ring_buffer__poll, lets a whole batch be decoded at once with
struct.iter_unpack.

Memory ordering: the positions and headers are read and the consumer position written with plain loads and
stores. x86-64 keeps them in program order (a load is not passed by a later load, a store not by an earlier
load), which is what the acquire of the producer position and the release of the consumer position need.
Other architectures (arm64) would need barriers that Python cannot issue: the loader refuses them
(loader.py: MACHINE).
"""

import mmap
import select
import struct

BUSY = 1 << 31
DISCARD = 1 << 30
_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")


def _leading(heads, full):
    """How many of the records whose headers are heads (4 bytes each) lead as committed, full-size
    ones: the longest prefix of heads that full starts with, found by halving."""
    lo, hi = 0, len(heads) // 4  # heads[:4*lo] matches; heads[:4*hi] does not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if heads[: 4 * mid] == full[: 4 * mid]:
            lo = mid
        else:
            hi = mid
    return lo


class RingBuffer:
    """The consumer of one ring: map_fd is the ring's map (or, with wakeups=False, a file laid out as a
    ring is, which epoll cannot wait on: the tests' rings), size its data bytes, record_size the size of
    the records our program writes. awake_fd: the program's reader_awake map (bpf/rings.h), which says
    1 but while wait() sleeps: the program sends an awake reader no wake-ups (each costs its CPU an
    interrupt)."""

    def __init__(self, map_fd, size, record_size, wakeups=True, awake_fd=None):
        page = mmap.PAGESIZE
        self.size = size
        self.mask = size - 1
        self.page = page
        self.record_size = record_size
        self.slot = (record_size + 8 + 7) & ~7
        self.cons = mmap.mmap(map_fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        self.prod = mmap.mmap(map_fd, page + size, mmap.MAP_SHARED, mmap.PROT_READ, offset=page)
        self.view = memoryview(self.prod)
        self._full = _U32.pack(record_size) * (size // self.slot + 1)  # the headers of a run of full records
        self.epoll = select.epoll()
        if wakeups:
            # edge-triggered: a ring's poll says ready whenever it holds a byte, so a level-triggered wait
            # returns at once while the kernel writes below its wake-up mark, and a reader that keeps up then
            # reads a few rows at a time, paying each batch's fixed costs for a handful of rows
            self.epoll.register(map_fd, select.EPOLLIN | select.EPOLLET)
        self.awake = None
        if awake_fd is not None:
            self.awake = mmap.mmap(awake_fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
            _U32.pack_into(self.awake, 0, 1)

    def wait(self, timeout_s):
        """Sleep until the kernel wakes us (at its mark: rings.h) or timeout_s passes."""
        if self.awake is not None:
            _U32.pack_into(self.awake, 0, 0)
        try:
            self.epoll.poll(timeout_s)
        except InterruptedError:
            pass
        finally:
            if self.awake is not None:
                _U32.pack_into(self.awake, 0, 1)

    def pending(self):
        return _U64.unpack_from(self.prod, 0)[0] - _U64.unpack_from(self.cons, 0)[0]

    def read(self, max_bytes=1 << 20):
        """Take the records ready now, up to about max_bytes of them.

        Returns a run of records, each with its 8-byte header in front (decode
        with a struct that skips 8 bytes). Discarded records, and any of another
        size (our program writes none), are passed over.
        """
        cons = _U64.unpack_from(self.cons, 0)[0]
        prod = _U64.unpack_from(self.prod, 0)[0]
        if cons >= prod:
            return b""
        end = min(prod, cons + max_bytes)
        data, pos = self._whole_records(cons, end) or self._record_by_record(cons, end)
        _U64.pack_into(self.cons, 0, pos)  # handed back only now that they are copied
        return data

    def _whole_records(self, cons, end):
        """The common case, checked at C speed: the records from cons on that are whole ones of our size,
        all committed, none of them wrapping past the end of the data pages. (their bytes, the position
        after them), or None if the first record is not one."""
        slot = self.slot
        n = min(end - cons, self.size - (cons & self.mask)) // slot
        if not n:
            return None
        view = self.view
        off = self.page + (cons & self.mask)
        heads = view[off: off + n * slot].cast("I")[:: slot // 4].tobytes()
        if heads != self._full[: 4 * n]:  # a record still being written (or discarded) in the run
            n = _leading(heads, self._full)
            if not n:
                return None
        return view[off: off + n * slot].tobytes(), cons + n * slot  # copied before the kernel may reuse it

    def _record_by_record(self, cons, end):
        """A few records from cons on, one at a time: a busy one ends the run, discarded ones (and any of
        another size) are passed over, and the copy of a stretch that wraps past the end of the data pages
        is put together from its two pieces. (their bytes, the position after them)."""
        view, page, mask, slot, want = self.view, self.page, self.mask, self.slot, self.record_size
        end = min(end, cons + 64 * slot)
        u32 = _U32.unpack_from
        chunks = []
        start = cons
        pos = cons
        while pos < end:
            hdr = u32(view, page + (pos & mask))[0]  # 8-aligned: a header never wraps
            if hdr == want:  # committed, full size
                pos += slot
                continue
            if hdr & BUSY:
                break
            self._copy(chunks, start, pos)
            length = hdr & ~(BUSY | DISCARD)
            pos += (length + 8 + 7) & ~7
            start = pos
        self._copy(chunks, start, pos)
        return (b"".join(chunks) if len(chunks) != 1 else chunks[0]), pos

    def _copy(self, chunks, start, stop):
        """Append the bytes from position start to stop, which may wrap past the end of the data."""
        if start >= stop:
            return
        view, page, size = self.view, self.page, self.size
        off = start & self.mask
        first = min(stop - start, size - off)
        chunks.append(view[page + off: page + off + first].tobytes())
        if first < stop - start:
            chunks.append(view[page: page + (stop - start - first)].tobytes())

    def close(self):
        if self.awake is not None:
            _U32.pack_into(self.awake, 0, 0)
            self.awake.close()
            self.awake = None
        self.epoll.close()
        self.view.release()
        self.prod.close()
        self.cons.close()
