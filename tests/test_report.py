"""`socket-snoop report`: text and JSON logs, gz, malformed lines, joins, filters, time bounds."""

import gzip
import io
import ipaddress
import json
import os
import socket
import subprocess
import sys
import time

import pytest


from socketsnoop import report
from socketsnoop.events import RESET_SENT, RETRANSMIT, STATE_CHANGE, Event
from socketsnoop.filters import Filters, parse_cidr
from socketsnoop.fmt import Clock, JsonFormatter, TextFormatter

LOG = """\
Dec 30 2024 22:05:25.454 State Change: SRC=10.100.10.150:0 DST=10.100.10.202:8000 PID=30512 COMM=audacious STATE=Connection Opening (SYN_SENT)
Dec 30 2024 22:05:25.455 State Change: SRC=10.100.10.150:39134 DST=10.100.10.202:8000 PID=30512 COMM=audacious STATE=Connection Established
Dec 30 2024 22:05:26.000 Retransmission: SRC=10.100.10.150:39134 DST=10.100.10.202:8000 PID=30512 COMM=audacious STATE=Connection Established
this is not a log line
Dec 30 2024 22:05:27.454 State Change: SRC=10.100.10.150:39134 DST=10.100.10.202:8000 PID=30512 COMM=audacious STATE=Connection Closing (FIN_WAIT1)
Dec 30 2024 22:05:27.500 State Change: SRC=[2001:db8::1]:443 DST=[2001:db8::2]:5555 PID=77 COMM=my\\x20app\\x0a STATE=Connection Closed
Dec 30 2024 22:05:27.600 Reset Sent: SRC=127.0.0.1:1 DST=127.0.0.1:5555 PID=0 COMM=- STATE=No Socket
Dec 30 2024 22:05:27.700 Reset Sent: SRC=127.0.0.1:1 DST=127.0.0.999:5555 PID=0 COMM=- STATE=No Socket
Dec 30 2024 22:05:27.800 State Change: SRC=10.0.0.1:1 DST=10.0.0.2:2 PID=1 COMM=x STATE=Teleporting
Dec 32 2024 22:05:27.800 State Change: SRC=10.0.0.1:1 DST=10.0.0.2:2 PID=1 COMM=x STATE=Connection Closed
{"event": "state_change", "truncated
"""


def run(argv):
    out = io.StringIO()
    opts = report.build_parser().parse_args(argv)
    status = report.run(opts, out)
    return status, out.getvalue()


def write(tmp_path, name, text, gz=False):
    p = tmp_path / name
    if gz:
        with gzip.open(p, "wt") as f:
            f.write(text)
    else:
        p.write_text(text)
    return str(p)


def test_text_log(tmp_path, capsys):
    status, out = run([write(tmp_path, "a.log", LOG)])
    assert status == 0
    lines = out.splitlines()
    # the SYN_SENT line (local port 0) joined to the connection once its port is known
    i = lines.index("Connection: 10.100.10.150:39134 -> 10.100.10.202:8000  "
                    "(PID=30512 COMM=audacious duration=2.000s retransmits=1)")
    assert lines[i + 1] == "  Dec 30 2024 22:05:25.454: Connection Opening (SYN_SENT)"
    assert lines[i + 2] == "  Dec 30 2024 22:05:25.455: Connection Established"
    assert lines[i + 3] == "  Dec 30 2024 22:05:26.000: Retransmission"
    assert lines[i + 4] == "  Dec 30 2024 22:05:27.454: Connection Closing (FIN_WAIT1)"
    assert "Connection: [2001:db8::1]:443 -> [2001:db8::2]:5555  (PID=77 COMM=my\\x20app\\x0a" in out
    assert "6 events" in out and "5 malformed lines skipped" in out
    assert "PID=30512 COMM=audacious: 1 established, 1 retransmits, 0 resets" in out
    assert "10.100.10.202:8000: 4 events, 1 established" in out
    assert "Resets (top 10): 1 sent, 0 received" in out
    assert "states reached: SYN_SENT 1, ESTABLISHED 1, FIN_WAIT1 1, CLOSE 1" in out
    err = capsys.readouterr().err
    assert "5 malformed lines skipped (the first at" in err and "a.log:4" in err


