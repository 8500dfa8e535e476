"""The real monitor on the real kernel: exact lines, owners, families, retransmissions, resets.

Each test talks on its own port and filters on it in the kernel (-P), so
traffic from other tests or other programs on the host does not disturb it.
"""

import datetime
import json
import os
import re
import signal
import subprocess
import sys
import time
import warnings
from array import array
from collections import Counter

import pytest

from support.net import (
    free_port,
    netns_pair,
    nft_drop,
    private_netns,
    tcp_mib,
    trace_count,
    wait_port_settled,
)
from support.procs import conversation, run_client, spawn, start_server

pytestmark = pytest.mark.bpf

TS = r"[A-Z][a-z]{2} \d{2} \d{4} \d{2}:\d{2}:\d{2}\.\d{3}"
LINE = re.compile(
    rf"^(?P<ts>{TS}) (?P<title>State Change|Retransmission|Reset Sent|Reset Received): "
    r"SRC=(?P<src>\S+) DST=(?P<dst>\S+) PID=(?P<pid>\d+) COMM=(?P<comm>\S+) STATE=(?P<state>.+)$"
)


def parsed(lines):
    out = []
    for line in lines:
        m = LINE.match(line)
        assert m, f"line not in the seed's format: {line!r}"
        out.append(m.groupdict())
    return out


def dedup(states):
    """Consecutive repeats folded: the kernel reports FIN_WAIT2 -> FIN_WAIT2 when an orphaned
    socket in FIN_WAIT2 becomes a timewait socket (tcp_time_wait), depending on timing."""
    return [s for i, s in enumerate(states) if i == 0 or states[i - 1] != s]


def by_socket(rows, local):
    """The rows of one socket, by its local endpoint (the client's local port is 0 at SYN_SENT)."""
    return [r for r in rows if r["src"] == local]


def check_conversation(all_rows, host, port, spid, cpid, scomm, ccomm):
    ep = (lambda p: f"[{host}]:{p}") if ":" in host else (lambda p: f"{host}:{p}")
    # The states from the state changes alone: under a slow (emulated) kernel a delayed ACK can draw a
    # tail-loss probe even on loopback, and a Retransmission line carries the socket's state too.
    rows = [r for r in all_rows if r["title"] == "State Change"]
    server_rows = by_socket(rows, ep(port))
    assert server_rows, rows
    client_port = int(server_rows[0]["dst"].rsplit(":", 1)[1])
    client_rows = [r for r in rows if r["src"] in (ep(client_port), ep(0))]
    # the client: the seed's SYN_SENT with local port 0, then the whole active-open/active-close path
    assert dedup([r["state"] for r in client_rows]) == [
        "Connection Opening (SYN_SENT)",
        "Connection Established",
        "Connection Closing (FIN_WAIT1)",
        "Connection Closing (FIN_WAIT2)",
        "Connection Closed",
    ], client_rows
    assert client_rows[0]["src"] == ep(0) and client_rows[0]["dst"] == ep(port)
    assert all(r["dst"] == ep(port) for r in client_rows)
    assert {(r["pid"], r["comm"]) for r in client_rows} == {(str(cpid), ccomm)}, client_rows
    # the server's accepted socket: passive open, then close after the client's FIN
    states = [r["state"] for r in server_rows]
    assert states[0] in ("Connection Opening (SYN_RECV)", "Connection Established"), states
    assert "Connection Established" in states and states[-1] == "Connection Closed", states
    assert "Connection Closing (CLOSE_WAIT)" in states and "Connection Closing (LAST_ACK)" in states
    assert {(r["pid"], r["comm"]) for r in server_rows} == {(str(spid), scomm)}, server_rows
    assert not any(r["comm"].startswith("swapper") or r["pid"] == "0" for r in all_rows)


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_state_changes_with_true_owners(monitor, host):
    port = free_port()
    m = monitor("-P", str(port), "--no-report")
    spid, cpid = conversation(host, port, "ss-server", "ss-client")
    assert m.stop() == 0, m.stderr
    rows = parsed(m.lines())
    check_conversation(rows, host, port, spid, cpid, "ss-server", "ss-client")


