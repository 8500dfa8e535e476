"""The console output (output/console.py: ConsoleSink) on a real pipe: the lines as given, a reader that stalls
never blocking the writer's caller (what does not fit is counted), a reader that goes away seen with or
without anything to write."""

import os
import time

from socketsnoop.output.console import ConsoleSink

LINE = "Dec 30 2024 22:05:25.454 State Change: SRC=127.0.0.1:1 DST=127.0.0.1:2 PID=1 COMM=x STATE=Connection Closed\n"


def pipe_console(capacity=10000):
    r, w = os.pipe()
    return r, w, ConsoleSink(capacity=capacity, fd=w, warn=lambda msg: None).open()


def read_all(r, n):
    data = b""
    while len(data) < n:
        data += os.read(r, 1 << 16)
    return data


def test_lines_as_given():
    r, w, console = pipe_console()
    try:
        console.write(None, [LINE, "é\n"])
        console.write(None, [LINE])
        want = (LINE + "é\n" + LINE).encode()
        assert read_all(r, len(want)) == want
        console.close()
        assert console.dropped() == 0 and not console.closed
    finally:
        os.close(r)
        os.close(w)


def test_a_stalled_reader_blocks_nothing_and_drops_are_counted():
    r, w, console = pipe_console(capacity=2000)
    writer = console.thread
    try:
        t0 = time.monotonic()
        for _ in range(100):  # 3,000 lines of 120 bytes: far more than a pipe (64 KiB) and the queue hold
            console.write(None, [LINE] * 30)
        assert time.monotonic() - t0 < 0.5
        t0 = time.monotonic()
        console.close()
        assert time.monotonic() - t0 < console.CLOSE_WAIT_S + 0.5
        assert 1000 < console.dropped() < 3000  # what the pipe took is not counted
    finally:
        os.close(r)  # the writer, still in its write, ends (before w's number can be another pipe's)
        writer.join(5)
        os.close(w)


def test_a_reader_gone_is_seen_with_nothing_to_write():
    r, w, console = pipe_console()
    try:
        os.close(r)
        deadline = time.monotonic() + 2
        while not console.closed and time.monotonic() < deadline:
            time.sleep(0.05)
        assert console.closed
        console.write(None, [LINE])
        console.close()
        assert console.dropped() == 0  # nothing is owed to a reader that left
    finally:
        os.close(w)


def test_a_reader_gone_while_writing():
    r, w, console = pipe_console()
    try:
        console.write(None, [LINE])
        read_all(r, len(LINE))
        os.close(r)
        console.write(None, [LINE] * 1000)
        deadline = time.monotonic() + 2
        while not console.closed and time.monotonic() < deadline:
            time.sleep(0.05)
        assert console.closed
    finally:
        console.close()
        os.close(w)
