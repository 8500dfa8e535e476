"""Consumer of a BPF ring buffer (BPF_MAP_TYPE_RINGBUF) through mmap.

The kernel's layout (kernel/bpf/ringbuf.c, and what libbpf's ringbuf.c reads):
page 0 holds the consumer position (we write it), page 1 the producer
position, then the data pages mapped twice in a row so that a record never
wraps. Each record has an 8-byte header: its length, with a busy bit while
the producer is writing it and a discard bit, then the data, padded to 8.

Reading it here, instead of a ctypes callback per record through
ring_buffer__poll, lets a whole batch be decoded at once with
struct.iter_unpack. x86-64 orders loads and stores as this code needs.
"""

import mmap
import select
import struct

BUSY = 1 << 31
DISCARD = 1 << 30
_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")


class RingBuffer:
    def __init__(self, map_fd, size, record_size):
        page = mmap.PAGESIZE
        self.size = size
        self.mask = size - 1
        self.page = page
        self.record_size = record_size
        self.slot = (record_size + 8 + 7) & ~7
        self.cons = mmap.mmap(map_fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        self.prod = mmap.mmap(map_fd, page + 2 * size, mmap.MAP_SHARED, mmap.PROT_READ, offset=page)
        self.view = memoryview(self.prod)
        self._full = _U32.pack(record_size) * (size // self.slot + 1)  # the headers of a run of full records
        self.epoll = select.epoll()
        self.epoll.register(map_fd, select.EPOLLIN)

    def wait(self, timeout_s):
        """Sleep until the kernel wakes us or timeout_s passes."""
        try:
            self.epoll.poll(timeout_s)
        except InterruptedError:
            pass

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
        view, page, mask, slot, want = self.view, self.page, self.mask, self.slot, self.record_size
        end = min(prod, cons + min(max_bytes, self.size))  # a run fits in the double mapping
        # The common case, checked at C speed: the run is whole records of our size, all committed.
        n = (end - cons) // slot
        if n:
            off = page + (cons & mask)
            run = view[off: off + n * slot]
            if run.cast("I")[:: slot // 4].tobytes() == self._full[: 4 * n]:
                data = run.tobytes()  # copied before the kernel may reuse the space: then handed back
                _U64.pack_into(self.cons, 0, cons + n * slot)
                return data
        u32 = _U32.unpack_from
        chunks = []
        start = cons
        pos = cons
        while pos < end:
            off = page + (pos & mask)
            hdr = u32(view, off)[0]
            if hdr == want:  # committed, full size
                pos += slot
                continue
            if hdr & BUSY:
                break
            if start < pos:
                chunks.append(view[page + (start & mask): page + (start & mask) + (pos - start)].tobytes())
            length = hdr & ~(BUSY | DISCARD)
            pos += (length + 8 + 7) & ~7
            start = pos
        if start < pos:
            chunks.append(view[page + (start & mask): page + (start & mask) + (pos - start)].tobytes())
        _U64.pack_into(self.cons, 0, pos)
        return b"".join(chunks) if len(chunks) != 1 else chunks[0]

    def close(self):
        self.epoll.close()
        self.view.release()
        self.prod.close()
        self.cons.close()
