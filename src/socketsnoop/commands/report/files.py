"""Reading the logs: plain or gzip-compressed files, in the order of their first times, then the streams
(standard input, pipes, FIFOs, devices: what can be read once only, as it comes) in the order given; each file
read once (one given under two names too), line by line within bounds.

Bounded whatever a file holds: the data is read in blocks of a fixed size; a line over MAX_LINE bytes is cut
(its bytes dropped as they come: a file without newlines takes no memory) and counted; runs of blank lines
are skipped a block at a time and counted (a 200 KB .gz may hold 200 million of them). Ordering the files
reads only a bounded head of each. File names are escaped for messages.
"""

import errno
import gzip
import os
import re
import stat
import sys
import time
import zlib

from ...errors import SnoopError
from .parse import Malformed

MAX_LINE = 64 * 1024  # bytes; a longer line is cut (counted as malformed and as too long)
BLOCK = 256 * 1024  # bytes read at a time
HEAD_LINES, HEAD_BYTES = 100, 256 * 1024  # what ordering the files may read of each
STDIN = "-"
BLANK_RUN = re.compile(rb"(?:[ \t\r\f\v]*\n)+")  # one or more whole lines of blanks
BLANK_START = frozenset(b" \t\r\f\v\n")

# what a damaged file raises while it is read (zlib.error: a corrupted .gz)
READ_ERRORS = (OSError, EOFError, gzip.BadGzipFile, zlib.error)


class Unreadable(Exception):
    """A file that could not be read to its end; str() is the message after 'socket-snoop report: '."""


class LineCounts:
    """Lines the reader set aside: blank ones, and those over MAX_LINE bytes (cut); `line`: the number of the
    current file's last line read."""

    def __init__(self):
        self.blank = self.too_long = self.line = 0


def show_path(path):
    """A file name for a message: as it is if printable, else quoted with its non-printables escaped."""
    if path == STDIN:
        return "(standard input)"
    return path if path.isprintable() else ascii(path)


class open_log:
    """`with open_log(path) as f`: the log's bytes, gunzipped if it is gzip (by its magic bytes, whatever its
    name); '-' is standard input (left open)."""

    def __init__(self, path):
        self.raw = sys.stdin.buffer if path == STDIN else open(path, "rb")
        self.own = path != STDIN

    def __enter__(self):
        try:
            gz = self.raw.peek(2)[:2] == b"\x1f\x8b"
        except BaseException:
            self.__exit__()
            raise
        self.f = gzip.GzipFile(fileobj=self.raw, mode="rb") if gz else self.raw
        return self.f

    def __exit__(self, *exc):
        if self.own:
            self.raw.close()


class LineSplitter:
    """Blocks of bytes -> (line number, text) of each line that is not blank; text None for a line over max_line
    bytes (its newline not counted), cut as it comes. Blank lines are counted in counts, and counts.line is the
    number of the last line seen."""

    def __init__(self, counts, max_line=MAX_LINE):
        self.counts, self.max_line = counts, max_line
        self.rest, self.skipping = b"", False  # skipping: in a line too long, dropped up to its newline
        counts.line = 0

    def feed(self, data):
        counts = self.counts
        if self.skipping:
            nl = data.find(b"\n")
            if nl < 0:
                return
            self.skipping, data = False, data[nl + 1:]
            counts.line += 1
            counts.too_long += 1
            yield counts.line, None
        buf = self.rest + data if self.rest else data
        pos, end = 0, len(buf)
        while pos < end:
            if buf[pos] in BLANK_START and (m := BLANK_RUN.match(buf, pos)):
                k = buf.count(b"\n", pos, m.end())
                counts.line += k
                counts.blank += k
                pos = m.end()
                continue
            nl = buf.find(b"\n", pos)
            if nl < 0:
                break
            counts.line += 1
            if nl - pos > self.max_line:
                counts.too_long += 1
                yield counts.line, None
            else:
                yield counts.line, buf[pos:nl].decode("utf-8", "replace")
            pos = nl + 1
        self.rest = buf[pos:]
        if len(self.rest) > self.max_line:
            self.rest, self.skipping = b"", True

    def end(self):
        """The last line, if it has no newline."""
        counts = self.counts
        if self.skipping or self.rest.strip():
            counts.line += 1
            counts.too_long += self.skipping
            yield counts.line, None if self.skipping else self.rest.decode("utf-8", "replace")
        elif self.rest:
            counts.line += 1
            counts.blank += 1
        self.rest, self.skipping = b"", False


def is_gzip(path):
    """True if the file starts with gzip's magic bytes."""
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def read_lines(f, counts, max_line=MAX_LINE, limit=None):
    """LineSplitter's lines of a file; limit: stop after about that many bytes (a head: its last line, maybe
    incomplete, left out)."""
    split = LineSplitter(counts, max_line)
    total = 0
    while limit is None or total < limit:
        # read1: what a damaged .gz holds before the damage comes as lines before its error (read() would drop
        # the block it was filling)
        data = f.read1(BLOCK if limit is None else min(BLOCK, limit - total))
        if not data:
            yield from split.end()
            return
        total += len(data)
        yield from split.feed(data)


