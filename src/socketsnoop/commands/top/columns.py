"""top's rows: an interval's counts (tally.py) rolled up by a grouping, its columns, their order.

A row is a dict of JSON values: `group` (the grouping's name), `key` (what identifies the group: pid and
comm, uid and user, a unit, ...), `label` (the key as one safe token of text: escaped, no name can drive
a terminal) and the counts (COLUMNS). Text and screen views show the label and the columns that fit.
"""

import math
from typing import Callable, NamedTuple

from ...kernel.abi import DIR_IN, DIR_OUT
from ...logformat.escape import comm_text, escape_comm, escape_token, format_addr, format_endpoint
from .tally import (
    BYTES_RECEIVED,
    BYTES_SENT,
    ENDED,
    NCOUNTS,
    OPENED,
    REFUSED,
    RESETS_RECEIVED,
    RESETS_SENT,
    RETRANSMITS,
    TIMEOUT,
    UNREACHABLE,
    flow_fields,
)

NONE = "-"


class Names:
    """The names of a flow's uid and cgroup, from pipeline.identity.Identity (None: no names, e.g. no cgroup
    v2 mount): each cached there, bounded."""

    def __init__(self, identity):
        self.identity = identity

    def user(self, uid):
        return self.identity.user(uid) if self.identity else None

    def cgroup(self, cid):
        if not self.identity:
            return None
        info, _final = self.identity.cgroup(cid)
        return info[1] if info else None


def _process(flow, names):
    pid, comm = flow[0], flow[1]
    return (pid, comm), {"pid": pid, "comm": comm_text(comm)}, f"{pid} {escape_comm(comm, pid)}"


def _user(flow, names):
    uid = flow[2]
    user = names.user(uid)
    return uid, {"uid": uid, "user": user}, escape_token(user) if user else str(uid)


def _cgroup_name(field):
    def key(flow, names):
        found = names.cgroup(flow[3])
        name = getattr(found, field) if found else None
        if field == "unit" and found and found.user_unit:  # a user's own unit, under the user's manager
            name = f"{found.unit}/{found.user_unit}"
        label = escape_token(name[:12] if field == "container" else name) if name else NONE
        return name, {field: name}, label
    return key


def _remote(flow, names):
    addr = format_addr(flow[5], flow[8])
    return (flow[5], flow[8]), {"remote": addr}, addr


def _service(flow, names):
    """The listening side of an outgoing connection: the peer's address and port."""
    if flow[4] != DIR_OUT:
        word = "(incoming)" if flow[4] == DIR_IN else "(older than top)"
        return word, {"service": None}, word
    text = format_endpoint(flow[5], format_addr(flow[5], flow[8]), flow[9])
    return (flow[5], flow[8], flow[9]), {"service": text}, text


def _listener(flow, names):
    """Our listening side of an accepted connection: the local address and port."""
    if flow[4] != DIR_IN:
        word = "(outgoing)" if flow[4] == DIR_OUT else "(older than top)"
        return word, {"listener": None}, word
    text = format_endpoint(flow[5], format_addr(flow[5], flow[6]), flow[7])
    return (flow[5], flow[6], flow[7]), {"listener": text}, text


class Grouping(NamedTuple):
    name: str  # --by's value, the JSON's "group"
    title: str  # the label column's header
    key: str  # the key that selects it on the screen
    of: Callable  # flow, Names -> (hashable key, JSON key dict, label)


GROUPINGS = {g.name: g for g in (
    Grouping("process", "PID COMM", "p", _process),
    Grouping("user", "USER", "u", _user),
    Grouping("unit", "UNIT", "n", _cgroup_name("unit")),
    Grouping("container", "CONTAINER", "c", _cgroup_name("container")),
    Grouping("pod", "POD", "o", _cgroup_name("pod")),
    Grouping("remote", "REMOTE HOST", "h", _remote),
    Grouping("service", "REMOTE SERVICE", "s", _service),
    Grouping("listener", "LOCAL LISTENER", "l", _listener),
)}


def _count(v):
    return str(v)


def _rate(v):
    return f"{v:.2f}" if v < 10 else f"{v:.1f}" if v < 100 else f"{v:.0f}"


def _bytes(v):
    for unit, size in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if v >= size:
            return f"{v / size:.1f}{unit}"
    return str(v)


def _ms(v):
    if v is None:
        return NONE
    return f"{v:.3f}" if v < 1 else f"{v:.1f}" if v < 1000 else f"{v:.0f}"


class Column(NamedTuple):
    name: str  # the JSON key, --sort's value
    header: str
    fmt: Callable


# in the order shown; where the screen is narrow, the last ones are left out first (the sort column stays)
COLUMNS = (
    Column("opened_per_s", "OPEN/s", _rate),
    Column("active", "ACTIVE", _count),
    Column("refused", "REFUSED", _count),
    Column("timeout", "TIMEOUT", _count),
    Column("unreachable", "UNREACH", _count),
    Column("resets_sent", "RST-TX", _count),
    Column("resets_received", "RST-RX", _count),
    Column("retransmits", "RETRANS", _count),
    Column("bytes_sent", "SENT", _bytes),
    Column("bytes_received", "RECV", _bytes),
    Column("handshake_p50_ms", "HS-50ms", _ms),
    Column("handshake_p99_ms", "HS-99ms", _ms),
    Column("rtt_p50_ms", "RTT-50ms", _ms),
    Column("rtt_p99_ms", "RTT-99ms", _ms),
)
COLUMN_NAMES = {c.name: c for c in COLUMNS}
SORT_KEYS = ("name", "opened", "ended", *COLUMN_NAMES)  # --sort: a column, or opened/ended (counts)

