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
import tracemalloc

import pytest
from socketsnoop.commands import report
from socketsnoop.kernel.abi import EV_RESET_SENT, EV_RETRANSMIT, EV_STATE
from socketsnoop.logformat.base import Clock
from socketsnoop.logformat.entries import parse_addr, parse_endpoint
from socketsnoop.logformat.escape import unescape_comm
from socketsnoop.logformat.jsonline import JsonFormatter
from socketsnoop.logformat.text import TextFormatter
from socketsnoop.pipeline.decode import make_row
from socketsnoop.pipeline.filters import Filters, parse_cidr

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
    curl = {"skaddr": 0xA1, "ino": 5, "saddr": v4("192.0.2.1"), "daddr": v4("198.51.100.7"), "pid": 42, "netns": 1,
            "dport": 443, "family": 4, "owner": 1, "comm": b"curl\0"}
    return [
        make_row(ts_ns=t0, sport=0, type=EV_STATE, oldstate=7, newstate=2, **curl),
        make_row(ts_ns=t0 + 10**6, sport=50000, type=EV_STATE, oldstate=2, newstate=1, **curl),
        make_row(ts_ns=t0 + 2 * 10**6, sport=50000, type=EV_RETRANSMIT, oldstate=0, newstate=1, **curl),
        make_row(ts_ns=t0 + 3 * 10**6, skaddr=0, ino=0, saddr=v6("2001:db8::1"), daddr=v6("2001:db8::2"), pid=0,
                 netns=1, sport=80, dport=6000, family=6, type=EV_RESET_SENT, oldstate=0, newstate=0, owner=3,
                 comm=b"\0"),
        make_row(ts_ns=t0 + 4 * 10**6, skaddr=0xB2, ino=6, saddr=v4("192.0.2.1"), daddr=v4("192.0.2.9"), pid=43,
                 netns=1, sport=22, dport=5000, family=4, type=EV_STATE, oldstate=1, newstate=7, owner=1,
                 comm=b"we\\ird \n\xff\0"),
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
    for name in ("t.log", "j.json"):  # the escaped name survives the round trip, the same from either format
        _, out = run([str(tmp_path / name)])
        assert "COMM=we\\x5cird\\x20\\x0a\\xff" in out, name


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
    f = Filters(include={"dst": [parse_cidr("10.0.0.0/8")]})
    ip = ipaddress.ip_address
    assert f.match(EV_STATE, 6, ip("::ffff:192.0.2.1"), 1, ip("::ffff:10.1.2.3"), 2, 5, b"x", 1)
    assert not f.match(EV_STATE, 4, ip("192.0.2.1"), 1, ip("11.1.2.3"), 2, 5, b"x", 1)
    skip = Filters(switches={"include_unspecified": False})
    assert not skip.match(EV_STATE, 4, ip("0.0.0.0"), 1, ip("1.2.3.4"), 2, 5, b"x", 10)
    assert Filters().match(EV_STATE, 4, ip("0.0.0.0"), 1, ip("1.2.3.4"), 2, 5, b"x", 10)
    assert not Filters(switches={"no_resets": True}).match(EV_RESET_SENT, 4, ip("1.1.1.1"), 1, ip("1.2.3.4"), 2, 0,
                                                           b"", 0)
    assert not Filters(include={"comm": {b"nginx"}}).match(EV_STATE, 4, ip("1.1.1.1"), 1, ip("1.2.3.4"), 2, 5,
                                                           b"ngin", 1)


def test_unescape():
    assert unescape_comm("my\\x20app\\x0a") == b"my app\n"
    assert unescape_comm("-") == b""
    assert unescape_comm("a\\x5cb") == b"a\\b"


@pytest.mark.parametrize("argv, words", [
    (["/nonexistent/log"], "No such file"),
    (["{log}", "--since", "next tuesday"], "--since: invalid time"),
    (["{log}", "--until", "-5 fortnights"], "--until: invalid time"),
    (["{log}", "-P", "99999"], "between 0 and 65535"),
    (["{log}", "-4", "-6"], "exclude each other"),
    (["{log}", "--top", "0"], "positive"),
    (["{log}", "--max-tracked", "99999999999999999999"], "--max-tracked: invalid value"),
    (["{log}", "--max-tracked", "0"], "up to 10000000"),
    (["{log}", "--since", "0001-01-01"], "--since: time '0001-01-01' out of range; accepted: 'YYYY-MM-DD'"),
    (["{log}", "--until", "9999-99-99"], "--until: invalid time '9999-99-99': accepted:"),
    ([], "required"),
])
def test_bad_input_one_line_no_traceback(tmp_path, argv, words):
    log = write(tmp_path, "a.log", LOG)
    r = subprocess.run([sys.executable, "-m", "socketsnoop", "report", *[a.format(log=log) for a in argv]],
                       capture_output=True, text=True, env=dict(os.environ), timeout=60)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and r.stderr.count("\n") == 1 and words in r.stderr


# -- hostile or damaged input: nothing from a file reaches the output raw, no traceback, bounded memory ---------
ESC_LINES = [
    # a scope id may hold any character: a terminal title sequence, a newline that forges a line
    "Dec 30 2024 22:05:25.454 State Change: SRC=[::1%\x1b]0;PWNED\x07]:80 DST=[::1]:5555 PID=1 COMM=x "
    "STATE=Connection Closed\n",
    "Dec 30 2024 22:05:25.454 State Change: SRC=[::1]:80 DST=[fe80::1%eth0]:5555 PID=1 COMM=x "
    "STATE=Connection Closed\n",
    "Dec 30 2024 22:05:25.454 State Change: SRC=1.2.3.4:\u00b2 DST=1.2.3.5:1 PID=1 COMM=x STATE=Connection Closed\n",
    "Dec 30 2024 22:05:25.454 State Change: SRC=1.2.3.4:1 DST=1.2.3.5:1 PID=" + "9" * 5000
    + " COMM=x STATE=Connection Closed\n",
    json.dumps({"timestamp": "2024-12-30T22:05:25.000Z", "event": "state_change", "family": 6,
                "src": "::1%\nFORGED", "sport": 1, "dst": "::1", "dport": 2, "pid": 1, "comm": "x",
                "new_state": "CLOSE"}) + "\n",
    json.dumps({"timestamp": "2024-12-30T22:05:25.000Z", "event": "state_change", "family": 4,
                "src": 16909060, "sport": 1, "dst": "1.2.3.4", "dport": 2, "pid": 1, "comm": "x",
                "new_state": "CLOSE"}) + "\n",
    '{"a":' + "[" * 200000 + "\n",  # nesting deep enough for a RecursionError
]
GOOD_JSON = json.dumps({"timestamp": "2024-12-30T22:05:25.000Z", "event": "reset_sent", "family": 6,
                        "src": "2001:db8::1", "sport": 80, "dst": "2001:db8::2", "dport": 6000, "pid": 9,
                        "comm": "evil\x1b]0;PWNED\x07\nCOMM=x", "new_state": "CLOSE"}) + "\n"


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_nothing_from_the_log_reaches_the_output_raw(tmp_path, capsys, fmt):
    path = write(tmp_path, "a.log", "".join(ESC_LINES) + GOOD_JSON)
    status, out = run([path] + (["--json"] if fmt == "json" else []))
    assert status == 0
    assert "\x1b" not in out and "\x07" not in out and "PWNED\x07" not in out and "FORGED" not in out
    assert all(c.isprintable() or c == "\n" for c in out)
    if fmt == "json":
        d = json.loads(out)
        assert d["malformed"] == len(ESC_LINES) and d["events"] == 1
        assert d["processes"][0]["comm"] == "evil\\x1b]0;PWNED\\x07\\x0aCOMM=x"  # escape_comm's form
        assert d["resets"][0]["remote_addr"] == "2001:db8::2"
    else:
        assert f"{len(ESC_LINES)} malformed lines skipped" in out
        assert "PID=9 COMM=evil\\x1b]0;PWNED\\x07\\x0aCOMM=x: 0 established, 0 retransmits, 1 resets" in out
        assert "Connection: [2001:db8::1]:80 -> [2001:db8::2]:6000  (PID=9 COMM=evil\\x1b]0;PWNED" in out
    assert "Traceback" not in capsys.readouterr().err


def test_addresses_are_checked():
    for bad in ("::1%eth0", "::1%\x1b]0;x\x07", "1.2.3.4 ", "\u0661.2.3.4", "", "::g"):
        with pytest.raises(report.parse.Malformed):
            parse_addr(6 if ":" in bad or not bad else 4, bad)
    for bad in (16909060, b"\x01\x02\x03\x04", None):
        with pytest.raises(report.parse.Malformed):
            parse_addr(4, bad)
    assert str(parse_addr(6, "::ffff:1.2.3.4")) == "::ffff:102:304"
    assert parse_endpoint("[2001:db8::1]:443")[2] == 443
    for bad in ("1.2.3.4:\u00b2", "1.2.3.4:000080", "[::1%x]:1", "[::1]:65536"):
        with pytest.raises(report.parse.Malformed):
            parse_endpoint(bad)


def test_file_names_are_escaped_in_messages(tmp_path, capsys):
    path = write(tmp_path, "bad\x1b]0;PWNED\x07.log", "not a log line\n")
    status, _ = run([path])
    err = capsys.readouterr().err
    assert status == 0 and "\x1b" not in err and "\x07" not in err
    assert "bad\\x1b]0;PWNED\\x07.log':1" in err  # quoted, as repr
    r = subprocess.run([sys.executable, "-m", "socketsnoop", "report", str(tmp_path / "no\nsuch\x1b")],
                       capture_output=True, text=True, env=dict(os.environ), timeout=60)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "\x1b" not in r.stderr
    assert "no\\nsuch\\x1b" in r.stderr and "No such file" in r.stderr


def test_corrupted_gz_is_a_warning_not_a_traceback(tmp_path, capsys):
    data = bytearray(gzip.compress(LOG.encode() * 50))
    for i in range(40, 60):
        data[i] ^= 0x55  # the deflate stream: zlib.error, not BadGzipFile
    bad = tmp_path / "corrupt.log.2.gz"
    bad.write_bytes(bytes(data))
    status, out = run([str(bad), write(tmp_path, "a.log", LOG)])
    assert status == 1
    assert "6 events" in out  # the good file still counted
    err = capsys.readouterr().err
    assert "corrupt.log.2.gz: unreadable after line" in err and "Error -3" in err


def test_long_lines_are_malformed_and_take_no_memory(tmp_path):
    big = tmp_path / "big.log"
    lines = LOG.splitlines(keepends=True)
    with open(big, "w") as f:
        f.write(lines[0])
        f.write("x" * (8 << 20) + "\n")  # 8 MiB in one line
        f.write("".join(lines[1:3]))
        f.write("y" * (report.files.MAX_LINE + 1) + "\n")  # just over
        f.write("z" * report.files.MAX_LINE + "\n")  # at the limit: an ordinary malformed line
        f.write("y" * (4 << 20))  # no newline at the end
    tracemalloc.start()
    try:
        d = json.loads(run([str(big), "--json"])[1])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert d["events"] == 3 and d["malformed"] == 4 and d["lines_too_long"] == 3
    assert peak < 2 << 20, peak


def test_read_lines():
    counts = report.files.LineCounts()
    f = io.BytesIO(b"ab\n" + b"c" * 10 + b"\n\n \t\r\nde\n" + b"f" * 4 + b"\n" + b"g" * 5)
    assert list(report.files.read_lines(f, counts, max_line=4)) == [
        (1, "ab"), (2, None), (5, "de"), (6, "ffff"), (7, None)]
    assert (counts.blank, counts.too_long, counts.line) == (2, 2, 7)
    f = io.BytesIO(b"h" * 100)
    assert list(report.files.read_lines(f, counts, max_line=4, limit=20)) == []  # stops: never reaches the end


def test_first_timestamp_of_an_endless_file_returns():
    # in a child with 1 GiB of address space: reading /dev/zero by lines would take all the memory there is
    code = ("import resource; resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30)); from socketsnoop.commands import "
            "report; print(report.files.first_timestamp('/dev/zero', report.parse.Parser()))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout == "None\n", r.stderr[-500:]


def test_tables_are_bounded(tmp_path):
    rows = []
    for i in range(50):
        a = f"10.0.{i // 250}.{i % 250 + 1}"
        rows.append(f"Dec 30 2024 22:05:25.454 State Change: SRC=192.0.2.1:{1000 + i} DST={a}:80 PID={i} COMM=p{i} "
                    "STATE=Connection Established\n")
        rows.append(f"Dec 30 2024 22:05:25.455 Reset Received: SRC=192.0.2.1:{1000 + i} DST={a}:80 PID={i} "
                    f"COMM=p{i} STATE=Connection Established\n")
    parser = report.parse.Parser()
    rep = report.aggregate.Report(Filters(), max_conns=5, table_limit=10)
    for line in rows:
        rep.add(parser.parse(line))
    assert len(rep.procs) == len(rep.remotes) == len(rep.resets) == 10
    assert len(rep.remote_established) <= 10 and len(rep.ids) <= 10 and len(rep.pending) <= 10
    assert len(rep.lifecycles) <= 10
    assert rep.left_out == {"processes": 80, "remotes": 80, "resets": 40, "joins": 40}
    assert rep.events == 100
    text = "\n".join(report.render.text_lines(rep, 3, True, TextFormatter(Clock()).stamp))
    assert ("Left out: 80 events not counted in Processes (each table keeps its first 10 keys); "
            "80 events not counted in Remote endpoints; 40 events not counted in Resets; 40 of the oldest") in text
    d = report.render.json_document(rep, 3, 0, JsonFormatter(Clock()).stamp)
    assert d["left_out"] == {"joins": 40, "processes": 80, "remotes": 80, "resets": 40}
    # defaults: a large bound, nothing left out in an ordinary log
    assert report.aggregate.Report(Filters()).table_limit == report.aggregate.TABLE_LIMIT == 100_000


@pytest.mark.parametrize("tz", ["America/New_York", "Asia/Tokyo", "UTC"])
def test_times_at_the_ends_of_the_calendar(tmp_path, tz):
    ev = {"event": "state_change", "family": 4, "src": "1.2.3.4", "sport": 1, "dst": "1.2.3.5", "dport": 2,
          "pid": 1, "comm": "x", "new_state": "CLOSE"}
    log = write(tmp_path, "edge.log", "".join(json.dumps({"timestamp": t, **ev}) + "\n" for t in (
        "9999-12-31T23:59:59.999Z", "0001-01-01T00:00:00.000Z", "2024-12-30T22:05:25.000Z")) +
        "Dec 31 9999 23:59:59.999 State Change: SRC=10.0.0.1:1 DST=10.0.0.2:2 PID=1 COMM=x STATE=Connection Closed\n"
        "Jan 01 0001 00:00:00.000 State Change: SRC=10.0.0.1:1 DST=10.0.0.2:2 PID=1 COMM=x STATE=Connection Closed\n")
    for extra in ([], ["--json"]):
        r = subprocess.run([sys.executable, "-m", "socketsnoop", "report", log, *extra], capture_output=True,
                           text=True, env=dict(os.environ, TZ=tz), timeout=60)
        assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
        assert "4 malformed lines skipped" in r.stderr
