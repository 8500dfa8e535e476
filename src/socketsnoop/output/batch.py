"""A batch of events and connection records read together (pipeline/rings.py), with their lines: what a sink's
write_batch() gets, and the two ways it can take them in time order (all lines at once, or runs of each kind)."""

from bisect import bisect_right
from itertools import repeat
from operator import itemgetter

_ts = itemgetter(0)  # the time: an event's (TS) and a record's end (R_TS) are both at position 0


class Batch:
    """rows: events (decoded rows, in time order), lines their lines; records: connection records (in time
    order), record_lines theirs. lines and record_lines are None when no sink wants lines."""

    __slots__ = ("rows", "lines", "records", "record_lines", "_at", "_merged")

    def __init__(self, rows, lines, records, record_lines):
        self.rows, self.lines = rows, lines
        self.records, self.record_lines = records, record_lines
        self._at = self._merged = None

    def places(self):
        """Where each record goes among the events (after those of the same time): non-decreasing indexes,
        the records being in time order."""
        if self._at is None:
            rows, records = self.rows, self.records
            if _ts(records[0]) >= _ts(rows[-1]):  # every record after every event: no search
                self._at = [len(rows)] * len(records)
            else:
                self._at = list(map(bisect_right, repeat(list(map(_ts, rows))), map(_ts, records)))
        return self._at

    def merged(self):
        """Every line, events' and records', in time order (for a sink that writes lines only); made once."""
        if self._merged is None:
            lines, out, prev = self.lines, [], 0
            for at, line in zip(self.places(), self.record_lines):
                if at != prev:
                    out += lines[prev:at]
                    prev = at
                out.append(line)
            out += lines[prev:]
            self._merged = out
        return self._merged

    def runs(self, with_lines=True):
        """(is_records, rows, lines) in time order: runs of events and runs of records (lines None without)."""
        rows, records = self.rows, self.records
        lines = self.lines if with_lines else None
        record_lines = self.record_lines if with_lines else None
        prev = first = 0
        at = self.places()
        for i, place in enumerate(at):
            if place != prev:
                if i > first:
                    yield True, records[first:i], record_lines and record_lines[first:i]
                    first = i
                yield False, rows[prev:place], lines and lines[prev:place]
                prev = place
        if len(records) > first:
            yield True, records[first:], record_lines and record_lines[first:]
        if len(rows) > prev:
            yield False, rows[prev:], lines and lines[prev:]
