"""`socket-snoop [options]`, the live monitor: its loop. Its parts are made by parts.py; the kernel's rings are
read by pipeline/rings.py; batches go through output/dispatch.py to the outputs output/build.py opens; what
the monitor says on exit is output/exit_summary.py's, on stderr (standard output carries the events alone)."""

import signal
import time

from .. import priority
from ...kernel.loader import preflight
from ...output import exit_summary
from ...output.console import ConsoleSink
from ...output.exit_summary import say
from ...settings.monitor import filters_from, monitor_options
from .parts import MonitorParts

POLL_S = 0.1  # longest wait for a batch: lines reach the log within this, plus the write


class Monitor(MonitorParts):
    """The live monitor: its parts (parts.py) run until a signal, --duration or a closed standard output."""

    def __init__(self, opts, filters):
        super().__init__(opts, filters)
        self.stop = self.hup = False  # set by a signal
        self.behind = False  # the rings still held events when the last drain() returned

    def _on_signal(self, signum, frame):
        self.hup = self.hup or signum == signal.SIGHUP
        self.stop = self.stop or signum != signal.SIGHUP

    def drain(self, until_empty=False):
        """What the rings hold (pipeline/rings.py); self.behind: they still held events when it returned."""
        self.behind = self.rings.drain(self.out.batch, until_empty)

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
        p = self.make_probe()
        try:
            self.start(p)
            where = self.opts.log_file or "nowhere (--no-log-file)"
            say(f"Monitoring socket connections... Logs will be written to {where}")
            self.loop()
            p.detach()
            self.drain(until_empty=True)  # what was written before detaching
            self.out.notice_losses(p)
            self.out.close_queues()  # their last lines out (or counted) before the summary
            exit_summary.say_exit(p, self.out, self.sinks, exit_summary.report_lines(
                self.report, self.text.stamp, self.filters, self.owners), self.warn)
            unread = self.queues.unread_line() if self.queues is not None else None
            if unread:
                self.warn(unread)
            return 0
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
                self.every_second(now)
            if next_stats and now >= next_stats:
                next_stats, before, last = now + opts.stats, last, (now, self.probe.counters())
                say(exit_summary.stats_line(before, last, self.probe.missed(last[1]), self.identity, self.sinks))
            if deadline and now >= deadline:
                break

    def every_second(self, now):
        """The log file looked at (moved, removed), the cgroup filters' names looked for, losses and warnings said."""
        for sink in self.sinks:
            sink.check()
        if self.cgroup_watch is not None:
            self.cgroup_watch.tick(now)
        self.out.notice_losses(self.probe)
        if self.out.health is not None:  # behind the kernel: as of the last event read, not now
            now_ns = self.out.seen_ns if self.behind else time.monotonic_ns()
            self.out.health.listen_drops(self.probe.listen_drops(), now_ns)
            if self.queues is not None:
                self.out.health.queue_drops(self.queues.read(self.probe.listeners()), self.queues.skipped, now_ns)
            self.out.warnings(now_ns)


def main(argv):
    opts = monitor_options(argv)
    return Monitor(opts, filters_from(opts)).run()
