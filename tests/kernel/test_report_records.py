"""`socket-snoop report` over the connections' summary lines ('Connection Summary:', JSON "event": "connection"):
parsing (both shapes, through the monitor's own formatters), validation, every table with its exact rows, filters,
time bounds, .gz, mixed old and new lines, hostile and malformed lines, bounds; and a log a real monitor wrote."""

import gzip
import io
import json
import re
import socket
import time

import pytest
from socketsnoop.commands import report
from socketsnoop.kernel.abi import (
    DIR_IN,
    DIR_OUT,
    DIR_UNKNOWN,
    EV_STATE,
    R_INCOMPLETE,
    R_STATES_CUT,
    RESULT_CLOSED,
    RESULT_REFUSED,
    RESULT_RESET_RECEIVED,
    RESULT_RESET_SENT,
    RESULT_TIMEOUT,
)
from socketsnoop.logformat.base import Clock
from socketsnoop.logformat.jsonline import JsonFormatter
from socketsnoop.logformat.text import TextFormatter
from socketsnoop.pipeline.decode import R_SK, STATE_NUMBERS, make_record_row, make_row
from socketsnoop.pipeline.filters import Filters

from support.net import free_port
from support.procs import conversation, spawn

T0 = 1_735_596_325_000_000_000  # 2024-12-30 22:05:25 UTC
MS = 1_000_000
HOSTILE = b"n\x1b]0;X\x07\nCOMM=x"  # 14 bytes: a name the kernel can hold
HOSTILE_ESC = "n\\x1b]0;X\\x07\\x0aCOMM=x"


def v4(a):
    return socket.inet_aton(a) + bytes(12)


def v6(a):
    return socket.inet_pton(socket.AF_INET6, a)


def st(*names):
    return tuple(STATE_NUMBERS[n] for n in names)


def rows(clock):
    """Records as the kernel gives them (times on the monotonic clock), one of each kind the tables count."""
    t = T0 - clock.offset_ns
    full = st("SYN_SENT", "ESTABLISHED", "FIN_WAIT1", "FIN_WAIT2", "CLOSE")
    failed = st("SYN_SENT", "CLOSE")
    curl = {"pid": 42, "comm": b"curl", "saddr": v4("192.0.2.1"), "family": 4, "direction": DIR_OUT}
    web = {"pid": 7, "comm": HOSTILE, "saddr": v4("192.0.2.1"), "sport": 80, "family": 4, "direction": DIR_IN}
    return [
        # 0: curl, closed, the most bytes, the slowest handshake
        make_record_row(ts_ns=t + 2000 * MS, skaddr=0xA1, start_ns=t, handshake_ns=12_500_000, bytes_sent=1000,
                        bytes_received=50000, states=full, rtt_us=3000, retransmits=2, sport=50000, dport=443,
                        daddr=v4("198.51.100.7"), **curl),
        # 1: curl, refused
        make_record_row(ts_ns=t + 2100 * MS, skaddr=0xA2, start_ns=t + 2099 * MS, states=failed,
                        result=RESULT_REFUSED, sport=50001, dport=443, daddr=v4("198.51.100.7"), **curl),
        # 2: curl, timeout, to the same destination
        make_record_row(ts_ns=t + 9000 * MS, skaddr=0xA3, start_ns=t + 2200 * MS, states=failed,
                        result=RESULT_TIMEOUT, sport=50002, dport=443, daddr=v4("198.51.100.7"), **curl),
        # 3: curl over IPv6, refused
        make_record_row(ts_ns=t + 9100 * MS, skaddr=0xA4, start_ns=t + 9099 * MS, states=failed,
                        result=RESULT_REFUSED, pid=42, comm=b"curl", saddr=v6("2001:db8::1"), sport=50003,
                        daddr=v6("2001:db8::2"), dport=443, family=6, direction=DIR_OUT),
        # 4, 5: the web server (a hostile name) resets two clients
        make_record_row(ts_ns=t + 9200 * MS, skaddr=0xB1, start_ns=t + 9000 * MS, handshake_ns=200_000,
                        bytes_sent=300, bytes_received=200, states=st("SYN_RECV", "ESTABLISHED", "CLOSE"),
                        result=RESULT_RESET_SENT, daddr=v4("203.0.113.5"), dport=40000, rtt_us=150, **web),
        make_record_row(ts_ns=t + 9300 * MS, skaddr=0xB2, start_ns=t + 9000 * MS, handshake_ns=300_000,
                        bytes_sent=30, bytes_received=20, states=st("SYN_RECV", "ESTABLISHED", "CLOSE"),
                        result=RESULT_RESET_SENT, daddr=v4("203.0.113.5"), dport=40001, **web),
        # 6: ssh, began before the monitor (no duration, direction unknown), reset by the peer, history cut
        make_record_row(ts_ns=t + 9400 * MS, skaddr=0xC1, handshake_ns=0, bytes_sent=10, bytes_received=20,
                        states=st("ESTABLISHED", "FIN_WAIT1", "CLOSE"), flags=R_INCOMPLETE | R_STATES_CUT,
                        result=RESULT_RESET_RECEIVED, pid=9, comm=b"sshd", saddr=v4("192.0.2.1"), sport=22,
                        daddr=v4("203.0.113.6"), dport=5555, family=4, direction=DIR_UNKNOWN),
        # 7: ssh, closed, nothing sent
        make_record_row(ts_ns=t + 9500 * MS, skaddr=0xC2, start_ns=t + 9400 * MS, handshake_ns=40_000_000,
                        states=st("SYN_RECV", "ESTABLISHED", "CLOSE_WAIT", "LAST_ACK", "CLOSE"),
                        result=RESULT_CLOSED, pid=9, comm=b"sshd", saddr=v4("192.0.2.1"), sport=22,
                        daddr=v4("203.0.113.7"), dport=6000, family=4, direction=DIR_IN),
    ]


