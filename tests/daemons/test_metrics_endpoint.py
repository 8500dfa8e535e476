"""The metrics endpoint under attack by a local user: idle connections by the thousand, a slow request, an
oversized one. The endpoint must never take the monitor's descriptors or CPU: scrapes, the log file and its
reopen on SIGHUP keep working. And socketsnoop_build_info."""

import os
import platform
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
import socketsnoop
from socketsnoop.output.metrics import MetricsSink
from socketsnoop.output.metrics_server import IDLE_S, MAX_CONNECTIONS

from support.net import free_port
from support.procs import Monitor, conversation
from support.prom import sample_sum, scrape

NOBODY = 65534
# idle connections to the endpoint, held open, made one after the other (each connect waits for room in the
# listener's backlog, as a patient attacker does); RLIMIT_NOFILE raised to the hard limit (this user's own)
HOARDER = """
import resource, socket, sys, time
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
socks, end = [], time.monotonic() + 60
while len(socks) < {n} and time.monotonic() < end:
    s = socket.socket()
    s.settimeout(2)
    try:
        s.connect(("127.0.0.1", {port}))
    except OSError:
        s.close()
        continue
    socks.append(s)
print("opened", len(socks), flush=True)
sys.stdin.read()
"""


def hoarder(port, n, uid=NOBODY):
    p = subprocess.Popen(["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "/usr/bin/python3", "-c",
                          HOARDER.format(port=port, n=n)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    assert line.startswith("opened"), p.stderr.read()
    return p, int(line.split()[1])


def cpu_ticks(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat(5))


def fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


@pytest.mark.bpf
def test_thousands_of_idle_connections_starve_nothing(tmp_path):
    """The monitor with a service's descriptor limit (1,024) and --metrics; `nobody` opens 2,000 idle
    connections to the endpoint and holds them. Scrapes keep answering, the log keeps getting lines, a
    rotation with SIGHUP works, the monitor uses no CPU meanwhile and few descriptors."""
    mport, port = free_port(), free_port()
    m = Monitor(tmp_path, "--metrics", str(mport), "-P", str(port), "--no-report", "-q")
    m.args = ["prlimit", "--nofile=1024:1024", "--", *m.args]
    hoard = None
    try:
        m.start()
        assert scraped(mport)
        hoard, opened = hoarder(mport, 2000)
        time.sleep(1)
        before = cpu_ticks(m.proc.pid)
        time.sleep(4)
        used = cpu_ticks(m.proc.pid) - before
        assert used <= 40, f"{used} ticks of CPU in 4 s of idle connections"  # 10%: the old spin took ~45%
        assert fds(m.proc.pid) < 200, fds(m.proc.pid)
        for _ in range(3):
            assert scraped(mport)
        conversation("127.0.0.1", port, "ss-starv1", "ss-starv1c")
        assert _wait(lambda: sum("ss-starv1" in x for x in m.lines()) >= 2)
        os.rename(m.log, str(m.log) + ".1")  # logrotate
        m.proc.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        conversation("127.0.0.1", port, "ss-starv2", "ss-starv2c")
        assert _wait(lambda: sum("ss-starv2" in x for x in m.lines()) >= 2), m.lines()
        assert scraped(mport)
        assert m.stop() == 0
        assert opened == 2000  # (the monitor took them all and kept a few)
    finally:
        if hoard is not None:
            hoard.kill()
            hoard.communicate()
        m.kill()
    assert "cannot write the log file" not in m.stderr and "Too many open files" not in m.stderr, m.stderr


def scraped(port):
    return ("socketsnoop_events_lost_total", frozenset({("where", "kernel_ring")})) in scrape(port)


def _wait(pred, timeout=15.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.1)
    return False


@pytest.fixture
def sink():
    s = MetricsSink("127.0.0.1", free_port()).open()
    yield s
    s.close()


def test_connections_are_capped_and_idle_ones_closed(sink):
    """300 idle connections and one that sends half a request: the sink's process gains at most the cap in
    descriptors, a scrape is answered at once, and every idle connection is closed within IDLE_S."""
    before = fds(os.getpid())
    idle = [socket.create_connection(("127.0.0.1", sink.port)) for _ in range(300)]
    slow = socket.create_connection(("127.0.0.1", sink.port))
    slow.sendall(b"GET /metr")
    try:
        time.sleep(0.5)
        grown = fds(os.getpid()) - before - len(idle) - 1
        assert grown <= MAX_CONNECTIONS + 1, grown
        t0 = time.monotonic()
        assert sample_sum(scrape(sink.port), "socketsnoop_build_info") == 1
        assert time.monotonic() - t0 < 2
        time.sleep(IDLE_S + 1)
        m = scrape(sink.port)
        assert sample_sum(m, "socketsnoop_metrics_connections_closed_total", why="evicted") >= 300 - MAX_CONNECTIONS
        assert sample_sum(m, "socketsnoop_metrics_connections_closed_total", why="idle") >= 1
        for s in idle + [slow]:
            s.settimeout(5)
            try:
                assert s.recv(1) == b""  # closed by the server
            except ConnectionResetError:
                pass
    finally:
        for s in idle + [slow]:
            s.close()


@pytest.mark.parametrize("request_bytes,status", [
    (b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 20000 + b"\r\n\r\n", 431),
    (b"POST /metrics HTTP/1.1\r\n\r\n", 405),
    (b"GET /other HTTP/1.1\r\n\r\n", 404),
    (b"nonsense\r\n\r\n", 400),
])
def test_bad_requests_get_one_answer(sink, request_bytes, status):
    with socket.create_connection(("127.0.0.1", sink.port), timeout=10) as s:
        try:
            s.sendall(request_bytes)
        except ConnectionResetError:  # (the server answered and closed before taking all of it)
            pass
        answer = b""
        try:
            while chunk := s.recv(65536):
                answer += chunk
        except ConnectionResetError:
            pass
    assert answer.startswith(b"HTTP/1.1 %d " % status), answer[:100]


def test_build_info(sink):
    m = scrape(sink.port)
    labels = {"version": socketsnoop.__version__, "python": platform.python_version(), "kernel": os.uname().release}
    assert m[("socketsnoop_build_info", frozenset(labels.items()))] == 1
    with urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{sink.port}/metrics", method="HEAD"),
                                timeout=10) as r:
        assert r.status == 200 and r.read() == b"" and r.headers["Content-Type"].startswith("text/plain")


OUT_OF_FDS = """
import os, resource, socket, sys, time, urllib.request
from socketsnoop.output.metrics import MetricsSink
sink = MetricsSink("127.0.0.1", {port}).open()
clients = [socket.socket() for _ in range(5)]  # made before every descriptor is taken
resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
fill = []
try:
    while True:
        fill.append(os.open("/dev/null", os.O_RDONLY))
except OSError:
    pass
for c in clients:
    c.connect(("127.0.0.1", {port}))
t0 = time.process_time()
time.sleep(2)  # the listener readable, accept() failing with EMFILE
print("cpu", time.process_time() - t0, flush=True)
for fd in fill:
    os.close(fd)
for c in clients:
    c.close()
with urllib.request.urlopen("http://127.0.0.1:{port}/metrics", timeout=10) as r:
    print("scrape", r.status, flush=True)
sink.close()
"""


def test_out_of_descriptors_the_endpoint_rests_and_recovers():
    """accept() fails with EMFILE (every descriptor of the process taken): the endpoint does not spin on its
    readable listener, and answers again once descriptors are free."""
    port = free_port()
    p = subprocess.run([sys.executable, "-c", OUT_OF_FDS.format(port=port)], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, p.stderr
    cpu = float(p.stdout.split("cpu ")[1].split()[0])
    assert cpu < 0.3, f"{cpu} s of CPU in 2 s out of descriptors"
    assert "scrape 200" in p.stdout, p.stdout
