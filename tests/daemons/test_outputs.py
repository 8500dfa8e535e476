"""--journal and --syslog against the real programs: a namespaced systemd-journald, and rsyslogd (imudp, imtcp,
imtcp over gtls) with a private config and a test CA. Real monitor, real kernel, real traffic, processes with
hostile names (prctl PR_SET_NAME): newlines, ']', '"', '\\', '=', control characters, non-UTF-8 bytes."""

import collections
import re
import signal
import time

import pytest
from socketsnoop.logformat.escape import comm_text, escape_comm

from support.collectors import journald, make_ca, make_cert, rsyslogd
from support.net import free_port
from support.procs import CLIENT, REFUSER, SERVER, spawn
from support.prom import sample_sum, scrape

pytestmark = pytest.mark.bpf

# 15 bytes each (a task name's most): a newline then a field of our prefix; and the SD/escape breakers
H_FIELD = b"\nSOCKETSNOOP_X="
H_SD = b'a]"\\=\xff\x01z] x'
TITLES = {"state_change": "State Change", "retransmit": "Retransmission", "reset_sent": "Reset Sent",
          "reset_received": "Reset Received"}


def hostile_traffic(port, closed_port, count=2):
    """count connections from a client named H_SD to a server named H_FIELD, and count refused connects
    (resets both ways) from a process named H_FIELD. Returns {pid: raw comm}."""
    srv = spawn(SERVER, comm=H_FIELD, host="127.0.0.1", port=port, count=count, dual=False)
    assert srv.stdout.readline().strip() == "listening", srv.stderr.read()
    cli = spawn(CLIENT, comm=H_SD, host="127.0.0.1", port=port, count=count, size=10, timeout=20)
    out, err = cli.communicate(timeout=60)
    assert cli.returncode == 0, err
    srv.communicate(timeout=30)
    ref = spawn(REFUSER, comm=H_FIELD, port=closed_port, count=count)
    ref.communicate(timeout=30)
    assert ref.returncode == 0
    return {srv.pid: H_FIELD, cli.pid: H_SD, ref.pid: H_FIELD, 0: b""}


def endpoint(addr, port):
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


def expected_text(rec, comms):
    """The text line's part after the time, from a JSON record and the raw names of the processes."""
    return (f" {TITLES[rec['event']]}: SRC={endpoint(rec['src'], rec['sport'])}"
            f" DST={endpoint(rec['dst'], rec['dport'])}"
            f" PID={rec['pid']} COMM={escape_comm(comms[rec['pid']])} STATE={rec['description']}")


def _wait(pred, timeout=20):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.1)
    return False


def outputs_line(stdout):
    return next(line for line in stdout.splitlines() if line.startswith("Outputs: "))


# -- the journal -------------------------------------------------------------------------------------------
def test_journal_gets_every_event_with_its_fields(monitor):
    port, closed = free_port(), free_port()
    with journald() as j:
        m = monitor("-P", str(port), "-P", str(closed), "--no-report", "--json", "--journal-socket", j.socket)
        comms = hostile_traffic(port, closed)
        assert m.stop() == 0, m.stderr
        records = m.records()
        assert len(records) >= 4 * 2 + 10 * 2, records  # resets and state changes of both kinds
        assert {r["event"] for r in records} >= {"state_change", "reset_sent", "reset_received"}
        assert _wait(lambda: len(j.entries()) >= len(records)), (len(j.entries()), len(records))
        time.sleep(0.5)
        entries = j.entries()
        assert len(entries) == len(records)
        for e, rec in zip(entries, records):  # in order, one entry per event
            ours = {k: v for k, v in e.items() if k.startswith("SOCKETSNOOP_")}
            assert ours == {f"SOCKETSNOOP_{k.upper()}": str(v) for k, v in rec.items() if v is not None}, (e, rec)
            assert e["SYSLOG_IDENTIFIER"] == "socket-snoop"
            assert e["PRIORITY"] == ("4" if rec["event"].startswith("reset") else "6")
            if rec["pid"] in comms:  # (not another test run's process that took the same port)
                assert e["MESSAGE"].endswith(expected_text(rec, comms)), (e["MESSAGE"], rec)
            assert "\n" not in e["MESSAGE"]
        # the hostile name is one value, byte for byte, and made no field
        assert all("SOCKETSNOOP_X" not in e for e in entries)
        assert any(e["SOCKETSNOOP_COMM"] == comm_text(H_FIELD) for e in entries)
        assert any(e["SOCKETSNOOP_COMM"] == comm_text(H_SD) for e in entries)
        # journalctl's field matches work
        resets = j.entries("SOCKETSNOOP_EVENT=reset_received")
        assert len(resets) == sum(r["event"] == "reset_received" for r in records) >= 2
        assert len(j.entries(f"SOCKETSNOOP_DPORT={closed}")) == sum(r["dport"] == closed for r in records)
        assert outputs_line(m.stderr) == "Outputs: journal dropped=0"