_COUNT_KEYS = (("opened", OPENED), ("ended", ENDED), ("refused", REFUSED), ("timeout", TIMEOUT),
               ("unreachable", UNREACHABLE), ("resets_sent", RESETS_SENT), ("resets_received", RESETS_RECEIVED),
               ("retransmits", RETRANSMITS), ("bytes_sent", BYTES_SENT), ("bytes_received", BYTES_RECEIVED))


def percentile(values, p):
    """The nearest-rank percentile (a value that was measured), or None without values."""
    if not values:
        return None
    values = sorted(values)
    return values[max(0, math.ceil(p * len(values)) - 1)]


def _row(grouping, key, label, counts, active, handshakes, rtts, seconds, warnings=()):
    row = {"group": grouping, "key": key, "label": label, "warnings": sorted(warnings)}
    row.update((name, counts[i]) for name, i in _COUNT_KEYS)
    row["opened_per_s"] = round(counts[OPENED] / seconds, 3) if seconds > 0 else 0.0
    row["active"] = active
    for name, values in (("handshake", handshakes), ("rtt", rtts)):
        for p in (50, 99):
            v = percentile(values, p / 100)
            row[f"{name}_p{p}_ms"] = None if v is None else round(v, 3)
    return row


def rollup(interval, active, by, names, seconds, warned=None):
    """The rows of an interval (tally.Interval) and the open connections ({flow: n}), grouped by `by`;
    warned: {a group's key: the kinds of the health warnings in force about it} (warned.marks())."""
    of = GROUPINGS[by].of
    groups = {}  # key -> [JSON key, label, counts, active, handshakes (ms), RTTs (ms)]
    seen = {}  # flow -> its group

    def group(flow):
        g = seen.get(flow)
        if g is None:
            key, jkey, label = of(flow_fields(flow), names)
            g = groups.get(key)
            if g is None:
                g = groups[key] = [jkey, label, [0] * NCOUNTS, 0, [], []]
            seen[flow] = g
        return g

    for flow, counts in interval.counts.items():
        g = group(flow)
        g[2] = [a + b for a, b in zip(g[2], counts)]
    for flow, n in active.items():
        group(flow)[3] += n
    for table, at, unit in ((interval.handshakes, 4, 1e6), (interval.rtts, 5, 1e3)):  # ns, us -> ms
        for flow, values in table.items():
            group(flow)[at].extend(v / unit for v in values)
    warned = warned or {}
    return [_row(by, *g, seconds, warned.get(key, ())) for key, g in groups.items()]


def sort_rows(rows, sort, reverse=False):
    """By a column, largest first (a percentile not measured last); by name, in label order."""
    if sort == "name":
        return sorted(rows, key=lambda r: r["label"], reverse=reverse)
    return sorted(rows, key=lambda r: (r[sort] is not None, r[sort] or 0, r["label"]), reverse=not reverse)


def totals(rows):
    """The host's totals: the sums of the rows' counts (every connection is in exactly one row)."""
    out = {name: sum(r[name] for r in rows) for name, _i in _COUNT_KEYS}
    out["opened_per_s"] = round(sum(r["opened_per_s"] for r in rows), 3)
    out["active"] = sum(r["active"] for r in rows)
    return out


def shown_label(row):
    """A row's label as the text and the screen show it: '! ' before it while a health warning is about it."""
    return f"! {row['label']}" if row.get("warnings") else row["label"]


def fit(rows, width, sort, label_title):
    """(label width, [(Column, width)]): the columns that fit in `width` characters, in order, the sort
    column always among them (a column's width: its header's or its widest value's)."""
    label_w = max([len(label_title)] + [len(shown_label(r)) for r in rows])
    label_w = min(label_w, max(16, width // 3))
    widths = [(c, max([len(c.header) + (c.name == sort)] + [len(c.fmt(r[c.name])) for r in rows]))
              for c in COLUMNS]  # the sort column's header gets a '*'
    chosen, used = [], label_w
    for c, w in widths:
        if used + 1 + w <= width or c.name == sort:
            chosen.append((c, w))
            used += 1 + w
    while used > width and len(chosen) > 1:  # the sort column forced in: drop the last others
        drop = next(i for i in range(len(chosen) - 1, -1, -1) if chosen[i][0].name != sort)
        used -= 1 + chosen.pop(drop)[1]
    return label_w, chosen


def cut(text, width):
    return text if len(text) <= width else text[:max(width - 1, 0)] + "~"


def table_lines(rows, width, sort, label_title):
    """The rows as plain text lines, fitted to `width` (text snapshots; the screen uses the same fit)."""
    label_w, chosen = fit(rows, width, sort, label_title)
    head = [label_title.ljust(label_w)] + [(c.header + "*" * (c.name == sort)).rjust(w) for c, w in chosen]
    lines = [" ".join(head).rstrip()]
    for r in rows:
        cells = [cut(shown_label(r), label_w).ljust(label_w)] + [c.fmt(r[c.name]).rjust(w) for c, w in chosen]
        lines.append(" ".join(cells).rstrip())
    return lines