def test_exact_client_lines(monitor):
    """Every line of a client socket, whole, as the seed wrote them."""
    port = free_port()
    m = monitor("-P", str(port), "--no-report")
    spid, cpid = conversation("127.0.0.1", port, "ss-srv", "ss-cli")
    m.stop()
    lines = m.lines()
    client = [line for line in lines if f"PID={cpid} " in line and " State Change: " in line]
    cport = re.search(r"SRC=127\.0\.0\.1:(\d+) ", client[1]).group(1)
    body = [line[25:] for line in client]  # after the timestamp
    assert [b for i, b in enumerate(body) if i == 0 or body[i - 1] != b] == [
        f"State Change: SRC=127.0.0.1:0 DST=127.0.0.1:{port} PID={cpid} COMM=ss-cli STATE=Connection Opening (SYN_SENT)",
        f"State Change: SRC=127.0.0.1:{cport} DST=127.0.0.1:{port} PID={cpid} COMM=ss-cli STATE=Connection Established",
        f"State Change: SRC=127.0.0.1:{cport} DST=127.0.0.1:{port} PID={cpid} COMM=ss-cli "
        "STATE=Connection Closing (FIN_WAIT1)",
        f"State Change: SRC=127.0.0.1:{cport} DST=127.0.0.1:{port} PID={cpid} COMM=ss-cli "
        "STATE=Connection Closing (FIN_WAIT2)",
        f"State Change: SRC=127.0.0.1:{cport} DST=127.0.0.1:{port} PID={cpid} COMM=ss-cli STATE=Connection Closed",
    ]
    assert all(re.match(TS + " ", line) for line in client)


def test_ipv4_mapped_ipv6_is_shown_as_ipv4(monitor):
    port = free_port()
    m = monitor("-P", str(port), "--json", "--no-report")
    spid, cpid = conversation("127.0.0.1", port, "ss-dual", "ss-v4cli", dual=True, server_host="::")
    m.stop()
    recs = m.records()
    server = [r for r in recs if r["pid"] == spid]
    assert server and all(r["family"] == 4 and r["src"] == "127.0.0.1" and r["sport"] == port for r in server)


def test_json_schema(monitor):
    port = free_port()
    m = monitor("-P", str(port), "--json", "--no-report")
    spid, cpid = conversation("::1", port, "ss-jsrv", "ss-jcli")
    m.stop()
    recs = m.records()
    assert recs
    # a slow machine (an emulated guest kernel) may retransmit a SYN or a FIN, and a FIN that comes again
    # after its socket is gone is answered with a reset: those lines are fine too
    assert {r["event"] for r in recs} <= {"state_change", "retransmit", "reset_sent", "reset_received"}
    recs = [r for r in recs if r["event"] == "state_change"]
    for r in recs:
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", r["timestamp"])
        assert r["family"] == 6
        assert r["src"] == "::1" and r["dst"] == "::1"
        assert isinstance(r["sport"], int) and isinstance(r["dport"], int)
        assert r["pid"] in (spid, cpid) and r["comm"] in ("ss-jsrv", "ss-jcli")
        assert r["owner"] in ("socket", "listener")
        assert r["new_state"] in ("SYN_SENT", "SYN_RECV", "ESTABLISHED", "FIN_WAIT1", "FIN_WAIT2", "CLOSE_WAIT",
                                  "LAST_ACK", "CLOSE", "TIME_WAIT")
        assert r["description"]
    first = [r for r in recs if r["pid"] == cpid][0]
    assert first["old_state"] == "CLOSE" and first["new_state"] == "SYN_SENT" and first["sport"] == 0