def test_journal_down_is_counted_not_blocking(monitor, tmp_path):
    """No journal at the socket: the monitor runs, writes its log, and counts every event as dropped."""
    port, closed = free_port(), free_port()
    m = monitor("-P", str(port), "-P", str(closed), "--no-report", "--journal-socket", str(tmp_path / "none"))
    hostile_traffic(port, closed, count=1)
    assert m.stop() == 0, m.stderr
    n = len(m.lines())
    assert n >= 8 and m.totals()["lines"] == n
    assert outputs_line(m.stderr) == f"Outputs: journal dropped={n}"
    assert m.stderr.count("no journal at") + m.stderr.count("cannot write to the journal") == 1, m.stderr
    assert f"{n} events could not be written to the journal" in m.stderr


# -- syslog ------------------------------------------------------------------------------------------------
def rsyslog_comm(raw):
    """The name as rsyslog writes it: the JSON text, a control character as \\xNN and a line separator as \\u2028
    (output/syslog.py's structured data holds none raw, so rsyslog's own #ooo escaping never applies)."""
    return re.sub(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]", lambda mo: "\\x%02x" % ord(mo.group()) if ord(mo.group()) < 256
                  else "\\u%04x" % ord(mo.group()), comm_text(raw))


@pytest.mark.parametrize("transport", ["udp", "tcp", "tls"])
def test_syslog_gets_every_event(monitor, tmp_path, transport):
    port, closed = free_port(), free_port()
    with rsyslogd(tmp_path) as r:
        m = monitor("-P", str(port), "-P", str(closed), "--no-report", "--syslog", r.url(transport),
                    "--syslog-ca", str(r.ca[0]))
        comms = hostile_traffic(port, closed)
        assert m.stop() == 0, m.stderr
        lines = m.lines()
        assert len(lines) >= 28
        assert r.wait_for(transport, len(lines)), (len(r.lines(transport)), len(lines))
        time.sleep(0.5)
        got = r.messages(transport)
    assert len(got) == len(lines)  # the names broke no framing: one message per event, no more
    assert sorted(msg for *_, msg in got) == sorted(lines)  # MSG is the text line
    by_pid = {pid: rsyslog_comm(raw) for pid, raw in comms.items()}
    for sev, fac, msgid, (sd_id, params), msg in got:
        assert sd_id == "socketsnoop@32473" and fac == "daemon"
        assert msgid == params["event"] and msg.split(" ", 5)[4][:-1] in TITLES[params["event"]]
        assert sev == ("warning" if params["event"].startswith("reset") else "info")
        assert f"SRC={endpoint(params['src'], params['sport'])} DST={endpoint(params['dst'], params['dport'])} " \
               f"PID={params['pid']} " in msg
        # (a process of another test run on this shared kernel may use the same port: its name is its own)
        assert params["comm"] == by_pid.get(int(params["pid"]), params["comm"]), params
        assert set(params) >= {"event", "family", "src", "sport", "dst", "dport", "pid", "comm", "owner",
                               "new_state", "description", "netns", "sock"}
        assert msg.endswith(f"STATE={params['description']}")
    assert sum(int(p["pid"]) in by_pid for _, _, _, (_, p), _ in got) >= 28
    assert outputs_line(m.stderr) == "Outputs: syslog dropped=0"


