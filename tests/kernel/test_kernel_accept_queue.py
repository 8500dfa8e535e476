"""accept-queue-overflow on every kernel, with no drop reason: a plain listener of backlog 1 that never accepts
while 50 clients connect. Each SYN that finds its accept queue full is refused without a drop reason; the
warning comes from the namespace's ListenOverflows and the listener's own queue, backlog and drop count
(pipeline/listen_queues.py). A healthy listener in the same namespace, busy at the same time, is not named."""

import re
import time

import pytest

from support.net import free_port, private_netns
from support.procs import Monitor, spawn
from support.system import sh

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

# a listener that accepts all it gets, and clients of its own: busy, never full
HEALTHY = """
import ctypes, socket, threading
ctypes.CDLL(None).prctl(15, b'okd', 0, 0, 0)
srv = socket.socket()
srv.bind(('127.0.0.1', {port}))
srv.listen(128)
def serve():
    while True:
        c, _ = srv.accept()
        c.close()
threading.Thread(target=serve, daemon=True).start()
for _ in range(300):
    with socket.create_connection(('127.0.0.1', {port})):
        pass
print('served', flush=True)
"""

CLIENTS = """
import ctypes, socket, time
ctypes.CDLL(None).prctl(15, b'crowd', 0, 0, 0)
socks = []
for _ in range(50):
    c = socket.socket(socket.AF_INET6 if ':' in '{host}' else socket.AF_INET)
    c.setblocking(False)
    c.connect_ex(('{host}', {port}))
    socks.append(c)
time.sleep(4)
print('done', flush=True)
"""


def listen_overflows(ns):
    out = sh("ip", "netns", "exec", ns, "cat", "/proc/net/netstat").stdout
    head, values = [line.split()[1:] for line in out.splitlines() if line.startswith("TcpExt:")]
    return int(dict(zip(head, values))["ListenOverflows"])


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
            clients = spawn(CLIENTS.format(port=port, host=host), netns=ns)
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
