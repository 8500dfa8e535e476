"""`socket-snoop report FILE...`: a summary and lifecycles from logs the monitor wrote.

Reads text lines (the seed format) and JSON lines, plain or gzip-compressed (rotated files), in any mix, or
standard input ('-'). Files are read in the order of their first timestamp (from a bounded head of each), so
`report /var/log/socket_monitor.log*` works whatever order the shell gives; standard input, pipes and FIFOs
after them, each read once (by the Python path). A file given twice is read once. A line that is not one of
ours is counted and skipped.

Nothing read from a file reaches the output as it was read: addresses are checked (digits, hex, ':' and '.',
no IPv6 scope id), COMM is printed in the monitor's escaped form, and file names are escaped. Time and memory
are bounded whatever the input: lines over files.MAX_LINE bytes are cut, blank lines skipped a block at a time
(both counted), names cut to a length, and every table draws on a byte budget shared by all hosts (bounds.py).

files.py reads the files, parse.py parses each line into a Record (an event line) or a Summary (a connection's
summary line), aggregate.py counts them (its Report, with summaries.py's tables, histograms.py's distributions
and lifecycles.py's lifecycles), text.py and render.py write the result.
"""

import datetime
import gc
import re
import signal
import sys
import time

from ...errors import SnoopError
from ...settings.monitor import REPORT_FILTER_OPTIONS, filters_from
from ...settings.option import CommandParser
from ...settings.values import PERIOD_FLOOR, seconds
from . import engine, engine_scan, render
from .aggregate import ByHost, Report, Shared
from .files import (STDIN, LineCounts, Unreadable, check_readable, distinct, follow_log, in_time_order, is_gzip,
                    is_stream, read_log, show_path)
from .parse import Parser

MAX_COUNT = 10_000_000  # --top, --max-tracked, --lifecycles
INTERVAL = 10  # --follow: seconds between reports
LIFECYCLES = 10  # the text report's lifecycles unless told (JSON: all kept)
TIME_FORMS = ("accepted: 'YYYY-MM-DD', 'YYYY-MM-DD HH:MM[:SS]', 'HH:MM[:SS]' (local time), ISO 8601 with a zone "
              "(e.g. 2024-12-30T21:05:25Z), 'now', 'today', 'yesterday', 'tomorrow', '@EPOCH', or a time span "
              "before or after now: '-1h', '+30min', '2 days ago', '1h 30min ago'")
SPAN_UNITS = {
    **dict.fromkeys(("us", "usec", "usecs"), 1e-6), **dict.fromkeys(("ms", "msec", "msecs"), 1e-3),
    **dict.fromkeys(("s", "sec", "secs", "second", "seconds"), 1),
    **dict.fromkeys(("m", "min", "mins", "minute", "minutes"), 60),
    **dict.fromkeys(("h", "hr", "hrs", "hour", "hours"), 3600), **dict.fromkeys(("d", "day", "days"), 86400),
    **dict.fromkeys(("w", "week", "weeks"), 604800), **dict.fromkeys(("M", "month", "months"), 2629800),
    **dict.fromkeys(("y", "year", "years"), 31557600),
}
SPAN_PART = re.compile(r"(\d{1,12}(?:\.\d{1,9})?)\s*([a-zA-Z]{1,8})\s*", re.ASCII)
CLOCK = re.compile(r"(\d{1,2}):(\d{2})(?::(\d{2}))?", re.ASCII)


def parse_time(value, option, now=None):
    """A time as journalctl takes it (systemd.time(7)) -> epoch nanoseconds. now: epoch seconds (tests)."""
    text = value.strip()
    now = time.time() if now is None else now
    try:
        sec = _seconds(text, now)
    except (ValueError, OverflowError, OSError):  # e.g. 0001-01-01 in local time: before year 1 in UTC
        raise SnoopError(f"socket-snoop report: {option}: time {value!r} out of range; {TIME_FORMS}", 2) from None
    if sec is None:
        raise SnoopError(f"socket-snoop report: {option}: invalid time {value!r}: {TIME_FORMS}", 2)
    return int(sec * 1e9)