def test_filters(tmp_path):
    path = write(tmp_path, "a.log", LOG)
    _, out = run([path, "-c", "my app\n", "--json"])
    d = json.loads(out)
    assert d["events"] == 1 and d["processes"][0]["comm"] == "my\\x20app\\x0a"
    assert d["connections"][0]["src"] == "[2001:db8::1]:443"
    assert json.loads(run([path, "-6", "--json"])[1])["events"] == 1
    assert json.loads(run([path, "--dst", "10.100.0.0/16", "--json"])[1])["events"] == 4
    assert json.loads(run([path, "-s", "ESTABLISHED", "--json"])[1])["events"] == 2  # the retransmission too
    assert json.loads(run([path, "--no-resets", "--no-retransmits", "--json"])[1])["events"] == 4
    assert json.loads(run([path, "-P", "1", "--json"])[1])["events"] == 1
    assert json.loads(run([path, "-p", "77", "-p", "30512", "--json"])[1])["events"] == 5
    d = json.loads(run([path, "--dst-port", "8000", "--src", "10.100.10.150", "--json", "--no-lifecycles"])[1])
    assert d["events"] == 4 and "connections" not in d  # the SYN_SENT line has src port 0 but passes --src


def test_since_until(tmp_path):
    path = write(tmp_path, "a.log", LOG)
    d = json.loads(run([path, "--since", "2024-12-30 22:05:26", "--until", "2024-12-30 22:05:27.5", "--json"])[1])
    assert d["events"] == 3  # the retransmission, FIN_WAIT1, and the IPv6 close at .500
    assert d["filtered_out"] == 3
    start = report.parse_time("2024-12-30 22:05", "--since")
    assert start == int(time.mktime((2024, 12, 30, 22, 5, 0, 0, 0, -1))) * 10**9
    assert report.parse_time("2024-12-30T22:05:00Z", "--since") == 1735596300 * 10**9


def events(clock):
    """Events through the monitor's own formatters, so the parser is tested against what it writes."""
    t0 = 1_735_596_325_000_000_000 - clock.offset_ns  # 2024-12-30 22:05:25 UTC, on the monotonic clock
    v4 = lambda a: socket.inet_aton(a) + bytes(12)  # noqa: E731
    v6 = lambda a: socket.inet_pton(socket.AF_INET6, a)  # noqa: E731
    return [
        Event(t0, 0xA1, 5, v4("192.0.2.1"), v4("198.51.100.7"), 42, 1, 0, 443, 4, STATE_CHANGE, 7, 2, 1, 0,
              b"curl\0"),
        Event(t0 + 10**6, 0xA1, 5, v4("192.0.2.1"), v4("198.51.100.7"), 42, 1, 50000, 443, 4, STATE_CHANGE, 2, 1,
              1, 0, b"curl\0"),
        Event(t0 + 2 * 10**6, 0xA1, 5, v4("192.0.2.1"), v4("198.51.100.7"), 42, 1, 50000, 443, 4, RETRANSMIT, 0,
              1, 1, 0, b"curl\0"),
        Event(t0 + 3 * 10**6, 0, 0, v6("2001:db8::1"), v6("2001:db8::2"), 0, 1, 80, 6000, 6, RESET_SENT, 0, 0, 3,
              0, b"\0"),
        Event(t0 + 4 * 10**6, 0xB2, 6, v4("192.0.2.1"), v4("192.0.2.9"), 43, 1, 22, 5000, 4, STATE_CHANGE, 1, 7,
              1, 0, b"we\\ird \n\xff\0"),
    ]


