"""Health warnings on the real kernel, each from a real reproduction in a private network namespace: the
warning's kind, its owner and its numbers, and its clearing; and none from a busy but healthy churn."""

import os
import re
import subprocess
import time

import pytest

from support.net import free_port, listen_overflows, netns_pair, private_netns
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
    raise AssertionError(f"no {kind} {status} warning with {want} in:\n" + "\n".join(
        line for line in mon.lines() if f"Warning: {kind}" in line or "lossy" in line))


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
        mon = Monitor(tmp_path, "--warn", "close-wait-leak=1", "--warn", "interval=2", warnings=True).start()
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



def netns_inode(ns):
    return sh("ip", "netns", "exec", ns, "stat", "-L", "-c", "%i", "/proc/self/ns/net").stdout.strip()


def nft_in(ns, body):
    """An nftables input chain in network namespace ns (its own tables: gone with the namespace)."""
    sh("ip", "netns", "exec", ns, "nft", "-f", "-", input=(
        "table inet ssw { chain input { type filter hook input priority -10; policy accept; " + body + "; }; }\n"))


CONNECTS = """
import ctypes, socket, threading
ctypes.CDLL(None).prctl(15, {comm!r}, 0, 0, 0)
errors = []
def one(port):
    c = socket.socket()
    try:
        c.connect(('127.0.0.1', port))
    except OSError as e:
        errors.append(e.errno)
    c.close()
threads = [threading.Thread(target=one, args=(p,)) for p in {ports}]
for t in threads: t.start()
for t in threads: t.join()
print(*errors, flush=True)
"""


def test_connect_failures(tmp_path):
    """Connects to a closed port (refused) and to a port whose SYNs are dropped (timeout): connect-failures
    per destination, with the cause counted and the process that tried."""
    closed, dropped = free_port(), free_port()
    with private_netns() as ns:
        sh("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.tcp_syn_retries=1")  # a timeout in 3 s
        nft_in(ns, f"tcp dport {dropped} drop")
        inode = netns_inode(ns)
        mon = Monitor(tmp_path, "--warn", "connect-failures=3", warnings=True).start()
        try:
            p = ns_python(ns, CONNECTS.format(comm=b"dialer", ports=[closed] * 4 + [dropped] * 3))
            out, _err = p.communicate(timeout=30)
            assert out.split().count("111") == 4 and out.split().count("110") == 3  # ECONNREFUSED, ETIMEDOUT
            kv = wait_for(mon, "connect-failures", dport=closed, netns=inode)
            assert (kv["dst"], kv["failures"], kv["refused"], kv["timeout"]) == ("127.0.0.1", "4", "4", "0")
            assert (kv["PID"], kv["COMM"], kv["processes"]) == (str(p.pid), "dialer", f"dialer({p.pid})x4")
            kv = wait_for(mon, "connect-failures", dport=dropped, netns=inode)
            assert (kv["failures"], kv["refused"], kv["timeout"], kv["COMM"]) == ("3", "0", "3", "dialer")
        finally:
            mon.stop()


PROBE = """
import ctypes, socket
ctypes.CDLL(None).prctl(15, b'prober', 0, 0, 0)
for port in range({first}, {first} + 100):
    c = socket.socket()
    try:
        c.connect(('127.0.0.1', port))
    except ConnectionRefusedError:
        pass
    c.close()
print('done', flush=True)
"""


def test_port_scan(tmp_path):
    """One client probing 100 closed ports: port-scan on its address, 100 distinct ports, no owner (the resets
    are the kernel's, no socket's)."""
    first = free_port()
    with private_netns() as ns:
        inode = netns_inode(ns)
        mon = Monitor(tmp_path, warnings=True).start()
        try:
            p = ns_python(ns, PROBE.format(first=first))
            assert p.communicate(timeout=30)[0].strip() == "done"
            kv = wait_for(mon, "port-scan", netns=inode, ports=100)
            assert (kv["src"], kv["lowest"], kv["highest"]) == ("127.0.0.1", str(first), str(first + 99))
            assert "PID" not in kv
        finally:
            mon.stop()


EXHAUST = """
import ctypes, socket, sys
ctypes.CDLL(None).prctl(15, b'pooler', 0, 0, 0)
srv = socket.socket()
srv.bind(('127.0.0.1', {port}))
srv.listen(64)
held, errors = [], []
for _ in range({n}):
    c = socket.socket()
    try:
        c.connect(('127.0.0.1', {port}))
        held.append(c)
    except OSError as e:
        errors.append(e.errno)
        c.close()
print(len(held), errors.count(99), flush=True)
sys.stdin.readline()
"""


def test_port_exhaustion(tmp_path):
    """The local port range narrowed to 4 ports, 10 connects to one destination held open: the last 6 fail with
    EADDRNOTAVAIL, no SYN sent: port-exhaustion on that destination, with the process."""
    port = free_port()
    with private_netns() as ns:
        sh("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.ip_local_port_range=40000 40003")
        inode = netns_inode(ns)
        mon = Monitor(tmp_path, summary=True, warnings=True).start()
        p = ns_python(ns, EXHAUST.format(port=port, n=10))
        try:
            held, no_port = map(int, p.stdout.readline().split())
            assert (held, no_port) == (4, 6)
            kv = wait_for(mon, "port-exhaustion", dport=port, netns=inode)
            assert (kv["dst"], kv["failures"], kv["COMM"], kv["PID"]) == ("127.0.0.1", "6", "pooler", str(p.pid))
        finally:
            p.kill()
            mon.stop()


