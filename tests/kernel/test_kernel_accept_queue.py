"""accept-queue-overflow on every kernel, with no drop reason: a plain listener of backlog 1 that never accepts
while 50 clients connect. Each SYN that finds its accept queue full is refused without a drop reason; the
warning comes from the namespace's ListenOverflows and the listener's own queue, backlog and drop count
(pipeline/listen_queues.py). A healthy listener in the same namespace, busy at the same time, is not named."""

import re
import time

import pytest

from support.net import free_port, listen_overflows, private_netns
from support.procs import Monitor, spawn

pytestmark = pytest.mark.bpf

TS = r"[A-Z][a-z]{2} \d{2} \d{4} \d{2}:\d{2}:\d{2}\.\d{3}"
WARNING = re.compile(rf"^{TS} Warning: accept-queue-overflow status=active (?P<pairs>.*?) -- ")

STUCK_SERVER = """
import ctypes, socket, sys
ctypes.CDLL(None).prctl(15, b'stuckd', 0, 0, 0)
srv = socket.socket(socket.AF_INET6 if ':' in '{host}' else socket.AF_INET)
srv.bind(('{host}', {port}))
srv.listen(1)
print('listening', flush=True)
sys.stdin.readline()  # never accepts; closes when the test says
"""

# a listener that accepts all it gets, and a client of its own that waits for each answer: busy, never full
# (a client that does not wait can outrun the accepting thread: in a slow guest 129 connections queued at
# once, and that listener overflowed for real)
HEALTHY = """
import ctypes, socket, threading
ctypes.CDLL(None).prctl(15, b'okd', 0, 0, 0)
srv = socket.socket()
srv.bind(('127.0.0.1', {port}))
srv.listen(128)
def serve():
    while True:
        c, _ = srv.accept()
        c.sendall(b'ok')
        c.close()
threading.Thread(target=serve, daemon=True).start()
for _ in range(300):
    with socket.create_connection(('127.0.0.1', {port})) as c:
        assert c.recv(2) == b'ok'
print('served', flush=True)
"""

CLIENTS = """
import ctypes, socket, time
ctypes.CDLL(None).prctl(15, b'crowd', 0, 0, 0)
socks = []
for _ in range({n}):
    c = socket.socket(socket.AF_INET6 if ':' in '{host}' else socket.AF_INET)
    c.setblocking(False)
    c.connect_ex(('{host}', {port}))
    socks.append(c)
time.sleep(4)
print('done', flush=True)
"""


@pytest.mark.parametrize("listened,host", [("after", "127.0.0.1"), ("before", "127.0.0.1"), ("after", "::1")])
def test_syn_refused_for_a_full_queue(tmp_path, listened, host):
    """The stuck listener is named (port, address, owner, backlog=1) with its drops, no more than its
    namespace's ListenOverflows (v4 and v6); whether it listened after the monitor started (its owner from the listen()) or
    before (from /proc); the healthy one is not."""
    port, ok_port = free_port(), free_port()
    with private_netns() as ns:
        server = mon = None
        try:
            if listened == "before":
                server = spawn(STUCK_SERVER.format(port=port, host=host), netns=ns)
                assert server.stdout.readline().strip() == "listening"
            mon = Monitor(tmp_path, "--warn", "accept-queue-overflow=1", "--port", str(port), "--port",
                          str(ok_port), warnings=True).start()
            if server is None:
                server = spawn(STUCK_SERVER.format(port=port, host=host), netns=ns)
                assert server.stdout.readline().strip() == "listening"
            healthy = spawn(HEALTHY.format(port=ok_port), netns=ns)
            clients = spawn(CLIENTS.format(port=port, host=host, n=50), netns=ns)
            assert clients.stdout.readline().strip() == "done"
            assert healthy.stdout.readline().strip() == "served"
            deadline, found = time.monotonic() + 20, []
            while time.monotonic() < deadline and not found:
                found = [dict(kv.split("=", 1) for kv in m["pairs"].split())
                         for m in map(WARNING.match, mon.lines()) if m]
                time.sleep(0.3)
            overflows = listen_overflows(ns)
        finally:
            if server:
                server.kill()
            if mon:
                mon.stop()
    assert found, "no accept-queue-overflow warning in:\n" + "\n".join(mon.lines()[-20:])
    pairs = found[0]
    assert (pairs["PID"], pairs["COMM"], pairs["port"], pairs["listener"], pairs["backlog"], pairs["source"]) == (
        str(server.pid), "stuckd", str(port), host, "1", "overflow-counter")
    assert 0 < int(pairs["drops"]) <= overflows
    assert all(p["port"] == str(port) for p in found), found  # the healthy listener is never named
    print(next(line for line in mon.lines() if "Warning: accept-queue-overflow" in line))



def warnings_in(mon, timeout, want):
    """The accept-queue-overflow warnings' pairs, waited for until `want` of them are there."""
    deadline, found = time.monotonic() + timeout, []
    while time.monotonic() < deadline and len(found) < want:
        found = [dict(kv.split("=", 1) for kv in m["pairs"].split()) for m in map(WARNING.match, mon.lines()) if m]
        time.sleep(0.3)
    return found


def test_two_full_listeners_each_get_their_own(tmp_path):
    """Two stuck listeners in one namespace, 50 clients to one and 10 to the other: each is named with its own
    drops (its own sk_drops, not the namespace's), the busier one more, together no more than the namespace's
    ListenOverflows; neither is said to share them."""
    ports = free_port(), free_port()
    with private_netns() as ns:
        servers, mon = [], None
        try:
            mon = Monitor(tmp_path, "--warn", "accept-queue-overflow=1", "--port", str(ports[0]), "--port",
                          str(ports[1]), warnings=True).start()
            for port in ports:
                servers.append(spawn(STUCK_SERVER.format(port=port, host="127.0.0.1"), netns=ns))
                assert servers[-1].stdout.readline().strip() == "listening"
            crowds = [spawn(CLIENTS.format(port=port, host="127.0.0.1", n=n), netns=ns)
                      for port, n in zip(ports, (50, 10))]
            assert all(c.stdout.readline().strip() == "done" for c in crowds)
            found = warnings_in(mon, 20, 2)
            overflows = listen_overflows(ns)
        finally:
            for server in servers:
                server.kill()
            if mon:
                mon.stop()
    first = {p["port"]: p for p in reversed(found)}  # each listener's first warning
    assert set(first) == {str(p) for p in ports}, found
    busy, calm = first[str(ports[0])], first[str(ports[1])]
    assert (busy["PID"], calm["PID"]) == (str(servers[0].pid), str(servers[1].pid))
    assert int(busy["drops"]) > int(calm["drops"]) > 0
    assert int(busy["drops"]) + int(calm["drops"]) <= overflows
    lines = [line for line in mon.lines() if "Warning: accept-queue-overflow" in line]
    assert not any("share" in line for line in lines), lines