def _round(port, closed, n):
    ref = spawn(REFUSER, comm=b"ss-restart", port=closed, count=n)
    ref.communicate(timeout=60)


@pytest.mark.parametrize("transport", ["tcp", "tls"])
def test_syslog_collector_restart_loses_nothing_uncounted(monitor, tmp_path, transport):
    closed = free_port()
    with rsyslogd(tmp_path) as r:
        m = monitor("-P", str(closed), "--no-report", "-q", "--syslog", r.url(transport), "--syslog-ca", str(r.ca[0]))
        _round(None, closed, 20)
        assert _wait(lambda: len(r.lines(transport)) >= len(m.lines()) >= 60), "nothing arrived before the restart"
        r.stop()  # the collector goes away ...
        _round(None, closed, 20)  # ... these wait in the queue
        time.sleep(1.0)
        _round(None, closed, 20)
        r.start()  # ... and comes back on the same port
        _round(None, closed, 20)
        time.sleep(1.0)
        assert m.stop() == 0, m.stderr
        lines = m.lines()
        assert len(lines) >= 4 * 60
        r.wait_for(transport, len(lines))
        time.sleep(1.0)
        got = collections.Counter(msg for *_, msg in r.messages(transport))
    sent = collections.Counter(lines)
    missing = sum((sent - got).values())
    dropped = int(re.search(r"syslog dropped=(\d+)", outputs_line(m.stderr)).group(1))
    assert missing <= dropped, (missing, dropped, m.stderr)
    assert dropped == 0, m.stderr  # the queue (10000) holds a few seconds' outage of this traffic
    assert "connected again" in m.stderr, m.stderr


@pytest.mark.parametrize("wrong", ["host name", "CA"])
def test_tls_collector_that_fails_verification_is_refused(monitor, tmp_path, wrong):
    ca = make_ca(tmp_path)
    if wrong == "host name":
        cert = make_cert(tmp_path, ca, ip=None, dns="other.example")
    else:
        cert = make_cert(tmp_path, make_ca(tmp_path, "otherca"))
    closed = free_port()
    with rsyslogd(tmp_path, ca=ca, cert=cert) as r:
        m = monitor("-P", str(closed), "--no-report", "-q", "--syslog", r.url("tls"), "--syslog-ca", str(ca[0]))
        _round(None, closed, 3)
        time.sleep(0.5)
        assert m.stop() == 0, m.stderr
        time.sleep(0.5)
        assert r.lines("tls") == []
    n = len(m.lines())
    refusals = [line for line in m.stderr.splitlines() if "refused the collector" in line]
    assert len(refusals) == 1, m.stderr
    assert "certificate" in refusals[0] and ("mismatch" in refusals[0]) == (wrong == "host name")
    assert outputs_line(m.stderr) == f"Outputs: syslog dropped={n}"


def test_every_output_at_once(monitor, tmp_path):
    """Log file, console, journal and syslog together, each with every event."""
    closed = free_port()
    with journald() as j, rsyslogd(tmp_path) as r:
        m = monitor("-P", str(closed), "--no-report", "--journal-socket", j.socket, "--syslog", r.url("tcp"))
        _round(None, closed, 5)
        assert m.stop() == 0, m.stderr
        lines = m.lines()
        # (exact counts of our own: a process elsewhere on this shared kernel may use the same port)
        assert sum("COMM=ss-restart" in x for x in lines) == 15 and m.stdout.count("Reset Received") >= 5
        n = len(lines)
        assert r.wait_for("tcp", n) and _wait(lambda: len(j.entries()) >= n)
        assert [e["MESSAGE"] for e in j.entries()] == lines
        assert [msg for *_, msg in r.messages("tcp")] == lines
    assert outputs_line(m.stderr) == "Outputs: journal dropped=0 syslog dropped=0"


