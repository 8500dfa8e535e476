"""A BPF ring buffer laid out in a memfd, for the reader's unit tests and bench/ringread."""

import mmap
import os

from socketsnoop.kernel.ringbuf import RingBuffer


class RingFile:
    """A file laid out as a BPF ring buffer map is (kernel/bpf/ringbuf.c): a consumer page, a producer
    page, then `size` data bytes; records are put in as the kernel's producer does (an 8-byte header,
    length | busy | discard bits and a page offset, the data padded to 8, wrapping past the end of the
    data). `ring` is socket-snoop's RingBuffer reading it (no epoll: a memfd cannot be waited on)."""

    def __init__(self, size, record_size, start=0):
        self.page, self.size = mmap.PAGESIZE, size
        self.fd = os.memfd_create("socketsnoop-test-ring")
        os.ftruncate(self.fd, 2 * self.page + size)
        self.mem = mmap.mmap(self.fd, 2 * self.page + size)
        self.consumer = self.producer = start
        self.ring = RingBuffer(self.fd, size, record_size, wakeups=False)

    @property
    def consumer(self):
        return int.from_bytes(self.mem[0:8], "little")

    @consumer.setter
    def consumer(self, pos):
        self.mem[0:8] = pos.to_bytes(8, "little")

    @property
    def producer(self):
        return int.from_bytes(self.mem[self.page: self.page + 8], "little")

    @producer.setter
    def producer(self, pos):
        self.mem[self.page: self.page + 8] = pos.to_bytes(8, "little")

    def _write(self, pos, data):
        base, off = 2 * self.page, pos % self.size
        first = min(len(data), self.size - off)
        self.mem[base + off: base + off + first] = data[:first]
        self.mem[base: base + len(data) - first] = data[first:]  # the part past the end, at the start

    def put(self, data, busy=False, discard=False, length=None):
        """One record at the producer position: its header (length, or len(data)), then data, padded to 8.
        Returns the position of its header."""
        pos = self.producer
        length = len(data) if length is None else length
        header = length | (1 << 31 if busy else 0) | (1 << 30 if discard else 0)
        self._write(pos, header.to_bytes(4, "little") + bytes(4) + data + bytes(-len(data) % 8))
        self.producer = pos + 8 + ((length + 7) & ~7)
        return pos

    def put_raw(self, records):
        """Records as the kernel wrote them (headers included, each padded to 8), at the producer position."""
        self._write(self.producer, records)
        self.producer += len(records)

    def set_header(self, pos, header):
        self._write(pos, header.to_bytes(4, "little"))

    def close(self):
        self.ring.close()
        self.mem.close()
        os.close(self.fd)
