"""`socket-snoop report` for people (issue 20): the summary first and a few lifecycles unless asked, human
units, remote endpoints by service, distributions, '-' for standard input, and journalctl's times."""

import datetime
import gzip
import io
import json
import subprocess
import sys
import time

import pytest
from socketsnoop.commands import report
from socketsnoop.commands.report import render
from socketsnoop.errors import SnoopError

T = "Dec 30 2024 22:{m:02d}:{s:02d}.{ms:03d}"


def line(m, s, ms, title, src, dst, pid, comm, state):
    return f"{T.format(m=m, s=s, ms=ms)} {title}: SRC={src} DST={dst} PID={pid} COMM={comm} STATE={state}\n"


def server_log(clients=30):
    """A web server on 192.0.2.1:80 accepting `clients` connections from two hosts' ephemeral ports, and a
    client of its own to 198.51.100.7:443."""
    out = []
    for i in range(clients):
        peer = f"203.0.113.{5 + i % 2}:{40000 + i}"
        out += [line(5, i, 0, "State Change", "192.0.2.1:80", peer, 7, "nginx", "Connection Opening (SYN_RECV)"),
                line(5, i, 1, "State Change", "192.0.2.1:80", peer, 7, "nginx", "Connection Established"),
                line(6, i, 0, "State Change", "192.0.2.1:80", peer, 7, "nginx", "Connection Closed")]
    out += [line(7, 0, 0, "State Change", "192.0.2.1:0", "198.51.100.7:443", 8, "curl", "Connection Opening (SYN_SENT)"),
            line(7, 0, 5, "State Change", "192.0.2.1:50000", "198.51.100.7:443", 8, "curl", "Connection Established")]
    return "".join(out)


def run(argv):
    out = io.StringIO()
    status = report.run(report.build_parser().parse_args(argv), out)
    return status, out.getvalue()


def test_summary_first_and_a_few_lifecycles(tmp_path):
    path = tmp_path / "s.log"
    path.write_text(server_log())
    _, out = run([str(path)])
    lines = out.splitlines()
    assert lines[0].startswith("Summary: 92 events (")
    assert lines.index("Connection Lifecycles:") > lines.index("Remote endpoints (top 10, by service: a client's "
                                                                "port as *): events, established")
    assert out.count("\nConnection: ") == 10  # the 10 most recent of 31
    assert "Connections: 10 shown, 21 not shown (21 older ones kept: --lifecycles N shows the N most recent)" in out
    assert out.rstrip().splitlines()[-4].startswith("Connection: 192.0.2.1:50000 -> 198.51.100.7:443")
    _, out = run([str(path), "--lifecycles", "2"])
    assert out.count("\nConnection: ") == 2
    _, out = run([str(path), "--lifecycles", "0"])
    assert "Connection Lifecycles:" not in out
    with pytest.raises(SnoopError, match="--lifecycles and --no-lifecycles exclude each other"):
        run([str(path), "--lifecycles", "3", "--no-lifecycles"])
    d = json.loads(run([str(path), "--json"])[1])  # JSON: every one kept, as before
    assert len(d["connections"]) == 31 and d["connections_not_shown"] == 0
    d = json.loads(run([str(path), "--json", "--lifecycles", "3"])[1])
    assert [c["src"] for c in d["connections"]][-1] == "192.0.2.1:50000" and d["connections_not_shown"] == 28


def test_remote_endpoints_by_service(tmp_path):
    """Clients of our port 80 are one row per client address, not one per ephemeral port."""
    path = tmp_path / "s.log"
    path.write_text(server_log())
    _, out = run([str(path)])
    assert "  203.0.113.5:* to local port 80: 45 events, 15 established" in out
    assert "  203.0.113.6:* to local port 80: 45 events, 15 established" in out
    assert "  198.51.100.7:443: 2 events, 1 established" in out
    assert ":4000" not in out.split("Remote endpoints")[1].split("Resets")[0]
    rows = json.loads(run([str(path), "--json"])[1])["remotes"]
    assert rows[0] == {"remote": "203.0.113.5:*", "events": 45, "established": 15, "service": "local",
                       "service_port": 80}
    assert rows[2] == {"remote": "198.51.100.7:443", "events": 2, "established": 1, "service": "remote",
                       "service_port": 443}


