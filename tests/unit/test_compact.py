"""The console for people: --format compact (logformat/compact.py) and colour (output/colour.py), made by the
console's own thread (output/console.py) on a real pipe and a real pseudo-terminal. Hostile names stay one
escaped token; an IPv4 line fits in 120 columns; the colour codes are ours, around whole lines, and only where
asked."""

import os
import re
import subprocess
import sys
import time

import pytest
from socketsnoop.kernel import abi
from socketsnoop.logformat.base import Clock
from socketsnoop.logformat.compact import HEADER, CompactFormatter, fit_comm, human_bytes, human_duration
from socketsnoop.logformat.escape import EMPTY_NAME, escape_comm
from socketsnoop.logformat.text import TextFormatter
from socketsnoop.output.batch import Batch
from socketsnoop.output.colour import END, FAILURE, RESET, wants_colour
from socketsnoop.output.console import ConsoleSink
from socketsnoop.pipeline.decode import make_record_row, make_row

from test_logformat_roundtrip import events, records

WIDEST_V4 = bytes([255, 255, 255, 255]) + bytes(12)


@pytest.fixture
def clock(monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    c = Clock()
    c.offset_ns = 1735596325454000000  # 2024-12-30 22:05:25.454 UTC at monotonic 0
    yield c
    monkeypatch.undo()
    time.tzset()


def test_compact_line_exactly(clock):
    fmt = CompactFormatter(clock)
    v4a, v4b = bytes([10, 100, 10, 150]) + bytes(12), bytes([10, 100, 10, 202]) + bytes(12)
    row = make_row(ts_ns=0, type=abi.EV_STATE, oldstate=2, newstate=1, pid=30512, comm=b"audacious", sport=39134,
                   dport=8000, saddr=v4a, daddr=v4b)
    rec = make_record_row(ts_ns=41_638_000, start_ns=1_000_000, bytes_sent=100, bytes_received=7,
                          result=abi.RESULT_REFUSED,
                          direction=abi.DIR_OUT, pid=30512, comm=b"audacious", sport=39134, dport=8000, saddr=v4a,
                          daddr=v4b, states=(2, 7))
    assert fmt.lines([row]) == ["22:05:25.454   30512 audacious        10.100.10.150:39134   10.100.10.202:8000    "
                                "SYN_SENT>ESTABLISHED\n"]
    assert fmt.record_lines([rec]) == ["22:05:25.495   30512 audacious        10.100.10.150:39134   "
                                       "10.100.10.202:8000    refused        out  40.638ms 100/7\n"]


def test_hostile_names_stay_one_escaped_token(clock):
    """Every event kind and record of the round-trip test, every hostile COMM: one line of printable ASCII, whose
    third column is COMM as the text line escapes it (cut at a whole escape), the columns around it in place."""
    fmt = CompactFormatter(clock)
    for rows, lines in ((events(), fmt.lines(events())), (records(), fmt.record_lines(records()))):
        for row, line in zip(rows, lines):
            assert line.endswith("\n") and line.count("\n") == 1 and line[:-1].isprintable() and line.isascii()
            pid, sport, dport, _s, _d, comm, _family = abi.IDENT_STRUCT.unpack(row[18] if len(row) > 12 else row[9])
            name = escape_comm(comm, pid) if comm[0] or not pid else EMPTY_NAME
            cols = line.split()
            assert cols[1] == str(pid) and cols[2] == fit_comm(name), line
            assert cols[3].endswith(f":{sport}") and cols[4].endswith(f":{dport}"), line
            assert "\x1b" not in line and "\r" not in line


def test_a_long_escaped_name_is_cut_at_a_whole_escape():
    assert fit_comm(r"\x1b[2J\x07\x7f") == r"\x1b[2J\x07\x7f"  # 16: fits
    cut = fit_comm("\\x01" * 15)
    assert cut == "\\x01" * 3 + "+" and len(cut) <= 16
    assert fit_comm("abc\\x0adefghijklmn") == "abc\\x0adefghijk+"


def test_ipv4_lines_fit_in_120_columns(clock):
    """The widest IPv4 line of every kind: the largest pid, addresses and ports, a name of 15 escapes, every
    pair of states, every result, the largest byte counts and a duration of years."""
    fmt = CompactFormatter(clock)
    widest = dict(pid=4194304, comm=b"\x01" * 15, sport=65535, dport=65535, saddr=WIDEST_V4, daddr=WIDEST_V4, family=4)
    rows = [make_row(type=t, oldstate=o, newstate=n, **widest) for t in (1, 2, 3, 4) for o in range(14)
            for n in range(14)]
    recs = [make_record_row(ts_ns=t, start_ns=1, bytes_sent=s, bytes_received=s, result=r, direction=d, **widest)
            for t in (2, 999_999_999, 10**12 - 1, 10**13, 2**63) for s in (9999, 10239, 10**6 - 1, 2**64 - 1)
            for r in range(1, 7) for d in (0, 1, 2)]
    lines = fmt.lines(rows) + fmt.record_lines(recs)
    assert max(len(line) - 1 for line in lines) <= 120
    assert len(HEADER) - 1 <= 120


@pytest.mark.parametrize("n,text", [(0, "0"), (9999, "9999"), (10000, "9.8K"), (10239, "10K"), (999 * 1024, "999K"),
                                    (1023 * 1024, "1.0M"),
                                    (1024 * 1024 - 1, "1.0M"), (2**64 - 1, "16E")])
def test_human_bytes(n, text):
    assert human_bytes(n) == text and len(text) <= 4


@pytest.mark.parametrize("ns,text", [(41_000, "0.041ms"), (40_638_000, "40.638ms"), (999_999_000, "999.999ms"),
                                     (12_345_000_000, "12.345s"), (4321_100_000_000, "4321.1s"),
                                     (999_999_999, "999.999ms"), (10**12 - 1, "999.999s"), (10**13 - 1, "9999.9s"),
                                     (2**63, "2562047h")])
def test_human_duration(ns, text):
    assert human_duration(ns) == text and len(text) <= 9


# -- the console's own thread: compact lines, colour, the header ----------------------------------------------

def reset_and_refused(clock):
    v4 = bytes([127, 0, 0, 1]) + bytes(12)
    side = dict(pid=7, comm=b"x\x1b[31mevil", sport=40000, dport=9, saddr=v4, daddr=v4)
    events_ = [make_row(ts_ns=1_000_000, type=abi.EV_STATE, oldstate=7, newstate=2, **side),
               make_row(ts_ns=2_000_000, type=abi.EV_RESET_RECEIVED, newstate=2, **side),
               make_row(ts_ns=4_000_000, type=abi.EV_STATE, oldstate=2, newstate=7, **side)]
    recs = [make_record_row(ts_ns=3_000_000, start_ns=1_000_000, result=abi.RESULT_REFUSED, direction=abi.DIR_OUT,
                            states=(2, 7), **side)]
    return events_, recs


def console_output(sink_kw, write, fd_pair=None):
    r, w = fd_pair or os.pipe()
    console = ConsoleSink(fd=w, warn=lambda msg: None, **sink_kw).open()
    try:
        write(console)
        console.close()
        os.close(w)
        w = None
        data = b""
        while chunk := os.read(r, 1 << 16):
            data += chunk
        return data.decode()
    except OSError:  # a pty's reader gets EIO once the writer has closed
        return data.decode()
    finally:
        if w is not None:
            os.close(w)
        os.close(r)


def test_console_compact_coloured_in_time_order(clock):
    """write_batch of events and a record: the console's own compact lines, the record among the events by time,
    the reset and the refused connection coloured (the whole line, our codes only), the others not."""
    events_, recs = reset_and_refused(clock)
    fmt = CompactFormatter(clock)
    out = console_output(dict(formatter=fmt, colour=True),
                         lambda c: c.write_batch(Batch(events_, None, recs, None)))
    lines = out.splitlines()
    plain = fmt.lines(events_)
    assert lines == [plain[0][:-1], RESET + plain[1][:-1] + END, FAILURE + fmt.record_lines(recs)[0][:-1] + END,
                     plain[2][:-1]]
    assert out.count("\x1b") == 4  # two lines, each between one code and END: the name's ESC is escaped


def test_console_no_colour_no_header_on_a_pipe_and_no_summary(clock):
    events_, recs = reset_and_refused(clock)
    fmt = CompactFormatter(clock)

    def write(c):
        c.write(events_, None)
        c.write_records(recs, None)  # --no-summary: not shown
    out = console_output(dict(formatter=fmt, colour=False, header=False, summary=False), write)
    assert out == "".join(fmt.lines(events_)) and "\x1b" not in out


def test_console_text_lines_coloured_as_given(clock):
    """The text console: the lines given (the log file's), the reset's between our codes."""
    events_, recs = reset_and_refused(clock)
    text = TextFormatter(clock)
    lines = text.lines(events_)
    out = console_output(dict(colour=True), lambda c: c.write(events_, lines))
    assert out.splitlines() == [lines[0][:-1], RESET + lines[1][:-1] + END, lines[2][:-1]]


def test_header_on_a_terminal(clock):
    """A real pseudo-terminal: the header first (build.console_sink asks for it where fd 1 is a terminal)."""
    events_, _ = reset_and_refused(clock)
    fmt = CompactFormatter(clock)
    master, slave = os.openpty()
    out = console_output(dict(formatter=fmt, header=True), lambda c: c.write(events_, None), (master, slave))
    assert out.replace("\r\n", "\n") == HEADER + "".join(fmt.lines(events_))


def test_wants_colour():
    master, slave = os.openpty()
    r, w = os.pipe()
    try:
        assert wants_colour("auto", slave, {}) and wants_colour("auto", slave, {"NO_COLOR": ""})
        assert not wants_colour("auto", slave, {"NO_COLOR": "1"}) and not wants_colour("auto", w, {})
        assert wants_colour("always", w, {"NO_COLOR": "1"}) and not wants_colour("never", slave, {})
    finally:
        for fd in (master, slave, r, w):
            os.close(fd)


@pytest.mark.parametrize("args, needle", [
    (["--format", "compact", "-q"], "--format compact is for the console, which --quiet turns off"),
    (["--color", "always", "--quiet"], "--color always is for the console"),
    (["--json", "--color", "always"], "--color always and JSON lines conflict"),
    (["--color", "sometimes"], "--color"),
])
def test_console_options_that_cannot_apply_are_refused(args, needle):
    p = subprocess.run([sys.executable, "-m", "socketsnoop", *args, "--no-log-file"], capture_output=True, text=True,
                       timeout=60, env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)), cwd="/")
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and needle in p.stderr, p.stderr


def test_lost_events_notice_on_the_compact_console_only(clock):
    """Dispatch's lost-events notice: a line of its own (coloured when asked) on the compact console; the text
    console carries the events alone."""
    text = "Lost Events: 3 lost (the buffer was full), 0 missed (the kernel skipped our programs)"
    out = console_output(dict(formatter=CompactFormatter(clock), colour=True), lambda c: c.notice(text, {}))
    assert re.fullmatch(r"\x1b\[1;35m\d{2}:\d{2}:\d{2}\.\d{3} " + re.escape(text) + r"\x1b\[0m\n", out), out
    assert console_output(dict(colour=True), lambda c: c.notice(text, {})) == ""
