"""The console: standard output, written by a thread of its own (ConsoleSink). The lines it writes are the
log's own (text, JSON) or, with --format compact, its own (logformat/compact.py: made in its thread, from the
rows); on a terminal, coloured where output/colour.py says."""

import collections
import os
import select
import stat
import sys
import threading
import time

from .colour import NOTICE, paint_events, paint_records, painted
from .sinks import Sink

LINES, EVENTS, RECORDS = 0, 1, 2  # what a queued item holds: lines alone, or rows (their lines made or not)


class ConsoleSink(Sink):
    """Standard output, written by a thread of its own from a bounded queue (capacity lines), so that a slow or
    stalled reader (a terminal on a slow link, a FIFO nobody reads) never blocks the monitor: what does not fit
    is dropped and counted, and so is what is still queued when close() has waited CLOSE_WAIT_S. A closed pipe
    (socket-snoop | head) sets `closed`, on which the monitor stops; another error (a hung-up terminal, a full
    disk) ends console output only, said once on stderr."""

    name = "console"
    CLOSE_WAIT_S = 0.5
    IDLE_S = 0.25  # with nothing to write, the writer looks this often for a pipe whose reader has gone

    def __init__(self, capacity=10000, fd=1, warn=None, formatter=None, colour=False, header=False, summary=True):
        """formatter: the console's own (CompactFormatter), which makes its lines from the rows (wants_lines is
        then False), None to write the lines given; colour: resets, failures and lost-events notices coloured;
        header: the formatter's line of column names first; summary: connection records shown (with a
        formatter of its own; the lines given are already only those wanted)."""
        self.formatter = formatter
        self.colour = colour
        self.header = header and formatter is not None
        self.summary = summary
        self.wants_lines = formatter is None
        self.per_row = formatter is not None or colour  # rows queued with their lines (or for them)
        self.capacity = capacity
        self.fd = fd
        self.encoding = getattr(sys.stdout, "encoding", None) or "utf-8"
        self.warn = warn or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self.cond = threading.Condition()
        self.queue = collections.deque()
        self.queued = 0  # lines in the queue and in the writer's hands
        self.lost = 0  # lines dropped: queue full, not written at exit, or after a write error
        self.ended = False  # no more output: the reader has gone, or a write failed
        self.closed = False  # the reader has gone (EPIPE): the monitor stops
        self.stopping = False
        self.thread = None

    def open(self):
        self.thread = threading.Thread(target=self._run, name="socket-snoop console", daemon=True)
        self.thread.start()
        return self

    def write(self, rows, lines):
        if rows is None or not self.per_row:
            self._put(((LINES, None, lines),), len(lines))
        else:
            self._put(((EVENTS, rows, lines),), len(rows))

    def write_records(self, records, lines):
        if self.formatter is not None and not self.summary:
            return
        if not self.per_row:
            self._put(((LINES, None, lines),), len(lines))
        else:
            self._put(((RECORDS, records, lines),), len(records))

    def write_batch(self, batch):
        if not self.per_row:
            lines = batch.merged()
            self._put(((LINES, None, lines),), len(lines))
            return
        items = [(RECORDS if is_records else EVENTS, rows, lines)
                 for is_records, rows, lines in batch.runs(with_lines=self.formatter is None)]
        self._put(items, len(batch.rows) + len(batch.records))

    def write_warnings(self, warnings, lines, notes):
        """Health warnings: the format's lines (the compact console: their text lines), coloured as notices."""
        if self.formatter is not None or lines is None:
            lines = [text + "\n" for text, _fields in notes]
        if self.colour:
            lines = [painted(NOTICE, line) for line in lines]
        self._put(((LINES, None, lines),), len(lines))

    def notice(self, text, fields=None):
        """A lost-events notice (output/dispatch.py), as a line of its own with the compact format (a format for
        people); the text and JSON consoles carry the events alone (the exit summary says the losses)."""
        if self.formatter is None:
            return
        now = time.time()
        line = f"{time.strftime('%H:%M:%S', time.localtime(now))}.{int(now * 1000) % 1000:03d} {text}\n"
        self._put(((LINES, None, [painted(NOTICE, line) if self.colour else line]),), 1)

    def _put(self, items, n):
        """Queue items holding n lines, as many as fit: the rest dropped and counted."""
        with self.cond:
            if self.closed:
                return  # the reader has gone: nothing is owed to it
            room = 0 if self.ended else self.capacity - self.queued
            if n > room:
                self.lost += n - max(room, 0)
                if room <= 0:
                    return
                items, n = _first(items, room), room
            self.queue.extend(items)
            self.queued += n
            self.cond.notify()

    def dropped(self):
        return self.lost

    def details(self):
        return ""

    def close(self):
        """Let the writer finish what is queued for up to CLOSE_WAIT_S, then count the rest as dropped."""
        if self.thread is None:
            return
        with self.cond:
            self.stopping = True
            self.cond.notify_all()
        self.thread.join(self.CLOSE_WAIT_S)
        with self.cond:
            self.ended = True  # a writer still stuck in a write counts nothing more
            if not self.closed:
                self.lost += self.queued
            self.queued = 0
            self.queue.clear()
        self.thread = None

    # -- the writer thread ---------------------------------------------------------------------------
    def _run(self):
        try:  # a pipe or FIFO: its reader's going is seen with nothing to write too (POLLERR)
            watch = stat.S_ISFIFO(os.fstat(self.fd).st_mode)
        except OSError:
            watch = False
        poll = select.poll()
        poll.register(self.fd, 0)  # POLLERR and POLLHUP only
        error = self._send(self.formatter.header.encode()) if self.header else None
        if error:
            return self._end(error)
        while True:
            with self.cond:
                if not self.queue and not self.stopping:
                    self.cond.wait(self.IDLE_S)
                if self.ended or not self.queue and self.stopping:
                    return
                item = self.queue.popleft() if self.queue else None
            if item is None:
                if watch and poll.poll(0):
                    return self._end(None)
                continue
            lines = self._lines(*item)
            error = self._send("".join(lines).encode(self.encoding, "backslashreplace"))
            with self.cond:
                if not self.ended:
                    self.queued -= len(lines)
            if error:
                return self._end(error)

    def _lines(self, kind, rows, lines):
        """An item's lines: made by the console's formatter if it has one, coloured if asked."""
        if kind == LINES:
            return lines
        records = kind == RECORDS
        if lines is None:
            lines = self.formatter.record_lines(rows) if records else self.formatter.lines(rows)
        if self.colour:
            lines = paint_records(rows, lines) if records else paint_events(rows, lines)
        return lines

    def _send(self, data):
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self.fd, view):]
            except BlockingIOError:  # a descriptor left non-blocking by whoever gave it to us
                select.select([], [self.fd], [], self.IDLE_S)
            except OSError as e:
                return e
        return None

    def _end(self, error):
        """The end of console output: the reader gone (error None or EPIPE), or another write error (said)."""
        with self.cond:
            self.ended = True
            self.closed = error is None or isinstance(error, BrokenPipeError)
            if not self.closed:
                self.lost += self.queued
            self.queued = 0
            self.queue.clear()
        if not self.closed:
            self.warn(f"socket-snoop: console output stopped: {error.strerror or error}; the log file goes on")
        try:  # later writes to it (the interpreter's final flush) go nowhere, quietly
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self.fd)
            os.close(devnull)
        except OSError:
            pass


def _first(items, n):
    """The queued items cut to their first n lines (rows)."""
    out = []
    for kind, rows, lines in items:
        size = len(lines if rows is None else rows)
        if size >= n:
            out.append((kind, rows if rows is None else rows[:n], lines if lines is None else lines[:n]))
            return out
        out.append((kind, rows, lines))
        n -= size
    return out
