"""`socket-snoop report`: the fast path (DuckDB) against the Python path on the same logs, line for line.

Realistic logs (tests/support/reportlogs.py: the monitor's own formatters) in text and JSON, with the owner's
names, gzip-compressed, a central rsyslog's files by host, mixed; hostile and malformed lines that the fast
path's patterns must leave to the Python reader or reject as it does; the filters, time bounds and --top.
Sizes stay under what the Python path's byte budget holds, where both count every key (over it, the Python
path leaves events out of its tables and says so; the fast path counts them all).
"""

import gzip
import json
import re
import subprocess
import sys

import pytest
from socketsnoop.commands.report import engine
from support.reportlogs import write_log
from support.readers import reader  # noqa: F401 (a fixture)
from test_report_bounds import GOOD, MIB, blank_bomb, measured, padded_logs

pytestmark = pytest.mark.skipif(not engine.available(),
                                reason="the optional package duckdb is not installed (socket-snoop[fast-report])")

# lines the fast path's patterns must not take as the reader would not, or must leave to it: each is either
# rejected by both paths or read by the Python reader alone (IPv6, escapes in upper case, NUL in a name, ...)
HOSTILE = r"""Dec 30 2024 22:05:25.454 State Change: SRC=10.1.1.1:0 DST=10.2.2.2:8000 PID=3 COMM=au\x2Ddio STATE=Connection Opening (SYN_SENT)
Dec 30 2024 22:05:25.455 State Change: SRC=[2001:db8::1]:443 DST=[2001:0db8::2]:5555 PID=77 COMM=my\x20app\x0a STATE=Connection Closed
Feb 30 2024 22:05:25.455 State Change: SRC=10.1.1.1:1 DST=10.2.2.2:2 PID=3 COMM=x STATE=Connection Established
Dec 30 2024 24:05:25.455 State Change: SRC=10.1.1.1:1 DST=10.2.2.2:2 PID=3 COMM=x STATE=Connection Established
Dec 30 2024 22:05:25.455 State Change: SRC=10.1.1.1:1 DST=10.2.2.2:70000 PID=3 COMM=x STATE=Connection Established
Dec 30 2024 22:05:25.455 State Change: SRC=10.1.1.1:01 DST=10.2.2.2:2 PID=3 COMM=x STATE=Connection Established
Dec 30 2024 22:05:25.455 State Change: SRC=10.1.1.01:1 DST=10.2.2.2:2 PID=3 COMM=x STATE=Connection Established
Dec 30 2024 22:05:25.455 State Change: SRC=10.1.1.1:1 DST=10.2.2.2:2 PID=4294967296 COMM=x STATE=Connection Established
Dec 30 2024 22:05:25.455 State Change: SRC=10.1.1.1:1 DST=10.2.2.2:2 PID=5 COMM=\x00 STATE=Connection Established
Dec 30 2024 22:05:25.455 State Change: SRC=10.1.1.1:1 DST=10.2.2.2:2 PID=0 COMM=- STATE=Connection Established
Dec 30 2024 22:05:25.455 State Change: SRC=10.1.1.1:1 DST=10.2.2.2:2 PID=6 COMM=- STATE=Connection Established USER=- UNIT=x.service
Dec 30 2024 22:05:25.455 State Change: SRC=10.1.1.1:1 DST=10.2.2.2:2 PID=6 COMM=é STATE=Connection Established
Dec 30 2024 22:05:25.455 State Change: SRC=10.1.1.1:1 DST=10.2.2.2:2 PID=6 COMM=a\x2db STATE=Connection Established
Dec 30 2024 22:05:25.455 State Change: SRC=10.1.1.1:1 DST=10.2.2.2:2 PID=6 COMM=x STATE=Connection Established UNIT=a USER=b
Dec 30 2024 22:05:25.455 State Change: SRC=10.1.1.1:1 DST=10.2.2.2:2 PID=6 COMM=x STATE=Connection Established CONTAINER=0123456789ab
 Dec 30 2024 22:05:25.455 State Change: SRC=10.1.1.1:1 DST=10.2.2.2:2 PID=6 COMM=x STATE=Connection Established
Dec 30 2024 22:05:25.455 State Change: SRC=10.1.1.1:1 DST=10.2.2.2:2 PID=6 COMM=x STATE=Connection Established 	
Dec 30 2024 22:05:25.455 State Change: SRC=10.1.1.1:1 DST=10.2.2.2:2 PID=6 COMM=x STATE=Teleporting
Dec 30 2024 22:05:25.456 Connection Summary: SRC=10.1.1.1:1 DST=10.2.2.2:2 PID=6 COMM=x RESULT=closed DIR=out DURATION=1.000ms HANDSHAKE=- SENT=18446744073709551616 RECEIVED=0 RETRANSMITS=0 RTT=- UID=0 STATES=SYN_SENT>CLOSE
Dec 30 2024 22:05:25.456 Connection Summary: SRC=10.1.1.1:1 DST=10.2.2.2:2 PID=6 COMM=x RESULT=closed DIR=out DURATION=1.000ms HANDSHAKE=- SENT=18446744073709551615 RECEIVED=0 RETRANSMITS=0 RTT=- UID=0 STATES=...>SYN_SENT>...>CLOSE
Dec 30 2024 22:05:25.456 Connection Summary: SRC=10.1.1.1:1 DST=10.2.2.2:2 PID=6 COMM=x RESULT=closed DIR=out DURATION=1.000ms HANDSHAKE=- SENT=1 RECEIVED=0 RETRANSMITS=0 RTT=- UID=0 STATES=SYN_SENT>...>...>CLOSE
Dec 30 2024 22:05:25.456 Connection Summary: SRC=10.1.1.1:1 DST=10.2.2.2:2 PID=6 COMM=x RESULT=closed DIR=out DURATION=1.000ms HANDSHAKE=- SENT=1 RECEIVED=0 RETRANSMITS=0 RTT=- UID=0 STATES=...
Dec 30 2024 22:05:25.456 Connection Summary: SRC=10.1.1.1:1 DST=10.2.2.2:2 PID=6 COMM=x RESULT=closed DIR=sideways DURATION=1.000ms HANDSHAKE=- SENT=1 RECEIVED=0 RETRANSMITS=0 RTT=- UID=0 STATES=
Dec  1 21:05:58 hostZ socket-snoop[1]: Dec 30 2024 22:05:25.455 State Change: SRC=10.1.1.1:1 DST=10.2.2.2:2 PID=6 COMM=x STATE=Connection Established
Dec  1 21:05:58 hostZ socket-snoop[1]:   Dec 30 2024 22:05:25.455 State Change: SRC=10.1.1.1:1 DST=10.2.2.2:2 PID=6 COMM=x STATE=Connection Established
<30>1 2024-12-01T21:05:58Z hostY socket-snoop 1 - - Dec 30 2024 22:05:25.455 State Change: SRC=10.1.1.1:1 DST=10.2.2.2:2 PID=6 COMM=x STATE=Connection Established
{"timestamp":"2024-12-30T22:05:25.455Z","event":"state_change","family":4,"src":"10.1.1.1","sport":1,"dst":"10.2.2.2","dport":2,"pid":1.0,"comm":"x","owner":"socket","old_state":null,"new_state":"ESTABLISHED","description":"","netns":1,"sock":"0x10"}
{"timestamp":"2024-12-30T22:05:25.455Z","event":"state_change","family":4,"src":"10.1.1.1","sport":1,"dst":"10.2.2.2","dport":2,"pid":1,"comm":"x","owner":"socket","old_state":null,"new_state":"ESTABLISHED","description":"","netns":1,"sock":"0x10","pid":2}
{"timestamp":"2024-12-30T22:05:25.455Z","event":"state_change","family":4,"src":"10.1.1.1","sport":1,"dst":"10.2.2.2","dport":2,"pid":1,"comm":"-","owner":"socket","old_state":null,"new_state":"ESTABLISHED","description":"","netns":1,"sock":"0x0"}
{"timestamp":"2024-12-30T22:05:25.455Z","event":"state_change","family":4,"src":"10.1.1.1","sport":1,"dst":"10.2.2.2","dport":2,"pid":1,"comm":"a\\b","user":"-","unit":"","owner":"socket","old_state":null,"new_state":"ESTABLISHED","description":"","netns":1,"sock":"0x11"}
{"timestamp":"2024-12-30T22:05:25.455Z","event":"state_change","family":4,"src":"10.1.1.1","sport":1,"dst":"10.2.2.2","dport":2,"pid":1,"comm":"a\\0b","owner":"socket","old_state":null,"new_state":"ESTABLISHED","description":"","netns":1,"sock":"0x13"}
{"timestamp":"2024-12-30T22:05:25.455Z","event":"state_change","family":4,"src":"10.1.1.1","sport":1,"dst":"10.2.2.2","dport":2,"pid":1,"comm":"x","owner":"socket","old_state":null,"new_state":"ESTABLISHED","description":"","netns":04,"sock":"0x14"}
{"timestamp":"2024-12-30T22:05:25.455Z","event":"state_change","family":4,"src":"10.1.1.1","sport":1,"dst":"10.2.2.2","dport":2,"pid":1,"comm":"x","owner":"socket","old_state":null,"new_state":"ESTABLISHED","description":"a	b","netns":4,"sock":"0x15"}
{"timestamp":"2024-02-30T22:05:25.455Z","event":"state_change","family":4,"src":"10.1.1.1","sport":1,"dst":"10.2.2.2","dport":2,"pid":1,"comm":"x","owner":"socket","old_state":null,"new_state":"ESTABLISHED","description":"","netns":1,"sock":"0x10"}
{"timestamp":"2024-12-30T22:05:25.455Z","event":"connection","family":4,"src":"10.1.1.1","sport":1,"dst":"10.2.2.2","dport":2,"pid":1,"comm":"x","owner":"socket","direction":null,"result":"closed","netns":1,"sock":"0x12","uid":0,"bytes_sent":1,"bytes_received":2,"retransmits":0,"rtt_ms":0.031,"handshake_ms":null,"duration_ms":1234567.891,"states":["SYN_SENT","CLOSE"],"states_truncated":false,"complete":true}
{"timestamp":"2024-12-30T22:05:25.455Z","event":"connection","family":4,"src":"10.1.1.1","sport":1,"dst":"10.2.2.2","dport":2,"pid":1,"comm":"x","owner":"socket","direction":null,"result":"closed","netns":1,"sock":"0x12","uid":0,"bytes_sent":1,"bytes_received":2,"retransmits":0,"rtt_ms":0.031,"handshake_ms":null,"duration_ms":1.5,"states":["SYN_SENT","CLOSE"],"states_truncated":false,"complete":true}
{"timestamp":"2024-12-30T22:05:25.455Z","event":"connection","family":4,"src":"10.1.1.1","sport":1,"dst":"10.2.2.2","dport":2,"pid":1,"comm":"x","owner":"socket","direction":null,"result":"closed","netns":1,"sock":"0x16","uid":0,"bytes_sent":1,"bytes_received":2,"retransmits":0,"rtt_ms":00.031,"handshake_ms":null,"duration_ms":1.500,"states":["SYN_SENT","CLOSE"],"states_truncated":false,"complete":true}

   	
not a line at all
"""