def _seconds(text, now):
    """Epoch seconds of text, or None if it is none of TIME_FORMS; ValueError if out of range."""
    midnight = datetime.datetime.combine(datetime.date.fromtimestamp(now), datetime.time())
    days = {"today": 0, "yesterday": -1, "tomorrow": 1}
    if text == "now":
        return now
    if text in days:
        return (midnight + datetime.timedelta(days=days[text])).timestamp()
    if text.startswith("@") and text[1:].isascii() and text[1:].isdigit():
        return int(text[1:])
    m = CLOCK.fullmatch(text)
    if m:
        h, mi, sec = int(m[1]), int(m[2]), int(m[3] or 0)
        return midnight.replace(hour=h, minute=mi, second=sec).timestamp()
    span = _span(text)
    if span is not None:
        return now + span
    try:
        dt = datetime.datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
    except ValueError:
        return None
    return dt.timestamp()  # naive: local time


def _span(text):
    """'-1h', '+5min', '1 hour ago', '1h 30min ago' -> signed seconds; None if text is not a span."""
    sign = 1
    if text.endswith(" ago"):
        text, sign = text[:-4].rstrip(), -1
    elif text[:1] in "+-" and text[1:2].isdigit():
        text, sign = text[1:], (-1 if text[0] == "-" else 1)
    else:
        return None
    total, pos = 0.0, 0
    while pos < len(text):
        m = SPAN_PART.match(text, pos)
        if not m or m[2] not in SPAN_UNITS:
            return None
        total += float(m[1]) * SPAN_UNITS[m[2]]
        pos = m.end()
    return sign * total if pos else None


def count_option(option, least=1):
    """--top, --max-tracked, --lifecycles: a whole number from least to MAX_COUNT."""
    def conv(value):
        try:
            n = int(value)
        except ValueError:
            n = None
        if n is None or not least <= n <= MAX_COUNT:
            what = "a positive whole number" if least else "a whole number from 0"
            raise SnoopError(f"socket-snoop report: {option}: invalid value {value!r}: {what} up to {MAX_COUNT}", 2)
        return n
    return conv


class ReportParser(CommandParser):
    """report's parser: a --since or --until value may start with '-' ('-1h', as journalctl takes it)."""

    def parse_args(self, args=None, namespace=None):
        out, rest = [], iter(sys.argv[1:] if args is None else args)
        for arg in rest:
            if arg == "--":
                out += [arg, *rest]
                break
            value = next(rest, None) if arg in ("--since", "--until") else None
            if value is not None and value.startswith("-"):
                out.append(f"{arg}={value}")
            else:
                out += [arg] if value is None else [arg, value]
        return super().parse_args(out, namespace)


def build_parser():
    p = ReportParser(
        prog="socket-snoop report",
        description="A summary and connection lifecycles from socket-snoop logs (text or JSON lines, "
                    "rotated .gz files too, '-' for standard input). Malformed lines are counted and skipped.",
    )
    p.add_argument("files", nargs="+", metavar="FILE",
                   help="log files, e.g. /var/log/socket_monitor.log*; '-' reads standard input")
    p.add_argument("--since", type=lambda v: parse_time(v, "--since"), metavar="TIME",
                   help="events at or after TIME, in the forms journalctl takes: '2024-12-30 22:05[:25]', "
                        "'15:27', 'today', 'yesterday', '-1h', '2 hours ago', ISO 8601 with a zone")
    p.add_argument("--until", type=lambda v: parse_time(v, "--until"), metavar="TIME",
                   help="events at or before TIME (as --since)")
    p.add_argument("--json", action="store_true", help="one JSON document instead of text")
    p.add_argument("--top", type=count_option("--top"), default=10, metavar="N",
                   help="rows in each summary table (default 10)")
    p.add_argument("--lifecycles", type=count_option("--lifecycles", least=0), metavar="N",
                   help=f"the lifecycles of the N most recent connections, after the summary (default {LIFECYCLES}; "
                        "with --json every one kept; 0: none)")
    p.add_argument("--no-lifecycles", action="store_true", help="the summary only (as --lifecycles 0)")
    p.add_argument("--follow", action="store_true",
                   help="after the files, follow the newest one (a plain file) as it grows and is rotated, as "
                        "tail -F does, writing the report every --interval seconds when new lines came, and at the "
                        "end (Ctrl-C, SIGTERM)")
    p.add_argument("--interval", type=seconds("--interval", PERIOD_FLOOR, 86400), metavar="SECONDS",
                   help=f"with --follow: seconds between reports (default {INTERVAL})")
    p.add_argument("--max-tracked", type=count_option("--max-tracked"), default=100000, metavar="N",
                   help=f"connections kept for the lifecycles, the most recent (default 100000, at most {MAX_COUNT})")
    p.add_argument("--engine", choices=("auto", "duckdb", "python"), default="auto",
                   help="duckdb: the fast path (the optional package duckdb: pip install socket-snoop[fast-report]; "
                        "the lines read in C where the package was built with a C compiler), "
                        "for regular files (not --follow, standard input or a pipe); "
                        "python: the pure Python path; auto (default): duckdb where it can")
    p.add_argument("--export-parquet", metavar="DIR",
                   help="also write the events and connection summaries counted (after the filters and time "
                        "bounds) as Parquet files in DIR/events and DIR/connections, partitioned by host and day "
                        "(the fast path: duckdb)")
    p.add_group("filters (as the monitor's: values of one kind OR-ed, kinds AND-ed)", REPORT_FILTER_OPTIONS)
    p.set_defaults(include_unspecified=True)  # the log has what the monitor was told to log
    return p