def lines(fmt):
    clock = Clock()
    formatter = (TextFormatter if fmt == "text" else JsonFormatter)(clock)
    return "".join(formatter.record_lines(rows(clock)))


# every table's exact rows, the same from either format
EXPECTED = {
    "connections": 8,
    "failed": 6,
    "bytes_sent": 1340,
    "bytes_received": 50240,
    "failed_by_cause": {"refused": 2, "reset-sent": 2, "reset-received": 1, "timeout": 1},
    "failed_by_destination": [
        {"remote": "198.51.100.7:443", "failed": 2, "causes": {"refused": 1, "timeout": 1}},
        {"remote": "203.0.113.5:40000", "failed": 1, "causes": {"reset-sent": 1}},
        {"remote": "203.0.113.5:40001", "failed": 1, "causes": {"reset-sent": 1}},
    ],
    "top_connections_by_bytes": [
        {"src": "192.0.2.1:50000", "dst": "198.51.100.7:443", "pid": 42, "comm": "curl", "direction": "out",
         "result": "closed", "bytes_sent": 1000, "bytes_received": 50000, "handshake_ms": 12.5,
         "duration_ms": 2000.0, "end": "2024-12-30T22:05:27.000Z"},
        {"src": "192.0.2.1:80", "dst": "203.0.113.5:40000", "pid": 7, "comm": HOSTILE_ESC, "direction": "in",
         "result": "reset-sent", "bytes_sent": 300, "bytes_received": 200, "handshake_ms": 0.2,
         "duration_ms": 200.0, "end": "2024-12-30T22:05:34.200Z"},
        {"src": "192.0.2.1:80", "dst": "203.0.113.5:40001", "pid": 7, "comm": HOSTILE_ESC, "direction": "in",
         "result": "reset-sent", "bytes_sent": 30, "bytes_received": 20, "handshake_ms": 0.3,
         "duration_ms": 300.0, "end": "2024-12-30T22:05:34.300Z"},
    ],
    "top_processes_by_bytes": [
        {"pid": 42, "comm": "curl", "bytes_sent": 1000, "bytes_received": 50000, "connections": 4},
        {"pid": 7, "comm": HOSTILE_ESC, "bytes_sent": 330, "bytes_received": 220, "connections": 2},
        {"pid": 9, "comm": "sshd", "bytes_sent": 10, "bytes_received": 20, "connections": 2},
    ],
    "slowest_handshakes": [
        {"src": "192.0.2.1:22", "dst": "203.0.113.7:6000", "pid": 9, "comm": "sshd", "direction": "in",
         "result": "closed", "bytes_sent": 0, "bytes_received": 0, "handshake_ms": 40.0, "duration_ms": 100.0,
         "end": "2024-12-30T22:05:34.500Z"},
        {"src": "192.0.2.1:50000", "dst": "198.51.100.7:443", "pid": 42, "comm": "curl", "direction": "out",
         "result": "closed", "bytes_sent": 1000, "bytes_received": 50000, "handshake_ms": 12.5,
         "duration_ms": 2000.0, "end": "2024-12-30T22:05:27.000Z"},
        {"src": "192.0.2.1:80", "dst": "203.0.113.5:40001", "pid": 7, "comm": HOSTILE_ESC, "direction": "in",
         "result": "reset-sent", "bytes_sent": 30, "bytes_received": 20, "handshake_ms": 0.3,
         "duration_ms": 300.0, "end": "2024-12-30T22:05:34.300Z"},
    ],
    "resets_sent_by_process": [{"pid": 7, "comm": HOSTILE_ESC, "connections": 2}],
    "resets_received_by_remote": [{"remote": "203.0.113.6:5555", "connections": 1}],
}