def test_lost_events_are_a_warning_in_the_journal(monitor):
    """A stopped reader and a tiny buffer: the lost events reach the journal as warnings, every one counted."""
    port = free_port()
    with journald() as j:
        m = monitor("-P", str(port), "--no-report", "--buffer-size", "64K", "-q", "--journal-socket", j.socket)
        srv = spawn(SERVER, comm=b"ss-jflood", host="127.0.0.1", port=port, count=400, dual=False)
        assert srv.stdout.readline().strip() == "listening"
        m.proc.send_signal(signal.SIGSTOP)
        try:
            cli = spawn(CLIENT, comm=b"ss-jflooder", host="127.0.0.1", port=port, count=400, size=1, timeout=20)
            cli.communicate(timeout=120)
            srv.communicate(timeout=60)
        finally:
            m.proc.send_signal(signal.SIGCONT)
            srv.kill()
        assert m.stop(settle=1) == 0, m.stderr
        t = m.totals()
        assert t["lost"] > 0, t
        dropped = int(re.search(r"journal dropped=(\d+)", outputs_line(m.stderr)).group(1))
        assert _wait(lambda: len(j.entries()) >= t["lines"] - dropped + 1)
        time.sleep(0.5)
        notices = j.entries("SOCKETSNOOP_EVENT=lost_events")
        assert notices and all(e["PRIORITY"] == "4" for e in notices)
        assert sum(int(e["SOCKETSNOOP_LOST"]) for e in notices) == t["lost"]
        assert sum(int(e["SOCKETSNOOP_SHED_STATE_CHANGE"]) for e in notices) == t["shed_state_change"] == t["lost"]
        assert len(j.entries()) - len(notices) == t["lines"] - dropped


def test_syslog_queue_overflow_is_counted(monitor, tmp_path):
    """The collector down and a queue of 50: what does not fit is dropped, counted, and nothing else is lost."""
    closed = free_port()
    with rsyslogd(tmp_path) as r:
        # (no health warnings: 35 refused connects to one port would add a connect-failures line to the count)
        m = monitor("-P", str(closed), "--no-report", "-q", "--syslog", r.url("tcp"), "--output-queue", "50",
                    "--no-warnings")
        _round(None, closed, 5)
        assert r.wait_for("tcp", 20)
        r.stop()
        time.sleep(1.5)  # the idle check notices the closed stream
        _round(None, closed, 25)  # 100 events for a queue of 50
        r.start()
        time.sleep(1.0)
        _round(None, closed, 5)
        time.sleep(1.0)
        assert m.stop() == 0, m.stderr
        lines = m.lines()
        assert sum("COMM=ss-restart" in x for x in lines) == 105  # (and any other process's on the same port)
        time.sleep(1.0)
        got = collections.Counter(msg for *_, msg in r.messages("tcp"))
    dropped = int(re.search(r"syslog dropped=(\d+)", outputs_line(m.stderr)).group(1))
    missing = sum((collections.Counter(lines) - got).values())
    assert 50 <= dropped < len(lines) - 40 and missing <= dropped, (missing, dropped)
    assert f"warning: {dropped} events could not be written to the syslog" in m.stderr


def test_a_frozen_journal_blocks_nothing(monitor):
    """journald stopped (SIGSTOP): its socket fills and our writer blocks in a send; the monitor goes on
    reading the kernel and writing its log, stops in bounded time, and counts what the journal did not get."""
    closed = free_port()
    with journald() as j:
        m = monitor("-P", str(closed), "--no-report", "-q", "--journal-socket", j.socket, "--output-queue", "100")
        j.proc.send_signal(signal.SIGSTOP)
        try:
            _round(None, closed, 300)  # 1200 events: more than the socket's queue and ours together
            assert _wait(lambda: sum("COMM=ss-restart" in x for x in m.lines()) == 900, 30)  # the log did not wait
            t0 = time.monotonic()
            assert m.stop() == 0, m.stderr
            assert time.monotonic() - t0 < 15
        finally:
            j.proc.send_signal(signal.SIGCONT)
        dropped = int(re.search(r"journal dropped=(\d+)", outputs_line(m.stderr)).group(1))
        n = m.totals()["lines"]
        assert n == len(m.lines()) >= 1200
        assert dropped >= n - 100 - 1024, dropped  # at most the socket's queue and ours were taken
        time.sleep(2)
        entries = len(j.entries())
        # each event is in the journal or counted; one more only if the send the writer was stuck in
        # (given up at exit, counted) went through once journald woke
        assert n <= entries + dropped <= n + 1, (entries, dropped, n)