def run(opts, out):
    """Reads opts.files (all checked readable first) in time order, each once, writes the report to out; 1 if
    a file could not be read to its end, else 0. With opts.follow, follows the newest file, writing the report
    every opts.interval seconds, until SIGINT or SIGTERM."""
    for option, value in (("--top", opts.top), ("--max-tracked", opts.max_tracked)):
        count_option(option)(value)  # also when opts were made without the parser
    if opts.interval is not None and not opts.follow:
        raise SnoopError("socket-snoop report: --interval applies to --follow only", 2)
    if opts.no_lifecycles and opts.lifecycles is not None:
        raise SnoopError("socket-snoop report: --lifecycles and --no-lifecycles exclude each other", 2)
    filters = filters_from(opts, "report")
    shared, lines = Shared(), LineCounts()
    report = ByHost(lambda: Report(filters, opts.since, opts.until, opts.max_tracked, shared=shared), lines,
                    shared.names)  # a central log: by host
    parser = Parser()
    check_readable(opts.files)
    paths, notes = distinct(opts.files)
    for note in notes:
        print(f"socket-snoop report: {note}", file=sys.stderr)
    paths = in_time_order(paths, parser)
    if opts.follow and (is_stream(paths[-1]) or is_gzip(paths[-1])):
        raise SnoopError("socket-snoop report: --follow: the newest file must be a plain file (not '-', a pipe "
                         "or .gz)", 2)
    # the cyclic garbage collector off while the files are read: the entries and tables hold no cycle, and its
    # passes over the growing tables were 10-20% of the Python path's time (1M text lines: 20.6-23.3 s against
    # 25.3-26.0); on again for --follow's newest file, which is read for as long as the report runs
    gc.disable()
    try:
        report, status = _read(paths, parser, report, lines, filters, opts, out)
    finally:
        gc.enable()
    write(out, report, opts)
    if report.malformed:
        print(f"socket-snoop report: {report.malformed} malformed lines skipped (the first at "
              f"{report.first_malformed})", file=sys.stderr)
    return status


