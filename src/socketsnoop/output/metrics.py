"""Metrics: a Prometheus endpoint (`--metrics [ADDR:]PORT`), rendered by prometheus_client.

The sink only counts. A batch of events is counted at C speed (collections.Counter over the rows' type and
new state, and with `--metrics-labels comm` the comm bytes too), then the batch's few distinct keys are
added to running totals: no Python work per event. Connection records (abi.RECORD_ROW rows) add
connections by direction and result, failed connects by cause, and histograms of duration, handshake time
and RTT. Nothing is formatted until a scrape: the endpoint's thread (output/metrics_server.py: bounded in
connections, time and descriptors, whatever local users do) then calls collect() through
prometheus_client's generate_latest, which writes the exposition format and escapes label values. The
kernel's counters and each output's drops come from a callable the run command gives us, read in check()
(once a second, in the main thread: a scrape never touches the BPF maps).

Label values are capped: the first N distinct values are kept, every later one is counted as OTHER (and in
socketsnoop_metrics_label_overflow_total), so a port scan or a fork storm cannot grow the number of series
without bound. unit and container are the names of the socket's cgroup (pipeline/identity.Identity, as the
JSON shows them), looked up once per cgroup: a batch is counted by (type, state, comm, cgroup id).
"""

import os
import platform
from bisect import bisect_left
from collections import Counter
from functools import partial
from itertools import repeat
from operator import getitem, is_not, itemgetter

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.process_collector import ProcessCollector

from .. import __version__
from ..kernel.abi import COMM_LEN, EV_RESET_RECEIVED, EV_RESET_SENT, EV_RETRANSMIT, EV_STATE, OWNER_NONE, R_INCOMPLETE
from ..logformat.words import DIRECTION_NAMES, RESULT_NAMES, state_name
from ..pipeline.decode import (CGROUP, IDENT, NEWSTATE, OWNER, R_CGROUP, R_DIRECTION, R_FLAGS, R_HANDSHAKE, R_IDENT,
                               R_OWNER, R_RESULT, R_RTT, R_START, R_TS, TYPE)
from . import kernel_metrics
from .metric_labels import DEFAULT_LABEL_LIMIT, LABELS, OTHER  # noqa: F401 (LABELS: its users import it here)
from .metrics_server import MetricsServer
from .sinks import Sink

FAILED = ("refused", "timeout", "unreachable")  # results of a connect that failed: the causes

# the comm in a row's identity bytes (kernel/abi.py IDENT_FORMAT: pid u32, ports 2 x u16, 2 x 16 address bytes)
_COMM_SLICE = slice(4 + 2 + 2 + 16 + 16, 4 + 2 + 2 + 16 + 16 + COMM_LEN)
_type_state = itemgetter(TYPE, NEWSTATE)
_ident = itemgetter(IDENT)
_owner = itemgetter(OWNER)
_rec_owner = itemgetter(R_OWNER)
_rec_key = itemgetter(R_DIRECTION, R_RESULT)
_rec_ident = itemgetter(R_IDENT)
_cgroup = itemgetter(CGROUP)
_rec_cgroup = itemgetter(R_CGROUP)
_rec_times = itemgetter(R_TS, R_START, R_FLAGS)
_handshake = itemgetter(R_HANDSHAKE)
_rtt = itemgetter(R_RTT)
_not_none = partial(is_not, None)


def comm_label(raw: bytes | None) -> str:
    """A task name as a label value: its text, '\\' doubled, a byte that is not UTF-8 as \\xNN and every
    character that is not printable (control characters, a newline, bidi overrides) as its Python escape
    (\\n, \\u00NN, \\u202e), so that reading the endpoint in a terminal is safe and two names never give the
    same value; quotes and braces are left to prometheus_client's escaping. No process (None): '-'; a process
    named with the empty string: '\\x00', as in the log (no name holds a NUL byte)."""
    if raw is None:
        return "-"
    raw = raw.split(b"\0", 1)[0]
    if not raw:
        return r"\x00"
    if raw == b"-":
        return r"\x2d"  # as in the log: a process named "-" is not "no process"
    text = raw.replace(b"\\", b"\\\\").decode("utf-8", "backslashreplace")
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _escape_char(c) for c in text)


def _escape_char(c):
    """A character that is not printable as its Python escape, never \\xNN (a byte that is not UTF-8's)."""
    e = ascii(c)[1:-1]
    return "\\u00" + e[2:] if e.startswith("\\x") else e


