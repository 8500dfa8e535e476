"""Health warnings on the real kernel, each from a real reproduction in a private network namespace: the
warning's kind, its owner and its numbers, and its clearing; and none from a busy but healthy churn."""

import json
import os
import re
import subprocess
import time

import pytest

from support.net import free_port, netns_pair, private_netns
from support.procs import Monitor, spawn
from support.system import sh

pytestmark = pytest.mark.bpf

TS = r"[A-Z][a-z]{2} \d{2} \d{4} \d{2}:\d{2}:\d{2}\.\d{3}"
WARNING = re.compile(rf"^{TS} Warning: (?P<kind>[a-z-]+) status=(?P<status>active|cleared)(?P<pairs>( \S+=\S+)*) -- "
                     r"(?P<words>.+)$")


def warnings(mon, kind):
    """[(status, {key: value})] of the monitor's warning lines of this kind, in order."""
    out = []
    for line in mon.lines():
        m = WARNING.match(line)
        if m and m["kind"] == kind:
            out.append((m["status"], dict(kv.split("=", 1) for kv in m["pairs"].split())))
    return out


def wait_for(mon, kind, status="active", timeout=20, test=None, **want):
    """The first warning of this kind and status whose keys have the wanted values (and passes test(kv))."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for st, kv in warnings(mon, kind):
            if st == status and all(kv.get(k) == str(v) for k, v in want.items()) and (test is None or test(kv)):
                return kv
        time.sleep(0.3)
    raise AssertionError(f"no {kind} {status} warning with {want} in:\n" + "\n".join(mon.lines()[-30:]))


def ns_python(ns, code):
    return spawn(code, netns=ns)


LEAKER = """
import ctypes, socket, sys, time
ctypes.CDLL(None).prctl(15, b'leaker', 0, 0, 0)
srv = socket.socket()
srv.bind(('127.0.0.1', {port}))
srv.listen(64)
print('listening', flush=True)
held = [srv.accept()[0] for _ in range({n})]
print('accepted', flush=True)
sys.stdin.readline()  # the test says when to close them
for c in held:
    c.close()
print('closed', flush=True)
sys.stdin.readline()
"""

CLIENTS = """
import ctypes, socket, time
ctypes.CDLL(None).prctl(15, {comm!r}, 0, 0, 0)
socks = []
for _ in range({n}):
    c = socket.socket()
    c.connect(('127.0.0.1', {port}))
    socks.append(c)
for c in socks:
    c.close()
print('done', flush=True)
"""


def test_close_wait_leak(tmp_path):
    """A server that never closes the sockets its clients closed: close-wait-leak on the server's process with
    their count, and one line when it closes them."""
    port = free_port()
    with private_netns() as ns:
        mon = Monitor(tmp_path, "--warn", "close-wait-leak=1", "--warn", "interval=2").start()
        server = ns_python(ns, LEAKER.format(port=port, n=3))
        try:
            assert server.stdout.readline().strip() == "listening"
            client = ns_python(ns, CLIENTS.format(port=port, n=3, comm=b"client"))
            assert client.stdout.readline().strip() == "done"
            assert server.stdout.readline().strip() == "accepted"
            kv = wait_for(mon, "close-wait-leak", PID=server.pid, COMM="leaker")  # ip netns exec execs: its pid
            assert kv["sockets"] == "3" and kv["threshold_s"] == "1" and int(kv["oldest_s"]) >= 1
            assert kv["seen"] == "1"
            # said again after the interval (2 s, not every tick), with how many ticks it was seen
            again = wait_for(mon, "close-wait-leak", test=lambda kv: int(kv["seen"]) > 1)
            assert int(again["seen"]) >= 2 and again["PID"] == str(server.pid)
            server.stdin.write("\n")
            server.stdin.flush()
            assert server.stdout.readline().strip() == "closed"
            cleared = wait_for(mon, "close-wait-leak", "cleared", COMM="leaker")
            assert cleared["sockets"] == "3"
            print("\n".join(line for line in mon.lines() if " Warning: " in line))
        finally:
            server.kill()
            mon.stop()

