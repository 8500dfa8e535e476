"""Names that must not print alike (issue 19.12), from real processes: a process named with the empty
string is not 'no process' (text COMM=\\x00, not COMM=-), and one named with the 4 characters '\\xff' is not
one named with the byte 0xff, in text and in JSON (whose comm the journal and syslog take)."""

import pytest
from support.net import free_port
from support.procs import CLIENT, spawn, start_server

pytestmark = pytest.mark.bpf
NAMES = (b"", b"\\xff", b"\xff")


def clients(port):
    """One connection from a process of each name; their pids."""
    srv = start_server("127.0.0.1", port, "ss-names", count=len(NAMES))
    pids = {}
    try:
        for name in NAMES:
            p = spawn(CLIENT, comm=name, host="127.0.0.1", port=port, count=1, size=10, timeout=20)
            _, err = p.communicate(timeout=60)
            assert p.returncode == 0, err
            pids[name] = p.pid
        srv.communicate(timeout=30)
    finally:
        if srv.poll() is None:
            srv.kill()
            srv.communicate()
    return pids


def test_names_stay_distinct_in_text(monitor):
    port = free_port()
    m = monitor("-P", str(port), "--no-report")
    pids = clients(port)
    m.stop()
    lines = m.lines()
    for name, shown in zip(NAMES, (r"\x00", r"\x5cxff", r"\xff")):
        mine = [line for line in lines if f" PID={pids[name]} " in line]
        assert mine and all(f" COMM={shown} STATE=" in line for line in mine), (name, mine)


def test_names_stay_distinct_in_json(monitor):
    port = free_port()
    m = monitor("-P", str(port), "--json", "--no-report")
    pids = clients(port)
    m.stop()
    recs = m.records()
    for name, shown in zip(NAMES, ("", "\\\\xff", "\\xff")):
        mine = [r for r in recs if r["pid"] == pids[name]]
        assert mine and all(r["comm"] == shown for r in mine), (name, mine)
