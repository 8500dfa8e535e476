"""Reading the kernel's rings into batches of decoded rows: the events (a ring and its spare, or a perf buffer)
and the connection records (a ring and its spare), each merged by time, the records held back while events
older than them may still be unread, so that the outputs can write both in time order."""

import time
from bisect import bisect_right
from operator import itemgetter
from struct import calcsize

from ..kernel.abi import RECORD, RECORD_RECORD, ROW
from .decode import TS, merge_by_time

# bytes of rows taken from a ring at a time: a batch's rows, lines and text then stay in the CPU's cache
# (at full churn, 3 alternating rounds: 128K took 8% less CPU per event than 1M, and the workload kept 1.5% more)
READ_BYTES = 128 << 10
DRAIN_S = 0.25  # longest stretch of reading before the caller's loop looks at its signals and timers
_ts = itemgetter(TS)  # an event's time; a record's (its end) is at the same position


def caught_up(*rings):
    """Less than a read's worth waits in every ring (None: a ring not opened): let the rows gather until the
    kernel's wake-up or the poll interval rather than read them a few at a time as they come (each batch has
    costs of its own). Every ring counts: the spares and the records' rings wake no one, and are read only
    with a batch."""
    return all(ring is None or ring.pending() < READ_BYTES for ring in rings)


class RingReader:
    """The monitor's source of batches. bind() it to a Probe whose readers are open; with perf, hand
    on_sample to the Probe's perf buffer (it keeps each sample for the next read())."""

    def __init__(self, perf=False):
        self.perf = perf
        self.samples = []  # perf buffer samples of the current poll
        self.held = []  # records newer than the last event read, while more events wait in the rings
        self.events = self.spare = self.records = self.records_spare = None

    def bind(self, probe):
        self.events, self.spare = probe.reader, probe.spare_reader
        self.records, self.records_spare = probe.record_reader, probe.record_spare_reader
        return self

    def on_sample(self, raw):
        """One perf buffer sample (padded by the kernel past the struct's size)."""
        if len(raw) >= ROW.size:
            self.samples.append(ROW.unpack_from(raw))

    def drain(self, batch, until_empty=False):
        """Hand batch(events, records) what the rings hold: for about DRAIN_S at most, so that the caller sees
        its signals and timers under any load; until nothing is left when until_empty (at exit). Returns
        True when the rings still held events (the caller is behind the kernel)."""
        deadline = time.monotonic() + DRAIN_S
        while True:
            events, records = self.read()
            if not (events or records):
                return False
            batch(events, records)
            if until_empty:
                continue
            if self.perf:
                return False
            if time.monotonic() >= deadline:
                return True
            if self.caught_up():
                return False

    def caught_up(self):
        return caught_up(self.events, self.spare, self.records, self.records_spare)

    def read(self):
        """One batch: (events, records), lists of decoded rows, the records in time order, the events too (near
        enough: as the kernel wrote them); both empty when nothing is ready. The records are read first: an
        event older than one of them is then already in its ring."""
        records = _merged(RECORD_RECORD, self.records, self.records_spare) if self.records else []
        if self.perf:
            # a perf buffer is one ring per CPU, read one CPU after the other: put the batch back in time
            # order (a connection's events may come from several CPUs)
            self.events.consume()
            events, self.samples = self.samples, []
            events.sort(key=_ts)
        else:
            events = _merged(RECORD, self.events, self.spare)
        if records or self.held:
            records = self._release(records, events)
        return events, records

    def _release(self, records, events):
        """The records to write with these events: all of them when the event rings are empty now, else those
        no newer than the last event (the rest wait for the next batch)."""
        if self.held:
            records, self.held = self.held + records, []
        records.sort(key=_ts)  # a ring's are in the order they were written: a CPU may have been a little late
        if self.perf or not (self.events.pending() or self.spare.pending()):
            return records
        last = events[-1][TS] if events else -1
        cut = bisect_right([r[TS] for r in records], last)
        self.held = records[cut:]
        return records[:cut]


class Rows(list):
    """A ring's rows, as read, with their new states (bytes: one a row, in order) taken from the bytes read
    at C speed (the health warnings test them; pipeline/health). A list made from it is a plain list."""

    __slots__ = ("news",)


_NEWSTATE_AT = calcsize("<8xQQQIBB")  # in a ring's record of struct event: the newstate byte


def _merged(struct, main, spare):
    """The rows ready in a ring and its spare (rows made inside another of our programs), merged by time."""
    blob = main.read(READ_BYTES)
    extra = spare.read(READ_BYTES)
    if not extra:
        if struct is not RECORD or not blob:
            return list(struct.iter_unpack(blob)) if blob else []
        rows = Rows(struct.iter_unpack(blob))
        rows.news = blob[_NEWSTATE_AT::struct.size]
        return rows
    rows = list(struct.iter_unpack(blob)) if blob else []
    return merge_by_time(rows, list(struct.iter_unpack(extra)))
