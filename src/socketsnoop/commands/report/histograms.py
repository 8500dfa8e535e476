"""Distributions for the report: log2 histograms (as bpftrace's hist() prints them) and a count per minute.

Fixed size whatever the input: 65 buckets a histogram; at most MAX_MINUTES minutes (the others counted in
`late`), and printed in at most MAX_ROWS rows (several minutes a row over a long span).
"""

import time

BAR = 52  # the bar's width, as bpftrace's
MAX_MINUTES = 100_000  # about 69 days
MAX_ROWS = 60
MINUTE_BYTES = 120


class Log2:
    """Counts of values by power of two: bucket 0 holds 0, bucket k holds [2**(k-1), 2**k)."""

    def __init__(self):
        self.buckets = [0] * 65

    def add(self, value):
        self.buckets[min(int(value).bit_length(), 64)] += 1

    def count(self):
        return sum(self.buckets)

    def rows(self):
        """[(low, high, count)] from the first non-empty bucket to the last."""
        used = [k for k, n in enumerate(self.buckets) if n]
        if not used:
            return []
        return [(0 if k == 0 else 1 << (k - 1), 1 if k == 0 else 1 << k, self.buckets[k])
                for k in range(used[0], used[-1] + 1)]

    def lines(self):
        """bpftrace's text: '[1K, 2K)    12 |@@@@   |'."""
        rows = self.rows()
        top = max((n for _, _, n in rows), default=0)
        return [f"{f'[{_short(lo)}, {_short(hi)})':<19}{n:>8} |{bar(n, top)}|" for lo, hi, n in rows]


def _short(n):
    """bpftrace's bucket bounds: 1024 -> '1K', 3 -> '3'."""
    for unit, shift in (("E", 60), ("P", 50), ("T", 40), ("G", 30), ("M", 20), ("K", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift}{unit}"
    return str(n)


def bar(n, top):
    width = 0 if not top else (n * BAR) // top
    return ("@" * width).ljust(BAR)


class PerMinute:
    """How many things happened in each minute (epoch nanoseconds in); each minute takes MINUTE_BYTES of the
    budget."""

    def __init__(self, budget):
        self.budget = budget
        self.minutes = {}
        self.late = 0  # not counted: no room for another minute

    def add(self, ts_ns):
        m = ts_ns // 60_000_000_000
        if m in self.minutes:
            self.minutes[m] += 1
        elif len(self.minutes) < MAX_MINUTES and self.budget.take(MINUTE_BYTES):
            self.minutes[m] = 1
        else:
            self.late += 1

    def rows(self):
        """[(first minute, minutes a row, count)] over the whole span, at most MAX_ROWS rows."""
        if not self.minutes:
            return []
        lo, hi = min(self.minutes), max(self.minutes)
        step = -(-(hi - lo + 1) // MAX_ROWS)
        counts = [0] * ((hi - lo) // step + 1)
        for m, n in self.minutes.items():
            counts[(m - lo) // step] += n
        return [(lo + i * step, step, n) for i, n in enumerate(counts)]


def minute_label(m):
    """A minute (since the epoch) in local time: 'Dec 30 2024 22:05'."""
    return time.strftime("%b %d %Y %H:%M", time.localtime(m * 60))