EXPECTED_TEXT = f"""\
Connections (from the summary lines): 8, 6 failed; 1.3 KiB sent, 49.1 KiB received
  failed by cause: refused 2, reset-sent 2, reset-received 1, timeout 1
Failed connections by destination (top 3): failed (by cause)
  198.51.100.7:443: 2 (refused 1, timeout 1)
  203.0.113.5:40000: 1 (reset-sent 1)
  203.0.113.5:40001: 1 (reset-sent 1)
Top connections by bytes (top 3): sent, received (result, duration)
  192.0.2.1:50000 -> 198.51.100.7:443 PID=42 COMM=curl: 1000 B sent, 48.8 KiB received (closed, 2.00 s)
  192.0.2.1:80 -> 203.0.113.5:40000 PID=7 COMM={HOSTILE_ESC}: 300 B sent, 200 B received (reset-sent, 200 ms)
  192.0.2.1:80 -> 203.0.113.5:40001 PID=7 COMM={HOSTILE_ESC}: 30 B sent, 20 B received (reset-sent, 300 ms)
Top processes by bytes (top 3): sent, received, connections
  PID=42 COMM=curl: 1000 B sent, 48.8 KiB received, 4 connections
  PID=7 COMM={HOSTILE_ESC}: 330 B sent, 220 B received, 2 connections
  PID=9 COMM=sshd: 10 B sent, 20 B received, 2 connections
Slowest handshakes (top 3): handshake (direction, result)
  192.0.2.1:22 -> 203.0.113.7:6000 PID=9 COMM=sshd: 40.0 ms (in, closed)
  192.0.2.1:50000 -> 198.51.100.7:443 PID=42 COMM=curl: 12.5 ms (out, closed)
  192.0.2.1:80 -> 203.0.113.5:40001 PID=7 COMM={HOSTILE_ESC}: 300 us (in, reset-sent)
Resets by who sent them (top 3): 2 sent by us, 1 by the peer
  sent by PID=7 COMM={HOSTILE_ESC}: 2 connections
  received from 203.0.113.6:5555: 1 connections
"""


def run(argv):
    out = io.StringIO()
    status = report.run(report.build_parser().parse_args(argv), out)
    return status, out.getvalue()


def write(tmp_path, name, text, gz=False):
    p = tmp_path / name
    if gz:
        with gzip.open(p, "wt") as f:
            f.write(text)
    else:
        p.write_text(text)
    return str(p)


def records_section(out):
    """The text output's lines of the summary lines' tables (up to the distributions)."""
    out = out[out.index("Connections (from the summary lines):"):]
    return out[:out.index("Connection duration (")]


@pytest.mark.parametrize("fmt, gz", [("text", False), ("json", False), ("text", True), ("json", True)])
def test_every_table_exact(tmp_path, fmt, gz):
    path = write(tmp_path, f"s.{fmt}" + (".gz" if gz else ""), lines(fmt), gz=gz)
    status, out = run([path, "--json", "--top", "10"])
    d = json.loads(out)
    assert status == 0 and d["malformed"] == 0 and d["events"] == 0 and d["filtered_out"] == 0
    got = d["connection_summaries"]
    want = dict(EXPECTED)
    # --top 10: every row (ties: the first seen first)
    assert got["failed_by_destination"] == want.pop("failed_by_destination") + [
        {"remote": "203.0.113.6:5555", "failed": 1, "causes": {"reset-received": 1}},
        {"remote": "[2001:db8::2]:443", "failed": 1, "causes": {"refused": 1}}]
    assert [c["dst"] for c in got["top_connections_by_bytes"]] == [
        "198.51.100.7:443", "203.0.113.5:40000", "203.0.113.5:40001", "203.0.113.6:5555", "198.51.100.7:443",
        "198.51.100.7:443", "[2001:db8::2]:443", "203.0.113.7:6000"]
    assert [c["handshake_ms"] for c in got["slowest_handshakes"]] == [40.0, 12.5, 0.3, 0.2]  # only those with one
    assert d["first"] == "2024-12-30T22:05:27.000Z" and d["last"] == "2024-12-30T22:05:34.500Z"
    d = json.loads(run([path, "--json", "--top", "3"])[1])
    assert d["connection_summaries"] == EXPECTED
    status, out = run([path, "--top", "3"])
    assert records_section(out) == EXPECTED_TEXT
    assert "Summary: 0 events and 8 connection summaries (" in out


def test_text_and_json_lines_parse_to_the_same_summaries():
    parser = report.parse.Parser()
    text = [parser.parse(line) for line in lines("text").splitlines()]
    js = [parser.parse(line) for line in lines("json").splitlines()]
    assert all(type(s) is report.parse.Summary for s in text + js)
    assert [s._replace(sock=None) for s in js] == text
    assert [s.sock for s in js] == [0xA1, 0xA2, 0xA3, 0xA4, 0xB1, 0xB2, 0xC1, 0xC2]
    s = text[0]
    assert (s.family, str(s.src), s.sport, str(s.dst), s.dport, s.pid, s.comm) == (
        4, "192.0.2.1", 50000, "198.51.100.7", 443, 42, b"curl")
    assert (s.result, s.direction, s.duration_us, s.handshake_us, s.sent, s.received, s.retransmits, s.rtt_us,
            s.uid) == ("closed", "out", 2_000_000, 12_500, 1000, 50000, 2, 3000, 0)
    assert s.states == ("SYN_SENT", "ESTABLISHED", "FIN_WAIT1", "FIN_WAIT2", "CLOSE") and s.complete
    ssh = text[6]  # began before the monitor, history cut: '...>ESTABLISHED>FIN_WAIT1>...>CLOSE'
    assert "STATES=...>ESTABLISHED>FIN_WAIT1>...>CLOSE" in lines("text").splitlines()[6]
    assert (ssh.states, ssh.states_cut, ssh.complete, ssh.direction, ssh.duration_us, ssh.handshake_us) == (
        ("ESTABLISHED", "FIN_WAIT1", "CLOSE"), True, False, None, None, None)
    assert text[4].comm == HOSTILE  # unescaped to the raw name; the output escapes it again


