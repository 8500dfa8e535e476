"""The live monitor: kernel events -> decode -> enrich -> format -> sinks, and the report on exit."""

import signal
import sys
import time
from bisect import bisect_right
from itertools import compress, count
from operator import itemgetter

from .events import (
    C_FILTERED,
    C_LOST,
    C_SEEN,
    C_SEEN_RESET_RECEIVED,
    C_SEEN_RESET_SENT,
    C_SEEN_RETRANSMIT,
    C_SEEN_STATE,
    C_SENT,
    F_OWNER_UNVERIFIED,
    FLAGS,
    INO,
    NEWSTATE,
    OWNER,
    OWNER_CURRENT,
    OWNER_PROC,
    RECORD,
    ROW,
    SK,
    TCP_CLOSE,
    TS,
    Row,
    ident_of,
    make_ident,
)
from .fmt import Clock, JsonFormatter, TextFormatter
from .owners import ProcOwners
from .probe import Probe, preflight
from .sinks import ConsoleSink, LogFileSink
from .tracker import Tracker

POLL_S = 0.1  # longest wait for a batch: lines reach the log within this, plus the write
DRAIN_S = 0.25  # longest stretch of reading before the main loop looks at signals and timers
# bytes of records taken at a time: a batch's rows, lines and text then stay in the CPU's cache
# (at full churn, 3 alternating rounds: 128K took 8% less CPU per event than 1M, and the workload kept 1.5% more)
READ_BYTES = 128 << 10
_ts, _sk, _ino, _flags = itemgetter(TS), itemgetter(SK), itemgetter(INO), itemgetter(FLAGS)


