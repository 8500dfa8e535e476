"""The base of the outputs that talk to another program (the journal, a syslog collector): a bounded queue
and a writer thread of their own, so that a slow or dead receiver never blocks reading the kernel or the
other outputs.

The monitor's loop only appends a batch (its rows and lines, shared with the other sinks, not copied) to
the queue: O(1) per batch. The writer thread makes each event's text line and JSON fields (the cost is
paid only by an enabled output, and off the reading loop) and hands them to deliver(). What does not fit
in the queue (`--output-queue` events) is dropped and counted; so is what is still queued when the
monitor stops and the receiver does not take it within CLOSE_WAIT_S. dropped() is that count, shown in
the exit summary, by --stats and as a metric.
"""

import collections
import sys
import threading
import time

from ..logformat.fields import FieldsFormatter
from ..logformat.text import TextFormatter
from .sinks import Sink

WARNING, INFO = 4, 6  # syslog severities (the journal's PRIORITY too)
WARN_EVENTS = frozenset(("reset_sent", "reset_received", "lost_events", "warning"))
WARN_RESULTS = frozenset(("refused", "timeout", "unreachable", "reset-sent", "reset-received"))
IDLE_S = 1.0  # with nothing to send, the writer looks at its receiver this often (idle())
CACHE_MAX = 1 << 16  # encoded fields an output keeps (journal, syslog)
CLOSE_WAIT_S = 3.0  # at exit: how long a receiver that is up gets to take what is queued
STALL_S = 0.5  # at exit: a receiver that took nothing for this long is given up (SIGTERM ends us within a second)
BACKOFF_S = (0.2, 10.0)  # first and longest wait between attempts to reach a receiver that is down

EVENTS, RECORDS, NOTICE = range(3)


def severity(fields):
    """warning for resets, failed connections and lost events; info otherwise."""
    if fields.get("event") in WARN_EVENTS or fields.get("result") in WARN_RESULTS:
        return WARNING
    return INFO


class Message:
    """One event as an output of fields sees it: the text line (no newline), the JSON key/values, the
    severity and the kind (the JSON 'event' key)."""

    __slots__ = ("text", "fields", "severity", "kind")

    def __init__(self, text, fields):
        self.text = text
        self.fields = fields
        self.severity = severity(fields)
        self.kind = fields.get("event", "event")