def test_mixed_old_and_new_lines(tmp_path):
    """Event lines and summary lines in one file, text and JSON: the events' tables are those of the event
    lines alone, the summary lines add their tables."""
    old = "".join(f"{line}\n" for line in OLD_LINES)
    mixed = ""
    new_text, new_json = lines("text").splitlines(True), lines("json").splitlines(True)
    for i, line in enumerate(OLD_LINES):
        mixed += line + "\n" + (new_text[i] if i < len(new_text) else "")
    mixed += "".join(new_text[len(OLD_LINES):]) + "".join(new_json)
    _, out_old = run([write(tmp_path, "old.log", old), "--top", "3"])
    status, out = run([write(tmp_path, "mixed.log.gz", mixed, gz=True), "--top", "3"])
    assert status == 0
    keep = lambda text: [ln for ln in text.splitlines() if not ln.startswith("Summary: ")]  # noqa: E731
    head = out[:out.index("Connections (from the summary lines):")]
    tables_old = out_old[:out_old.index("Connections per minute")]
    assert keep(head) == keep(tables_old)  # the events' tables unchanged
    life = out[out.index("Connection Lifecycles:"):]
    assert life == out_old[out_old.index("Connection Lifecycles:"):]  # the lifecycles unchanged
    assert "Summary: 4 events and 16 connection summaries (" in out and "0 malformed" in out
    d = json.loads(run([str(tmp_path / "mixed.log.gz"), "--json", "--top", "3"])[1])
    r = d["connection_summaries"]
    assert r["connections"] == 16 and r["failed_by_cause"] == {k: 2 * n for k, n in EXPECTED["failed_by_cause"].items()}
    assert r["top_processes_by_bytes"][0] == {"pid": 42, "comm": "curl", "bytes_sent": 2000,
                                              "bytes_received": 100000, "connections": 8}
    assert d["events"] == 4 and d["by_event"] == {"state_change": 4}


OLD_LINES = [
    "Dec 30 2024 22:05:25.454 State Change: SRC=10.100.10.150:0 DST=10.100.10.202:8000 PID=30512 COMM=audacious "
    "STATE=Connection Opening (SYN_SENT)",
    "Dec 30 2024 22:05:25.455 State Change: SRC=10.100.10.150:39134 DST=10.100.10.202:8000 PID=30512 "
    "COMM=audacious STATE=Connection Established",
    "Dec 30 2024 22:05:27.454 State Change: SRC=10.100.10.150:39134 DST=10.100.10.202:8000 PID=30512 "
    "COMM=audacious STATE=Connection Closing (FIN_WAIT1)",
    "Dec 30 2024 22:05:27.500 State Change: SRC=[2001:db8::1]:443 DST=[2001:db8::2]:5555 PID=77 COMM=my\\x20app "
    "STATE=Connection Closed",
]


def test_old_logs_have_no_summary_tables(tmp_path):
    path = write(tmp_path, "old.log", "".join(f"{line}\n" for line in OLD_LINES))
    _, out = run([path])
    assert "Connections (from the summary lines)" not in out and "connection summaries" not in out
    assert any(line.startswith("Summary: 4 events (D") for line in out.splitlines())
    d = json.loads(run([path, "--json"])[1])
    assert "connection_summaries" not in d and all("result" not in c for c in d["connections"])


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_lifecycles_show_how_a_connection_ended(tmp_path, fmt):
    """A connection's event lines, then its summary line: its lifecycle shows the result, bytes and duration.
    A summary with no lifecycle (its events not in the log) joins none."""
    clock = Clock()
    t = T0 - clock.offset_ns
    curl = {"skaddr": 0xA1, "ino": 5, "saddr": v4("192.0.2.1"), "daddr": v4("198.51.100.7"), "pid": 42,
            "netns": 1, "dport": 443, "family": 4, "owner": 1, "comm": b"curl"}
    events = [make_row(ts_ns=t, sport=0, type=EV_STATE, oldstate=7, newstate=2, **curl),
              make_row(ts_ns=t + 12 * MS, sport=50000, type=EV_STATE, oldstate=2, newstate=1, **curl),
              make_row(ts_ns=t + 2000 * MS, sport=50000, type=EV_STATE, oldstate=4, newstate=7, **curl)]
    formatter = (TextFormatter if fmt == "text" else JsonFormatter)(clock)
    recs = rows(clock)
    log = "".join(formatter.format(e) for e in events) + "".join(formatter.record_lines(recs[:2]))
    path = write(tmp_path, "l.log", log)
    _, out = run([path])
    assert ("Connection: 192.0.2.1:50000 -> 198.51.100.7:443  (PID=42 COMM=curl duration=2.000s retransmits=0; "
            "closed, 1000 B sent, 48.8 KiB received, 2.00 s)") in out
    assert out.count("Connection: ") == 1
    conns = json.loads(run([path, "--json"])[1])["connections"]
    assert len(conns) == 1 and conns[0]["result"] == "closed" and conns[0]["duration_ms"] == 2000.0
    assert (conns[0]["bytes_sent"], conns[0]["bytes_received"]) == (1000, 50000)