def test_retransmissions_under_packet_loss(monitor):
    """An nftables input rule drops 30% of the packets to the server's port: the client retransmits.
    (At 50% a SYN dropped five times in a row took over a minute of backoff on a slow emulated kernel; SYNs
    are dropped at 5% now.) On loopback a connection's 100 kB go in a few large segments, so 3 connections
    now and then had none of the client's dropped (once in CI, on 6.12): 12 connections."""
    port = free_port()
    m = monitor("-P", str(port), "--no-report")
    srv = start_server("127.0.0.1", port, "ss-lossy", count=12)
    try:
        with nft_drop(port, 30, syn_percent=5):
            cpid, _ = run_client("127.0.0.1", port, "ss-retx", count=12, size=100000, timeout=60)
        srv.communicate(timeout=60)
    finally:
        srv.kill()
    m.stop()
    retx = [r for r in parsed(m.lines()) if r["title"] == "Retransmission"]
    assert retx, "no retransmission reported"
    ours = [r for r in retx if r["dst"] == f"127.0.0.1:{port}"]
    assert ours and all(r["pid"] == str(cpid) and r["comm"] == "ss-retx" for r in ours), retx
    assert all(r["state"].startswith("Connection") for r in retx)


SLOW_CLIENT = """
import socket, time
c = socket.create_connection(("127.0.0.1", {port}))
time.sleep(2.5)
c.close()
"""


def test_synack_retransmission(monitor):
    """The handshake's last ACK never reaches the server (an nftables rule drops the bare ACKs to its
    port): the server sends its SYN-ACK again after a second. Reported as a retransmission of the
    listener's process, with the addresses of the connection that is not yet one."""
    port = free_port()
    m = monitor("-P", str(port), "--no-report")
    srv = start_server("127.0.0.1", port, "ss-synack", count=1)
    try:
        with nft_drop(port, 100, match="tcp flags & (fin | syn | rst | psh | ack) == ack"):
            client = spawn(SLOW_CLIENT, port=port)
            client.communicate(timeout=30)
            assert client.returncode == 0
    finally:
        srv.kill()
    m.stop()
    retx = [r for r in parsed(m.lines()) if r["title"] == "Retransmission" and r["src"] == f"127.0.0.1:{port}"]
    assert retx, m.lines()
    r = retx[0]
    assert r["pid"] == str(srv.pid) and r["comm"] == "ss-synack", r
    assert r["dst"].startswith("127.0.0.1:") and r["state"] == "Connection Opening (NEW_SYN_RECV)", r


def test_resets_sent_and_received(monitor):
    port = free_port()  # nothing listens here
    m = monitor("-P", str(port), "--no-report")
    p = spawn("""
import ctypes, socket
ctypes.CDLL(None).prctl(15, b"ss-rst", 0, 0, 0)
try:
    socket.create_connection(("127.0.0.1", {port}), timeout=5)
except ConnectionRefusedError:
    print("refused")
""", port=port)
    out, err = p.communicate(timeout=30)
    assert "refused" in out, err
    m.stop()
    rows = parsed(m.lines())
    sent = [r for r in rows if r["title"] == "Reset Sent"]
    received = [r for r in rows if r["title"] == "Reset Received"]
    # on every kernel: by tcp_send_reset from 6.10 on, by the fentry programs before
    assert sent and sent[0]["src"] == f"127.0.0.1:{port}", rows
    assert sent[0]["pid"] == "0" and sent[0]["comm"] == "-"  # no socket: the kernel answered for nobody
    assert received and received[0]["dst"] == f"127.0.0.1:{port}"
    assert received[0]["pid"] == str(p.pid) and received[0]["comm"] == "ss-rst"


