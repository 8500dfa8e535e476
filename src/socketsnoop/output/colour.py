"""Colour on the console (--color auto|always|never): resets, failed connections and lost-events notices stand
out on a terminal, and so do the warnings on stderr when it is one. Only the console and stderr are ever
coloured, never the log file, the journal, syslog or JSON lines.

A coloured line is the line as the formatter made it, between one SGR code of ours and the reset code: the codes
are constants here, never from data (every name in a line is escaped to printable ASCII first, logformat/escape.py),
and they wrap the whole line, never part of a field. With auto, colour only where standard output is a terminal
and NO_COLOR (https://no-color.org) is unset or empty; always colours even a pipe; never, nowhere.
"""

import os

from ..kernel.abi import (
    EV_RESET_RECEIVED,
    EV_RESET_SENT,
    RESULT_REFUSED,
    RESULT_RESET_RECEIVED,
    RESULT_RESET_SENT,
    RESULT_TIMEOUT,
    RESULT_UNREACHABLE,
)
from ..pipeline.decode import R_RESULT, TYPE

END = "\x1b[0m"
RESET = "\x1b[33m"  # yellow: a reset sent or received, a connection ended by one
FAILURE = "\x1b[1;31m"  # bold red: a connection refused, timed out or unreachable
NOTICE = "\x1b[1;35m"  # bold magenta: events lost, and the warnings on stderr
WARNING_PREFIX = "socket-snoop: warning:"
COLOR_CHOICES = ("auto", "always", "never")

EVENT_COLOURS = {EV_RESET_SENT: RESET, EV_RESET_RECEIVED: RESET}
RECORD_COLOURS = {RESULT_RESET_SENT: RESET, RESULT_RESET_RECEIVED: RESET, RESULT_REFUSED: FAILURE,
                  RESULT_TIMEOUT: FAILURE, RESULT_UNREACHABLE: FAILURE}


def wants_colour(mode, fd=1, environ=None):
    """Whether the console on fd is coloured: --color's mode, the terminal, NO_COLOR."""
    if mode == "always":
        return True
    if mode == "never":
        return False
    if (environ if environ is not None else os.environ).get("NO_COLOR"):
        return False
    try:
        return os.isatty(fd)
    except OSError:
        return False


def painted(colour, line):
    """The line (newline included) between colour and END, the newline after them."""
    return f"{colour}{line[:-1]}{END}\n"


def paint_events(rows, lines):
    """Event lines, those of resets coloured."""
    colours = EVENT_COLOURS
    return [painted(c, line) if (c := colours.get(row[TYPE])) else line for row, line in zip(rows, lines)]


def paint_records(rows, lines):
    """Connection record lines, those that ended in a reset or failed coloured."""
    colours = RECORD_COLOURS
    return [painted(c, line) if (c := colours.get(row[R_RESULT] & 7)) else line for row, line in zip(rows, lines)]


def warning_painter(say):
    """say (a message to stderr) with its warnings ('socket-snoop: warning: ...') coloured whole."""
    def paint(msg):
        say(f"{NOTICE}{msg}{END}" if msg.startswith(WARNING_PREFIX) and "\n" not in msg else msg)
    return paint