def merge_by_time(rows, extra):
    """rows (in time order, near enough) with a few extra rows put in their places by time. Many extra
    rows mean the second ring is rescuing a full first one: we are behind, and sorting would only put
    us further behind; they follow the first ring's rows then (each ring is in time order)."""
    if len(extra) > 256:
        rows.extend(extra)
        return rows
    extra.sort(key=_ts)
    times = [r[0] for r in rows]
    for r in reversed(extra):  # from the last: the positions found in `times` stay right
        rows.insert(bisect_right(times, r[0]), r)
    return rows


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
        self.text = TextFormatter(self.clock)
        self.formatter = JsonFormatter(self.clock) if opts.format == "json" else self.text
        self.tracker = None if opts.no_report else Tracker(max_conns=opts.max_tracked)
        self.owners = ProcOwners()
        self.sinks = []
        self.logfile = None
        self.user_filtered = 0
        self.lines = 0
        self.stop = False
        self.hup = False
        self.probe = None
        self.samples = []  # perf buffer samples of the current poll
        self.taught = set()  # sockets whose owner (from /proc) we put in the kernel's map

    # -- set-up ----------------------------------------------------------------
    def open_sinks(self):
        if not self.opts.quiet:
            self.sinks.append(ConsoleSink())
        if self.opts.log_file:
            try:
                self.logfile = LogFileSink(self.opts.log_file, warn=_err)
            except OSError as e:
                from .errors import SnoopError
                raise SnoopError(f"socket-snoop: cannot write the log file {self.opts.log_file}: "
                                 f"{e.strerror} (use --log-file PATH or --no-log-file)") from None
            self.sinks.append(self.logfile)

    def _on_signal(self, signum, frame):
        if signum == signal.SIGHUP:
            self.hup = True
        else:
            self.stop = True

    # -- the pipeline ----------------------------------------------------------
    def care(self, rows, which):
        """The few events user space must look at itself (rows[i] for i in which): an owner to find in
        /proc (the kernel sent the inode: a socket older than us), an owner to re-check against the
        pid/comm filters, a socket whose owner we taught the kernel and that now closed. Returns the
        rows to keep."""
        taught = self.taught
        dropped = False
        for i in which:
            row = rows[i]
            if row[INO] and row[OWNER] == OWNER_CURRENT:  # an inode, and no owner known in the kernel
                row = rows[i] = self.enrich(row)
            elif row[NEWSTATE] == TCP_CLOSE and row[SK] in taught:
                # we told the kernel this socket's owner after it had closed it, maybe: forget it
                taught.discard(row[SK])
                self.probe.forget_owner(row[SK])
            if row[FLAGS] & F_OWNER_UNVERIFIED:
                who = ident_of(row)
                if not self.filters.match_owner(who.pid, who.comm):
                    self.user_filtered += 1
                    rows[i] = None
                    dropped = True
        return [r for r in rows if r is not None] if dropped else rows

    def enrich(self, row):
        """A socket older than us: its owner from /proc, remembered in the kernel too."""
        found = self.owners.lookup(row[INO])
        if found is None:
            return row
        pid, comm = found
        if row[NEWSTATE] != TCP_CLOSE:  # the kernel forgets a socket at CLOSE: do not teach it a dead one
            self.probe.set_owner(row[SK], pid, comm)
            self.taught.add(row[SK])
        who = ident_of(row)._replace(pid=pid, comm=comm)
        return Row._make(row)._replace(owner=OWNER_PROC, ident=make_ident(*who))

    def handle(self, rows):
        """Decoded events (events.Row tuples) -> lines to every sink, and the tracker. Most events need
        nothing but formatting: the few that need care are found at C speed, not by a loop in Python."""
        rows = rows if isinstance(rows, list) else list(rows)
        which = set(compress(count(), map(_ino, rows)))
        which.update(compress(count(), map(_flags, rows)))
        if self.taught:
            which.update(compress(count(), map(self.taught.__contains__, map(_sk, rows))))
        if which:
            rows = self.care(rows, sorted(which))
            if not rows:
                return
        lines = self.formatter.lines(rows)
        if self.tracker is not None:
            self.tracker.add_all(rows)
        self.lines += len(lines)
        for sink in self.sinks:
            sink.write(lines)

    def handle_sample(self, raw):
        """One perf buffer sample (padded by the kernel past the struct's 96 bytes), kept for drain()."""
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
        main, nested = self.probe.reader, self.probe.nested_reader
        deadline = time.monotonic() + DRAIN_S
        while True:
            blob = main.read(READ_BYTES)
            nblob = nested.read(READ_BYTES)
            if not (blob or nblob):
                return
            rows = RECORD.iter_unpack(blob)
            if nblob:  # events made inside another of our programs: merge them in by time
                rows = merge_by_time(list(rows), list(RECORD.iter_unpack(nblob)))
            self.handle(rows)
            if not until_empty and time.monotonic() >= deadline:
                return

    # -- the run ---------------------------------------------------------------
    def run(self):
        opts = self.opts
        # from here on a signal sets a flag: Ctrl-C or SIGTERM while loading stops right after it,
        # cleanly; a SIGHUP (logrotate while the service restarts) does not kill us
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, self._on_signal)
        preflight()  # "needs root" comes before "cannot write /var/log/...", which follows from it
        self.open_sinks()
        self.probe = Probe(self.filters, buffer=opts.buffer, buffer_size=opts.buffer_size, log=_err)
        try:
            self.probe.load()
            self.owners.scan()
            self.probe.seed_listeners(self.owners.listeners())
            self.probe.attach()
            self.probe.open_reader(on_sample=self.handle_sample)
            where = opts.log_file or "nowhere (--no-log-file)"
            _err(f"Monitoring socket connections... Logs will be written to {where}")
            self.loop()
            self.probe.detach()
            self.drain(until_empty=True)  # what was written before detaching
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
            else:
                reader.wait(POLL_S)
            self.drain()
            now = time.monotonic()
            if self.hup:
                self.hup = False
                if self.logfile:
                    self.logfile.reopen()
            if now >= next_check:
                next_check = now + 1.0
                if self.logfile:
                    self.logfile.check()
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
             f"filtered {c[C_FILTERED] - c0[C_FILTERED]}; lost so far {c[C_LOST]}, "
             f"missed so far {self.probe.missed(c)}")
        return now, c

    def finish(self):
        c = self.probe.counters()
        missed = self.probe.missed(c)
        out = sys.stdout
        lines = ["Stopping monitoring...", ""]
        if self.tracker is not None:
            lines += self.tracker.report(self.text.stamp)
        lines.append(f"Totals: seen={c[C_SEEN]} captured={c[C_SENT]} "
                     f"filtered={c[C_FILTERED] + self.user_filtered} lost={c[C_LOST]} missed={missed} "
                     f"lines={self.lines}")
        try:
            out.write("\n".join(lines) + "\n")
            out.flush()
        except OSError:  # a closed pipe, a hung-up terminal: the totals are lost with the console
            pass
        if c[C_LOST]:
            _err(f"socket-snoop: warning: {c[C_LOST]} events were lost (the buffer was full): "
                 "raise --buffer-size, or filter more")
        if missed:
            _err(f"socket-snoop: warning: the kernel skipped our programs {missed} times (a tracepoint hit "
                 "while one of them was already running on that CPU): those events were not seen")
        return 0
