"""top's full screen, on Rich's live display: the alternate screen, redrawn every interval, at a key and at
a resize; keys read from the terminal in cbreak mode (Ctrl-C still stops). Names on the screen are Text,
never markup, and already escaped (columns.py): nothing a process or a cgroup names itself can drive the
terminal. Rich leaves colour out where NO_COLOR is set or the terminal has none."""

import os
import select
import signal
import sys
import termios
import tty

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from .columns import COLUMNS, GROUPINGS, fit, shown_label
from .snapshot import document, header_lines

# the sort keys < and > step through, in the screen's order
SORT_CYCLE = ("name", *(c.name for c in COLUMNS))
_BY_KEY = {g.key: g.name for g in GROUPINGS.values()}
_ORDER = list(GROUPINGS)
HELP = ("keys: q quit  g/G grouping (" + " ".join(g.key for g in GROUPINGS.values()) + ")  </> sort  r reverse")
WARN = "bold red"
_FAILURE_COLUMNS = {"refused", "timeout", "unreachable", "resets_sent", "resets_received"}


class Screen:
    def __init__(self, sampler, opts, names, stop):
        self.sampler = sampler
        self.names = names
        self.stop = stop
        self.by = opts.by
        self.sort = opts.sort
        self.reverse = False
        self.interval = opts.interval
        self.last = None  # (Snapshot, untracked) of the last interval
        self.quit = False
        self.resized = False
        self.console = Console(highlight=False)

    def run(self):
        fd = sys.stdin.fileno()
        saved = termios.tcgetattr(fd)
        old_winch = signal.signal(signal.SIGWINCH, self._on_resize)
        try:
            tty.setcbreak(fd)
            with Live(self.render(), console=self.console, screen=True, auto_refresh=False) as live:
                while not (self.quit or self.stop.stop):
                    self.sampler.poll()
                    changed = self.read_keys(fd)
                    if self.sampler.due():
                        self.last = self.sampler.take()
                        changed = True
                    if changed or self.resized:
                        self.resized = False
                        live.update(self.render(), refresh=True)
        finally:
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)
            signal.signal(signal.SIGWINCH, old_winch)
        return 0

    def _on_resize(self, signum, frame):
        self.resized = True

    def read_keys(self, fd):
        """The keys typed since the last look (never waits). Returns whether the view changed."""
        changed = False
        while select.select([fd], [], [], 0)[0]:
            data = os.read(fd, 64)
            if not data:
                self.quit = True
                return changed
            for key in data.decode("latin-1"):
                changed |= self.on_key(key)
        return changed

    def on_key(self, key):
        if key in "qQ":
            self.quit = True
        elif key in "gG":
            self.by = _ORDER[(_ORDER.index(self.by) + (1 if key == "g" else -1)) % len(_ORDER)]
        elif key in _BY_KEY:
            self.by = _BY_KEY[key]
        elif key in "<>":
            i = SORT_CYCLE.index(self.sort) if self.sort in SORT_CYCLE else 0
            self.sort = SORT_CYCLE[(i + (1 if key == ">" else -1)) % len(SORT_CYCLE)]
        elif key == "r":
            self.reverse = not self.reverse
        else:
            return False
        return True

    # -- drawing ---------------------------------------------------------------
    def render(self):
        try:  # the terminal's size now, not COLUMNS and LINES from the environment (Rich's first choice)
            self.console.size = os.get_terminal_size(sys.stdout.fileno())
        except OSError:
            pass
        width, height = self.console.size
        if self.last is None:
            return Text(f"socket-snoop top: the first numbers in {self.interval:g} s ...\n{HELP}")
        doc = document(*self.last, self.by, self.sort, self.reverse, self.names)
        first, host, kernel, *warned = header_lines(doc)
        lines = [Text(first + ("  (reversed)" if self.reverse else ""), style="bold"), Text(host), Text(kernel),
                 *(Text(line, style=WARN) for line in warned), Text(HELP, style="dim")]
        t = doc["totals"]
        for word in ("lost", "missed", "untracked"):
            if t.get(word):
                lines[2].highlight_words([f"{word} {t[word]}"], style=WARN)
        used = sum(-(-max(len(line.plain), 1) // max(width, 1)) for line in lines) + 1  # wrapped; the table's header
        rows = doc["rows"][:max(height - used, 0)]
        return Group(*lines, self.table(rows, width))

    def table(self, rows, width):
        title = GROUPINGS[self.by].title
        label_w, chosen = fit(rows, width, self.sort, title)
        table = Table(box=None, padding=(0, 1, 0, 0), pad_edge=False, show_edge=False, header_style="reverse",
                      collapse_padding=True)
        table.add_column(title, width=label_w, no_wrap=True, overflow="ellipsis",
                         style="bold" if self.sort == "name" else None)
        for column, w in chosen:
            head = column.header + ("*" if column.name == self.sort else "")
            table.add_column(head, width=w, justify="right", no_wrap=True)
        for r in rows:
            cells = [Text(shown_label(r), style=WARN if r["warnings"] else "")]
            for column, _w in chosen:
                value = r[column.name]
                style = "yellow" if column.name in _FAILURE_COLUMNS and value else None
                cells.append(Text(column.fmt(value), style=style or ""))
            table.add_row(*cells)
        return table
