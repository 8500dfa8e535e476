"""The monitor's hot path, from decoded rows to the outputs: the enrichers (pipeline/enrich.py) look at the few
rows they need, the lines are made once (logformat/) and handed to every sink, and the exit report
keeps the connection records. Each call takes a whole batch: nothing here is done per row in Python."""

from ..kernel.abi import C_LOST
from ..logformat.warning import WarningLines
from .batch import Batch
from .queued import QueuedSink
from .console import ConsoleSink


class Dispatch:
    """formatter: logformat's TextFormatter or JsonFormatter; sinks: opened Sinks; enrichers: a list
    (the monitor adds its own once the kernel side is loaded); report: a ConnectionReport or None; summary:
    connection records are written as lines (not --no-summary). lines counts the lines made (or counted)."""

    def __init__(self, formatter, sinks, enrichers, report=None, summary=True):
        self.formatter = formatter
        self.sinks = sinks
        self.enrichers = enrichers
        self.report = report
        self.summary = summary
        self.want_lines = any(sink.wants_lines for sink in sinks)  # none: only counts (--metrics)
        self.lines = 0
        self.losses = (0, 0, {})  # lost, missed and shed (by kind) events the outputs were told of
        self.health = None  # pipeline/health's Health, fed each batch once watch() is called
        self.warning_lines = self.warning_texts = None
        self.seen_ns = 0  # the time of the last event fed to health: its clock while the loop is behind

    def watch(self, health, text_formatter):
        """Feed health (pipeline.health.Health) with every batch; warnings() ticks it. text_formatter: the
        text lines' (the journal and syslog carry text messages whatever the format)."""
        self.health = health
        self.warning_lines = WarningLines(self.formatter)
        self.warning_texts = WarningLines(text_formatter)

    def warnings(self, now_ns):
        """The health warnings of this tick (about once a second) to every sink: lines, and the journal's and
        syslog's (text, fields); the count per kind to the metrics."""
        found = self.health.tick(now_ns)
        if not found:
            return found
        lines = self.warning_lines.lines(found) if self.want_lines else None
        texts, fields = self.warning_texts, self.warning_lines
        notes = [(texts.text_line(w)[:-1], fields.notice_fields(w)) for w in found]
        for sink in self.sinks:
            sink.write_warnings(found, lines if sink.wants_lines else None, notes)
        return found

    def events(self, rows):
        """Decoded events (abi.ROW tuples, or an iterator of them) to every sink."""
        rows = self._enriched(rows)
        if rows:
            self._health(rows, None)
            self._write(rows)

    def records(self, rows):
        """Connection records (abi.RECORD_ROW tuples) to the report and the sinks."""
        rows = self._enriched_records(rows)
        if rows:
            self._health(None, rows)
            self._write_records(rows)

    def _health(self, events, records):
        """The batch to the health warnings, if on: the events first (a connection's record is its end)."""
        if self.health is None:
            return
        if events:
            self.health.events(events)
            self.seen_ns = max(self.seen_ns, events[-1][0])
        if records:
            self.health.records(records)

    def batch(self, events, records):
        """Events and records read together (pipeline/rings.py): to every sink in time order."""
        events = self._enriched(events) if events else events
        records = self._enriched_records(records) if records else records
        self._health(events, records)
        if events and records and self.summary:  # (a console of its own format makes its lines from the rows)
            fmt, want = self.formatter, self.want_lines
            batch = Batch(events, fmt.lines(events) if want else None, records,
                          fmt.record_lines(records) if want else None)
            self.lines += len(events) + len(records)
            for sink in self.sinks:
                sink.write_batch(batch)
            return
        if events:
            self._write(events)
        if records:
            self._write_records(records)

    def _enriched(self, rows):
        """The rows after every enricher (most need nothing: the few an enricher must look at are found at
        C speed); the rows an enricher drops (a filter only /proc could decide) are left out."""
        rows = rows if isinstance(rows, list) else list(rows)
        for enricher in self.enrichers:
            which = enricher.pick(rows)
            if which:
                enricher.enrich(rows, sorted(which))
                if None in rows:
                    rows = [r for r in rows if r is not None]
                    if not rows:
                        return rows
        return rows

    def _enriched_records(self, rows):
        for enricher in self.enrichers:
            rows = enricher.enrich_records(rows)
            if not rows:
                return rows
        if self.report is not None:
            self.report.add(rows)
        return rows

    def _write(self, rows):
        lines = self.formatter.lines(rows) if self.want_lines else None
        self.lines += len(rows)
        for sink in self.sinks:
            sink.write(rows, lines if sink.wants_lines else None)

    def _write_records(self, rows):
        summary = self.summary
        lines = None
        if summary:  # the summary lines; with no output of lines (--metrics only), counted
            lines = self.formatter.record_lines(rows) if self.want_lines else None
            self.lines += len(rows)
        for sink in self.sinks:
            if summary or not sink.wants_lines:  # metrics count records with --no-summary too
                sink.write_records(rows, lines if sink.wants_lines else None)

    def notice_losses(self, probe):
        """The events the kernel lost or missed (kernel/loader.py: Probe's counts) since the last call, as a
        warning entry to the outputs that carry fields, and a line on a console for people (--format compact)."""
        counters = probe.counters()
        lost, missed, shed = counters[C_LOST], probe.missed(counters), probe.shed(counters)
        dl, dm = lost - self.losses[0], missed - self.losses[1]
        if dl or dm:
            ds = {kind: n - self.losses[2].get(kind, 0) for kind, n in shed.items()}
            by_kind = ", ".join(f"{n} {kind}" for kind, n in ds.items() if n)
            fields = {"event": "lost_events", "lost": dl, "missed": dm, **{f"shed_{k}": n for k, n in ds.items()}}
            for s in self.sinks:
                if isinstance(s, (QueuedSink, ConsoleSink)):
                    s.notice(f"Lost Events: {dl} lost (the buffer was full{': shed ' + by_kind if by_kind else ''}), "
                             f"{dm} missed (the kernel skipped our programs)", fields)
        self.losses = (lost, missed, shed)

    def close_queues(self):
        """The outputs with a queue of their own: what they hold out (or counted as dropped), at exit."""
        queues = [sink for sink in self.sinks if isinstance(sink, (QueuedSink, ConsoleSink))]
        for sink in queues:  # all told first: their waits overlap
            if isinstance(sink, QueuedSink):
                sink.begin_close()
        for sink in queues:
            sink.close()