@pytest.mark.parametrize("fmt_args", [[], ["--json"]])
def test_connection_records_reach_the_journal_and_syslog(monitor, tmp_path, fmt_args):
    """The per-connection records: `journalctl SOCKETSNOOP_RESULT=refused` finds each refused connection,
    as a warning; rsyslog gets them with MSGID connection and result="refused"; a hostile name is one value."""
    port, closed = free_port(), free_port()
    with journald() as j, rsyslogd(tmp_path) as r:
        m = monitor("-P", str(port), "-P", str(closed), "--no-report", "--journal-socket", j.socket,
                    "--syslog", r.url("tcp"), *fmt_args, summary=True)
        comms = hostile_traffic(port, closed, count=3)
        assert m.stop() == 0, m.stderr
        n = len(m.lines())
        assert _wait(lambda: len(j.entries()) >= n) and r.wait_for("tcp", n)
        time.sleep(0.5)
        refused = [e for e in j.entries("SOCKETSNOOP_RESULT=refused") if int(e["SOCKETSNOOP_PID"]) in comms]
        assert len(refused) == 3, refused
        for e in refused:
            assert e["PRIORITY"] == "4" and e["SOCKETSNOOP_EVENT"] == "connection"
            assert " Connection Summary: SRC=127.0.0.1:" in e["MESSAGE"] and " RESULT=refused " in e["MESSAGE"]
            assert e["SOCKETSNOOP_COMM"] == comm_text(H_FIELD) and "SOCKETSNOOP_X" not in e
            assert e["SOCKETSNOOP_DPORT"] == str(closed)
        closed_ok = [e for e in j.entries("SOCKETSNOOP_EVENT=connection", "SOCKETSNOOP_RESULT=closed")
                     if int(e["SOCKETSNOOP_PID"]) in comms]  # (not another process's on the same port)
        assert len(closed_ok) == 6 and all(e["PRIORITY"] == "6" for e in closed_ok)  # both ends of 3 conversations
        got = [x for x in r.messages("tcp") if x[2] == "connection" and int(x[3][1]["pid"]) in comms]
    assert len(got) == 9
    assert sorted(p["result"] for _, _, _, (_, p), _ in got) == ["closed"] * 6 + ["refused"] * 3
    assert all(sev == ("warning" if p["result"] == "refused" else "info") for sev, _, _, (_, p), _ in got)
    assert all(" Connection Summary: " in msg for *_, msg in got)
    assert outputs_line(m.stderr) == "Outputs: journal dropped=0 syslog dropped=0"


def test_output_drops_are_exported_as_a_metric(monitor):
    """What the syslog queue drops is counted in socketsnoop_events_lost_total{where="syslog"} as it happens."""
    closed, mport, down = free_port(), free_port(), free_port()
    m = monitor("-P", str(closed), "--no-report", "-q", "--metrics", str(mport), "--syslog",
                f"tcp://127.0.0.1:{down}", "--output-queue", "10")
    _round(None, closed, 10)  # 40 events for a queue of 10, and no collector
    assert _wait(lambda: sum("COMM=ss-restart" in x for x in m.lines()) == 30)
    time.sleep(2)  # the metrics read the counts once a second
    exported = sample_sum(scrape(mport), "socketsnoop_events_lost_total", where="syslog")
    assert m.stop() == 0, m.stderr
    dropped = int(re.search(r"syslog dropped=(\d+)", outputs_line(m.stderr)).group(1))
    assert len(m.lines()) - 10 <= exported <= dropped == len(m.lines()), (exported, dropped, len(m.lines()))
