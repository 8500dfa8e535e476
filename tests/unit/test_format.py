"""Formatting, state names, escaping, addresses, JSON: pure user space."""

import json
import socket
import time

import pytest
from socketsnoop.kernel import abi
from socketsnoop.logformat.base import Clock
from socketsnoop.logformat.escape import escape_comm, format_addr
from socketsnoop.logformat.jsonline import JsonFormatter
from socketsnoop.logformat.text import TextFormatter
from socketsnoop.logformat.words import describe_state
from socketsnoop.output.connections import ConnectionReport
from socketsnoop.pipeline import decode
from socketsnoop.pipeline.identity import Owner


def ev(**kw):
    base = dict(ts_ns=0, skaddr=0xFFFF0001, ino=0, saddr=bytes([10, 100, 10, 150]) + bytes(12),
                daddr=bytes([10, 100, 10, 202]) + bytes(12), pid=30512, netns=4026531840, sport=39134, dport=8000,
                family=4, type=abi.EV_STATE, oldstate=1, newstate=4, owner=1, flags=0,
                comm=b"audacious".ljust(16, b"\0"))
    base.update(kw)
    return decode.make_row(**base)


@pytest.fixture
def clock(monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    c = Clock()
    # 2024-12-30 22:05:25.454 UTC at monotonic 0
    c.offset_ns = 1735596325454000000
    yield c
    monkeypatch.undo()
    time.tzset()


def test_seed_line_exactly(clock):
    line = TextFormatter(clock).format(ev())
    assert line == ("Dec 30 2024 22:05:25.454 State Change: SRC=10.100.10.150:39134 DST=10.100.10.202:8000 "
                    "PID=30512 COMM=audacious STATE=Connection Closing (FIN_WAIT1)\n")


def test_ipv6_line(clock):
    a = socket.inet_pton(socket.AF_INET6, "2001:db8::1")
    b = socket.inet_pton(socket.AF_INET6, "2001:db8::2")
    line = TextFormatter(clock).format(ev(family=6, saddr=a, daddr=b, sport=443, dport=51000, pid=812,
                                              comm=b"nginx\0", newstate=1))
    assert line.endswith("State Change: SRC=[2001:db8::1]:443 DST=[2001:db8::2]:51000 PID=812 COMM=nginx "
                         "STATE=Connection Established\n")


@pytest.mark.parametrize("etype,title", [(abi.EV_RETRANSMIT, "Retransmission"), (abi.EV_RESET_SENT, "Reset Sent"),
                                         (abi.EV_RESET_RECEIVED, "Reset Received")])
def test_other_titles(clock, etype, title):
    line = TextFormatter(clock).format(ev(type=etype, newstate=1))
    assert f".454 {title}: SRC=10.100.10.150:39134 " in line and line.endswith("STATE=Connection Established\n")


@pytest.mark.parametrize("num,words", [
    (1, "Connection Established"), (2, "Connection Opening (SYN_SENT)"), (3, "Connection Opening (SYN_RECV)"),
    (12, "Connection Opening (NEW_SYN_RECV)"), (4, "Connection Closing (FIN_WAIT1)"),
    (5, "Connection Closing (FIN_WAIT2)"), (6, "Connection Closing (TIME_WAIT)"),
    (8, "Connection Closing (CLOSE_WAIT)"), (9, "Connection Closing (LAST_ACK)"), (11, "Connection Closing (CLOSING)"),
    (7, "Connection Closed"), (10, "Listening (LISTEN)"),
])
def test_state_words(num, words):
    assert describe_state(num) == words


@pytest.mark.parametrize("raw,text", [
    (b"nginx\0\0\0", "nginx"),
    (b"a\nb", r"a\x0ab"),
    (b"\x1b[2Jx", r"\x1b[2Jx"),
    (b"two words", r"two\x20words"),
    (b"back\\slash", r"back\x5cslash"),
    (b"caf\xc3\xa9", r"caf\xc3\xa9"),
    (b"", "-"),
    (b"-", r"\x2d"),
    (b"a STATE=Connection Closed", r"a\x20STATE=Connection\x20Closed"),
])
def test_escape_comm(raw, text):
    assert escape_comm(raw) == text


def test_forged_comm_stays_one_line(clock):
    line = TextFormatter(clock).format(ev(comm=b"x\nDec 30 2024 "))
    assert line.count("\n") == 1 and line.endswith("\n")


@pytest.mark.parametrize("family,raw,text", [
    (4, bytes([127, 0, 0, 1]) + bytes(12), "127.0.0.1"),
    (6, socket.inet_pton(socket.AF_INET6, "::1"), "::1"),
    (6, socket.inet_pton(socket.AF_INET6, "fe80::1:2"), "fe80::1:2"),
])
def test_addresses(family, raw, text):
    assert format_addr(family, raw) == text


def test_json_record(clock):
    j = JsonFormatter(clock)
    line = j.format(ev(comm=b"a\nb\x1b\0", oldstate=2, newstate=1, owner=abi.OWNER_LISTENER))
    assert line.endswith("\n") and line.count("\n") == 1 and "\x1b" not in line
    r = json.loads(line)
    assert r == {
        "timestamp": "2024-12-30T22:05:25.454Z", "event": "state_change", "family": 4,
        "src": "10.100.10.150", "sport": 39134, "dst": "10.100.10.202", "dport": 8000, "pid": 30512,
        "comm": "a\nb\x1b", "owner": "listener", "old_state": "SYN_SENT", "new_state": "ESTABLISHED",
        "description": "Connection Established", "netns": 4026531840, "sock": "0xffff0001",
    }


def test_time_prefix_cache_changes_with_the_second(clock):
    t = TextFormatter(clock)
    assert t.stamp(0) == "Dec 30 2024 22:05:25.454"
    assert t.stamp(600_000_000) == "Dec 30 2024 22:05:26.054"
    assert t.stamp(500_000_000) == "Dec 30 2024 22:05:25.954"


def record_row(**kw):
    base = dict(states=(2, 1, 4, 5, 7), start_ns=1_000_000_000, ts_ns=1_012_345_678, handshake_ns=41_000,
                rtt_us=30, pid=5, comm=b"curl", sport=40000, dport=8000, saddr=bytes([10, 100, 10, 150]) + bytes(12),
                daddr=bytes([10, 100, 10, 202]) + bytes(12), bytes_sent=10, bytes_received=20, uid=1000)
    base.update(kw)
    return decode.make_record_row(**base)


def test_connection_summary_line_exact(clock):
    line = TextFormatter(clock).record_lines([record_row()])[0]
    assert line == ("Dec 30 2024 22:05:26.466 Connection Summary: SRC=10.100.10.150:40000 DST=10.100.10.202:8000 PID=5 COMM=curl "
                    "RESULT=closed DIR=out DURATION=12.346ms HANDSHAKE=0.041ms SENT=10 RECEIVED=20 RETRANSMITS=0 "
                    "RTT=0.030ms UID=1000 STATES=SYN_SENT>ESTABLISHED>FIN_WAIT1>FIN_WAIT2>CLOSE\n")


@pytest.mark.parametrize("kw,parts", [
    (dict(result=abi.RESULT_REFUSED, states=(2, 7), handshake_ns=0, rtt_us=0),
     ["RESULT=refused DIR=out", "HANDSHAKE=- ", "RTT=- ", "STATES=SYN_SENT>CLOSE\n"]),
    (dict(flags=abi.R_INCOMPLETE, direction=abi.DIR_UNKNOWN, states=(4, 5, 7)),
     ["DIR=- DURATION=- ", "STATES=...>FIN_WAIT1>FIN_WAIT2>CLOSE\n"]),
    (dict(flags=abi.R_STATES_CUT, states=(1,) * 15 + (7,)), ["STATES=" + "ESTABLISHED>" * 15 + "...>CLOSE\n"]),
    (dict(result=abi.RESULT_RESET_RECEIVED, direction=abi.DIR_IN, comm=b"a b\n"), ["COMM=a\\x20b\\x0a RESULT=reset-received DIR=in "]),
])
def test_connection_summary_variants(clock, kw, parts):
    line = TextFormatter(clock).record_lines([record_row(**kw)])[0]
    for part in parts:
        assert part in line, (part, line)
    assert line.count("\n") == 1


def test_connection_record_json(clock):
    j = JsonFormatter(clock)
    rec = json.loads(j.record_lines([record_row(comm=b'x"\n')])[0])
    assert rec == {"timestamp": "2024-12-30T22:05:26.466Z", "event": "connection", "family": 4, "src": "10.100.10.150", "sport": 40000,
                   "dst": "10.100.10.202", "dport": 8000, "pid": 5, "comm": 'x"\n', "owner": "socket",
                   "direction": "out", "result": "closed", "netns": 0, "sock": "0x0", "uid": 1000, "bytes_sent": 10,
                   "bytes_received": 20, "retransmits": 0, "rtt_ms": 0.03, "handshake_ms": 0.041,
                   "duration_ms": 12.346, "states": ["SYN_SENT", "ESTABLISHED", "FIN_WAIT1", "FIN_WAIT2", "CLOSE"],
                   "states_truncated": False, "complete": True}
    old = json.loads(j.record_lines([record_row(flags=abi.R_INCOMPLETE, direction=abi.DIR_UNKNOWN, rtt_us=0,
                                                handshake_ns=0)])[0])
    assert (old["direction"], old["duration_ms"], old["rtt_ms"], old["handshake_ms"], old["complete"]) == (
        None, None, None, None, False)


def test_exit_report_from_records(clock):
    rep = ConnectionReport(max_conns=2)
    rep.add([record_row(sport=1), record_row(sport=2), record_row(sport=3, result=abi.RESULT_TIMEOUT)])
    t = TextFormatter(clock)
    lines = list(rep.lines(t.stamp))
    assert lines[0] == "Connection Lifecycles:"
    assert lines[1] == "Connection: 10.100.10.150:2 -> 10.100.10.202:8000  (PID=5 COMM=curl duration=0.012s retransmits=0)"
    assert lines[2].endswith(": Connection Opening (SYN_SENT)") and lines[3].endswith(": Connection Established")
    assert lines[4].endswith(": Connection Closed")
    assert lines[5] == "  result=closed direction=out sent=10 received=20 handshake=0.041ms rtt=0.030ms"
    assert lines[6] == "  states: SYN_SENT > ESTABLISHED > FIN_WAIT1 > FIN_WAIT2 > CLOSE"
    assert "  result=timeout " in lines[11]
    assert lines[-2:] == ["(1 connections not shown: the report keeps the 2 most recently closed)",
                          "Connections: 2 shown, 1 not shown"]


class _Names:
    """An identity (pipeline.identity.Identity's owner()) that knows one service."""

    def owner(self, cgroup, uid, pid, comm=None):
        return Owner(uid, "nobody", "/system.slice/x.service", "x.service", None, None, "/usr/bin/curl"), True


def test_connection_record_carries_the_owners_names(clock):
    row = record_row(uid=65534, cgroup=9)
    text = TextFormatter(clock, _Names(), context=True).record_lines([row])[0]
    assert text.endswith(" UID=65534 STATES=SYN_SENT>ESTABLISHED>FIN_WAIT1>FIN_WAIT2>CLOSE USER=nobody UNIT=x.service\n")
    assert TextFormatter(clock, _Names()).record_lines([row])[0].endswith(">CLOSE\n")  # no --context: none
    rec = json.loads(JsonFormatter(clock, _Names()).record_lines([row])[0])
    assert (rec["uid"], rec["user"], rec["cgroup"], rec["unit"], rec["exe"]) == (
        65534, "nobody", "/system.slice/x.service", "x.service", "/usr/bin/curl")
    assert "container" not in rec and "pod" not in rec