def name_label(text: str) -> str:
    """A unit's or container's name (from a cgroup path) as a label value: what is not printable escaped."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _escape_char(c) for c in text)


class LabelCap:
    """The first `limit` distinct values of one label; every later value is OTHER (counted in `folded`)."""

    def __init__(self, limit):
        self.limit = limit
        self.values = set()
        self.folded = 0

    def __call__(self, value, n=1):
        if value in self.values:
            return value
        if len(self.values) < self.limit:
            self.values.add(value)
            return value
        self.folded += n
        return OTHER


class Histogram:
    """Bucket counts of values in one unit (ns or us), exposed in seconds."""

    def __init__(self, bounds_s, unit_s):
        self.bounds_s = bounds_s
        self.bounds = [round(b / unit_s) for b in bounds_s]
        self.unit_s = unit_s
        self.counts = [0] * (len(bounds_s) + 1)  # the last: +Inf
        self.sum = 0

    def add(self, values):
        values = list(filter(_not_none, values))
        if not values:
            return
        for i, n in Counter(map(partial(bisect_left, self.bounds), values)).items():
            self.counts[i] += n
        self.sum += sum(values)

    def family(self, name, doc):
        fam = HistogramMetricFamily(name, doc)
        counts, acc, buckets = list(self.counts), 0, []
        for bound, n in zip([*map(repr, map(float, self.bounds_s)), "+Inf"], counts):
            acc += n
            buckets.append((bound, acc))
        fam.add_metric([], buckets, self.sum * self.unit_s)
        return fam


def histograms():
    """Connection duration (ns), handshake time (ns), RTT (us): the order of the kernel's metric_bounds."""
    return (Histogram((0.001, 0.01, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 1800, 3600), 1e-9),
            Histogram((0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 3), 1e-9),
            Histogram((0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1),
                      1e-6))


def kernel_bounds():
    """The histograms' bucket bounds in the unit the kernel counts in, for counting without transfer."""
    return [h.bounds for h in histograms()]


