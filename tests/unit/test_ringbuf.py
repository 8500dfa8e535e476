"""The ring buffer reader (kernel/ringbuf.py: RingBuffer.read) on records the kernel wrote, in a file laid
out as the ring's map is (support.ring.RingFile): whole committed records, one still being written (busy), a
discarded one, one of another size, and records that wrap past the end of the data pages."""

import struct

import pytest
from socketsnoop.kernel.abi import EVENT, RECORD
from socketsnoop.kernel.ringbuf import BUSY, DISCARD
from socketsnoop.pipeline.decode import CGROUP, UID, ident_of

from support.captured import RING_RECORD_CGROUP, RING_RECORD_FIELDS, RING_RECORDS
from support.ring import RingFile

SLOT = 120  # 8 + 112, a multiple of 8
SIZE = 1 << 16


@pytest.fixture
def ring():
    rings = []

    def make(start=0, size=SIZE):
        r = RingFile(size, EVENT.size, start)
        rings.append(r)
        return r
    yield make
    for r in rings:
        r.close()


def with_header(record, header):
    return struct.pack("<I", header) + record[4:]


def read_all(r, max_bytes=1 << 20):
    """What read() returns until it returns nothing, as a list of records."""
    out = b""
    while True:
        blob = r.ring.read(max_bytes)
        if not blob:
            break
        out += blob
    assert len(out) % SLOT == 0
    return [out[i: i + SLOT] for i in range(0, len(out), SLOT)]


def test_captured_records_are_what_the_kernel_writes():
    for raw, (family, old, new, sport, dport) in zip(RING_RECORDS, RING_RECORD_FIELDS):
        assert len(raw) == SLOT and struct.unpack_from("<I", raw)[0] == EVENT.size
        row = RECORD.unpack(raw)
        ident = ident_of(row)
        assert (ident.family, row[5], row[6], ident.sport, ident.dport) == (family, old, new, sport, dport)
        assert ident.comm.rstrip(b"\0") == b"python" and ident.pid == 30834
        assert (row[UID], row[CGROUP]) == (0, RING_RECORD_CGROUP)  # the owner's uid, the socket's cgroup


def test_whole_committed_records(ring):
    r = ring()
    r.put_raw(b"".join(RING_RECORDS))
    assert r.ring.pending() == 6 * SLOT
    assert r.ring.read() == b"".join(RING_RECORDS)
    assert r.consumer == r.producer == 6 * SLOT  # handed back
    assert r.ring.read() == b"" and r.consumer == 6 * SLOT


def test_max_bytes_takes_whole_records(ring):
    r = ring()
    r.put_raw(b"".join(RING_RECORDS))
    assert r.ring.read(2 * SLOT) == b"".join(RING_RECORDS[:2]) and r.consumer == 2 * SLOT
    assert r.ring.read(2 * SLOT - 1) == RING_RECORDS[2]  # whole records only
    assert r.ring.read(1) == RING_RECORDS[3]  # but one at least
    assert read_all(r) == RING_RECORDS[4:]


def test_a_record_cut_short_ends_the_run_until_committed(ring):
    """The producer reserved a record and is still writing it (busy bit set): nothing from it on is taken."""
    r = ring()
    r.put_raw(b"".join(RING_RECORDS[:2]))
    busy_at = r.producer
    r.put_raw(with_header(RING_RECORDS[2], EVENT.size | BUSY)[:8] + bytes(EVENT.size))  # only its header written yet
    r.put_raw(RING_RECORDS[3])  # a later one, already committed
    assert r.ring.read() == b"".join(RING_RECORDS[:2])
    assert r.consumer == busy_at
    assert r.ring.read() == b"" and r.consumer == busy_at  # still busy: nothing
    # the producer finishes it: its data, then its header without the busy bit
    r.mem[2 * r.page + busy_at + 8: 2 * r.page + busy_at + SLOT] = RING_RECORDS[2][8:]
    r.set_header(busy_at, EVENT.size)
    assert read_all(r) == RING_RECORDS[2:4]
    assert r.consumer == r.producer


def test_a_busy_record_deep_in_a_long_run(ring):
    """Hundreds of committed records, one busy: the run up to it is taken at once (the C-speed check)."""
    r = ring()
    records = [RING_RECORDS[i % 6] for i in range(500)]
    r.put_raw(b"".join(records))
    r.set_header(437 * SLOT, EVENT.size | BUSY)
    assert r.ring.read() == b"".join(records[:437])
    assert r.consumer == 437 * SLOT
    r.set_header(437 * SLOT, EVENT.size)
    assert r.ring.read() == b"".join(records[437:])


def test_a_discarded_record_is_passed_over(ring):
    """bpf_ringbuf_discard() leaves the record with the discard bit set: it is skipped, and handed back."""
    r = ring()
    r.put_raw(RING_RECORDS[0] + with_header(RING_RECORDS[1], EVENT.size | DISCARD) + RING_RECORDS[2])
    assert read_all(r) == [RING_RECORDS[0], RING_RECORDS[2]]
    assert r.consumer == r.producer == 3 * SLOT


def test_a_discarded_record_first(ring):
    r = ring()
    r.put_raw(with_header(RING_RECORDS[0], EVENT.size | DISCARD) + b"".join(RING_RECORDS[1:]))
    assert read_all(r) == RING_RECORDS[1:]
    assert r.consumer == r.producer


@pytest.mark.parametrize("length", [40, 13, 200, 0])
def test_a_record_of_another_size_is_passed_over(ring, length):
    """Our program writes none, but another size (padded to 8) is stepped over by its length."""
    r = ring()
    r.put_raw(RING_RECORDS[0])
    r.put(bytes(range(length)))
    r.put_raw(b"".join(RING_RECORDS[1:3]))
    assert read_all(r) == RING_RECORDS[:3]
    assert r.consumer == r.producer == 3 * SLOT + 8 + ((length + 7) & ~7)


@pytest.mark.parametrize("before_end", [SLOT - 8, 40, 8, 0, SLOT, 3 * SLOT])
def test_records_that_wrap_past_the_end(ring, before_end):
    """The producer's positions grow without end; a record may start before the end of the data pages and
    go on at their start: it is read as one piece, whatever part of it (header only, some data) comes first."""
    start = 7 * SIZE - 2 * SLOT - before_end  # a position many rounds in: 2 records, then the wrapping one
    r = ring(start=start)
    r.put_raw(b"".join(RING_RECORDS))
    assert read_all(r) == RING_RECORDS
    assert r.consumer == r.producer == start + 6 * SLOT


def test_a_wrapping_record_next_to_a_discarded_one(ring):
    start = 3 * SIZE - SLOT - 48
    r = ring(start=start)
    r.put_raw(RING_RECORDS[0] + with_header(RING_RECORDS[1], EVENT.size | DISCARD) + b"".join(RING_RECORDS[2:]))
    assert read_all(r) == [RING_RECORDS[0], *RING_RECORDS[2:]]
    assert r.consumer == r.producer


def test_a_busy_record_that_wraps(ring):
    start = SIZE - SLOT - 24
    r = ring(start=start)
    r.put_raw(RING_RECORDS[0])
    at = r.producer
    r.put_raw(with_header(RING_RECORDS[1], EVENT.size | BUSY))
    assert read_all(r) == [RING_RECORDS[0]] and r.consumer == at
    r.set_header(at, EVENT.size)
    assert read_all(r) == [RING_RECORDS[1]] and r.consumer == r.producer