SUMMARY = ("Dec 30 2024 22:{m:02d}:00.000 Connection Summary: SRC=10.0.0.1:{port} DST=10.0.0.2:443 PID=5 COMM=curl "
           "RESULT=closed DIR=out DURATION={dur} HANDSHAKE={hs} SENT={sent} RECEIVED=7 RETRANSMITS=0 RTT={rtt} UID=0 "
           "STATES=SYN_SENT>ESTABLISHED>CLOSE\n")


def summaries():
    out = []
    for i, (dur, hs, rtt) in enumerate([("212.025ms", "0.300ms", "0.150ms"), ("1200.000ms", "40.000ms", "-"),
                                        ("0.900ms", "-", "3.000ms")] * 4):
        out.append(SUMMARY.format(m=i // 4, port=40000 + i, dur=dur, hs=hs, rtt=rtt, sent=6005028 * (i == 0)))
    return "".join(out)


def test_human_units_and_distributions(tmp_path):
    path = tmp_path / "r.log"
    path.write_text(summaries())
    _, out = run([str(path)])
    assert "Connections (from the summary lines): 12, 0 failed; 5.7 MiB sent, 84 B received" in out
    assert "10.0.0.1:40000 -> 10.0.0.2:443 PID=5 COMM=curl: 5.7 MiB sent, 7 B received (closed, 212 ms)" in out
    assert "PID=5 COMM=curl: 40.0 ms (out, closed)" in out and "1.20 s" in out
    lines = out.splitlines()
    i = lines.index("Connection duration (microseconds, log2), 12 connections:")
    assert lines[i + 1] == "  [512, 1K)                 4 |" + "@" * 52 + "|"  # 900 us
    assert lines[i + 9].startswith("  [128K, 256K)              4 |@")  # 212 ms
    assert lines[i + 12].startswith("  [1M, 2M)                  4 |@")  # 1.2 s
    assert "Handshake time (microseconds, log2), 8 connections:" in out
    assert "RTT (microseconds, log2), 8 connections:" in out
    i = lines.index("Connections per minute (summary lines):")
    assert [ln[2:19] for ln in lines[i + 1:i + 4]] == [f"Dec 30 2024 22:0{m}" for m in range(3)]
    assert all(ln.split("|")[0].split()[-1] == "4" for ln in lines[i + 1:i + 4])
    d = json.loads(run([str(path), "--json"])[1])["distributions"]
    assert {"low": 524288, "high": 1048576, "count": 0} in d["duration_us"]
    assert d["duration_us"][-1] == {"low": 1048576, "high": 2097152, "count": 4}
    assert [(m["minutes"], m["count"]) for m in d["connections_per_minute"]] == [(1, 4)] * 3
    assert d["connections_per_minute"][0]["minute"].endswith(":00.000Z")


def test_standard_input(tmp_path):
    text = server_log(2)
    for data in (text.encode(), gzip.compress(text.encode())):
        r = subprocess.run([sys.executable, "-m", "socketsnoop", "report", "-", "--json"], input=data,
                           capture_output=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["events"] == 8
    r = subprocess.run([sys.executable, "-m", "socketsnoop", "report", "-"], input=b"junk\n", capture_output=True,
                       timeout=60)
    assert r.returncode == 0 and b"(the first at (standard input):1)" in r.stderr


NOW = datetime.datetime(2024, 12, 30, 22, 5, 25).timestamp()  # local time


@pytest.mark.parametrize("text, want", [
    ("now", NOW),
    ("-1h", NOW - 3600), ("1 hour ago", NOW - 3600), ("1h 30min ago", NOW - 5400), ("+5min", NOW + 300),
    ("2 days ago", NOW - 2 * 86400), ("-30s", NOW - 30),
    ("today", datetime.datetime(2024, 12, 30).timestamp()),
    ("yesterday", datetime.datetime(2024, 12, 29).timestamp()),
    ("tomorrow", datetime.datetime(2024, 12, 31).timestamp()),
    ("15:27", datetime.datetime(2024, 12, 30, 15, 27).timestamp()),
    ("15:27:08", datetime.datetime(2024, 12, 30, 15, 27, 8).timestamp()),
    ("2024-12-30 22:05", datetime.datetime(2024, 12, 30, 22, 5).timestamp()),
    ("2024-12-30", datetime.datetime(2024, 12, 30).timestamp()),
    ("2024-12-30T22:05:00Z", 1735596300), ("@1735596300", 1735596300),
])
def test_journalctl_times(text, want):
    assert report.parse_time(text, "--since", now=NOW) == int(want * 1e9)


@pytest.mark.parametrize("text", ["next tuesday", "-1 fortnight", "25:00", "1 hour", "--1h", "ago"])
def test_bad_times(text):
    with pytest.raises(SnoopError, match="--since: (invalid time|time '25:00' out of range)"):
        report.parse_time(text, "--since", now=NOW)


def test_since_relative_on_a_log(tmp_path):
    now = time.time()
    stamp = lambda t: time.strftime("%b %d %Y %H:%M:%S.000", time.localtime(t))  # noqa: E731
    path = tmp_path / "rel.log"
    path.write_text("".join(f"{stamp(now - age)} State Change: SRC=10.0.0.1:1 DST=10.0.0.2:2 PID=1 COMM=x "
                            "STATE=Connection Established\n" for age in (7200, 1800, 60)))
    assert json.loads(run([str(path), "--json", "--since", "-1h"])[1])["events"] == 2  # as journalctl has it
    assert json.loads(run([str(path), "--json", "--since", "1 hour ago", "--until=-10min"])[1])["events"] == 1
    r = subprocess.run([sys.executable, "-m", "socketsnoop", "report", str(path), "--until", "-1h", "--json"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and json.loads(r.stdout)["events"] == 1, r.stderr


def documents(text):
    """The JSON documents written one after another."""
    dec, pos, out = json.JSONDecoder(), 0, []
    while text[pos:].strip():
        doc, end = dec.raw_decode(text, pos + len(text[pos:]) - len(text[pos:].lstrip()))
        out.append(doc)
        pos = end
    return out


def wait_for(pred, timeout=20):
    end = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.05)


def test_follow_a_growing_and_rotated_log(tmp_path):
    """--follow: the newest file read, then followed as it grows, through its rotation (the lines written to
    the old file after the rename too), a report every --interval, and the last one at SIGTERM."""
    log = tmp_path / "m.log"
    older = tmp_path / "m.log.1.gz"
    ev = lambda s, port: line(5, s, 0, "State Change", f"10.0.0.1:{port}", "10.0.0.2:80", 1, "x",  # noqa: E731
                              "Connection Established")
    older.write_bytes(gzip.compress(ev(0, 1000).encode()))
    log.write_text(ev(1, 1001))
    outf = open(tmp_path / "out", "w+")
    p = subprocess.Popen([sys.executable, "-m", "socketsnoop", "report", str(log), str(older), "--follow",
                          "--interval", "0.2", "--json", "--lifecycles", "0"], stdout=outf, stderr=subprocess.PIPE)
    try:
        read = lambda: documents((tmp_path / "out").read_text())  # noqa: E731
        wait_for(lambda: read() and read()[-1]["events"] == 2)
        with open(log, "a") as f:
            f.write(ev(2, 1002) + ev(3, 1003)[:40])  # a line not yet whole
        wait_for(lambda: read()[-1]["events"] == 3)
        with open(log, "a") as f:
            f.write(ev(3, 1003)[40:])
        wait_for(lambda: read()[-1]["events"] == 4)
        log.rename(tmp_path / "m.log.1")
        with open(tmp_path / "m.log.1", "a") as f:
            f.write(ev(4, 1004))  # the writer not yet told
        log.write_text(ev(5, 1005) + ev(6, 1006))
        wait_for(lambda: read()[-1]["events"] == 7)
        p.terminate()
        assert p.wait(timeout=10) == 0, p.stderr.read()
        last = read()[-1]
        assert last["events"] == 7 and last["malformed"] == 0
        assert [r["remote"] for r in last["remotes"]] == ["10.0.0.2:80"]
    finally:
        p.kill()
        outf.close()
    r = subprocess.run([sys.executable, "-m", "socketsnoop", "report", str(older), "--follow"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--follow: the newest file must be a plain file" in r.stderr
    r = subprocess.run([sys.executable, "-m", "socketsnoop", "report", str(older), "--interval", "1"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--interval applies to --follow only" in r.stderr


def test_json_is_written_as_json_dumps_writes_it():
    """render.write_json streams the lifecycles and writes what json.dumps(indent=2) would, byte for byte."""
    items = [{"s": [1, 2], "t": {}}, {"u": "\n\x1b"}]
    doc = {"a": 1, "hosts": [{"host": "h", "x": [1, {"y": []}], "connections": render.Stream(iter(items))},
                             {"host": "g", "connections": render.Stream(iter([]))}], "z": {}}
    out = io.StringIO()
    render.write_json(out, doc)
    doc["hosts"][0]["connections"], doc["hosts"][1]["connections"] = items, []
    assert out.getvalue() == json.dumps(doc, indent=2)
