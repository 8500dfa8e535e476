"""`socket-snoop report FILE...`: lifecycles and a summary from logs the monitor wrote.

Reads text lines (the seed format) and JSON lines, plain or gzip-compressed
(rotated files), in any mix. Files are read in the order of their first
timestamp, so `report /var/log/socket_monitor.log*` works whatever order the
shell gives. A line that is not one of ours is counted and skipped.

Nothing read from a file reaches the output as it was read: addresses are
checked (digits, hex, ':' and '.', no IPv6 scope id), COMM is printed in the
monitor's escaped form, and file names are escaped. Memory is bounded
whatever the input: lines over MAX_LINE characters are skipped without being
held whole, and each table keeps at most TABLE_LIMIT keys (what it leaves
out is counted and reported).

Connection summary lines ('Connection Summary:', JSON "event": "connection") become Summary records with
tables of their own (failed connections by cause and destination, bytes, handshakes, resets by who sent
them), shown only when the logs have such lines: an older log gives the report it always gave.

parse.py reads the files into Records (and Summaries), aggregate.py counts them (Report, and Records for the
summaries), render.py writes the result.
"""

import datetime
import sys

from ...errors import SnoopError
from ...settings.monitor import REPORT_FILTER_OPTIONS, filters_from
from ...settings.option import CommandParser
from . import render
from .aggregate import ByHost, Report
from .parse import Parser, Unreadable, check_readable, in_time_order, read_log

MAX_COUNT = 10_000_000  # --top, --max-tracked


def parse_time(value, option):
    """'YYYY-MM-DD HH:MM[:SS]' (local time) or ISO 8601 -> epoch nanoseconds."""
    text = value.strip()
    formats = ("accepted: 'YYYY-MM-DD', 'YYYY-MM-DD HH:MM[:SS]' (local time) or ISO 8601 with a zone "
               "(e.g. 2024-12-30T21:05:25Z)")
    try:
        dt = datetime.datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    except ValueError:
        raise SnoopError(f"socket-snoop report: {option}: invalid time {value!r}: {formats}", 2) from None
    try:
        return int(dt.timestamp() * 1e9)  # naive: local time
    except (ValueError, OverflowError, OSError):  # e.g. 0001-01-01 in local time: before year 1 in UTC
        raise SnoopError(f"socket-snoop report: {option}: time {value!r} out of range; {formats}", 2) from None


def count_option(option):
    """--top, --max-tracked: a whole number from 1 to MAX_COUNT."""
    def conv(value):
        try:
            n = int(value)
        except ValueError:
            n = None
        if n is None or not 1 <= n <= MAX_COUNT:
            raise SnoopError(f"socket-snoop report: {option}: invalid value {value!r}: a positive whole number "
                             f"up to {MAX_COUNT}", 2)
        return n
    return conv


def build_parser():
    p = CommandParser(
        prog="socket-snoop report",
        description="Connection lifecycles and a summary from socket-snoop logs (text or JSON lines, "
                    "rotated .gz files too). Malformed lines are counted and skipped.",
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="log files, e.g. /var/log/socket_monitor.log*")
    p.add_argument("--since", type=lambda v: parse_time(v, "--since"), metavar="TIME",
                   help="events at or after TIME: 'YYYY-MM-DD HH:MM[:SS]' local time, or ISO 8601")
    p.add_argument("--until", type=lambda v: parse_time(v, "--until"), metavar="TIME", help="events at or before TIME")
    p.add_argument("--json", action="store_true", help="one JSON document instead of text")
    p.add_argument("--top", type=count_option("--top"), default=10, metavar="N",
                   help="rows in each summary table (default 10)")
    p.add_argument("--no-lifecycles", action="store_true", help="the summary only")
    p.add_argument("--max-tracked", type=count_option("--max-tracked"), default=100000, metavar="N",
                   help=f"connections kept for the lifecycles, the most recent (default 100000, at most {MAX_COUNT})")
    p.add_group("filters (as the monitor's: values of one kind OR-ed, kinds AND-ed)", REPORT_FILTER_OPTIONS)
    p.set_defaults(include_unspecified=True)  # the log has what the monitor was told to log
    return p


def run(opts, out):
    """Reads opts.files (all checked readable first) in time order, writes the report to out; 1 if a file
    could not be read to its end, else 0."""
    for option, value in (("--top", opts.top), ("--max-tracked", opts.max_tracked)):
        count_option(option)(value)  # also when opts were made without the parser
    filters = filters_from(opts, "report")
    report = ByHost(lambda: Report(filters, opts.since, opts.until, opts.max_tracked))  # a central log: by host
    parser = Parser()
    check_readable(opts.files)
    status = 0
    for path in in_time_order(opts.files, parser):
        try:
            read_log(path, parser, report.add, report.bad)
        except Unreadable as e:
            print(f"socket-snoop report: {e}", file=sys.stderr)
            status = 1
    render.write(out, report, opts.top, not opts.no_lifecycles, opts.json)
    if report.malformed:
        print(f"socket-snoop report: {report.malformed} malformed lines skipped (the first at "
              f"{report.first_malformed})", file=sys.stderr)
    return status


def main(argv):
    opts = build_parser().parse_args(argv)
    try:
        return run(opts, sys.stdout)
    except BrokenPipeError:
        return 0