class MetricsSink(Sink):
    """Counts events and connection records, and serves the counts over HTTP; wants no lines."""

    name = "metrics"
    wants_lines = False

    def __init__(self, addr="127.0.0.1", port=9100, labels=None, stats=None, identity=None, kernel=None,
                 kernel_records=False):
        self.addr, self.port = addr, port
        self.caps = dict(labels or {})  # label name -> limit, in --metrics-labels order
        self.label_names = [n for n in LABELS if n in self.caps]
        self.cap = {n: LabelCap(limit) for n, limit in self.caps.items()}
        self.by_comm = "comm" in self.caps
        # unit, container: the names of the socket's cgroup, as the JSON shows them (pipeline/identity.Identity)
        self.identity = identity
        self.by_cgroup = identity is not None and bool({"unit", "container"} & set(self.caps))
        self._cgroup_labels = {}  # cgroup id -> {label: value}, for the values final and within the cap
        self.events = Counter()  # (type, state, *label values) -> n
        self.conns = Counter()  # (direction, result, *label values) -> n
        self.duration, self.handshake, self.rtt = histograms()
        # () -> the kernel's counts (kernel/loader.py Probe.metric_counts) or None: counting without transfer;
        # of the events, and of the connection records too with kernel_records
        self.kernel, self.kernel_records = kernel, kernel_records
        self.stats = stats  # () -> {"kernel_ring": n, "kernel_missed": n, <output name>: n, ...}
        self.lost = {"kernel_ring": 0, "kernel_missed": 0}
        self.shed = {}  # kernel_ring by the kind of event shed: {"state_change": n, ...}
        self.drops = {}  # TCP packets the kernel dropped, by reason name (the kernel's counts)
        self._comm_labels = {}  # raw comm -> label value, for the values within the cap
        self.warnings = Counter()  # health warning kind -> warnings said (not their clearing)
        self.server = None
        self.registry = CollectorRegistry(auto_describe=False)

    # -- the Sink interface ---------------------------------------------------------------------------------
    def open(self):
        self.registry.register(self)
        ProcessCollector(registry=self.registry)  # process_cpu_seconds_total, process_resident_memory_bytes
        self.server = MetricsServer(self.addr, self.port, self._render).start()
        return self

    def _render(self):
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def write(self, rows, lines):
        if not self.label_names:
            self.events.update(map(_type_state, rows))  # C speed: one pass, no Python per event
            return
        # the owner kind beside the comm: no process (OWNER_NONE) and a process named "" have the same comm bytes
        comms = (zip(map(getitem, map(_ident, rows), repeat(_COMM_SLICE)), map(_owner, rows)) if self.by_comm
                 else repeat(None))
        events, labels = self.events, self._labels
        if self.label_names == ["comm"]:  # the common case, without a call per key
            comm_label = self._comm
            for ((typ, state), comm), n in Counter(zip(map(_type_state, rows), comms)).items():
                events[(typ, state, comm_label(comm, n))] += n
            return
        if not self.by_cgroup:
            for ((typ, state), comm), n in Counter(zip(map(_type_state, rows), comms)).items():
                events[(typ, state, *labels(comm, 0, n))] += n
            return
        for ((typ, state), comm, cgroup), n in Counter(zip(map(_type_state, rows), comms, map(_cgroup, rows))).items():
            events[(typ, state, *labels(comm, cgroup, n))] += n

    def write_records(self, rows, lines):
        """Connection records (abi.RECORD_ROW tuples, as handle_records passes them): counted by direction and
        result at C speed; their duration, handshake and RTT into the histograms (0: not known)."""
        if not rows:
            return
        if not self.label_names:
            self.conns.update(map(_rec_key, rows))
        else:
            # the record's identity bytes have the comm where an event's do, and it has the socket's cgroup
            comms = (zip(map(getitem, map(_rec_ident, rows), repeat(_COMM_SLICE)), map(_rec_owner, rows))
                     if self.by_comm else repeat(None))
            cgroups = map(_rec_cgroup, rows) if self.by_cgroup else repeat(0)
            batch = Counter(zip(map(_rec_key, rows), comms, cgroups))
            conns, labels = self.conns, self._labels
            for (key, comm, cgroup), n in batch.items():
                conns[(*key, *labels(comm, cgroup, n))] += n
        self.duration.add([ts - start for ts, start, flags in map(_rec_times, rows)
                           if start and not flags & R_INCOMPLETE])
        self.handshake.add(filter(None, map(_handshake, rows)))
        self.rtt.add(filter(None, map(_rtt, rows)))

    def write_warnings(self, warnings, lines, notes):
        self.warnings.update(w.kind for w in warnings if w.status == "active")

    def check(self):
        if self.stats:
            lost = dict(self.stats())
            self.shed = lost.pop("shed", {})
            self.drops = lost.pop("drops", {})
            self.lost = lost

    def close(self):
        if self.server is not None:
            self.server.close()
            self.server = None

    # -- labels ---------------------------------------------------------------------------------------------
    def _labels(self, comm, cgroup, n):
        """The label values (label_names' order) of a batch's key: n rows with this comm and cgroup."""
        names = self._cgroup_labels.get(cgroup) or self._names(cgroup, n) if self.by_cgroup else {}
        return tuple(self._comm(comm, n) if name == "comm" else names.get(name, "") for name in self.label_names)

    def _names(self, cgroup, n):
        """{unit, container} of a cgroup id, capped; '' where the cgroup has none (or is not known yet)."""
        info, final = self.identity.cgroup(cgroup)
        names = info[1] if info else None
        out = {}
        for name in ("unit", "container"):
            value = getattr(names, name, None) if name in self.cap else None
            out[name] = self.cap[name](name_label(value), n) if value else ""
        if final and OTHER not in out.values():
            if len(self._cgroup_labels) >= 65536:
                self._cgroup_labels.clear()
            self._cgroup_labels[cgroup] = out
        return out

    def _comm(self, key, n=1):
        """The label of a (comm bytes, owner kind) key, capped."""
        value = self._comm_labels.get(key)
        if value is None:
            raw, owner = key
            value = self.cap["comm"](comm_label(None if owner == OWNER_NONE else raw), n)
            if value != OTHER:
                self._comm_labels[key] = value
        return value

    # -- a scrape (the endpoint's thread) ----------------------------------------------------------------------
    def collect(self):
        if self.kernel is not None:
            self._from_kernel()
        yield from self._own_families()
        yield from self._event_families()
        yield from self._record_families()
        yield from self._loss_families()

    def _from_kernel(self):
        """Counting without transfer: the kernel's counts replace ours (no rows come for what it counts)."""
        slots = self.kernel()
        if slots is None:  # no kernel side (bench/churn's replay), or closed at exit: the last counts
            return
        self.events = kernel_metrics.events_of(slots)
        if not self.kernel_records:
            return
        self.conns = kernel_metrics.conns_of(slots)
        for h, base in zip((self.duration, self.handshake, self.rtt), kernel_metrics.HISTOGRAM_SLOTS):
            h.counts, h.sum = kernel_metrics.histogram_of(slots, base, len(h.bounds))

    def _event_families(self):
        """State changes by new state; retransmissions and resets (each with the labels asked for)."""
        names = self.label_names
        events = list(self.events.items())  # a copy: the main thread goes on counting
        states = CounterMetricFamily("socketsnoop_state_changes", "TCP state changes, by new state",
                                     labels=["state", *names])
        per_type = {
            EV_RETRANSMIT: CounterMetricFamily("socketsnoop_retransmissions", "TCP retransmissions (a SYN-ACK "
                                               "sent again included)", labels=names),
            EV_RESET_SENT: CounterMetricFamily("socketsnoop_resets_sent", "TCP resets sent", labels=names),
            EV_RESET_RECEIVED: CounterMetricFamily("socketsnoop_resets_received", "TCP resets received",
                                                   labels=names),
        }
        sums = {}
        for (typ, state, *labels), n in events:
            if typ == EV_STATE:
                states.add_metric([state_name(state), *labels], n)
            else:
                key = (typ, *labels)
                sums[key] = sums.get(key, 0) + n
        if not names:
            for typ in per_type:
                sums.setdefault((typ,), 0)
        for (typ, *labels), n in sums.items():
            if typ in per_type:
                per_type[typ].add_metric(labels, n)
        yield states
        yield from per_type.values()

    def _record_families(self):
        """From the connection records: connections by direction and result, failed connects by cause, and the
        duration, handshake and RTT histograms."""
        names = self.label_names
        conns = CounterMetricFamily("socketsnoop_connections", "TCP connections at their end, by direction "
                                    "(in, out, unknown) and result", labels=["direction", "result", *names])
        failed = CounterMetricFamily("socketsnoop_failed_connects", "outgoing connects that failed, by cause "
                                     "(refused, timeout, unreachable)", labels=["cause", *names])
        fails = {} if names else {(cause,): 0 for cause in FAILED}
        by_name = Counter()  # the kernel's numbers as names (two numbers may share one: summed, one series)
        for (direction, result, *labels), n in list(self.conns.items()):
            by_name[(DIRECTION_NAMES.get(direction, "unknown"), RESULT_NAMES.get(result, "closed"), *labels)] += n
        for (direction, result, *labels), n in by_name.items():
            conns.add_metric([direction, result, *labels], n)
            if result in FAILED and direction != "in":
                key = (result, *labels)
                fails[key] = fails.get(key, 0) + n
        for key, n in fails.items():
            failed.add_metric(list(key), n)
        yield conns
        yield failed
        yield self.duration.family("socketsnoop_connection_duration_seconds",
                                   "connection duration, from the first state change to CLOSE")
        yield self.handshake.family("socketsnoop_handshake_seconds", "TCP handshake time (SYN to ESTABLISHED)")
        yield self.rtt.family("socketsnoop_rtt_seconds", "smoothed round-trip time at the connection's end")

    def _loss_families(self):
        """What was lost or shed, by where and kind; label values past the cap; the health warnings said."""
        lost = CounterMetricFamily("socketsnoop_events_lost", "events lost, by where: kernel_ring (the buffer "
                                   "was full), kernel_missed (the kernel skipped our program), or an output "
                                   "that could not deliver them", labels=["where"])
        for where, n in dict(self.lost).items():
            lost.add_metric([where], n)
        yield lost
        shed = CounterMetricFamily("socketsnoop_events_shed", "events the kernel shed when the reader fell behind "
                                   "(kernel_ring lost), by kind: event lines are shed, connection records never",
                                   labels=["kind"])
        for kind, n in dict(self.shed).items():
            shed.add_metric([kind], n)
        yield shed
        drops = CounterMetricFamily("socketsnoop_drops", "TCP packets the kernel dropped, by its reason (the "
                                    "running kernel's names for enum skb_drop_reason; Linux 5.17+)", labels=["reason"])
        for reason, n in dict(self.drops).items():
            drops.add_metric([reason], n)
        yield drops
        overflow = CounterMetricFamily("socketsnoop_metrics_label_overflow", "events counted under the label "
                                       f"value {OTHER!r}: past the cap of distinct values", labels=["label"])
        for name in self.label_names:
            overflow.add_metric([name], self.cap[name].folded)
        yield overflow
        warned = CounterMetricFamily("socketsnoop_warnings", "health warnings said (a lasting one again at most "
                                     "once per interval), by kind", labels=["kind"])
        for kind, n in dict(self.warnings).items():
            warned.add_metric([kind], n)
        yield warned

    def _own_families(self):
        """The monitor's build, and what the endpoint's own limits cut."""
        info = GaugeMetricFamily("socketsnoop_build_info", "always 1: the monitor's version, its Python and "
                                 "the running kernel, as labels", labels=["version", "python", "kernel"])
        info.add_metric([__version__, platform.python_version(), os.uname().release], 1)
        yield info
        if self.server is not None:
            cut = CounterMetricFamily("socketsnoop_metrics_connections_closed", "connections to this endpoint "
                                      "closed by it before an answer: idle (no request within the time "
                                      "allowed) or evicted (at the cap, to make room)", labels=["why"])
            cut.add_metric(["idle"], self.server.expired)
            cut.add_metric(["evicted"], self.server.evicted)
            yield cut