def test_filters_and_time_bounds(tmp_path):
    path = write(tmp_path, "s.log", lines("text"))

    def summaries(*args):
        d = json.loads(run([path, "--json", "--top", "100", *args])[1])
        return d["connection_summaries"], d["filtered_out"]

    r, filtered = summaries("-p", "7")
    assert r["connections"] == 2 and filtered == 6 and r["resets_sent_by_process"][0]["pid"] == 7
    assert summaries("-c", "sshd")[0]["connections"] == 2
    assert summaries("-c", HOSTILE.decode())[0]["connections"] == 2  # the raw name
    assert summaries("-P", "443")[0]["connections"] == 4
    assert summaries("--dst-port", "443", "-4")[0]["connections"] == 3
    assert summaries("-6")[0]["failed_by_destination"] == [
        {"remote": "[2001:db8::2]:443", "failed": 1, "causes": {"refused": 1}}]
    assert summaries("--dst", "203.0.113.0/24")[0]["connections"] == 4
    assert summaries("--src", "2001:db8::/32")[0]["connections"] == 1
    # the state filter is for events: the kernel's lets every connection record pass (the differential test,
    # tests/kernel/test_filter_differential.py, holds the two to the same verdict)
    r, filtered = summaries("-s", "ESTABLISHED")
    assert r["connections"] == 8 and filtered == 0
    assert summaries("-s", "CLOSE")[0]["connections"] == 8
    assert summaries("--no-resets", "--no-retransmits")[0]["connections"] == 8  # they drop events, not summaries
    r, filtered = summaries("--since", "2024-12-30T22:05:29Z", "--until", "2024-12-30T22:05:34.200Z")
    assert (r["connections"], filtered) == (3, 5)
    assert [c["dst"] for c in r["top_connections_by_bytes"]] == [
        "203.0.113.5:40000", "198.51.100.7:443", "[2001:db8::2]:443"]


def test_hostile_comm_and_addresses_never_reach_the_output_raw(tmp_path):
    text = ("Dec 30 2024 22:05:25.000 Connection Summary: SRC=10.0.0.1:1 DST=10.0.0.2:2 PID=5 "
            "COMM=\x1b]0;PWNED\x07 RESULT=reset-sent DIR=out DURATION=1.000ms HANDSHAKE=0.500ms SENT=1 RECEIVED=2 "
            "RETRANSMITS=0 RTT=0.100ms UID=0 STATES=SYN_SENT>ESTABLISHED>CLOSE\n")
    js = json.dumps({"timestamp": "2024-12-30T22:05:26.000Z", "event": "connection", "family": 4,
                     "src": "10.0.0.1", "sport": 3, "dst": "10.0.0.2", "dport": 4, "pid": 6,
                     "comm": "evil\x1b[2J\nCOMM=x\u202e", "owner": "socket", "netns": 1, "sock": "0x1", "uid": 0,
                     "direction": "in", "result": "reset-sent", "bytes_sent": 5, "bytes_received": 0,
                     "retransmits": 0, "rtt_ms": None, "handshake_ms": 0.25, "duration_ms": None,
                     "states": ["SYN_RECV", "CLOSE"], "states_truncated": False, "complete": True}) + "\n"
    path = write(tmp_path, "h.log", text + js)
    for extra in ([], ["--json"]):
        status, out = run([path, *extra])
        assert status == 0 and "\x1b" not in out and "\x07" not in out and "\u202e" not in out
        assert all(c.isprintable() or c == "\n" for c in out)
    _, out = run([path])
    assert "sent by PID=5 COMM=\\x1b]0;PWNED\\x07: 1 connections" in out
    assert "sent by PID=6 COMM=evil\\x1b[2J\\x0aCOMM=x\\xe2\\x80\\xae: 1 connections" in out
    d = json.loads(run([path, "--json"])[1])
    assert [p["comm"] for p in d["connection_summaries"]["resets_sent_by_process"]] == [
        "\\x1b]0;PWNED\\x07", "evil\\x1b[2J\\x0aCOMM=x\\xe2\\x80\\xae"]


GOOD_TEXT = ("Dec 30 2024 22:05:25.000 Connection Summary: SRC=10.0.0.1:1 DST=10.0.0.2:2 PID=5 COMM=x "
             "RESULT=closed DIR=out DURATION=1.000ms HANDSHAKE=0.500ms SENT=1 RECEIVED=2 RETRANSMITS=0 "
             "RTT=0.100ms UID=0 STATES=SYN_SENT>ESTABLISHED>CLOSE")
GOOD_JSON = {"timestamp": "2024-12-30T22:05:26.000Z", "event": "connection", "family": 4, "src": "10.0.0.1",
             "sport": 3, "dst": "10.0.0.2", "dport": 4, "pid": 6, "comm": "x", "owner": "socket", "netns": 1,
             "sock": "0x1", "uid": 0, "direction": "in", "result": "closed", "bytes_sent": 5, "bytes_received": 0,
             "retransmits": 0, "rtt_ms": 0.1, "handshake_ms": 0.25, "duration_ms": 3.5,
             "states": ["SYN_RECV", "ESTABLISHED", "CLOSE"], "states_truncated": False, "complete": True}
