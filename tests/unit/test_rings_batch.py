"""Events and connection records in time order: the rings read together (pipeline/rings.py, on rings laid out as
the kernel's are: support.ring.RingFile) and a batch's lines merged by time (output/batch.py)."""

from types import SimpleNamespace

from socketsnoop.kernel.abi import CONN_RECORD, EVENT, RECORD_ROW, ROW
from socketsnoop.output.batch import Batch
from socketsnoop.pipeline import rings
from socketsnoop.pipeline.decode import make_record_row, make_row
from socketsnoop.pipeline.rings import RingReader

from support.ring import RingFile


def event(ts):
    return make_row(ts_ns=ts, pid=ts, comm=b"e")


def record(ts):
    return make_record_row(ts_ns=ts, pid=ts, comm=b"r")


def batch(event_times, record_times):
    rows, records = [event(t) for t in event_times], [record(t) for t in record_times]
    return Batch(rows, [f"e{t}" for t in event_times], records, [f"r{t}" for t in record_times])


def test_a_batch_merges_by_time():
    b = batch([10, 20, 20, 30, 40], [5, 20, 25, 26, 50])
    assert b.merged() == ["r5", "e10", "e20", "e20", "r20", "r25", "r26", "e30", "e40", "r50"]
    runs = [(is_records, [r[0] for r in rows], lines) for is_records, rows, lines in b.runs()]
    assert runs == [(True, [5], ["r5"]), (False, [10, 20, 20], ["e10", "e20", "e20"]),
                    (True, [20, 25, 26], ["r20", "r25", "r26"]), (False, [30, 40], ["e30", "e40"]),
                    (True, [50], ["r50"])]
    assert [lines for _, _, lines in b.runs(with_lines=False)] == [None] * 5
    assert batch([1, 2], [3, 4]).merged() == ["e1", "e2", "r3", "r4"]  # the records close the batch


def rings_of(events, records, size=1 << 16):
    """A RingReader on four rings (events, their spare, records, theirs) holding the rows given."""
    ev, ev_spare = RingFile(size, EVENT.size), RingFile(size, EVENT.size)
    rec, rec_spare = RingFile(size, CONN_RECORD.size), RingFile(size, CONN_RECORD.size)
    for ts in events:
        ev.put(ROW.pack(*event(ts)))
    for ts in records:
        rec.put(RECORD_ROW.pack(*record(ts)))
    probe = SimpleNamespace(reader=ev.ring, spare_reader=ev_spare.ring, record_reader=rec.ring,
                            record_spare_reader=rec_spare.ring)
    return RingReader().bind(probe), ev


def times(rows):
    return [r[0] for r in rows]


def test_records_wait_for_the_events_older_than_them(monkeypatch):
    reader, ev = rings_of([10, 20, 30, 40], [15, 35, 45])
    monkeypatch.setattr(rings, "READ_BYTES", 2 * (EVENT.size + 8))  # two events, one record a read: more wait
    events, records = reader.read()
    assert times(events) == [10, 20] and times(records) == [15]  # 35 and 45 wait for the events before them
    events, records = reader.read()
    assert times(events) == [30, 40] and times(records) == [35]  # the event ring empty now: all that were read
    ev.put(ROW.pack(*event(50)))
    assert [times(x) for x in reader.read()] == [[50], [45]]
    assert [times(x) for x in reader.read()] == [[], []]


def test_held_records_keep_their_order_with_new_ones(monkeypatch):
    reader, ev = rings_of([10, 20, 30], [25, 28])
    monkeypatch.setattr(rings, "READ_BYTES", 2 * (EVENT.size + 8))
    assert [times(x) for x in reader.read()] == [[10, 20], []]
    assert [times(x) for x in reader.read()] == [[30], [25, 28]]


def test_events_read_from_one_ring_carry_their_new_states():
    """The rows of one ring's read carry their new states as bytes, taken from the bytes read (what the health
    warnings test); those merged with a spare's are a plain list (the health stage then makes them itself)."""
    ev, ev_spare = RingFile(1 << 16, EVENT.size), RingFile(1 << 16, EVENT.size)
    states = [1, 8, 9, 12, 0, 7]
    for i, st in enumerate(states):
        ev.put(ROW.pack(*make_row(ts_ns=i, oldstate=3, newstate=st, pid=i, comm=b"e")))
    rows = rings._merged(rings.RECORD, ev.ring, ev_spare.ring)
    assert rows.news == bytes(states) == bytes(r[6] for r in rows)
    ev.put(ROW.pack(*make_row(ts_ns=10, newstate=4)))
    ev_spare.put(ROW.pack(*make_row(ts_ns=5, newstate=5)))
    merged = rings._merged(rings.RECORD, ev.ring, ev_spare.ring)
    assert times(merged) == [5, 10] and not hasattr(merged, "news")


def test_a_reader_that_has_caught_up_lets_the_rows_gather():
    """A drain ends once less than a read's worth waits, rather than chase the kernel a few rows at a time (at
    full churn that was about 23 rows a batch, each batch paying its fixed costs)."""
    reader, ev = rings_of([10, 20], [])
    calls = []

    def trickle(events, records):  # the kernel writes a row while each of the first batches is handled
        calls.append(times(events))
        if len(calls) < 5:
            ev.put(ROW.pack(*event(100 + len(calls))))

    assert reader.drain(trickle) is False
    assert calls == [[10, 20]]
    assert reader.drain(trickle, until_empty=True) is False  # at exit: everything, until nothing is left
    assert calls == [[10, 20], [101], [102], [103], [104]]


def test_a_drain_goes_on_while_a_ring_that_wakes_no_one_is_full(monkeypatch):
    """The records' ring (and the spares) never wake the reader: a drain goes on while any ring holds a read's
    worth, so that records do not pile up behind a quiet events ring (--summary-only writes no events)."""
    reader, ev = rings_of([10], list(range(1, 11)))
    monkeypatch.setattr(rings, "READ_BYTES", 2 * (CONN_RECORD.size + 8))
    got = []
    assert reader.drain(lambda events, records: got.extend(times(records))) is False
    assert got[:8] == list(range(1, 9)) and reader.caught_up()
