"""Counting without transfer: the counts the kernel keeps itself (bpf/metrics.h) when `--metrics` is the only
output and nothing else needs the events (commands/run/parts.py: counts_in_kernel), as the metrics sink's
own counts, read at scrape time. The slots (kernel/abi.py M_*) hold what output/metrics.py would have
counted from the same events and records: events by type and new state, connections by direction and
result, the three histograms' buckets (the same bounds, the kernel given them before load) and sums. Only
nonzero counts become series, as when user space counts: the same names, labels and buckets. The
connection records' counts are the kernel's only where it kept the records too (KM_RECORDS: no exit
report wants them); else they cross and the sink counts them itself."""

from collections import Counter

from ..kernel.abi import M_BOUNDS, M_CONNS, M_DURATION, M_EVENTS, M_HANDSHAKE, M_RTT


def events_of(slots):
    """{(type, new state): n} of the events counted."""
    return Counter({(i // 16, i % 16): n for i, n in enumerate(slots[M_EVENTS:M_EVENTS + 128]) if n})


def conns_of(slots):
    """{(direction, result): n} of the connection records counted."""
    return Counter({(i // 8, i % 8): n for i, n in enumerate(slots[M_CONNS:M_CONNS + 32]) if n})


def histogram_of(slots, base, nbounds):
    """(bucket counts, the last +Inf; the sum) of the histogram at slot base with nbounds bounds."""
    return list(slots[base:base + nbounds + 1]), slots[base + M_BOUNDS + 1]


HISTOGRAM_SLOTS = (M_DURATION, M_HANDSHAKE, M_RTT)  # the order of metric_bounds (MetricsSink.histograms())
