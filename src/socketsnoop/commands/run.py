"""`socket-snoop [options]`, the live monitor: kernel events -> decode -> enrich -> format -> sinks, and
the report on exit. This module composes the pipeline and runs its loop; each stage is its own module."""

import importlib
import signal
import sys
import time
from operator import itemgetter

from ..errors import SnoopError
from ..kernel.abi import (
    C_FILTERED,
    C_LOST,
    C_SEEN,
    C_SEEN_RESET_RECEIVED,
    C_SEEN_RESET_SENT,
    C_SEEN_RETRANSMIT,
    C_SEEN_STATE,
    C_RECORDS,
    C_RECORDS_FILTERED,
    C_RECORDS_LOST,
    C_SENT,
    C_STORAGE_FAILED,
    RECORD,
    RECORD_RECORD,
    ROW,
)
from ..kernel.loader import Probe, preflight
from ..logformat.base import Clock
from ..logformat.jsonline import JsonFormatter
from ..logformat.text import TextFormatter
from ..output.connections import OPEN_STATES, ConnectionReport
from ..output.journal import DEFAULT_SOCKET, JournalSink
from ..output.queued import QueuedSink
from ..output.sinks import ConsoleSink, LogFileSink, UnsafeLogPath
from ..output.syslog import SyslogSink
from ..pipeline.decode import TS, merge_by_time
from ..pipeline.enrich import ProcOwnerEnricher
from ..pipeline.identity import CgroupTree, Identity
from ..pipeline.owners import ProcOwners, tcp_sockets
from .options import filters_from, metrics_from, monitor_options

POLL_S = 0.1  # longest wait for a batch: lines reach the log within this, plus the write
DRAIN_S = 0.25  # longest stretch of reading before the main loop looks at signals and timers
# bytes of records taken at a time: a batch's rows, lines and text then stay in the CPU's cache
# (at full churn, 3 alternating rounds: 128K took 8% less CPU per event than 1M, and the workload kept 1.5% more)
READ_BYTES = 128 << 10
_ts = itemgetter(TS)


def metrics_module():
    """output/metrics.py, imported only for --metrics: prometheus_client costs about 9 MB and 50 ms at start,
    and a host may run the monitor without it (a one-line error then, only where --metrics asks for it)."""
    try:
        return importlib.import_module("..output.metrics", __package__)
    except ModuleNotFoundError as e:
        raise SnoopError(f"socket-snoop: --metrics needs the Python package prometheus-client ({e.name} is "
                         "missing): install.sh installs it, or pip install prometheus-client") from None


def _err(msg):
    try:
        print(msg, file=sys.stderr, flush=True)
    except (OSError, ValueError):  # stderr closed: nowhere left to say it
        pass


