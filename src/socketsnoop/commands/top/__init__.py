"""`socket-snoop top`: who is connecting where, what fails and what is slow, one screen refreshed every
interval (docs/top.md). Counts, not lines: feed.py reads the kernel's rings into tally.py's counts,
columns.py rolls them up into rows, and they are shown on the screen (screen.py, on Rich, imported only
for it), or printed as text or JSON snapshots (--once, -n N, --json, or when stdout is not a terminal)."""

import argparse
import importlib
import json
import os
import signal
import sys

from ...errors import SnoopError
from ...settings.monitor import FILTER_OPTIONS, filters_from
from ...settings.option import SWITCH, VALUE, CommandParser, Option
from ...settings.values import PERIOD_FLOOR, parse_size, positive, seconds
from .columns import GROUPINGS, SORT_KEYS, Names, table_lines
from .feed import Feed
from .snapshot import Sampler, document, header_lines

# top has no -s, --no-retransmits, --no-resets: it sets the kernel's state filter itself (feed.top_filters)
_OWN_EVENT_FILTERS = {"--state", "--no-retransmits", "--no-resets"}

TOP_OPTIONS = (
    Option(("--by",), VALUE, "group rows by: " + ", ".join(GROUPINGS) + " (default process)",
           choices=tuple(GROUPINGS), default="process", metavar="KEY"),
    Option(("--sort",), VALUE, "sort rows by this column, largest first (default opened_per_s): "
           + ", ".join(SORT_KEYS), choices=SORT_KEYS, default="opened_per_s", metavar="COLUMN"),
    Option(("--interval",), VALUE, "seconds between refreshes (default 2)",
           type=seconds("--interval", PERIOD_FLOOR, 3600), default=2.0, metavar="SECONDS"),
    Option(("-n", "--count"), VALUE, "print N snapshots as text (or JSON) and exit, no screen",
           type=positive("--count", int, 10**9), metavar="N"),
    Option(("--once",), SWITCH, "print one snapshot and exit (-n 1)"),
    Option(("--json",), SWITCH, "snapshots as JSON, one object a line, no screen"),
    Option(("--buffer-size",), VALUE, "ring buffer size (default 16M): the records ring is as large",
           type=parse_size, default=16 << 20, metavar="SIZE"),
)


def build_parser():
    p = CommandParser(prog="socket-snoop top", formatter_class=argparse.RawDescriptionHelpFormatter,
                      description="Live view of TCP connections per process, user, unit, container, pod, remote "
                                  "host, remote service or local listener: opened, open now, failed by cause, "
                                  "resets, retransmissions, bytes, handshake time and RTT. The screen shows its "
                                  "keys.")
    p.add_group("top", TOP_OPTIONS)
    p.add_group("filters (the monitor's, in the kernel)",
                [o for o in FILTER_OPTIONS if not _OWN_EVENT_FILTERS & set(o.flags)])
    p.set_defaults(state=[], no_retransmits=False, no_resets=False, include_unspecified=False)
    return p


class Stop:
    """SIGINT and SIGTERM set `stop`: the loop ends cleanly (the screen restored, a last snapshot out)."""

    def __init__(self):
        self.stop = False
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self.on_signal)

    def on_signal(self, signum, frame):
        self.stop = True


def print_snapshots(sampler, opts, names, stop, out=sys.stdout):
    """-n N, --once, --json, or stdout not a terminal: snapshots as text or JSON lines; at a signal, the
    interval so far as a last one."""
    width = os.get_terminal_size(out.fileno()).columns if out.isatty() else 1000
    count = 1 if opts.once else opts.count
    done = 0
    while not count or done < count:
        sampler.poll()
        if not (sampler.due() or stop.stop):
            continue
        doc = document(*sampler.take(final=stop.stop), opts.by, opts.sort, False, names)
        if opts.json:
            out.write(json.dumps(doc, separators=(",", ":")) + "\n")
        else:
            title = GROUPINGS[opts.by].title
            out.write("\n".join(header_lines(doc) + table_lines(doc["rows"], width, opts.sort, title)) + "\n\n")
        out.flush()
        done += 1
        if stop.stop:
            break
    return 0


def screen_module():
    """screen.py, imported only for the screen: Rich costs its import time, and scripts (--json) need none."""
    try:
        return importlib.import_module(".screen", __package__)
    except ModuleNotFoundError as e:
        raise SnoopError(f"socket-snoop top: the screen needs the Python package rich ({e.name} is missing): "
                         "install.sh installs it, or pip install rich; --json and -n N work without it") from None


def _warn(msg):
    print(msg, file=sys.stderr, flush=True)


def main(argv):
    opts = build_parser().parse_args(argv)
    filters = filters_from(opts)
    interactive = not (opts.json or opts.once or opts.count) and sys.stdout.isatty() and sys.stdin.isatty()
    screen = screen_module() if interactive else None
    stop = Stop()
    feed = Feed(filters, opts.buffer_size, _warn)
    try:
        feed.open()
        names = Names(feed.identity)
        sampler = Sampler(feed, opts.interval)
        if screen is None:
            _warn(f"socket-snoop top: watching, a snapshot every {opts.interval:g} s (Ctrl-C stops)")
            return print_snapshots(sampler, opts, names, stop)
        return screen.Screen(sampler, opts, names, stop).run()
    finally:
        feed.close()