SENDER = """
import ctypes, socket
ctypes.CDLL(None).prctl(15, b'lossy', 0, 0, 0)
c = socket.create_connection(({host!r}, {port}), timeout=60)
c.sendall(b'x' * {size})
c.shutdown(socket.SHUT_WR)
c.recv(10)
c.close()
print('done', flush=True)
"""

SINK = """
import socket
srv = socket.socket()
srv.bind(({host!r}, {port}))
srv.listen(1)
print('listening', flush=True)
c, _ = srv.accept()
while c.recv(1 << 16):
    pass
c.close()
"""


def test_retransmits(tmp_path):
    """nftables dropping 10% of one connection's packets: retransmits on the remote host, with the sender."""
    port = free_port()
    with netns_pair() as (a, b, hosts):
        server_addr = hosts[b][0]
        sh("ip", "-n", a, "link", "set", "dev", f"v{a}", "gso_max_segs", "1")  # one segment a packet: each dropped
        nft_in(b, f"tcp dport {port} numgen random mod 100 < 10 drop")
        inode = netns_inode(a)
        mon = Monitor(tmp_path, warnings=True).start()
        try:
            srv = ns_python(b, SINK.format(host=server_addr, port=port))
            assert srv.stdout.readline().strip() == "listening"
            p = ns_python(a, SENDER.format(host=server_addr, port=port, size=1 << 20))
            assert p.communicate(timeout=60)[0].strip() == "done"
            kv = wait_for(mon, "retransmits", dst=server_addr, netns=inode)
            assert int(kv["retransmits"]) >= 10 and float(kv["percent"]) >= 5 and kv["COMM"] == "lossy"
            assert kv["processes"].startswith(f"lossy({p.pid})x")
        finally:
            mon.stop()


def test_healthy_churn_raises_no_warning(tmp_path):
    """bench/loadgen's churn (connect, accept, close, as fast as it goes) in a namespace of its own, with the
    close-wait-leak threshold at 3 s: no warning about its namespace or its processes; except accept-queue-overflow
    exactly when the kernel counted its listener's queue overflowing (ListenOverflows: on this loaded 2-core host
    the servers, starved, let the 4,096 queue fill now and then, with no monitor running too), its drops no more."""
    loadgen = tmp_path / "loadgen"
    src = os.path.join(os.path.dirname(__file__), "..", "..", "bench", "loadgen.c")
    subprocess.run(["gcc", "-O2", "-o", str(loadgen), src], check=True)
    port = free_port()
    with private_netns() as ns:
        inode = netns_inode(ns)
        mon = Monitor(tmp_path, "--warn", "close-wait-leak=3", "--warn", "interval=1", warnings=True).start()
        try:
            out = sh("ip", "netns", "exec", ns, str(loadgen), str(port), "6", "4", "2").stdout
            stats = dict(kv.split("=") for kv in out.split())
            assert int(stats["connections"]) > 1000 and stats["errors"] == "0"
            time.sleep(2.5)  # the ticks after the churn: a CLOSE_WAIT left over would show now
            overflows = listen_overflows(ns)
        finally:
            mon.stop()
        ours = [line for line in mon.lines() if " Warning: " in line
                and (f" netns={inode} " in line or " COMM=loadgen " in line)]
        queue = [line for line in ours if " Warning: accept-queue-overflow status=active " in line]
        # an accept-queue warning only where the kernel counted an overflow (one at the churn's end, when the
        # listener is gone by the next tick, is not attributed: docs/warnings.md)
        assert not queue or overflows, (overflows, queue)
        assert all(f" port={port} " in line and int(re.search(r" drops=(\d+) ", line)[1]) <= overflows
                   for line in queue), (overflows, queue)
        ours = [line for line in ours if " Warning: accept-queue-overflow " not in line]
        assert not ours, "\n".join(ours[:3]) + "\n".join(l for l in mon.stderr.splitlines() if "Totals" in l or "ost" in l)
        assert sum(" Connection Summary: " in line for line in mon.lines()) == 0  # (--no-summary: events only)
        assert sum(f":{port} " in line for line in mon.lines()) > 1000  # the monitor saw the churn


HALF_OPEN = """
import ctypes, socket, sys
ctypes.CDLL(None).prctl(15, b'synvictim', 0, 0, 0)
srv = socket.socket()
srv.bind(('127.0.0.1', {port}))
srv.listen(1024)
clients = []
for _ in range({n}):
    c = socket.socket()
    c.setblocking(False)
    c.connect_ex(('127.0.0.1', {port}))
    clients.append(c)
print('sent', flush=True)
sys.stdin.readline()
"""


def test_syn_flood(tmp_path):
    """30 clients whose final ACK nftables drops: the listener's half-open connections get their SYN-ACK sent
    again; syn-flood on the listener (its port and owner), with the half-open count and the sources' count."""
    port = free_port()
    with private_netns() as ns:
        nft_in(ns, f"tcp dport {port} tcp flags & (syn | ack) == ack drop")
        inode = netns_inode(ns)
        mon = Monitor(tmp_path, "--warn", "syn-flood=20", warnings=True).start()
        p = ns_python(ns, HALF_OPEN.format(port=port, n=30))
        try:
            assert p.stdout.readline().strip() == "sent"
            kv = wait_for(mon, "syn-flood", port=port, netns=inode)
            assert (kv["listener"], kv["half_open"], kv["sources"]) == ("127.0.0.1", "30", "1")
            assert int(kv["synack_retransmits"]) >= 30 and (kv["PID"], kv["COMM"]) == (str(p.pid), "synvictim")
        finally:
            p.kill()
            mon.stop()