BAD_TEXT = [
    ("RESULT=closed", "RESULT=exploded"), ("DIR=out", "DIR=sideways"), ("SENT=1", f"SENT={2**64}"),
    ("RETRANSMITS=0", f"RETRANSMITS={2**32}"), ("UID=0", f"UID={2**32}"), ("PID=5", f"PID={2**32}"),
    ("DURATION=1.000ms", "DURATION=1.2ms"), ("HANDSHAKE=0.500ms", "HANDSHAKE=0.500s"), ("RTT=0.100ms", "RTT=x"),
    ("STATES=SYN_SENT>ESTABLISHED>CLOSE", "STATES=SYN_SENT>BOGUS>CLOSE"),
    ("STATES=SYN_SENT>ESTABLISHED>CLOSE", "STATES=SYN_SENT>...>ESTABLISHED>CLOSE"),
    ("STATES=SYN_SENT>ESTABLISHED>CLOSE", "STATES=SYN_SENT>>CLOSE"),
    ("SRC=10.0.0.1:1", "SRC=[::1%\x1b]0;x\x07]:1"), ("DST=10.0.0.2:2", "DST=[::2]:2"),
    ("DST=10.0.0.2:2", "DST=10.0.0.2:65536"), ("Dec 30", "Dec 32"), ("UID=0 ", "UID=0 EXTRA=1 "),
    ("Connection Summary", "Connection Summery"),
]
BAD_JSON = [
    {"result": "exploded"}, {"result": None}, {"direction": "up"}, {"direction": 1}, {"bytes_sent": -1},
    {"bytes_sent": True}, {"bytes_received": 2**64}, {"bytes_received": 1.5}, {"retransmits": 2**32},
    {"uid": "0"}, {"pid": 2**32}, {"sport": 65536}, {"rtt_ms": "5"}, {"rtt_ms": float("nan")}, {"rtt_ms": -1},
    {"handshake_ms": 1e300}, {"duration_ms": True}, {"states": ["BOGUS"]}, {"states": "SYN_SENT"},
    {"states": ["SYN_SENT"] * 65}, {"states": [1]}, {"states_truncated": "no"}, {"complete": 1},
    {"family": 5}, {"src": "::1%eth0"}, {"src": "10.0.0.1\nFORGED"}, {"dst": "::2"}, {"comm": 5},
    {"timestamp": "yesterday"}, {"uid": None}, {"event": "connexion"},
]


def test_malformed_summary_lines_are_counted_and_skipped(tmp_path, capsys):
    bad = [GOOD_TEXT.replace(old, new) for old, new in BAD_TEXT]
    assert all(b != GOOD_TEXT for b in bad)
    bad += [json.dumps({**GOOD_JSON, **change}) for change in BAD_JSON]
    bad += [json.dumps({k: v for k, v in GOOD_JSON.items() if k != key}) for key in (
        "uid", "result", "direction", "bytes_sent", "states", "complete", "rtt_ms")]
    parser = report.parse.Parser()
    for line in bad:
        with pytest.raises(report.parse.Malformed):
            parser.parse(line)
    path = write(tmp_path, "bad.log", "\n".join([GOOD_TEXT, *bad, json.dumps(GOOD_JSON)]) + "\n")
    status, out = run([path, "--json"])
    d = json.loads(out)
    assert status == 0 and d["malformed"] == len(bad) and d["connection_summaries"]["connections"] == 2
    assert "FORGED" not in out and "\x1b" not in out
    assert f"{len(bad)} malformed lines skipped (the first at" in capsys.readouterr().err
    # the good ones, exactly
    s = parser.parse(GOOD_TEXT)
    assert (s.duration_us, s.handshake_us, s.rtt_us, s.sent, s.received) == (1000, 500, 100, 1, 2)
    s = parser.parse(json.dumps(GOOD_JSON))
    assert (s.duration_us, s.handshake_us, s.rtt_us, s.direction, s.sock) == (3500, 250, 100, "in", 1)