RESETS = """
import socket, struct, time

def refused(host, port):
    s = socket.socket(socket.AF_INET6 if ':' in host else socket.AF_INET)
    try:
        s.connect((host, port))
        raise SystemExit('connected to a closed port?')
    except ConnectionRefusedError:
        pass
    finally:
        s.close()

def fin_wait2(s):
    # A close() before the FIN's ACK is in leaves the socket orphaned in FIN_WAIT1. If the ACK lands on
    # another CPU after tcp_close's last backlog pass but before its release_sock, the backlog takes it
    # while the socket is still owned, and the kernel keeps a full socket in FIN_WAIT2 on a timer instead
    # of a timewait one (tcp_rcv_state_process): then the reset below is a full socket's. Seen once under
    # qemu on 6.1. Wait for FIN_WAIT2 first: close() there makes the timewait socket itself (__tcp_close).
    # (The peer's ACK of a FIN may be a delayed one: 40 ms and more.)
    for _ in range(2000):
        if s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0] == 5:  # TCP_FIN_WAIT2
            return
        time.sleep(0.01)
    raise SystemExit('no FIN_WAIT2 after 20 s')

def pair(host, port):
    srv = socket.socket(socket.AF_INET6 if ':' in host else socket.AF_INET)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((host, port))
    srv.listen(8)
    c = socket.create_connection((host, port))
    a, _ = srv.accept()
    srv.close()
    return c, a

for host in ('127.0.0.1', '::1'):
    for _ in range(3):
        refused(host, {closed})     # no socket: the kernel answers the SYN
    c, a = pair(host, {port})
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
    c.close()                       # aborted: a reset from a full socket
    time.sleep(0.05)
    a.close()
    c, a = pair(host, {port})
    c.shutdown(socket.SHUT_WR)      # FIN, ACKed: c is a full socket in FIN_WAIT2 ...
    assert a.recv(10) == b''
    fin_wait2(c)
    c.close()                       # ... and closed there, a timewait socket (in FIN_WAIT2) at once
    time.sleep(0.05)
    a.send(b'x')                    # data after c's close: the timewait socket answers with a reset
    time.sleep(0.05)
    a.close()
    c, a = pair(host, {port})
    c.shutdown(socket.SHUT_RDWR)    # FIN, ACKed: c stays a full socket, in FIN_WAIT2, that reads no more
    assert a.recv(10) == b''
    time.sleep(0.05)
    a.send(b'x')                    # data c will not read: a full socket's reset, from tcp_v4/v6_send_reset
    time.sleep(0.05)
    a.close()
    c.close()
print('done', flush=True)
"""


def test_every_reset_sent_is_seen(monitor):
    """Each reset the kernel sends in a private network namespace, against its own count (OutRsts): to a
    closed port (no socket), from an aborted connection and from a shut-down one (full sockets: the second
    through tcp_v4/v6_send_reset, which the fentry programs also see), from a timewait socket; IPv4 and
    IPv6. Before 6.10 tcp_send_reset lacks all but the full sockets': the fentry programs take them, and
    none may be taken twice."""
    closed, port = free_port(), free_port()
    m = monitor("-P", str(closed), "-P", str(port), "--no-report", "--json", "-q")
    with private_netns() as ns:
        inode = os.stat(f"/run/netns/{ns}").st_ino
        before = tcp_mib(ns, "OutRsts")
        p = spawn(RESETS, netns=ns, closed=closed, port=port)
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0 and "done" in out, err
        sent_by_kernel = tcp_mib(ns, "OutRsts") - before
        m.stop(settle=0.5)
    sent = [r for r in m.records() if r["event"] == "reset_sent" and r["netns"] == inode]
    assert sent_by_kernel >= 12, sent_by_kernel  # 6 refused, 2 aborted, 2 from timewait sockets, 2 shut down
    assert len(sent) == sent_by_kernel, json.dumps(sent, indent=None)
    no_socket = [r for r in sent if r["sport"] == closed]
    assert len(no_socket) == 6 and all(r["owner"] == "none" and r["pid"] == 0 for r in no_socket), no_socket
    assert {r["family"] for r in no_socket} == {4, 6}
    timewait = [r for r in sent if r["new_state"] == "TIME_WAIT"]
    assert len(timewait) == 2 and {r["family"] for r in timewait} == {4, 6}, sent


def test_active_reset_by_closing_process(monitor):
    """close() with SO_LINGER 0 aborts the connection: a reset sent by that process."""
    port = free_port()
    m = monitor("-P", str(port), "--no-report")
    srv = start_server("127.0.0.1", port, "ss-rsrv", count=1)
    p = spawn("""
import ctypes, socket, struct
ctypes.CDLL(None).prctl(15, b"ss-abort", 0, 0, 0)
c = socket.create_connection(("127.0.0.1", {port}))
c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
c.close()
""", port=port)
    p.communicate(timeout=30)
    srv.communicate(timeout=30)
    m.stop()
    rows = parsed(m.lines())
    sent = [r for r in rows if r["title"] == "Reset Sent"]
    assert sent and sent[0]["pid"] == str(p.pid) and sent[0]["comm"] == "ss-abort", rows
    received = [r for r in rows if r["title"] == "Reset Received"]
    assert received and received[0]["pid"] == str(srv.pid) and received[0]["comm"] == "ss-rsrv", rows