class QueuedSink(Sink):
    """A Sink (output/sinks.py's interface) with a bounded queue and a writer thread; subclasses implement
    deliver(messages), and may implement started() and idle()."""

    name = "queued"
    wants_lines = True

    def __init__(self, clock, lines_are_text, capacity=10000, warn=None, json_lines=False, identity=None):
        self.clock = clock
        self.lines_are_text = lines_are_text  # the lines handed to write() are the text format's
        # ... or JSON lines (--json): then each event's fields are their keys and values, the owner's names
        # included (identity: pipeline/identity.Identity, shared with the monitor's formatter; None: no names)
        self.json_lines = json_lines
        self.capacity = capacity
        self.warn = warn or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self.cond = threading.Condition()
        self.queue = collections.deque()
        self.queued = 0  # events in the queue and in the writer's hands
        self.lost = 0  # events dropped: queue full, undeliverable, left at exit
        self.closing = False
        self.abandoned = False
        self.progress = 0  # messages of the batch in the writer's hands that deliver() has sent
        self.thread = None
        self.text = TextFormatter(clock)  # the writer's own (their caches are per thread), where lines are not text
        self.fields = FieldsFormatter(clock, identity if json_lines else None)

    # -- the monitor's side: never blocks --------------------------------------------------------
    def open(self):
        self.thread = threading.Thread(target=self._run, name=f"socket-snoop {self.name}", daemon=True)
        self.thread.start()
        return self

    def _put(self, kind, items, lines):
        n = len(items)
        if not n:
            return
        with self.cond:
            room = self.capacity - self.queued
            if n > room:
                self.lost += n - max(room, 0)
                if room <= 0:
                    return
                items, lines, n = items[:room], (lines[:room] if lines is not None else None), room
            self.queue.append((kind, items, lines))
            self.queued += n
            self.cond.notify()

    def write(self, rows, lines):
        self._put(EVENTS, rows, lines)

    def write_records(self, records, lines):
        self._put(RECORDS, records, lines)

    def write_batch(self, batch):
        for is_records, items, lines in batch.runs():  # in time order
            self._put(RECORDS if is_records else EVENTS, items, lines)

    def notice(self, text, fields):
        """A message of the monitor's own (e.g. events lost), with its fields."""
        self._put(NOTICE, [(text, fields)], None)

    def write_warnings(self, warnings, lines, notes):
        """Each warning a message of its own (severity warning; the journal's SOCKETSNOOP_WARNING=KIND)."""
        self._put(NOTICE, notes, None)

    def dropped(self):
        return self.lost

    def details(self):
        """More counts for the exit summary's Outputs line ('' for none)."""
        return ""

    def begin_close(self):
        """Tell the writer to finish: what is queued goes out, then it ends (close() waits for it)."""
        with self.cond:
            self.closing = True
            self.cond.notify_all()

    def close(self):
        """Give the receiver up to CLOSE_WAIT_S to take what is queued while it takes something at least every
        STALL_S (a receiver that is stalled or gone is given up at once), then count the rest as dropped."""
        if self.thread is None:
            return
        self.begin_close()
        now = time.monotonic()
        end, still, seen = now + CLOSE_WAIT_S, now, None
        while self.thread.is_alive() and now < end and now - still < STALL_S:
            self.thread.join(0.05)
            now, mark = time.monotonic(), (self.queued, self.progress)
            if mark != seen:
                still, seen = now, mark
        with self.cond:
            self.abandoned = True  # a writer still stuck in a send counts nothing more
            self.lost += max(self.queued - self.progress, 0)
            self.queued = 0
            self.queue.clear()
        self.thread = None

    # -- the writer thread -------------------------------------------------------------------------
    def _messages(self, kind, items, lines):
        if kind == NOTICE:
            return [Message(text, fields) for text, fields in items]
        if kind == RECORDS:  # connection records (abi.RECORD_ROW tuples): the JSON line's keys and values
            texts = lines if self.lines_are_text and lines is not None else self.text.record_lines(items)
            return [Message(t[:-1], f) for t, f in zip(texts, self.fields.record_fields(items))]
        return [Message(t[:-1], f) for t, f in zip(self.texts(items, lines), self.fields.fields(items))]

    def _run(self):
        try:
            self.started()
            while True:
                with self.cond:
                    if not self.queue and not self.closing:
                        self.cond.wait(IDLE_S)
                    if not self.queue:
                        if self.closing:
                            break
                        item = None
                    else:
                        item = self.queue.popleft()
                if item is None:
                    self.idle()
                    continue
                kind, items, lines = item
                payloads = self.payloads(kind, items, lines)
                self.progress = 0
                undelivered = self.deliver(payloads)
                with self.cond:
                    if self.abandoned:
                        return
                    self.queued -= len(items)
                    self.lost += undelivered
                    self.progress = 0
            undelivered = self.finish()
            with self.cond:
                if not self.abandoned:
                    self.lost += undelivered
        except Exception as e:  # a bug must not pass unseen: say it, and count the rest as dropped
            self.warn(f"socket-snoop: the {self.name} output stopped: {type(e).__name__}: {e}")
            with self.cond:
                self.closing = True

    def payloads(self, kind, items, lines):
        """What deliver() sends, one per event: encode() of each Message. An output may make the events' more
        cheaply from their rows (logformat/fields.py: FieldsEncoder)."""
        return [self.encode(m) for m in self._messages(kind, items, lines)]

    def remember(self, kv, encoded):
        """Keep an encoded field in self.cache (an output's own: (key, value) -> bytes), bounded; a value that
        cannot be a key (a record's list of states) is not kept. Returns encoded."""
        try:
            if len(self.cache) >= CACHE_MAX:
                self.cache.clear()
            self.cache[kv] = encoded
        except TypeError:
            pass
        return encoded

    def texts(self, rows, lines):
        """The events' text lines, newline included: those handed over, or made here."""
        return lines if self.lines_are_text and lines is not None else self.text.lines(rows)

    def encode(self, message):
        raise NotImplementedError

    def deliver(self, payloads):
        """Send payloads, waiting for the receiver while it is down (but not once self.closing is set and
        the receiver is unreachable); return how many could not be delivered."""
        raise NotImplementedError

    def started(self):
        """In the writer thread, before the first message: reach the receiver early, so that a wrong path,
        name or certificate is said at start rather than at the first event."""

    def idle(self):
        """Nothing to send for IDLE_S: e.g. notice a connection the receiver closed, and close our end."""

    def finish(self):
        """Stopping, the queue empty: make sure of what was sent (within CLOSE_WAIT_S, with the rest of the
        close); return how many of the messages sent could not be confirmed as received."""
        return 0

    def wait_retry(self, delay):
        """Sleep before the next attempt (shorter if the monitor is stopping); the next, longer, delay."""
        with self.cond:
            if not self.closing:
                self.cond.wait(delay)
        return min(delay * 2, BACKOFF_S[1])