def test_tables_are_bounded(tmp_path):
    parser = report.parse.Parser()
    rep = report.aggregate.Report(Filters(), table_limit=3)
    for i in range(10):
        for result in ("reset-sent", "reset-received"):
            rep.add(parser.parse(GOOD_TEXT.replace("PID=5", f"PID={100 + i}").replace("RESULT=closed",
                    f"RESULT={result}").replace("SENT=1 ", f"SENT={i} ").replace("DST=10.0.0.2:2", f"DST=10.0.0.2:{i + 1}")
                    .replace("HANDSHAKE=0.500ms", f"HANDSHAKE={i}.000ms")))
    r = rep.records
    assert len(r.failed_dst) == len(r.proc_bytes) == len(r.resets_sent) == len(r.resets_received) == 3
    assert len(r.by_bytes) == len(r.handshakes) == 3
    assert rep.left_out == {"failed_destinations": 14, "process_bytes": 14, "resets_sent": 7, "resets_received": 7}
    s = r.summary(10)
    assert [c["bytes_sent"] for c in s["top_connections_by_bytes"]] == [9, 9, 8]  # the top ones, whatever came first
    assert [c["handshake_ms"] for c in s["slowest_handshakes"]] == [9.0, 9.0, 8.0]
    assert s["connections"] == 20 and s["failed"] == 20  # the counts are whole
    text = "\n".join(report.render.text_lines(rep, 3, False, TextFormatter(Clock()).stamp))
    assert ("Left out: 14 connections not counted in Failed connections by destination (each table keeps its first "
            "3 keys); 14 connections not counted in Top processes by bytes; 7 connections not counted in Resets sent "
            "by process; 7 connections not counted in Resets received by remote") in text


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_lifecycles_join_their_own_summaries_on_a_reused_socket(tmp_path, fmt):
    """A monitor writes a batch's summary lines after its state changes: a refused connect's socket, freed,
    serves the next connection, which closes before the first one's summary line is written. Each lifecycle
    gets its own summary (the join is by socket and addresses); and a summary line before its CLOSE line
    joins it too."""
    clock = Clock()
    t = T0 - clock.offset_ns
    who = {"skaddr": 0xA1, "saddr": v4("192.0.2.1"), "daddr": v4("198.51.100.7"), "pid": 42, "netns": 1,
           "dport": 443, "family": 4, "owner": 1, "comm": b"curl"}
    refused = [make_row(ts_ns=t, sport=0, type=EV_STATE, oldstate=7, newstate=2, **who),
               make_row(ts_ns=t + MS, sport=50001, type=EV_STATE, oldstate=2, newstate=7, **who)]
    closed = [make_row(ts_ns=t + 10 * MS, sport=0, type=EV_STATE, oldstate=7, newstate=2, **who),
              make_row(ts_ns=t + 12 * MS, sport=50000, type=EV_STATE, oldstate=2, newstate=1, **who),
              make_row(ts_ns=t + 2000 * MS, sport=50000, type=EV_STATE, oldstate=4, newstate=7, **who)]
    closed_rec, refused_rec = (r[:R_SK] + (0xA1,) + r[R_SK + 1:] for r in rows(clock)[:2])  # both at 0xA1
    formatter = (TextFormatter if fmt == "text" else JsonFormatter)(clock)

    def fmt_rows(rs):
        return "".join(formatter.format(e) for e in rs)
    summaries = formatter.record_lines([refused_rec, closed_rec])
    for log in (fmt_rows(refused) + fmt_rows(closed) + "".join(summaries),  # both summaries after both
                summaries[0] + fmt_rows(refused) + fmt_rows(closed) + summaries[1]):  # one before its CLOSE
        _, out = run([write(tmp_path, "l.log", log)])
        heads = sorted(line for line in out.splitlines() if line.startswith("Connection: "))
        assert len(heads) == 2, out
        assert heads[0].startswith("Connection: 192.0.2.1:50000 -> 198.51.100.7:443 ") and \
            heads[0].endswith("; closed, 1000 B sent, 48.8 KiB received, 2.00 s)"), heads
        assert heads[1].startswith("Connection: 192.0.2.1:50001 -> 198.51.100.7:443 ") and \
            heads[1].endswith("; refused, 0 B sent, 0 B received, 1.00 ms)"), heads


def test_lifecycle_joins_are_bounded():
    """CLOSE lines that no summary follows (an old log), summaries that join, and summaries that no CLOSE
    line follows: each map keeps join_limit."""
    parser = report.parse.Parser()
    rep = report.aggregate.Report(Filters(), max_conns=5, table_limit=5)
    for i in range(40):
        close = (f"Dec 30 2024 22:05:25.000 State Change: SRC=10.0.0.1:{1000 + i} DST=10.0.0.2:2 PID=5 COMM=x "
                 "STATE=Connection Closed")
        rep.add(parser.parse(close))
        if i % 2:
            rep.add(parser.parse(GOOD_TEXT.replace("SRC=10.0.0.1:1 ", f"SRC=10.0.0.1:{1000 + i} ")))
    assert len(rep.just_closed) <= 5 and len(rep.outcomes) == 5
    assert "joins" not in rep.left_out  # not the joins of a connection's lines: nothing to report
    assert [o.sport for o in rep.outcomes.values()] == [1031, 1033, 1035, 1037, 1039]
    for i in range(40):  # summaries whose CLOSE lines never come (a log that starts mid-way)
        rep.add(parser.parse(GOOD_TEXT.replace("SRC=10.0.0.1:1 ", f"SRC=10.0.0.1:{2000 + i} ")))
    assert len(rep.early) == 5 and [s.sport for s in rep.early.values()] == [2035, 2036, 2037, 2038, 2039]


def test_summary_lines_order_the_files(tmp_path):
    """A file of summary lines only (--summary-only) has a first time too: rotated files in time order."""
    text = lines("text").splitlines(True)
    newer = write(tmp_path, "s.log", "".join(text[4:]))
    older = write(tmp_path, "s.log.1.gz", "".join(text[:4]), gz=True)
    d = json.loads(run([newer, older, "--json", "--top", "3"])[1])
    assert d["connection_summaries"] == EXPECTED and d["first"] == "2024-12-30T22:05:27.000Z"