def test_comm_cannot_forge_lines_or_drive_the_terminal(monitor):
    port = free_port()
    m = monitor("-P", str(port), "--no-report")
    evil = "a\nb\x1b[2J c\\"
    spid, cpid = conversation("127.0.0.1", port, "ss-ok", evil)
    m.stop()
    lines = m.lines()
    assert all(LINE.match(line) for line in lines)
    client = [line for line in lines if f"PID={cpid} " in line]
    assert client and all(r"COMM=a\x0ab\x1b[2J\x20c\x5c STATE=" in line for line in client)
    assert "\x1b" not in m.stdout and "\x1b" not in "".join(lines)


def test_sockets_older_than_the_monitor(monitor):
    """A server listening before we start: its accepted connections still get its pid/comm;
    a connection established before we start: its close is attributed from /proc."""
    port = free_port()
    srv = start_server("127.0.0.1", port, "ss-early", count=2)
    early = spawn("""
import ctypes, socket, sys
ctypes.CDLL(None).prctl(15, b"ss-old", 0, 0, 0)
c = socket.create_connection(("127.0.0.1", {port}))
print("connected", flush=True)
sys.stdin.readline()
c.shutdown(socket.SHUT_WR)
c.recv(64)
c.close()
""", port=port)
    try:
        assert early.stdout.readline().strip() == "connected"
        m = monitor("-P", str(port), "--json", "--no-report")
        # the old connection closes now (its owner is only in /proc)
        early.communicate(input="\n", timeout=30)
    except Exception:
        early.kill()
        raise
    cpid, _ = run_client("127.0.0.1", port, "ss-new")
    srv.communicate(timeout=30)
    m.stop()
    recs = m.records()
    old = [r for r in recs if r["pid"] == early.pid]
    assert old and all(r["comm"] == "ss-old" for r in old), recs
    served = [r for r in recs if r["sport"] == port]
    assert served and all(r["pid"] == srv.pid and r["comm"] == "ss-early" for r in served), served


def test_namespaces_over_veth(monitor):
    """Two hosts in network namespaces: both ends are seen, with their own processes."""
    port = free_port()
    m = monitor("-P", str(port), "--no-report", "--json")
    with netns_pair() as (a, b, hosts):
        server_v4 = hosts[a][0]
        srv = start_server(server_v4, port, "ss-nsrv", netns=a)
        try:
            cpid, _ = run_client(server_v4, port, "ss-ncli", netns=b)
            srv.communicate(timeout=30)
        finally:
            srv.kill()
    m.stop()
    recs = m.records()
    client = [r for r in recs if r["comm"] == "ss-ncli"]
    server = [r for r in recs if r["comm"] == "ss-nsrv"]
    assert client and server
    assert all(r["dst"] == server_v4 and r["dport"] == port for r in client)
    assert all(r["src"] == server_v4 and r["sport"] == port for r in server)
    assert client[0]["netns"] != server[0]["netns"]
    assert {r["new_state"] for r in client} >= {"SYN_SENT", "ESTABLISHED", "CLOSE"}


def test_perf_buffer_mode(monitor):
    port = free_port()
    m = monitor("-P", str(port), "--no-report", "--buffer", "perf")
    spid, cpid = conversation("127.0.0.1", port, "ss-psrv", "ss-pcli")
    m.stop()
    check_conversation(parsed(m.lines()), "127.0.0.1", port, spid, cpid, "ss-psrv", "ss-pcli")


def test_exit_report_and_sigterm(monitor):
    port = free_port()
    m = monitor("-P", str(port))
    spid, cpid = conversation("127.0.0.1", port, "ss-rsrv", "ss-rcli")
    assert m.stop(signal.SIGTERM) == 0
    out = m.stderr  # the exit summary: stdout carries the events alone
    assert "Stopping monitoring...\n\nConnection Lifecycles:\n" in out
    life = re.search(rf"Connection: 127\.0\.0\.1:\d+ -> 127\.0\.0\.1:{port}  \(PID={cpid} COMM=ss-rcli "
                     r"duration=\d+\.\d{3}s retransmits=(\d+)\)", out)
    assert life, out
    # none on loopback, unless a slow (emulated) kernel's delayed ACK drew a tail-loss probe: as many as logged
    assert int(life.group(1)) == sum(" Retransmission: " in line and f"PID={cpid} " in line for line in m.lines())
    assert re.search(rf"\n  {TS}: Connection Opening \(SYN_SENT\)\n", out)
    t = m.totals()
    assert t["lost"] == 0 and t["lines"] == len(m.lines()) and t["captured"] >= t["lines"]