def first_timestamp(path, parser):
    """The first parsable line's time among the first HEAD_LINES lines in HEAD_BYTES, to order the files; None
    if there is none there."""
    try:
        with open_log(path) as f:
            for i, (_, line) in enumerate(read_lines(f, LineCounts(), limit=HEAD_BYTES)):
                if i >= HEAD_LINES:
                    break
                if line is None:
                    continue
                try:
                    return parser.parse(line).ts_ns
                except Malformed:
                    continue
    except (*READ_ERRORS, ValueError):
        pass
    return None


def is_stream(path):
    """'-', or a file that is not a regular one (a pipe, a FIFO, a device): it can be read once only, as it
    comes (no head read to order it, no fast path)."""
    if path == STDIN:
        return True
    try:
        return not stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def check_readable(paths):
    """Every file can be opened (before any work), else a SnoopError (status 2) naming the first that cannot.
    A FIFO is not opened here: opening it waits for its writer, and closing it would lose what the writer
    wrote."""
    for path in paths:
        if path == STDIN:
            continue
        try:
            if not stat.S_ISFIFO(os.stat(path).st_mode):
                open(path, "rb").close()
            elif not os.access(path, os.R_OK):
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
        except OSError as e:
            raise SnoopError(f"socket-snoop report: {show_path(path)}: {e.strerror}", 2) from None


def distinct(paths):
    """(paths, notes): the paths without those that name a file given before (the same device and inode: the
    same name again, another name, a link, '-' and /dev/stdin), and a note for each file given more than once."""
    kept, names = [], {}
    for path in paths:
        key = _identity(path)
        if key in names:
            names[key].append(path)
            continue
        kept.append(path)
        if key is not None:
            names[key] = [path]
    notes = []
    for first, *more in names.values():
        if more:
            times = "twice" if len(more) == 1 else f"{len(more) + 1} times"
            others = list(dict.fromkeys(show_path(p) for p in more if p != first))
            also = f" (also as {', '.join(others[:3])}{', ...' if len(others) > 3 else ''})" if others else ""
            notes.append(f"{show_path(first)}: given {times}{also}, read once")
    return kept, notes


def _identity(path):
    """(device, inode) of the file path names, or None."""
    try:
        st = os.fstat(sys.stdin.fileno()) if path == STDIN else os.stat(path)
    except (OSError, ValueError, AttributeError):  # no standard input
        return None
    return st.st_dev, st.st_ino


def in_time_order(paths, parser):
    """The files in the order of their first times, those without one last (ties in the order given), then
    the streams (is_stream) in the order given."""
    streams = [is_stream(p) for p in paths]
    files = [p for p, s in zip(paths, streams) if not s]
    firsts = [first_timestamp(path, parser) for path in files]
    order = sorted(range(len(files)), key=lambda i: (firsts[i] is None, firsts[i] or 0, i))
    return [files[i] for i in order] + [p for p, s in zip(paths, streams) if s]


def read_log(path, parser, add, bad, counts):
    """Each line of one log: add(entry) for a line of ours, bad('FILE:LINE') for any other line but a blank
    one (and for one too long); counts: the LineCounts of every file. Unreadable if the file cannot be read
    to its end (after the lines before)."""
    try:
        with open_log(path) as f:
            take(read_lines(f, counts), show_path(path), parser, add, bad)
    except READ_ERRORS as e:
        raise unreadable(path, e, counts) from None


def take(lines, where, parser, add, bad):
    """Each of the lines parsed: add(entry), or bad('FILE:LINE')."""
    for n, line in lines:
        if line is None:  # too long
            bad(f"{where}:{n}")
            continue
        try:
            r = parser.parse(line)
        except Malformed:
            bad(f"{where}:{n}")
            continue
        add(r)


def unreadable(path, e, counts):
    why = e.strerror if isinstance(e, OSError) and e.strerror else str(e) or type(e).__name__
    return Unreadable(f"{show_path(path)}: unreadable after line {counts.line}: {ascii(why)[1:-1]}")


def follow_log(path, parser, add, bad, counts, idle, poll=0.5):
    """path (a plain file) read from its start and then followed as it grows and is rotated, as `tail -F`
    does: when a new file takes its name (or it is truncated), the rest of the old one is read, then the new
    one from its start. idle() is called whenever there is nothing new; it returns True to stop."""
    where = show_path(path)
    f = open(path, "rb")
    try:
        split = LineSplitter(counts)
        while True:
            data = f.read(BLOCK)
            if data:
                take(split.feed(data), where, parser, add, bad)
                continue
            if idle():
                break
            if _replaced(path, f):
                while data := f.read(BLOCK):  # what was written to the old file before its writer let it go
                    take(split.feed(data), where, parser, add, bad)
                take(split.end(), where, parser, add, bad)
                f.close()
                f = open(path, "rb")
                split = LineSplitter(counts)
                continue
            time.sleep(poll)
        take(split.end(), where, parser, add, bad)
    except READ_ERRORS as e:
        raise unreadable(path, e, counts) from None
    finally:
        f.close()


def _replaced(path, f):
    """True if path now names another file than f (rotated), or f was truncated."""
    try:
        st = os.stat(path)
    except FileNotFoundError:  # rotated, the new file not there yet
        return False
    return st.st_ino != os.fstat(f.fileno()).st_ino or st.st_size < f.tell()