class Monitor:
    def __init__(self, opts, filters):
        self.opts = opts
        self.filters = filters
        self.clock = Clock()
        # the owner's names (user, cgroup, unit, container, pod, exe): only where an output shows them
        context = getattr(opts, "context", False)
        self.metrics = metrics_from(opts)  # (address, port, labels) or None; a usage error before anything runs
        # --metrics-labels unit, container: the same names as the JSON's
        named = opts.format == "json" or context or bool(self.metrics and {"unit", "container"} & set(self.metrics[2]))
        self.cgroups = CgroupTree() if named or filters.wants_cgroups() else None
        self.identity = Identity(self.cgroups, warn=_err) if named else None
        self.text = TextFormatter(self.clock, self.identity, context)
        self.formatter = JsonFormatter(self.clock, self.identity) if opts.format == "json" else self.text
        # the exit report keeps the kernel's connection records (one per connection), not every event
        self.report = None if opts.no_report else ConnectionReport(max_conns=opts.max_tracked)
        self.summary = not opts.no_summary  # connection records to the sinks, as lines
        self.owners = ProcOwners()
        self.sinks = []
        self.enrichers = []
        self.lines = 0
        self.stop = False
        self.hup = False
        self.probe = None
        self.samples = []  # perf buffer samples of the current poll
        self.losses = (0, 0, {})  # lost, missed and shed (by kind) events the outputs were told of
        self.want_lines = True  # some sink wants lines (set by open_sinks)

    # -- set-up ----------------------------------------------------------------
    def open_sinks(self):
        """The outputs asked for, each a Sink (output/sinks.py)."""
        if not self.opts.quiet:
            self.sinks.append(ConsoleSink())
        if self.opts.log_file:
            try:
                self.sinks.append(LogFileSink(self.opts.log_file, warn=_err))
            except UnsafeLogPath as e:
                raise SnoopError(f"socket-snoop: refusing the log file {self.opts.log_file}: {e}", 2) from None
            except OSError as e:
                raise SnoopError(f"socket-snoop: cannot write the log file {self.opts.log_file}: "
                                 f"{e.strerror} (use --log-file PATH or --no-log-file)") from None
        self.sinks += self.output_sinks()
        opened = []
        if self.metrics:
            host, port, labels = self.metrics
            sink = metrics_module().MetricsSink(host, port, labels, stats=self.lost_counts, identity=self.identity)
            opened.append(sink)
            try:
                self.sinks.append(sink.open())
            except OSError as e:
                raise SnoopError(f"socket-snoop: --metrics: cannot listen on {host}:{port}: "
                                 f"{e.strerror or e}") from None
        for sink in self.sinks:
            if sink not in opened:
                sink.open()
        self.want_lines = any(sink.wants_lines for sink in self.sinks)

    def lost_counts(self):
        """Events lost so far, by where: the kernel's ring, the kernel's skips, each output (for metrics)."""
        out = {}
        if self.probe is not None:
            c = self.probe.counters()
            out = {"kernel_ring": c[C_LOST], "kernel_missed": self.probe.missed(c), "shed": self.probe.shed(c)}
            if self.probe.records:
                out["kernel_records"] = c[C_RECORDS_LOST]  # connection records: their ring was full
        for sink in self.sinks:
            if sink.name != "metrics":
                out[sink.name.replace(" ", "_")] = sink.dropped()
        return out

    def output_sinks(self):
        """--journal, --syslog: each a QueuedSink (a bounded queue and a writer thread of its own)."""
        o, out = self.opts, []
        text = o.format != "json"
        kw = dict(capacity=o.output_queue, warn=_err, json_lines=not text)
        if o.journal or o.journal_socket:
            out.append(JournalSink(self.clock, text, path=o.journal_socket or DEFAULT_SOCKET, **kw))
        if o.syslog:
            if o.syslog_ca and o.syslog.scheme != "tls":
                _err(f"socket-snoop: warning: --syslog-ca is for tls:// collectors; {o.syslog} does not use it")
            try:
                out.append(SyslogSink(self.clock, text, o.syslog, facility=o.syslog_facility, ca=o.syslog_ca, **kw))
            except (OSError, ValueError) as e:  # ssl: the CA file missing or not PEM
                raise SnoopError(f"socket-snoop: --syslog-ca {o.syslog_ca}: cannot use it: "
                                 f"{getattr(e, 'strerror', None) or e}", 2) from None
        return out

    @property
    def queued_sinks(self):
        return [s for s in self.sinks if isinstance(s, QueuedSink)]

    def outputs_line(self):
        """'Outputs: journal dropped=0 syslog dropped=3' ('' without such outputs)."""
        parts = [f"{s.name} dropped={s.dropped()}{s.details()}" for s in self.queued_sinks]
        return "Outputs: " + " ".join(parts) if parts else ""

    def notice_losses(self, counters):
        """Lost or missed events since the last call, as a warning entry to the outputs that carry fields."""
        lost, missed, shed = counters[C_LOST], self.probe.missed(counters), self.probe.shed(counters)
        dl, dm = lost - self.losses[0], missed - self.losses[1]
        if dl or dm:
            ds = {kind: n - self.losses[2].get(kind, 0) for kind, n in shed.items()}
            by_kind = ", ".join(f"{n} {kind}" for kind, n in ds.items() if n)
            for s in self.queued_sinks:
                s.notice(f"Lost Events: {dl} lost (the buffer was full{': shed ' + by_kind if by_kind else ''}), "
                         f"{dm} missed (the kernel skipped our programs)",
                         {"event": "lost_events", "lost": dl, "missed": dm, **{f"shed_{k}": n for k, n in ds.items()}})
        self.losses = (lost, missed, shed)

    @property
    def user_filtered(self):
        return sum(e.filtered for e in self.enrichers)

    @property
    def records_filtered(self):
        return sum(e.records_filtered for e in self.enrichers)

    def _on_signal(self, signum, frame):
        if signum == signal.SIGHUP:
            self.hup = True
        else:
            self.stop = True

    # -- the pipeline ----------------------------------------------------------
    def handle(self, rows):
        """Decoded events (events.Row tuples) -> enrichers -> lines to every sink. Most
        events need nothing but formatting: the few an enricher must look at are found at C speed."""
        rows = rows if isinstance(rows, list) else list(rows)
        for enricher in self.enrichers:
            which = enricher.pick(rows)
            if which:
                enricher.enrich(rows, sorted(which))
                if None in rows:
                    rows = [r for r in rows if r is not None]
                    if not rows:
                        return
        lines = self.formatter.lines(rows) if self.want_lines else None  # none: only counts (--metrics)
        self.lines += len(rows)
        for sink in self.sinks:
            sink.write(rows, lines if sink.wants_lines else None)

    def handle_records(self, rows):
        """Connection records (abi.RECORD_ROW tuples) -> enrichers -> lines to every sink, and the exit report."""
        for enricher in self.enrichers:
            rows = enricher.enrich_records(rows)
            if not rows:
                return
        if self.report is not None:
            self.report.add(rows)
        lines = None
        if self.summary:  # the summary lines; with no output of lines (--metrics only), counted
            lines = self.formatter.record_lines(rows) if self.want_lines else None
            self.lines += len(rows)
        for sink in self.sinks:
            if self.summary or not sink.wants_lines:  # metrics count records with --no-summary too
                sink.write_records(rows, lines if sink.wants_lines else None)

    def handle_sample(self, raw):
        """One perf buffer sample (padded by the kernel past the struct's 112 bytes), kept for drain()."""
        if len(raw) >= ROW.size:
            self.samples.append(ROW.unpack_from(raw))

    def drain(self, until_empty=False):
        """What the buffers hold: for about DRAIN_S at most, so that signals, --duration and the log
        file checks are seen under any load; until nothing is left when until_empty (at exit)."""
        if self.opts.buffer == "perf":
            # a perf buffer is one ring per CPU, read one CPU after the other: put the batch
            # back in time order (a connection's events may come from several CPUs)
            self.probe.reader.consume()
            rows, self.samples = self.samples, []
            rows.sort(key=_ts)
            self.handle(rows)
            return
        main, spare = self.probe.reader, self.probe.spare_reader
        deadline = time.monotonic() + DRAIN_S
        while True:
            blob = main.read(READ_BYTES)
            nblob = spare.read(READ_BYTES)
            if blob or nblob:
                rows = RECORD.iter_unpack(blob)
                if nblob:  # events made inside another of our programs: merge them in by time
                    rows = merge_by_time(list(rows), list(RECORD.iter_unpack(nblob)))
                self.handle(rows)
            records = self.drain_records()
            if not (blob or nblob or records):
                return
            if not until_empty and time.monotonic() >= deadline:
                return

    def drain_records(self):
        """The connection records ready now (a ring and its spare: order within a batch does not matter).
        Returns whether there were any."""
        found = False
        for reader in (self.probe.record_reader, self.probe.record_spare_reader):
            blob = reader.read(READ_BYTES) if reader else b""
            if blob:
                found = True
                self.handle_records(list(RECORD_RECORD.iter_unpack(blob)))
        return found

    # -- the run ---------------------------------------------------------------
    def run(self):
        opts = self.opts
        # from here on a signal sets a flag: Ctrl-C or SIGTERM while loading stops right after it,
        # cleanly; a SIGHUP (logrotate while the service restarts) does not kill us
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, self._on_signal)
        preflight()  # "needs root" comes before "cannot write /var/log/...", which follows from it
        if self.cgroups is not None:
            self.filters.resolve_cgroups(self.cgroups)  # a unit, container or cgroup that is not there: exit 2
        self.open_sinks()
        self.probe = Probe(self.filters, buffer=opts.buffer, buffer_size=opts.buffer_size, log=_err,
                           records=self.summary or self.report is not None or self.metrics is not None,
                           summary_only=opts.summary_only, want_cgroup=self.identity is not None)
        try:
            self.probe.load()
            self.owners.scan()
            for ns, listeners in self.owners.listeners_by_netns().items():  # every network namespace's
                self.probe.seed_listeners(listeners, ns)
            self.enrichers.append(ProcOwnerEnricher(self.owners, self.probe, self.filters))
            self.probe.attach()
            self.probe.open_reader(on_sample=self.handle_sample)
            where = opts.log_file or "nowhere (--no-log-file)"
            _err(f"Monitoring socket connections... Logs will be written to {where}")
            self.loop()
            self.probe.detach()
            self.drain(until_empty=True)  # what was written before detaching
            if self.queued_sinks:
                self.notice_losses(self.probe.counters())
            for sink in self.queued_sinks:  # their last messages out (or counted) before the summary
                sink.close()
            return self.finish()
        finally:
            self.probe.close()
            for sink in self.sinks:
                sink.close()

    def loop(self):
        """Until a signal or --duration."""
        opts = self.opts
        reader = self.probe.reader
        start = time.monotonic()
        deadline = start + opts.duration if opts.duration else None
        next_check = start + 1.0
        next_stats = start + opts.stats if opts.stats else None
        last_stats = (start, self.probe.counters())
        perf = opts.buffer == "perf"
        while not self.stop:
            if perf:
                reader.poll(int(POLL_S * 1000))  # fills self.samples; drain() handles them
            elif reader.pending() < self.probe.wakeup_bytes:  # past the mark: its wake-up has come and gone
                reader.wait(POLL_S)
            self.drain()
            now = time.monotonic()
            if self.hup:
                self.hup = False
                for sink in self.sinks:
                    sink.reopen()
            if now >= next_check:
                next_check = now + 1.0
                for sink in self.sinks:
                    sink.check()
                if self.queued_sinks:
                    self.notice_losses(self.probe.counters())
            if next_stats and now >= next_stats:
                next_stats = now + opts.stats
                last_stats = self.print_stats(last_stats, now)
            if deadline and now >= deadline:
                break

    def print_stats(self, last, now):
        t0, c0 = last
        c = self.probe.counters()
        dt = max(now - t0, 1e-9)
        _err(f"stats: {(c[C_SENT] - c0[C_SENT]) / dt:.0f} events/s; "
             f"state {c[C_SEEN_STATE] - c0[C_SEEN_STATE]}, retransmit {c[C_SEEN_RETRANSMIT] - c0[C_SEEN_RETRANSMIT]}, "
             f"reset sent {c[C_SEEN_RESET_SENT] - c0[C_SEEN_RESET_SENT]}, "
             f"reset received {c[C_SEEN_RESET_RECEIVED] - c0[C_SEEN_RESET_RECEIVED]}; "
             f"filtered {c[C_FILTERED] - c0[C_FILTERED]}; records {c[C_RECORDS] - c0[C_RECORDS]}; "
             f"lost so far {c[C_LOST]}, records lost so far {c[C_RECORDS_LOST]}, missed so far {self.probe.missed(c)}"
             + self.identity_stats()
             + "".join(f"; {s.name} dropped so far {s.dropped()}" for s in self.queued_sinks))
        return now, c

    def identity_stats(self):
        if self.identity is None:
            return ""
        s = self.identity.stats()
        return (f"; identity lookups: cgroup {s['cgroup']} ({s['cgroup_walks']} walks), user {s['user']}, "
                f"exe {s['exe']}")

    def finish(self):
        c = self.probe.counters()
        missed = self.probe.missed(c)
        out = sys.stdout
        lines = ["Stopping monitoring...", ""]
        if self.report is not None:
            self.owners.scan()
            lines += self.report.lines(self.text.stamp, tcp_sockets(states=OPEN_STATES), self.filters,
                                       self.owners.lookup)
        totals = (f"Totals: seen={c[C_SEEN]} captured={c[C_SENT]} "
                  f"filtered={c[C_FILTERED] + self.user_filtered} lost={c[C_LOST]} missed={missed} "
                  f"lines={self.lines}")
        if self.probe.records:
            totals += (f" records={c[C_RECORDS]} records_filtered={c[C_RECORDS_FILTERED] + self.records_filtered}"
                       f" records_lost={c[C_RECORDS_LOST]}")
        totals += "".join(f" shed_{kind}={n}" for kind, n in self.probe.shed(c).items())
        lines.append(totals)
        if self.queued_sinks:
            lines.append(self.outputs_line())
        try:
            out.write("\n".join(lines) + "\n")
            out.flush()
        except OSError:  # a closed pipe, a hung-up terminal: the totals are lost with the console
            pass
        if c[C_LOST]:
            by_kind = ", ".join(f"{n} {kind}" for kind, n in self.probe.shed(c).items() if n)
            _err(f"socket-snoop: warning: {c[C_LOST]} events were lost (the buffer was full: the kernel shed "
                 f"event lines, {by_kind}; connection records have a ring of their own): raise --buffer-size, "
                 "or filter more")
        if c[C_STORAGE_FAILED]:
            _err(f"socket-snoop: warning: {c[C_STORAGE_FAILED]} times the kernel had no room for a socket's state "
                 "(more sockets at once than its table holds): their owners may show as the task the kernel "
                 "ran in, and their records as incomplete")
        if c[C_RECORDS_LOST]:
            _err(f"socket-snoop: warning: {c[C_RECORDS_LOST]} connection records were lost (their buffer was "
                 "full): raise --buffer-size, or filter more")
        for sink in self.sinks:
            if sink.dropped():
                _err(f"socket-snoop: warning: {sink.dropped()} events could not be written to the {sink.name}")
        if missed:
            _err(f"socket-snoop: warning: the kernel skipped our programs {missed} times (a tracepoint hit "
                 "while one of them was already running on that CPU): those events were not seen")
        return 0


def main(argv):
    opts = monitor_options(argv)
    return Monitor(opts, filters_from(opts)).run()