def test_duration_stops_by_itself(tmp_path):
    p = subprocess.run([sys.executable, "-m", "socketsnoop", "--duration", "1", "--no-log-file", "-q"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert "Totals: " in p.stderr and p.stdout == ""


def test_lost_events_are_counted_never_silent(monitor):
    """A stopped reader and a tiny buffer: what does not fit is counted, and every event is accounted for."""
    port = free_port()
    m = monitor("-P", str(port), "--no-report", "--buffer-size", "64K", "-q")
    srv = start_server("127.0.0.1", port, "ss-flood", count=400)
    m.proc.send_signal(signal.SIGSTOP)
    try:
        run_client("127.0.0.1", port, "ss-flooder", count=400, size=1)
        srv.communicate(timeout=60)
    finally:
        m.proc.send_signal(signal.SIGCONT)
        srv.kill()
    m.stop(settle=1)
    t = m.totals()
    assert t["lost"] > 0, t
    assert t["seen"] == t["captured"] + t["lost"] + t["filtered"]
    assert t["lines"] == len(m.lines()) == t["captured"]
    assert "events were lost" in m.stderr


def test_a_reader_behind_sheds_event_lines_never_records(monitor):
    """The overload policy: with the reader stopped, the events' ring fills and sheds event lines, counted by
    kind (Totals, stderr), while every connection record still fits in a ring of its own, sized to fill last:
    700 connections are 7,000 events (840K for a 256K ring) and 1,400 records (235K: before, the records'
    rings were half the events' size, 128K and a spare of 64K, and lost some)."""
    port = free_port()
    m = monitor("-P", str(port), "--no-report", "--buffer-size", "256K", "-q", summary=True)
    srv = start_server("127.0.0.1", port, "ss-shed", count=700)
    m.proc.send_signal(signal.SIGSTOP)
    try:
        run_client("127.0.0.1", port, "ss-shedder", count=700, size=1)
        srv.communicate(timeout=60)
    finally:
        m.proc.send_signal(signal.SIGCONT)
        srv.kill()
    m.stop(settle=1)
    t = m.totals()
    assert t["lost"] > 0, t
    assert t["records_lost"] == 0 and t["records"] == 1400, t
    # every line shed is counted under its kind; on loopback nearly all are state changes (on a slow guest a late
    # ACK can draw a tail-loss probe, the server's end a reset: a line shed as its own kind)
    shed = {k: v for k, v in t.items() if k.startswith("shed_")}
    assert sum(shed.values()) == t["lost"] and t["shed_state_change"] >= 0.9 * t["lost"], t
    assert f"{t['shed_state_change']} state_change" in m.stderr
    summaries = [x for x in m.lines() if "Connection Summary" in x]
    assert len(summaries) == 1400


CHURN = """
import socket, time
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", {port}))
srv.listen(512)
end = time.monotonic() + {seconds}
while time.monotonic() < end:
    c = socket.create_connection(("127.0.0.1", {port}))
    a, _ = srv.accept()
    c.close()
    a.close()
"""


def test_full_buffer_read_while_the_kernel_writes(monitor):
    """A reader that falls behind, again and again, under a steady flood: each time it catches up, the
    kernel writes into the space it frees while it reads. Every line must stay whole (a record handed
    back before it was copied would come out as garbage, or as a crash)."""
    port = free_port()
    m = monitor("-P", str(port), "--no-report", "--json", "--buffer-size", "64K", "-q")
    churn = subprocess.Popen([sys.executable, "-c", CHURN.format(port=port, seconds=9)])
    try:
        for i in range(40):
            m.proc.send_signal(signal.SIGSTOP)
            time.sleep(0.5 if i % 10 == 0 else 0.05)  # the 64K ring fills (630 events); slowly when emulated
            m.proc.send_signal(signal.SIGCONT)
            time.sleep(0.05)
        churn.wait(timeout=60)
    finally:
        m.proc.send_signal(signal.SIGCONT)
        churn.kill()
    assert m.stop(settle=1) == 0, m.stderr
    t = m.totals()
    assert t["lost"] > 0 and t["captured"] > 1000, t  # the buffer did fill, and kept being refilled
    records = m.records()
    assert len(records) == t["lines"] == t["captured"]
    assert t["seen"] == t["captured"] + t["lost"] + t["filtered"]
    odd = [r for r in records if r["event"] not in ("state_change", "retransmit", "reset_sent", "reset_received")
           or port not in (r["sport"], r["dport"]) or r["pid"] not in (churn.pid, 0)]
    assert not odd, json.dumps(odd[:2])
    assert "Traceback" not in m.stderr


@pytest.fixture(scope="module")
def loadgen(tmp_path_factory):
    """bench/loadgen.c, built: Python cannot make connections fast enough to load the kernel program."""
    src = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "bench", "loadgen.c")
    out = str(tmp_path_factory.mktemp("loadgen") / "loadgen")
    subprocess.run(["cc", "-O2", "-o", out, src], check=True)
    return out


def _ms(stamp):
    """A JSON line's timestamp (2026-12-01T23:40:32.856Z) in milliseconds since the epoch."""
    return round(datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() * 1000)


def test_no_state_change_missed_or_doubled_under_a_flood(monitor, loadgen):
    """At full churn, loopback softirqs interrupt the kernel program all the time; the kernel skips it
    for those hits, and the second program must take every one of them (missed=0), and none twice.
    Counted against the kernel's own count of the tracepoint's hits on that port (a tracefs instance,
    without the listener's own LISTEN transitions): on a kernel that counts no skipped runs (before 5.12),
    or runs softirqs in threads (PREEMPT_RT), a hit that no program took would show only there.
    (--include-unspecified: on older kernels, 6.1 and 5.10, an accepted socket's LISTEN -> SYN_RECV comes
    before its remote address is set, and the monitor would leave it out as unspecified.)"""
    port = free_port()
    m = monitor("-P", str(port), "--no-report", "--json", "--buffer-size", "64M", "-q", "--include-unspecified")
    with trace_count("sock/inet_sock_set_state",
                     f"protocol == 6 && (sport == {port} || dport == {port}) && newstate != 10 "
                     "&& !(oldstate == 10 && newstate == 7)") \
            as hits:
        r = subprocess.run([loadgen, str(port), "5", "2", "2"], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        wait_port_settled(port)  # every state change made: the count is final
        kernel_hits = hits()
    assert m.stop(settle=1) == 0, m.stderr
    t = m.totals()
    assert t["missed"] == 0 and t["lost"] == 0, t
    assert t["seen"] == t["captured"] + t["filtered"] and t["captured"] > 1000, t
    # Read as a stream into columns of machine integers: a million JSON lines kept as dicts (or even as
    # tuples) would not fit a 1 GB guest.
    steps, stamp, sock, sport, dport, count = {}, array("q"), array("Q"), array("H"), array("H"), 0
    step = array("B")
    with open(m.log) as log:
        for count, line in enumerate(log, 1):
            r = json.loads(line)
            if r["event"] == "state_change":
                step.append(steps.setdefault((r["old_state"], r["new_state"]), len(steps)))
                stamp.append(_ms(r["timestamp"]))
                sock.append(int(r["sock"], 16))
                sport.append(r["sport"])
                dport.append(r["dport"])
    assert count == t["lines"] == t["captured"]  # each record read once
    # A state change taken twice is the same hit written by both programs: the same transition twice in a
    # row for one socket in one connection, within a millisecond (each copy has the time its program took).
    # Not merely two identical lines: a client port that is free again at once, since the server closes
    # first, comes back within a millisecond for a new connection on the same recycled socket addresses;
    # and the kernel itself makes a LISTEN -> SYN_RECV that nothing follows when two CPUs take the same
    # handshake's last ACK (the child that loses is freed at once, inet_csk_complete_hashdance), so that a
    # later connection from that client port may make the same line for the same address. A server
    # socket's connection is told apart by its client port's count of SYN_SENT -> ESTABLISHED so far (the
    # client's comes before the server's LISTEN -> SYN_RECV: its ACK makes the server's socket). The lines
    # are taken in time order: under a flood the rescue ring's rows may follow the main ring's of the
    # next few milliseconds (pipeline/decode.py: merge_by_time).
    last, twice, changes, generation = {}, [], 0, Counter()
    names = {code: pair for pair, code in steps.items()}
    for i in sorted(range(len(stamp)), key=stamp.__getitem__):  # stable
        (old, new), ms, row = names[step[i]], stamp[i], (sock[i], sport[i], dport[i])
        if "LISTEN" not in (old, new) or new == "SYN_RECV":
            changes += 1  # what the tracefs filter lets through: all but the listener's own transitions
        if not sport[i] or not dport[i]:
            continue  # SYN_SENT, before the local port is chosen: one key for every connection
        kind = (old, new)
        if sport[i] == port:
            kind += (generation[dport[i]],)
        elif kind == ("SYN_SENT", "ESTABLISHED"):
            generation[sport[i]] += 1
        before = last.get(row)
        if before and before[0] == kind and ms - before[1] <= 1:
            twice.append(f"{old} -> {new} of sock {row[0]:#x} {row[1]} -> {row[2]} at {before[1]} and {ms} ms")
        last[row] = (kind, ms)
    assert not twice, f"{len(twice)} transitions taken twice, e.g.\n" + "\n\n".join(twice[:5])
    # (the flood also makes resets and retransmissions: only state changes are counted)
    assert changes <= kernel_hits, f"{changes - kernel_hits} state changes more than the kernel made"
    if os.environ.get("SOCKETSNOOP_FLOOD_EXACT") == "1":  # .ci/run's kernel matrix: a kernel of our own
        assert changes == kernel_hits, f"{kernel_hits - changes} of {kernel_hits} state changes missing"
    elif changes != kernel_hits:
        # Open: on this project's shared 6.18 machine, about one run in two loses a few to a few hundred
        # hits per million that no counter reports (the same with the object before 5.10 support);
        # never seen in the kernel matrix. Shown, not hidden: see docs/kernels.md, "Missed hits".
        warnings.warn(f"{kernel_hits - changes} of {kernel_hits} state changes missing, missed=0")


def test_two_monitors_at_once(monitor, tmp_path):
    """Other BPF programs (here: a second monitor) attached at the same time change nothing."""
    port = free_port()
    a = monitor("-P", str(port), "--no-report", log_name="a.log")
    b = monitor("-P", str(port), "--no-report", log_name="b.log")
    conversation("127.0.0.1", port, "ss-two", "ss-twoc")
    a.stop()
    b.stop()
    strip = lambda lines: sorted(line[25:] for line in lines)  # noqa: E731
    assert a.lines() and strip(a.lines()) == strip(b.lines())


def test_ipv4_connect_from_a_dual_stack_socket(monitor):
    """An AF_INET6 socket connecting to ::ffff:127.0.0.1: every line IPv4, SYN_SENT included."""
    port = free_port()
    m = monitor("-P", str(port), "--json", "--no-report")
    srv = start_server("127.0.0.1", port, "ss-v4srv", count=1)
    p = spawn("""
import ctypes, socket
ctypes.CDLL(None).prctl(15, b"ss-mapped", 0, 0, 0)
c = socket.socket(socket.AF_INET6)
c.connect(("::ffff:127.0.0.1", {port}))
c.shutdown(socket.SHUT_WR)
c.recv(64)
c.close()
""", port=port)
    p.communicate(timeout=30)
    srv.communicate(timeout=30)
    m.stop()
    client = [r for r in m.records() if r["comm"] == "ss-mapped"]
    assert client and client[0]["new_state"] == "SYN_SENT", client
    assert all(r["family"] == 4 and r["src"] == "127.0.0.1" and r["dst"] == "127.0.0.1" for r in client), client
