"""A snapshot: one interval's counts, cut by the Sampler from the feed, as a JSON object (document()) and its
header lines; what the text, JSON and screen views all show."""

import time
from datetime import datetime, timezone
from typing import NamedTuple

from .columns import COLUMN_NAMES, rollup, sort_rows, totals
from .warned import described, marks, warnings_line

POLL_S = 0.1  # longest wait for the kernel's rings: also how soon a key or a resize is seen


class Snapshot(NamedTuple):
    """One interval: its counts (tally.Interval), the open connections per flow, and the kernel's numbers."""

    interval: object
    active: dict
    seconds: float
    events_per_s: float
    lost: int
    missed: int
    when: float  # wall clock, at its end
    warnings: tuple = ()  # the health warnings in force: Health.active()


class Sampler:
    """Reads the feed and cuts its counts into intervals."""

    def __init__(self, feed, interval):
        self.feed = feed
        self.interval = interval
        now = time.monotonic()
        self.next = now + interval
        self.last = (now, feed.losses()[0])

    def poll(self):
        self.feed.wait(max(0.0, min(POLL_S, self.next - time.monotonic())))
        self.feed.drain()

    def due(self):
        return time.monotonic() >= self.next

    def take(self, final=False):
        """The interval ending now (final: after reading the rings to their end)."""
        if final:
            self.feed.drain(until_empty=True)
        now = time.monotonic()
        interval, active = self.feed.tally.take(time.monotonic_ns())
        warnings = self.feed.warnings(time.monotonic_ns())
        seen, lost, missed = self.feed.losses()
        t0, seen0 = self.last
        seconds = max(now - t0, 1e-6)
        self.last = (now, seen)
        self.next = max(self.next + self.interval, now + self.interval / 2)
        untracked = interval.untracked + self.feed.tally.untracked_active
        snap = Snapshot(interval, active, seconds, (seen - seen0) / seconds, lost, missed, time.time(), warnings)
        return snap, untracked


def document(snap, untracked, by, sort, reverse, names):
    """A snapshot as a JSON object: the time, the interval, the grouping and sort, the host's totals, rows."""
    warned = marks(snap.warnings, by, names)
    rows = sort_rows(rollup(snap.interval, snap.active, by, names, snap.seconds, warned), sort, reverse)
    host = totals(rows)
    host.update(events_per_s=round(snap.events_per_s, 1), lost=snap.lost, missed=snap.missed, untracked=untracked)
    stamp = datetime.fromtimestamp(snap.when, timezone.utc).isoformat(timespec="milliseconds")
    return {"time": stamp.replace("+00:00", "Z"), "interval_s": round(snap.seconds, 3), "group": by,
            "sort": sort, "totals": host, "warnings": described(snap.warnings),
            "warnings_line": warnings_line(snap.warnings), "rows": rows}


def header_lines(doc):
    """The lines above the table: what it shows; the host's totals; the kernel's rate and losses so far."""
    t = doc["totals"]
    sort = COLUMN_NAMES[doc["sort"]].header if doc["sort"] in COLUMN_NAMES else doc["sort"]
    local = datetime.fromisoformat(doc["time"].replace("Z", "+00:00")).astimezone()
    kernel = f"events {t['events_per_s']:.0f}/s  lost {t['lost']}  missed {t['missed']}"
    if t["untracked"]:
        kernel += f"  untracked {t['untracked']}"
    lines = [f"socket-snoop top  {local:%H:%M:%S}  every {doc['interval_s']:.1f}s  by {doc['group']}  sort {sort}",
             f"host: opened {t['opened_per_s']:.1f}/s active {t['active']} refused {t['refused']} timeout "
             f"{t['timeout']} unreach {t['unreachable']} rst {t['resets_sent']}/{t['resets_received']} "
             f"retrans {t['retransmits']}",
             kernel]
    return lines + [doc["warnings_line"]] if doc.get("warnings_line") else lines
