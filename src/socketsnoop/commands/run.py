"""`socket-snoop [options]`, the live monitor: its loop. The kernel side is loaded by kernel/loader.py and read
by pipeline/rings.py; batches go through output/dispatch.py to the outputs output/build.py opens; what the
monitor says on exit is output/exit_summary.py's, on stderr (standard output carries the events alone)."""

import signal
import time

from . import priority
from ..kernel.loader import Probe, preflight
from ..logformat.base import Clock
from ..output import exit_summary
from ..output.exit_summary import say
from ..output.build import formatters, open_sinks
from ..output.colour import warning_painter, wants_colour
from ..output.connections import ConnectionReport
from ..output.dispatch import Dispatch
from ..output.console import ConsoleSink
from ..pipeline.enrich import ProcOwnerEnricher
from ..pipeline.filter_cgroups import CgroupWatch
from ..pipeline.filters import CGROUP_KINDS
from ..pipeline.health import Health
from ..pipeline.owners import ProcOwners
from ..pipeline.rings import RingReader
from ..settings.monitor import filters_from, metrics_from, monitor_options
from ..settings.warnings import thresholds_from

POLL_S = 0.1  # longest wait for a batch: lines reach the log within this, plus the write
DRAIN_S = 0.25  # longest stretch of reading before the main loop looks at signals and timers


class Monitor:
    def __init__(self, opts, filters):
        self.opts, self.filters, self.clock = opts, filters, Clock()
        self.warn = warning_painter(say) if wants_colour(opts.color, 2) else say  # stderr's warnings
        self.metrics = metrics_from(opts)  # (address, port, labels) or None; a usage error before anything runs
        self.cgroups, self.identity, self.text, self.formatter = formatters(opts, filters, self.clock, self.warn,
                                                                            self.metrics)
        # the exit report keeps the kernel's connection records (one per connection), not every event
        self.report = None if opts.no_report else ConnectionReport(max_conns=opts.max_tracked)
        self.owners, self.enrichers, self.sinks = ProcOwners(), [], []
        self.stop = self.hup = self.behind = False
        self.probe = self.out = self.cgroup_watch = None  # cgroup_watch: the cgroup filters' names, looked for again
        self.rings = RingReader(perf=opts.buffer == "perf")
        self.thresholds = thresholds_from(opts)  # None: --no-warnings

    def open_sinks(self):
        """The outputs, and self.out: the path from decoded rows to them (bench/churn's replay uses it too)."""
        lost = lambda: exit_summary.lost_counts(self.probe, self.sinks)  # noqa: E731 (for --metrics)
        self.sinks = open_sinks(self.opts, self.clock, self.metrics, lost, self.warn, self.identity)
        self.out = Dispatch(self.formatter, self.sinks, self.enrichers, self.report, not self.opts.no_summary)
        if self.thresholds is not None:
            self.out.watch(Health(self.thresholds), self.text)

    def _on_signal(self, signum, frame):
        self.hup = self.hup or signum == signal.SIGHUP
        self.stop = self.stop or signum != signal.SIGHUP

    def drain(self, until_empty=False):
        """What the rings hold: for about DRAIN_S at most, so that signals, --duration and the log file
        checks are seen under any load; until nothing is left when until_empty (at exit). self.behind: the
        rings still held events when it returned."""
        deadline = time.monotonic() + DRAIN_S
        self.behind = False
        while True:
            events, records = self.rings.read()
            if not (events or records):
                return
            self.out.batch(events, records)
            if (not until_empty and time.monotonic() >= deadline) or self.rings.perf:
                self.behind = not self.rings.perf
                return

    def run(self):
        # from here on a signal sets a flag: Ctrl-C or SIGTERM while loading stops right after it,
        # cleanly; a SIGHUP (logrotate while the service restarts) does not kill us
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, self._on_signal)
        preflight()  # "needs root" comes before "cannot write /var/log/...", which follows from it
        priority.boost(self.opts.priority_boost, say)  # before any thread starts: they inherit it
        if self.cgroups is not None:
            self.filters.resolve_cgroups(self.cgroups, warn=self.warn)  # one not there yet: waited for
        self.open_sinks()
        self.probe = p = Probe(self.filters, buffer=self.opts.buffer, buffer_size=self.opts.buffer_size, log=self.warn,
                               records=not self.opts.no_summary or self.report is not None or bool(self.metrics)
                               or self.thresholds is not None,
                               summary_only=self.opts.summary_only, want_cgroup=self.identity is not None)
        try:
            p.load()
            if self.filters.wants_cgroups():
                self.cgroup_watch = CgroupWatch(self.filters, self.cgroups, p, CGROUP_KINDS, warn=self.warn)
            self.owners.scan()
            for ns, listeners in self.owners.listeners_by_netns().items():  # every network namespace's
                p.seed_listeners(listeners, ns)
            self.enrichers.append(ProcOwnerEnricher(self.owners, p, self.filters))
            p.attach()
            p.open_reader(on_sample=self.rings.on_sample)
            self.rings.bind(p)
            where = self.opts.log_file or "nowhere (--no-log-file)"
            say(f"Monitoring socket connections... Logs will be written to {where}")
            self.loop()
            p.detach()
            self.drain(until_empty=True)  # what was written before detaching
            self.out.notice_losses(p)
            self.out.close_queues()  # their last lines out (or counted) before the summary
            return self.finish()
        finally:
            p.close()
            for sink in self.sinks:
                sink.close()

    def loop(self):
        """Until a signal, --duration, or the reader of standard output gone (socket-snoop | head)."""
        reader, opts = self.probe.reader, self.opts
        start = time.monotonic()
        deadline = start + opts.duration if opts.duration else None
        next_check, next_stats = start + 1.0, start + opts.stats if opts.stats else None
        last = (start, self.probe.counters())
        console = next((s for s in self.sinks if isinstance(s, ConsoleSink)), None)
        while not self.stop and not (console and console.closed):
            if self.rings.perf:
                reader.poll(int(POLL_S * 1000))  # fills the rings' samples; drain() takes them
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
                if self.cgroup_watch is not None:
                    self.cgroup_watch.tick(now)
                self.out.notice_losses(self.probe)
                if self.out.health is not None:  # behind the kernel: as of the last event read, not now
                    self.out.warnings(self.out.seen_ns if self.behind else time.monotonic_ns())
            if next_stats and now >= next_stats:
                next_stats, before, last = now + opts.stats, last, (now, self.probe.counters())
                say(exit_summary.stats_line(before, last, self.probe.missed(last[1]), self.identity, self.sinks))
            if deadline and now >= deadline:
                break

    def finish(self):
        report = () if self.report is None else exit_summary.report_lines(self.report, self.text.stamp,
                                                                           self.filters, self.owners)
        exit_summary.say_exit(self.probe, self.out, self.sinks, report, self.warn)
        return 0


def main(argv):
    opts = monitor_options(argv)
    return Monitor(opts, filters_from(opts)).run()
