"""Filters against real traffic through the real kernel program.

Every monitor here also filters on the test's own ports (-P) where the
filter under test allows it, so other traffic on the host never matters.
"""

import pytest

from support.net import free_port, netns_pair, nft_drop
from support.procs import conversation, run_client, spawn, start_server

pytestmark = pytest.mark.bpf


def comms(m):
    """Our test processes' names in a monitor's log (a busy host may reuse our port as a client port)."""
    return {r["comm"] for r in m.records() if r["comm"].startswith("ss-")}


def ours(m):
    return [r for r in m.records() if r["comm"].startswith("ss-")]


def test_pid_filter(monitor):
    port = free_port()
    srv = start_server("127.0.0.1", port, "ss-fpid", count=1)
    m = monitor("-P", str(port), "-p", str(srv.pid), "--json", "--no-report")
    run_client("127.0.0.1", port, "ss-fpidc")
    srv.communicate(timeout=30)
    m.stop()
    recs = m.records()
    assert recs and {r["pid"] for r in recs} == {srv.pid}


def test_comm_filter_or_within_kind(monitor):
    port = free_port()
    m = monitor("-P", str(port), "-c", "ss-ca", "-c", "ss-cb", "--json", "--no-report")
    conversation("127.0.0.1", port, "ss-ca", "ss-cx")
    conversation("127.0.0.1", port, "ss-cy", "ss-cb")
    m.stop()
    assert comms(m) == {"ss-ca", "ss-cb"}


def test_src_and_dst_port(monitor):
    port = free_port()
    m = monitor("--src-port", str(port), "--json", "--no-report")
    conversation("127.0.0.1", port, "ss-sp", "ss-spc")
    m.stop()
    recs = m.records()
    assert recs and all(r["sport"] == port for r in recs) and comms(m) == {"ss-sp"}
    m2 = monitor("--dst-port", str(port), "--json", "--no-report", log_name="dst.log")
    conversation("127.0.0.1", port, "ss-dp", "ss-dpc")
    m2.stop()
    assert m2.records() and all(r["dport"] == port for r in m2.records()) and comms(m2) == {"ss-dpc"}


def test_ipv6_cidr_and_family(monitor):
    """Between two namespaces: --src with an IPv6 prefix keeps one host's side; -4 keeps IPv4 only."""
    port = free_port()
    with netns_pair() as (a, b, hosts):
        server_v6 = hosts[a][1]
        prefix = server_v6.rsplit("::", 1)[0] + "::1/128"
        m6 = monitor("-P", str(port), "--src", prefix, "--json", "--no-report", log_name="v6.log")
        m4 = monitor("-P", str(port), "-4", "--json", "--no-report", log_name="v4.log")
        srv = start_server("::", port, "ss-v6srv", count=2, dual=True, netns=a)
        try:
            run_client(server_v6, port, "ss-v6cli", netns=b)
            run_client(hosts[a][0], port, "ss-v4cli", netns=b)
            srv.communicate(timeout=30)
        finally:
            srv.kill()
        m6.stop()
        m4.stop()
    recs = m6.records()
    assert recs and all(r["src"] == server_v6 and r["family"] == 6 for r in recs), recs
    assert comms(m6) == {"ss-v6srv"}
    v4 = m4.records()
    assert v4 and all(r["family"] == 4 for r in v4) and {"ss-v4cli", "ss-v6srv"} == comms(m4)


def test_ipv4_cidr_either_end(monitor):
    port = free_port()
    with netns_pair() as (a, b, hosts):
        m = monitor("-a", hosts[b][0].rsplit(".", 1)[0] + ".2/32", "--json", "--no-report")
        srv = start_server(hosts[a][0], port, "ss-asrv", count=1, netns=a)
        try:
            run_client(hosts[a][0], port, "ss-acli", netns=b)
            srv.communicate(timeout=30)
        finally:
            srv.kill()
        m.stop()
    recs = m.records()
    # the client's own address is .2: both sides' sockets have it at one end
    assert comms(m) == {"ss-asrv", "ss-acli"}
    assert all(hosts[b][0] in (r["src"], r["dst"]) for r in recs)


def test_state_filter(monitor):
    port = free_port()
    m = monitor("-P", str(port), "-s", "established", "-s", "CLOSE", "--json", "--no-report")
    conversation("::1", port, "ss-st", "ss-stc")
    m.stop()
    recs = [r for r in ours(m) if r["event"] == "state_change"]  # (a retransmission in ESTABLISHED passes too)
    assert {r["new_state"] for r in m.records()} == {"ESTABLISHED", "CLOSE"}
    assert len(recs) == 4


def test_no_resets_and_no_retransmits(monitor):
    closed = free_port()
    lossy = free_port()
    m = monitor("-P", str(closed), "-P", str(lossy), "--no-resets", "--no-retransmits", "--json", "--no-report")
    p = spawn("""
import socket
try:
    socket.create_connection(("127.0.0.1", {port}), timeout=5)
except ConnectionRefusedError:
    pass
""", port=closed)
    p.communicate(timeout=30)
    srv = start_server("127.0.0.1", lossy, "ss-nlossy", count=2)
    try:
        with nft_drop(lossy, 30, syn_percent=5):
            run_client("127.0.0.1", lossy, "ss-nretx", count=2, size=100000, timeout=60)
        srv.communicate(timeout=60)
    finally:
        srv.kill()
    m.stop()
    events = {r["event"] for r in ours(m)}
    assert events == {"state_change"}
    assert m.totals()["filtered"] > 0


def test_a_filter_that_drops_a_busy_workload_entirely(monitor):
    """Hundreds of connections, none wanted: all counted as seen and filtered in the kernel, none sent."""
    port, unused = free_port(), free_port()
    m = monitor("-P", str(unused), "--json", "--no-report", "-q")
    srv = start_server("127.0.0.1", port, "ss-busy", count=300)
    try:
        run_client("127.0.0.1", port, "ss-busyc", count=300, size=1)
        srv.communicate(timeout=60)
    finally:
        srv.kill()
    m.stop()
    t = m.totals()
    assert t["seen"] >= 300 * 9, t
    assert t["captured"] == t["lines"] == 0, t
    assert t["filtered"] + t["captured"] == t["seen"] and t["lost"] == 0
