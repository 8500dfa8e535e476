"""Reading the logs: plain or gzip-compressed files, lines read with a bound on their length, each file's first
time (to order them), each line parsed by logformat/reader.py's Parser.

File names are escaped for messages. A line over MAX_LINE characters is skipped without being held whole.
"""

import gzip
import zlib

from ...errors import SnoopError
from ...logformat.entries import Endpoint, LoggedConnection, LoggedEvent, Malformed
from ...logformat.reader import NAME_KINDS, Parser

# the names the report's code knows the parsed lines by
Record, Summary = LoggedEvent, LoggedConnection
__all__ = ["Endpoint", "Malformed", "NAME_KINDS", "Parser", "Record", "Summary", "Unreadable", "check_readable",
           "first_timestamp", "in_time_order", "open_log", "read_lines", "read_log", "show_path"]

MAX_LINE = 64 * 1024  # characters; a longer line is malformed
# what a damaged file raises while it is read (zlib.error: a corrupted .gz)
READ_ERRORS = (OSError, EOFError, gzip.BadGzipFile, zlib.error)


class Unreadable(Exception):
    """A file that could not be read to its end; str() is the message after 'socket-snoop report: '."""


def show_path(path):
    """A file name for a message: as it is if printable, else quoted with its non-printables escaped."""
    return path if path.isprintable() else ascii(path)


# -- files --------------------------------------------------------------------
def open_log(path):
    """Text lines of a log, gunzipped if it is gzip (by its magic bytes, whatever its name)."""
    with open(path, "rb") as f:
        magic = f.read(2)
    if magic == b"\x1f\x8b":
        return gzip.open(path, "rt", encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")


def read_lines(f, max_line=MAX_LINE, max_chars=None):
    """The file's lines; a line over max_line characters (its newline not counted) comes as None, read in
    pieces of at most max_line + 1 characters dropped as they come: a file without newlines takes no memory.
    max_chars: stop after about that many characters."""
    readline = f.readline
    size = max_line + 1
    total = 0
    while max_chars is None or total < max_chars:
        line = readline(size)
        if not line:
            return
        total += len(line)
        if len(line) < size or line.endswith("\n"):
            yield line
            continue
        while line and not line.endswith("\n"):  # the rest of the long line, dropped
            if max_chars is not None and total >= max_chars:
                return
            line = readline(size)
            total += len(line)
        yield None


def first_timestamp(path, parser, limit=1000):
    """The first parsable line's time, to order the files; None if there is none near the start."""
    try:
        with open_log(path) as f:
            for n, line in enumerate(read_lines(f, max_chars=limit * 1024)):
                if n >= limit:
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


def check_readable(paths):
    """Every file can be opened (before any work), else a SnoopError (status 2) naming the first that cannot."""
    for path in paths:
        try:
            open(path, "rb").close()
        except OSError as e:
            raise SnoopError(f"socket-snoop report: {show_path(path)}: {e.strerror}", 2) from None


def in_time_order(paths, parser):
    """The files in the order of their first times; those without one last; ties in the order given."""
    firsts = [first_timestamp(path, parser) for path in paths]
    order = sorted(range(len(paths)), key=lambda i: (firsts[i] is None, firsts[i] or 0, i))
    return [paths[i] for i in order]


def read_log(path, parser, add, bad):
    """Each line of one log: add(entry) for a line of ours, bad('FILE:LINE') for any other line but a blank
    one (and for one too long). Unreadable if the file cannot be read to its end (after the lines before)."""
    n = 0
    try:
        with open_log(path) as f:
            for n, line in enumerate(read_lines(f), 1):
                if line is None:  # too long
                    bad(f"{show_path(path)}:{n}")
                    continue
                try:
                    r = parser.parse(line)
                except Malformed:
                    if line.strip():
                        bad(f"{show_path(path)}:{n}")
                    continue
                add(r)
    except READ_ERRORS as e:
        why = e.strerror if isinstance(e, OSError) and e.strerror else str(e) or type(e).__name__
        raise Unreadable(f"{show_path(path)}: unreadable after line {n}: {ascii(why)[1:-1]}") from None