def report(engine_name, *args):
    """The report's stdout and stderr (its messages about the path taken left out), by the given engine."""
    r = subprocess.run([sys.executable, "-m", "socketsnoop", "report", "--engine", engine_name, *args],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    return r.stdout, r.stderr


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    d = tmp_path_factory.mktemp("logs")
    paths = {
        "text": d / "text.log", "json": d / "json.log", "context_gz": d / "context.log.gz",
        "central_text": d / "central.log", "central_json": d / "central_json.log.gz", "hostile": d / "hostile.log",
    }
    write_log(paths["text"], 8_000, seed=1)
    write_log(paths["json"], 8_000, form="json", context=True, seed=2)
    write_log(paths["context_gz"], 5_000, context=True, gz=True, seed=3)
    write_log(paths["central_text"], 6_000, context=True, hosts=4, seed=4)
    write_log(paths["central_json"], 5_000, form="json", context=True, hosts=3, gz=True, seed=5)
    paths["hostile"].write_text(HOSTILE)
    return {k: str(v) for k, v in paths.items()}


CASES = [
    ("text",), ("json",), ("context_gz",), ("central_text",), ("central_json",), ("hostile",),
    ("text", "json", "hostile"), ("central_text", "central_json", "hostile"),
]


@pytest.mark.parametrize("names", CASES, ids=["+".join(c) for c in CASES])
@pytest.mark.parametrize("form", ["text", "json"])
def test_same_report(logs, names, form, reader):
    """The same report, line for line (text) or key for key (JSON), and the same malformed lines; with the
    lifecycles (every one kept, in JSON; the walk of engine_life.py), as the report is asked by default."""
    args = [logs[n] for n in names] + (["--json"] if form == "json" else [])
    fast, slow = report("duckdb", *args), report("python", *args)
    assert fast[0].splitlines() == slow[0].splitlines()
    assert fast[1] == slow[1]


FILTERS = [["-p", "1100", "-p", "1101"], ["-c", "Web Content"], ["-P", "443"], ["--dst", "192.168.3.0/24"],
           ["-s", "ESTABLISHED"], ["--no-resets"], ["--uid", "1000"], ["--unit", "svc3.service"], ["-6"],
           ["--exclude-comm", "curl", "--exclude-port", "22"], ["--since", "2024-11-30T20:55:00Z",
                                                                "--until", "2024-11-30T20:58:00Z"], ["--top", "3"]]


@pytest.mark.parametrize("args", FILTERS, ids=[" ".join(a) for a in FILTERS])
def test_same_report_filtered(logs, args):
    files = [logs["json"], logs["central_text"], logs["hostile"]]
    fast, slow = report("duckdb", *files, "--no-lifecycles", *args), report("python", *files, "--no-lifecycles", *args)
    assert fast[0].splitlines() == slow[0].splitlines()
    assert fast == slow


LIFE_FILTERS = [["--lifecycles", "40"], ["-p", "1100", "-p", "1101", "--lifecycles", "40"], ["-s", "ESTABLISHED"],
                ["--since", "2024-11-30T20:55:00Z", "--until", "2024-11-30T20:58:00Z", "--lifecycles", "40"],
                ["--no-resets", "--max-tracked", "50"], ["--json", "-c", "Web Content"]]


@pytest.mark.parametrize("args", LIFE_FILTERS, ids=[" ".join(a) for a in LIFE_FILTERS])
def test_same_lifecycles_filtered(logs, args):
    """The lifecycles of the entries the filters and time bounds leave, joined to their summary lines, and the
    connections let go (--max-tracked) as the Python path has them."""
    files = [logs["text"], logs["json"], logs["central_text"], logs["hostile"]]
    fast, slow = report("duckdb", *files, *args), report("python", *files, *args)
    assert fast[0].splitlines() == slow[0].splitlines()
    assert fast == slow
    assert "Connection Lifecycles:" in fast[0] or '"connections": [' in fast[0]


def test_fast_path_bounded(tmp_path, reader):
    """The crafted inputs of test_report_bounds.py given to the fast path: 20 million blank lines in a .gz of a few
    KB (without a carriage return, which alone would send DuckDB's reader to the Python path) and lines padded
    past MAX_LINE (one of 256 MB) counted in bounded time and memory, as the Python path does. With DuckDB's
    reader the blank lines are left to the Python path, said on stderr: DuckDB would number and classify each
    (17 s here), Python skips them by the block; the compiled reader skips them itself, as fast."""
    bomb = blank_bomb(tmp_path, cr=False)
    r = measured(str(bomb), "--json", "--no-lifecycles", "--engine", "duckdb")
    assert r["rc"] == 0, r
    if reader == "duckdb":
        assert "mostly blank" in r["stderr"] and r["stderr"].count("\n") == 1, r["stderr"]
    else:
        assert r["stderr"] == "", r["stderr"]
    assert r["seconds"] < 5 and r["maxrss"] < 160 * MIB, r
    d = json.loads(r["stdout"])
    assert d["events"] == 2 and d["malformed"] == 0 and d["blank_lines"] == 20 * MIB + 1000
    log, endless = padded_logs(tmp_path)
    r = measured(str(log), str(endless), "--json", "--no-lifecycles", "--engine", "duckdb")
    assert r["rc"] == 0, r
    d = json.loads(r["stdout"])
    assert d["events"] == 3 and d["malformed"] == 51 and d["lines_too_long"] == 51
    assert r["seconds"] < 20 and r["maxrss"] < 160 * MIB, r


def test_carriage_return_takes_the_python_path(tmp_path, reader):
    """DuckDB ends a line at a carriage return, files.py does not: with DuckDB's reader such a file makes the whole
    report take the Python path (said on stderr), so the numbers stay the Python path's (a line ending in CR LF
    is ours, a CR within a line makes it malformed); the compiled reader hands a line with a CR to the Python
    reader, and the report stays on the fast path."""
    log = tmp_path / "cr.log"
    log.write_bytes(GOOD.encode().replace(b"\n", b"\r\n") + GOOD.encode().replace(b" STATE=", b"\r STATE=")
                    + GOOD.encode())
    fast, slow = report("duckdb", str(log), "--no-lifecycles", "--json"), report("python", str(log),
                                                                                 "--no-lifecycles", "--json")
    assert fast[0] == slow[0]
    assert json.loads(fast[0])["events"] == 2 and json.loads(fast[0])["malformed"] == 1
    if reader == "duckdb":
        assert "the slow path (pure Python)" in fast[1] and "a carriage return" in fast[1]
    else:
        assert "the slow path" not in fast[1] and fast[1] == slow[1]


def test_nul_bytes_as_the_python_path(tmp_path, reader):
    """DuckDB's reader cuts a line at a NUL byte (its delimiter) and drops the rest unsaid: a line of a log that a
    crash left zeroed read as blank, a line with a NUL after one of ours read as ours. With DuckDB's reader such
    a file makes the report take the Python path (said on stderr); the compiled reader hands such a line to the
    Python reader, on the fast path. The same report either way."""
    log = tmp_path / "nul.log"
    log.write_bytes(GOOD.encode() + b"\0" * 300 + GOOD.encode() + GOOD.encode().replace(b"\n", b"\0junk\n")
                    + GOOD.encode())
    fast, slow = (report(e, str(log), "--no-lifecycles", "--json") for e in ("duckdb", "python"))
    assert fast[0] == slow[0]
    d = json.loads(fast[0])
    assert d["events"] == 2 and d["malformed"] == 2, d
    assert ("the slow path (pure Python)" in fast[1] and "a NUL byte" in fast[1]) == (reader == "duckdb"), fast[1]


def test_lines_of_a_mebibyte_and_more_as_the_python_path(tmp_path, reader):
    """DuckDB's reader drops a line of its max_line_size or more unsaid (one longer than its buffer always, others
    at some places in the file), and numbers the lines after it one less: a file that holds one makes the report
    take the Python path, which counts it too long, here and in a .gz. The compiled reader counts it too long
    itself (its bytes dropped as they come), on the fast path."""
    lines = [GOOD] * 3 + ["x" * (40 * MIB) + "\n"] + [GOOD] * 3 + ["y" * MIB + "\n"] + [GOOD, "junk\n", GOOD]
    log = tmp_path / "long.log"
    log.write_text("".join(lines))
    gz = tmp_path / "long.log.gz"
    gz.write_bytes(gzip.compress("".join(lines[4:]).encode()))
    for path in (log, gz):
        fast, slow = (report(e, str(path), "--no-lifecycles", "--json") for e in ("duckdb", "python"))
        assert fast[0] == slow[0]
        d = json.loads(fast[0])
        assert d["lines_too_long"] == (2 if path == log else 1) and d["malformed"] == d["lines_too_long"] + 1
        assert f"{path.name}:4)" in fast[1]
        assert ("the slow path (pure Python)" in fast[1] and "a line of" in fast[1]) == (reader == "duckdb"), fast[1]


def test_auto_takes_duckdb_on_text_and_json_logs(tmp_path):
    """--engine auto: the fast path where duckdb is installed, on text and JSON logs alike (faster on both:
    docs/report-engine.md), with or without the lifecycles; the Python path for a stream or --follow."""
    from socketsnoop.commands.report import build_parser, choose_engine
    text, js = tmp_path / "text.log", tmp_path / "json.log.gz"
    write_log(text, 50, "text")
    write_log(js, 50, "json", gz=True)

    def chosen(*argv):
        return choose_engine(build_parser().parse_args(list(argv)))

    assert chosen(str(text), "--no-lifecycles") == "duckdb"
    assert chosen(str(text), str(js), "--no-lifecycles") == "duckdb"
    assert chosen(str(js), "--no-lifecycles") == "duckdb"
    assert chosen(str(text)) == "duckdb"
    assert chosen(str(text), "--follow") == "python"


def test_drop_events_as_the_python_path(tmp_path):
    """Drop events' lines (text and JSON) are counted as drops with their reason and malformed without one, as
    the Python reader reads them (the patterns took those without a reason, as kind 5)."""
    text = "Dec 30 2024 22:05:25.455 Packet Drop: SRC=10.1.1.1:1 DST=10.2.2.2:2 PID=6 COMM=x STATE=Connection Established"
    js = ('{"timestamp":"2024-12-30T22:05:25.455Z","event":"drop","family":4,"src":"10.1.1.1","sport":1,'
          '"dst":"10.2.2.2","dport":2,"pid":1,"comm":"x","owner":"socket","old_state":null,"new_state":"ESTABLISHED",'
          '"description":"","netns":1,"sock":"0x10"}')
    log = tmp_path / "drops.log"
    log.write_text(f"{text}\n{js}\n{text} REASON=NO_SOCKET\n{js[:-1]},\"reason\":\"NO_SOCKET\"}}\n")
    fast, slow = report("duckdb", str(log), "--no-lifecycles", "--json"), report("python", str(log),
                                                                                 "--no-lifecycles", "--json")
    assert json.loads(slow[0])["by_event"] == {"drop": 2} and json.loads(slow[0])["malformed"] == 2
    assert fast[0] == slow[0]


def test_packets_dropped_as_the_python_path(logs, tmp_path):
    """Summary lines that say the kernel dropped packets (the Python reader's lines: the patterns leave them to
    it) are counted by reason as the Python path counts them, with and without the lifecycles (the fast path
    lost them: no "packets dropped" line)."""
    reasons = ["NETFILTER_DROP", "TCP_CSUM", "-", "NETFILTER_DROP", "SOCKET_FILTER"]
    out, i = [], 0
    for line in open(logs["text"]):
        if "Connection Summary:" in line:
            line = f"{line.rstrip()} DROPS={i % 7 + 1} DROP_REASON={reasons[i % 5]}\n"
            i += 1
        out.append(line)
    for line in open(logs["json"]):
        if '"event":"connection"' in line and i % 3:
            line = line.rstrip()[:-1] + f',"drops":{i % 5 + 1},"drop_reasons":{{"TCP_CSUM":{i % 5 + 1}}}}}\n'
        i += 1
        out.append(line)
    log = tmp_path / "drops.log"
    log.write_text("".join(out))
    for args in ([], ["--no-lifecycles", "--json"], ["--no-lifecycles", "-P", "443"]):
        fast, slow = report("duckdb", str(log), *args), report("python", str(log), *args)
        assert fast == slow
        if not args:
            assert re.search(r"packets dropped: \d+ on \d+ connections \(their most frequent reason: "
                             r"TCP_CSUM \d+, NETFILTER_DROP \d+, - \d+, SOCKET_FILTER", fast[0]), fast[0]


WARNINGS = [
    "Dec 06 2026 18:02:11.020 Warning: close-wait-leak status=active PID=4242 COMM=server UID=0 sockets=3 growth=1 "
    "oldest_s=61 threshold_s=60 seen=1 -- 3 sockets in CLOSE_WAIT for more than 60 s",
    "Dec 06 2026 18:02:12.020 Warning: close-wait-leak status=cleared PID=4242 COMM=server UID=0 sockets=0 growth=0 "
    "oldest_s=0 threshold_s=60 seen=1 -- cleared",
    "Dec 06 2026 18:02:13.020 Warning: teleport-storm status=active PID=1 COMM=x UID=0 -- a kind we do not have",
    '{"timestamp":"2026-12-06T18:02:14.020Z","event":"warning","kind":"syn-flood","status":"active","message":"m"}',
    "Dec  1 21:05:58 hostW socket-snoop[1]: Dec 06 2026 18:02:15.020 Warning: port-scan status=active -- a scan",
]


def test_health_warnings_as_the_python_path(logs, tmp_path):
    """Health warning lines (the Python reader's lines), counted per host and kind as the Python path counts them,
    a host with nothing but a warning included (the fast path stopped with a traceback on the first one)."""
    text = open(logs["text"]).read().splitlines(keepends=True)
    log = tmp_path / "warnings.log"
    log.write_text("".join(text[:400]) + "\n".join(WARNINGS) + "\n" + "".join(text[400:800]))
    central = tmp_path / "central.log"
    central.write_text(open(logs["central_text"]).read() + WARNINGS[-1] + "\n")
    for args in ([str(log)], [str(log), "--no-lifecycles", "--json"], [str(central), str(log), "--no-lifecycles"]):
        fast, slow = report("duckdb", *args), report("python", *args)
        assert fast == slow
    out = report("duckdb", str(log))[0]
    assert "health warnings: close-wait-leak 1, other 1, syn-flood 1\n" in out
    assert out[out.index("Host hostW"):].split("\n")[4] == "    health warnings: port-scan 1"


def test_long_json_names_as_the_python_path(tmp_path):
    """The JSON patterns leave the names' length open (a counted repetition of 256 slows RE2 3.5x); a user,
    unit or cgroup over 256 characters still goes to the Python reader, which cuts it as the tables keep
    names; a long exe (which the report does not read) is taken by both alike."""
    def line(sock, user, unit, cgroup, exe):
        return ('{"timestamp":"2024-12-30T22:05:25.455Z","event":"state_change","family":4,"src":"10.1.1.1",'
                f'"sport":1,"dst":"10.2.2.2","dport":2,"pid":1,"comm":"x","uid":1000,"user":"{user}",'
                f'"cgroup":"{cgroup}","unit":"{unit}","exe":"{exe}","owner":"socket","old_state":null,'
                f'"new_state":"ESTABLISHED","description":"","netns":1,"sock":"0x{sock:x}"}}')
    lines = []
    for size in (255, 256, 257, 300, 4000):
        name, path = "u" * size, "/" + "c" * (size - 1)
        lines += [line(16 + size, name, "a.service", "/x", "/bin/x"),
                  line(17 + size, "a", name + ".service", "/x", "/x"),
                  line(18 + size, "a", "a.service", path, "/x"),
                  line(19 + size, "a", "a.service", "/x", "/" + "e" * size)]
    log = tmp_path / "names.log"
    log.write_text("\n".join(lines) + "\n")
    fast, slow = report("duckdb", str(log), "--no-lifecycles", "--json"), report("python", str(log),
                                                                                 "--no-lifecycles", "--json")
    assert json.loads(slow[0])["events"] == len(lines) and json.loads(slow[0])["malformed"] == 0
    assert fast[0] == slow[0]
    fast, slow = report("duckdb", str(log), "--no-lifecycles"), report("python", str(log), "--no-lifecycles")
    assert fast[0] == slow[0]


def test_ipv6_forms_as_the_python_path(tmp_path):
    """The patterns take IPv6 lines (text and JSON); an address in another form than the Python reader's
    (ipaddress's str: leading zeros, zeros not compressed, the wrong run compressed, not an address at all)
    goes to the Python reader, which reads it in its form or rejects it: the same tables either way."""
    addrs = ("2001:db8::1", "2001:db8::2", "2001:0db8::2", "2001:db8:0:0:0:0:0:2", "2001:db8::1:1:1:1:1",
             "2001:db8:0:1:1:1:1:1", "fe80::1:0:0:1", "fe80:0:0:1::1", "1::2::3", ":::", "::", "::1")
    lines = []
    for i, dst in enumerate(addrs):
        for state, desc in (("SYN_SENT", "Connection Opening (SYN_SENT)"), ("ESTABLISHED", "Connection Established")):
            lines.append(f"Dec 30 2024 22:05:25.{i:03d} State Change: SRC=[2001:db8::1]:{40000 + i} DST=[{dst}]:443 "
                         f"PID={100 + i} COMM=x STATE={desc}")
            lines.append(f'{{"timestamp":"2024-12-30T22:05:25.{i:03d}Z","event":"state_change","family":6,'
                         f'"src":"{dst}","sport":{40000 + i},"dst":"2001:db8::9","dport":443,"pid":{100 + i},'
                         f'"comm":"x","owner":"socket","old_state":null,"new_state":"{state}","description":"",'
                         f'"netns":1,"sock":"0x{16 + i:x}"}}')
    log = tmp_path / "ipv6.log"
    log.write_text("\n".join(lines) + "\n")
    args = (str(log), "--no-lifecycles", "--json", "--top", "100")
    fast, slow = report("duckdb", *args), report("python", *args)
    got = json.loads(slow[0])
    assert got["malformed"] == 8 and got["events"] == len(lines) - 8
    assert fast[0] == slow[0]


def test_a_side_passed_on_by_a_syn_sent_line_without_a_local_port(tmp_path):
    """A connect's SYN_SENT line comes before its local port is chosen (SRC=...:0); its connection, found by
    addresses from the next line on, is the client side all the same (the Python path joins the line to the
    next new connection of the same process and remote end): for a key of one connection (the fast path's conns)
    and for addresses used again by a second connection (its segs). Without that hand-over, the ports make the
    heuristic call it a server (1234 -> 40000), and "Remote endpoints" counts it by its local end."""
    src, dst = "10.0.0.1", "10.0.0.2"
    steps = [(0, "Connection Opening (SYN_SENT)"), (1234, "Connection Established"),
             (1234, "Connection Closing (FIN_WAIT1)"), (1234, "Connection Closed")]
    lines = []
    # to port 40000 twice (one key, two connections: segs), to 40001 once (a key of one connection: conns)
    for i, ((sport, desc), dport) in enumerate(zip(steps * 3, [40000] * 8 + [40001] * 4)):
        lines.append(f"Dec 30 2024 22:05:25.{i:03d} State Change: SRC={src}:{sport} DST={dst}:{dport} PID=100 "
                     f"COMM=cli STATE={desc}")
    log = tmp_path / "handover.log"
    log.write_text("\n".join(lines) + "\n")
    args = (str(log), "--no-lifecycles", "--json", "--top", "100")
    fast, slow = report("duckdb", *args), report("python", *args)
    assert fast[0] == slow[0]
    assert f"{dst}:40000" in slow[0] and f"{dst}:40001" in slow[0]  # counted by their remote ends: clients


def test_out_of_memory_on_two_threads_retried_on_one(tmp_path):
    """Each of DuckDB's threads groups into hash tables of its own: a grouping that runs out of memory on two
    threads fits on one (as the connections' grouping of 10M text lines did within the report's limit). The
    session runs that statement again on one thread, then goes on with two, rather than leaving the whole
    report to the Python path (ten times slower)."""
    import duckdb

    con = duckdb.connect(str(tmp_path / "report.duckdb"), config={
        "memory_limit": "512MB", "threads": 2, "temp_directory": str(tmp_path), "preserve_insertion_order": False})
    con.execute("CREATE TABLE t AS SELECT hash(range) AS k, range AS n, range % 3 AS s FROM range(3000000)")
    con.execute("SET memory_limit = '26MB'")  # two threads need more than 32MB here, one less than 20MB
    grouping = "CREATE TABLE g AS SELECT k, min(n) AS f, arg_min(s, n) AS a FROM t GROUP BY k"
    with pytest.raises(duckdb.OutOfMemoryException):
        con.execute(grouping)
    session = engine.Session(con, 2)
    session.execute(grouping)
    assert session.retried == 1
    assert session.execute("SELECT current_setting('threads')").fetchone() == (2,)
    assert session.execute("SELECT count(*), sum(a) FROM g").fetchone() == (3_000_000, 3_000_000)
    con.execute("SET memory_limit = '8MB'")  # one thread out of memory too (it needs 16MB to 20MB): raised
    with pytest.raises(duckdb.OutOfMemoryException):
        session.execute(grouping.replace("TABLE g", "TABLE h"))
    assert session.retried == 2
    con.close()
