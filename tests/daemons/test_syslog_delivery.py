"""syslog over TCP against collectors that misbehave: one that accepts and then closes every connection
(a reconnect storm before: 2,118 reconnects in 16 s), one that closes at once (an L4 proxy without a
backend: `dropped=0` before, while it received 0 bytes). Real sockets, real small collectors in the test."""

import re
import socket
import threading
import time

import pytest
from support.net import free_port
from support.procs import REFUSER, spawn

from socketsnoop.logformat.base import Clock
from socketsnoop.output.syslog import SyslogSink


class Collector:
    """Accepts connections on a loopback port; reads each for read_s seconds (0: not at all), then closes it.
    Counts connections, bytes, and the complete octet-counted frames received."""

    def __init__(self, read_s):
        self.read_s = read_s
        self.srv = socket.create_server(("127.0.0.1", 0))
        self.srv.settimeout(0.1)
        self.port = self.srv.getsockname()[1]
        self.accepts = self.bytes = self.frames = 0
        self.stopping = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stopping:
            try:
                conn, _ = self.srv.accept()
            except socket.timeout:
                continue
            self.accepts += 1
            data, end = b"", time.monotonic() + self.read_s
            while time.monotonic() < end:
                conn.settimeout(max(end - time.monotonic(), 0.001))
                try:
                    chunk = conn.recv(65536)
                except (socket.timeout, OSError):
                    break
                if not chunk:
                    break
                data += chunk
            conn.close()
            self.bytes += len(data)
            self.frames += count_frames(data)

    def stop(self):
        self.stopping = True
        self.thread.join(5)
        self.srv.close()


def count_frames(data):
    """Complete RFC 6587 octet-counted frames at the start of one connection's bytes."""
    n, pos = 0, 0
    while True:
        sp = data.find(b" ", pos)
        if sp < 0 or not data[pos:sp].isdigit():
            return n
        end = sp + 1 + int(data[pos:sp])
        if end > len(data):
            return n
        n, pos = n + 1, end


@pytest.mark.parametrize("read_s", [0.05, 0.0])
def test_a_collector_that_closes_every_connection(read_s):
    """8 s of messages to a collector that accepts and then closes (after reading 50 ms, or at once): a few
    reconnects (backoff growing while connections keep failing), a few lines on stderr, and at the end every
    message not confirmed is counted as dropped: what counts as delivered was received."""
    c = Collector(read_s)
    said = []
    sink = SyslogSink(Clock(), True, f"tcp://127.0.0.1:{c.port}", warn=said.append).open()
    n = 0
    try:
        end = time.monotonic() + 8
        while time.monotonic() < end:
            for _ in range(15):
                sink.notice(f"Lost Events: test {n}", {"event": "lost_events", "lost": n})
                n += 1
            time.sleep(0.1)
        sink.close()
    finally:
        c.stop()
    delivered = n - sink.dropped()
    assert c.accepts <= 12, f"{c.accepts} connections in 8 s"
    assert len(said) <= 4, said
    assert delivered <= c.frames, (delivered, c.frames, c.bytes)
    assert sink.dropped() == n, (sink.dropped(), n)  # (none stayed up long enough to be confirmed)
    assert c.bytes <= 20 * n * 64, c.bytes  # sent again a few times, not thousands


def test_a_collector_that_stays_up_confirms_everything():
    """The same flow to a collector that keeps its connection and reads: everything delivered, nothing
    dropped, nothing said."""
    c = Collector(60)
    said = []
    sink = SyslogSink(Clock(), True, f"tcp://127.0.0.1:{c.port}", warn=said.append).open()
    try:
        for n in range(300):
            sink.notice(f"Lost Events: test {n}", {"event": "lost_events", "lost": n})
        time.sleep(0.5)
        sink.close()
        assert sink.dropped() == 0 and said == [] and c.accepts == 1 and sink.sent_again == 0
    finally:
        c.read_s = 0
        c.stop()


@pytest.mark.bpf
def test_monitor_counts_what_a_closing_collector_never_got(monitor):
    """The real monitor, --syslog to a collector that closes every connection at once: the exit's Outputs line
    counts every event as dropped (before: dropped=0, with 0 bytes received), and stderr has a few lines."""
    c = Collector(0)
    closed = free_port()
    try:
        m = monitor("-P", str(closed), "--no-report", "-q", "--syslog", f"tcp://127.0.0.1:{c.port}")
        for _ in range(4):
            spawn(REFUSER, comm=b"ss-storm", port=closed, count=10).communicate(timeout=60)
            time.sleep(0.5)
        assert m.stop() == 0, m.stderr
    finally:
        c.stop()
    n = len(m.lines())
    assert n >= 80 and c.frames == 0
    dropped = int(re.search(r"syslog dropped=(\d+)", m.stderr).group(1))
    assert dropped == n, (dropped, n, c.bytes)
    assert sum("syslog tcp://" in line for line in m.stderr.splitlines()) <= 3, m.stderr


@pytest.mark.bpf
def test_sigterm_ends_the_monitor_within_a_second_whatever_the_collector_does(monitor):
    """A collector that accepts and never reads: the stream's buffers fill and the writer waits on it. SIGTERM
    still ends the monitor within about a second (before: the exit waited CLOSE_WAIT_S, 3 s, for a receiver that
    took nothing); what it never took is counted as dropped."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # inherited by the accepted socket: a small window
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    held = []
    threading.Thread(target=lambda: held.append(srv.accept()), daemon=True).start()  # accepted, never read
    closed = free_port()
    try:
        m = monitor("-P", str(closed), "--no-report", "-q", "--no-log-file", "--output-queue", "100000",
                    "--syslog", f"tcp://127.0.0.1:{srv.getsockname()[1]}")
        for _ in range(3):  # ~3,000 messages: more than the socket buffers take
            spawn(REFUSER, comm=b"ss-storm", port=closed, count=500).communicate(timeout=60)
        time.sleep(1.0)
        t0 = time.monotonic()
        m.proc.terminate()
        m.proc.wait(timeout=30)
        took = time.monotonic() - t0
        m.stop()
    finally:
        srv.close()
    dropped = int(re.search(r"syslog dropped=(\d+)", m.stderr).group(1))
    assert took < 1.5 and dropped > 0, (took, dropped, m.stderr[-500:])