def test_round_trip_through_the_monitors_formatters(tmp_path):
    clock = Clock()
    text = "".join(TextFormatter(clock).format(e) for e in events(clock))
    js = "".join(JsonFormatter(clock).format(e) for e in events(clock))
    for name, content in (("t.log", text), ("j.json", js)):
        d = json.loads(run([write(tmp_path, name, content), "--json"])[1])
        assert d["events"] == 5 and d["malformed"] == 0, name
        assert d["by_event"] == {"state_change": 3, "retransmit": 1, "reset_sent": 1}
        conns = {c["src"]: c for c in d["connections"]}
        assert [s["what"] for s in conns["192.0.2.1:50000"]["steps"]] == [
            "Connection Opening (SYN_SENT)", "Connection Established", "Retransmission"]
        assert conns["[2001:db8::1]:80"]["dst"] == "[2001:db8::2]:6000"
        assert d["first"] == "2024-12-30T22:05:25.000Z"
    _, out = run([str(tmp_path / "t.log")])  # the escaped name survives the round trip
    assert "COMM=we\\x5cird\\x20\\x0a\\xff" in out


def test_gz_and_file_order(tmp_path):
    lines = LOG.splitlines(keepends=True)
    newer = write(tmp_path, "x.log", "".join(lines[4:8]))
    older = write(tmp_path, "x.log.1.gz", "".join(lines[:4]), gz=True)
    d = json.loads(run([newer, older, "--json"])[1])  # the shell's order: newest first
    assert d["events"] == 6 and d["malformed"] == 2
    conn = next(c for c in d["connections"] if c["src"] == "10.100.10.150:39134")
    assert [s["what"] for s in conn["steps"]] == [
        "Connection Opening (SYN_SENT)", "Connection Established", "Retransmission",
        "Connection Closing (FIN_WAIT1)"]


def test_binary_and_truncated_files(tmp_path, capsys):
    junk = tmp_path / "junk.bin"
    junk.write_bytes(bytes(range(256)) * 20 + b"\n\x00\xff\n")
    good = gzip.compress(LOG.encode())
    trunc = tmp_path / "t.gz"
    trunc.write_bytes(good[: len(good) // 2])
    status, out = run([str(junk), str(trunc)])
    assert status == 1
    assert "Summary:" in out
    assert "t.gz: unreadable after line" in capsys.readouterr().err


def test_filters_match():
    f = Filters(dsts=[parse_cidr("10.0.0.0/8")])
    ip = ipaddress.ip_address
    assert f.match(STATE_CHANGE, 6, ip("::ffff:192.0.2.1"), 1, ip("::ffff:10.1.2.3"), 2, 5, b"x", 1)
    assert not f.match(STATE_CHANGE, 4, ip("192.0.2.1"), 1, ip("11.1.2.3"), 2, 5, b"x", 1)
    assert not Filters().match(STATE_CHANGE, 4, ip("0.0.0.0"), 1, ip("1.2.3.4"), 2, 5, b"x", 10)
    assert Filters(include_unspecified=True).match(STATE_CHANGE, 4, ip("0.0.0.0"), 1, ip("1.2.3.4"), 2, 5, b"x", 10)
    assert not Filters(no_resets=True).match(RESET_SENT, 4, ip("1.1.1.1"), 1, ip("1.2.3.4"), 2, 0, b"", 0)
    assert not Filters(comms={b"nginx"}).match(STATE_CHANGE, 4, ip("1.1.1.1"), 1, ip("1.2.3.4"), 2, 5, b"ngin", 1)


def test_unescape():
    assert report.unescape_comm("my\\x20app\\x0a") == b"my app\n"
    assert report.unescape_comm("-") == b""
    assert report.unescape_comm("a\\x5cb") == b"a\\b"


@pytest.mark.parametrize("argv, words", [
    (["/nonexistent/log"], "No such file"),
    (["{log}", "--since", "yesterday"], "--since: invalid time"),
    (["{log}", "-P", "99999"], "between 0 and 65535"),
    (["{log}", "-4", "-6"], "exclude each other"),
    (["{log}", "--top", "0"], "positive"),
    ([], "required"),
])
def test_bad_input_one_line_no_traceback(tmp_path, argv, words):
    log = write(tmp_path, "a.log", LOG)
    r = subprocess.run([sys.executable, "-m", "socketsnoop", "report", *[a.format(log=log) for a in argv]],
                       capture_output=True, text=True, env=dict(os.environ), timeout=60)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and r.stderr.count("\n") == 1 and words in r.stderr