REFUSE = """
import ctypes, socket
ctypes.CDLL(None).prctl(15, {comm!r}, 0, 0, 0)
c = socket.socket()
try:
    c.connect(('127.0.0.1', {port}))
except ConnectionRefusedError:
    print('refused', flush=True)
"""


@pytest.mark.bpf
def test_report_on_the_log_a_real_monitor_wrote(monitor):
    """A real monitor (text and JSON logs at once) sees a refused connect and a normal connection; the report
    on either log has them in its tables, exactly."""
    port, closed = free_port(), free_port()
    mt = monitor("-P", str(port), "-P", str(closed), summary=True, log_name="m.log")
    mj = monitor("-P", str(port), "-P", str(closed), "--json", summary=True, log_name="m.json")
    refuser = spawn(REFUSE, comm=b"ss-rprefused", port=closed)
    out, err = refuser.communicate(timeout=30)
    assert out == "refused\n", err
    srv_pid, cli_pid = conversation("127.0.0.1", port, "ss-rpsrv", "ss-rpcli", size=1234)
    time.sleep(0.3)
    mt.stop()
    mj.stop()
    docs = []
    ours = ["-c", "ss-rpcli", "-c", "ss-rpsrv", "-c", "ss-rprefused"]  # another test's connection may use our ports
    for m in (mt, mj):
        status, out = run([str(m.log), "--json", *ours])
        d = json.loads(out)
        assert status == 0 and d["malformed"] == 0, out
        docs.append(d["connection_summaries"])
        r = d["connection_summaries"]
        assert r["connections"] == 3 and r["failed"] == 1, r
        assert r["failed_by_cause"] == {"refused": 1}
        assert r["failed_by_destination"] == [{"remote": f"127.0.0.1:{closed}", "failed": 1,
                                               "causes": {"refused": 1}}]
        assert r["bytes_sent"] == r["bytes_received"] == 1234 + 7  # 'ok:1234' back
        procs = {(p["pid"], p["comm"]): p for p in r["top_processes_by_bytes"]}
        assert procs[(cli_pid, "ss-rpcli")] == {"pid": cli_pid, "comm": "ss-rpcli", "bytes_sent": 1234,
                                                "bytes_received": 7, "connections": 1}
        assert procs[(srv_pid, "ss-rpsrv")] == {"pid": srv_pid, "comm": "ss-rpsrv", "bytes_sent": 7,
                                                "bytes_received": 1234, "connections": 1}
        assert procs[(refuser.pid, "ss-rprefused")]["connections"] == 1
        top = r["top_connections_by_bytes"]
        assert {(c["comm"], c["direction"], c["result"], c["bytes_sent"], c["bytes_received"]) for c in top} == {
            ("ss-rpcli", "out", "closed", 1234, 7), ("ss-rpsrv", "in", "closed", 7, 1234),
            ("ss-rprefused", "out", "refused", 0, 0)}
        assert top[-1]["comm"] == "ss-rprefused" and top[-1]["handshake_ms"] is None
        assert {c["comm"] for c in r["slowest_handshakes"]} == {"ss-rpcli", "ss-rpsrv"}
        assert all(c["handshake_ms"] > 0 and c["duration_ms"] > 0 for c in r["slowest_handshakes"])
        assert r["resets_sent_by_process"] == r["resets_received_by_remote"] == []
    # the same from the text log and the JSON log, but for the times each monitor took itself
    for doc in docs:
        for table in ("top_connections_by_bytes", "slowest_handshakes"):
            doc[table] = sorted(({k: v for k, v in c.items() if k not in ("handshake_ms", "duration_ms", "end")}
                                 for c in doc[table]), key=lambda c: c["pid"])
    assert docs[0] == docs[1]
    for m in (mt, mj):  # the lifecycles show how each connection ended, from its summary line
        _, out = run([str(m.log), *ours])
        assert f"(PID={cli_pid} COMM=ss-rpcli duration=" in out, out
        heads = [line for line in out.splitlines() if line.startswith("Connection: ")]
        assert len(heads) == 3, heads
        refused = [h for h in heads if f"127.0.0.1:{closed}  (PID={refuser.pid} COMM=ss-rprefused" in h]
        assert len(refused) == 1 and re.search(r"; refused, 0 B sent, 0 B received, [^,]+$", refused[0]), heads
        assert any(f"(PID={cli_pid} COMM=ss-rpcli" in h and "; closed, 1.2 KiB sent, 7 B received, " in h for h in heads)
        assert any(f"(PID={srv_pid} COMM=ss-rpsrv" in h and "; closed, 7 B sent, 1.2 KiB received, " in h for h in heads)
        conns = json.loads(run([str(m.log), "--json", *ours])[1])["connections"]
        assert sorted((c["comm"], c["result"], c["bytes_sent"], c["bytes_received"]) for c in conns) == [
            ("ss-rpcli", "closed", 1234, 7), ("ss-rprefused", "refused", 0, 0), ("ss-rpsrv", "closed", 7, 1234)]
    _, out = run([str(mt.log), "--no-lifecycles", *ours])
    assert f"  127.0.0.1:{closed}: 1 (refused 1)" in out
    assert f"  PID={cli_pid} COMM=ss-rpcli: 1.2 KiB sent, 7 B received, 1 connections" in out