def _read(paths, parser, report, lines, filters, opts, out):
    """The files read into report (the fast path's, or the Python path's: a new ByHost if the fast path gave
    up); (report, status: 1 if a file could not be read to its end)."""
    status = 0
    if choose_engine(opts) == "duckdb":
        try:
            engine.load(paths, parser, report, lines, filters, opts.since, opts.until, opts.top,
                        getattr(opts, "export_parquet", None), not opts.no_lifecycles and opts.lifecycles != 0)
            paths = []
        except engine.Fallback as e:
            if getattr(opts, "export_parquet", None):
                raise SnoopError(f"socket-snoop report: --export-parquet: {e}", 1) from None
            print(f"socket-snoop report: the slow path (pure Python): {e}", file=sys.stderr)
            shared, lines = Shared(), LineCounts()
            report = ByHost(lambda: Report(filters, opts.since, opts.until, opts.max_tracked, shared=shared), lines,
                            shared.names)
    for i, path in enumerate(paths):
        try:
            if opts.follow and i == len(paths) - 1:
                gc.enable()
                follow(path, parser, report, lines, opts, out)
            else:
                read_log(path, parser, report.add, report.bad, lines)
        except Unreadable as e:
            print(f"socket-snoop report: {e}", file=sys.stderr)
            status = 1
    return report, status


def choose_engine(opts):
    """"duckdb" or "python": what --engine asks, or (auto) duckdb where it is installed, can make the
    report asked; the slow path said once on stderr when duckdb is missing."""
    want = getattr(opts, "engine", "auto") or "auto"
    option = "--engine duckdb"
    if getattr(opts, "export_parquet", None):
        if want == "python":
            raise SnoopError("socket-snoop report: --export-parquet needs the fast path (duckdb), not --engine python", 2)
        want, option = "duckdb", "--export-parquet"
    why = python_only(opts)
    if want == "duckdb":
        if not engine.available():
            raise SnoopError(f"socket-snoop report: {option}: the package duckdb is not installed "
                             "(pip install socket-snoop[fast-report])", 2)
        if why:
            raise SnoopError(f"socket-snoop report: {option}: {why}", 2)
        return _fast()
    if want == "auto":
        if not engine.available():
            print("socket-snoop report: the slow path (pure Python): pip install socket-snoop[fast-report] "
                  "for the fast one (DuckDB)", file=sys.stderr)
        elif not why:  # faster on text and JSON logs alike (measured: docs/report-engine.md)
            return _fast()
    return "python"


def _fast():
    """The fast path; said once on stderr if its compiled reader of lines was not built (no C compiler where
    the package was installed: DuckDB's patterns read the lines, about half as fast), unless turned off."""
    if engine_scan.library() is None and not engine_scan.turned_off():
        print("socket-snoop report: the lines read by DuckDB's patterns, about half as fast: the compiled reader "
              "was not built (no C compiler at install: apt-get install gcc, then install socket-snoop again)",
              file=sys.stderr)
    return "duckdb"


def python_only(opts):
    """Why the report asked needs the Python path, or None: DuckDB reads each file by its name, from its
    start (a stream, read once, goes to the Python reader alone)."""
    if opts.follow:
        return "--follow needs the Python path"
    stream = next((p for p in opts.files if is_stream(p)), None)
    if stream == STDIN:
        return "standard input needs the Python path"
    if stream is not None:
        return f"{show_path(stream)} is not a regular file (a pipe, FIFO or device): it needs the Python path"
    return None


def write(out, report, opts):
    if opts.no_lifecycles:
        lifecycles = 0
    else:
        lifecycles = opts.lifecycles if opts.lifecycles is not None else None if opts.json else LIFECYCLES
    render.write(out, report, opts.top, lifecycles, opts.json)
    out.flush()


def follow(path, parser, report, lines, opts, out):
    """The newest file, followed (files.follow_log) until SIGINT or SIGTERM; the report written every
    opts.interval seconds when new lines came."""
    every = opts.interval or INTERVAL
    state = {"next": time.monotonic() + every, "seen": -1, "stop": False}

    def stop(*_):
        state["stop"] = True

    def idle():
        now = time.monotonic()
        if now >= state["next"]:
            state["next"] = now + every
            seen = (lines.blank, report.malformed, sum(r.events + r.summaries_read + r.filtered
                                                       for r in report.reports.values()))
            if seen != state["seen"]:
                state["seen"] = seen
                write(out, report, opts)
        return state["stop"]

    old = signal.signal(signal.SIGTERM, stop)
    try:
        follow_log(path, parser, report.add, report.bad, lines, idle)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, old)


def main(argv):
    opts = build_parser().parse_args(argv)
    try:
        return run(opts, sys.stdout)
    except BrokenPipeError:
        return 0
