"""--metrics: the Prometheus endpoint. The sink fed with rows and connection records it is given (the
exposition parsed by prometheus_client's own parser), and the real monitor scraped by the real prometheus
(Debian's package): its HTTP API returns counts equal to the events the test made."""

import os
import random
import signal
import socket
import subprocess
import sys
import time

import pytest
from socketsnoop.settings.monitor import metrics_from, monitor_options
from socketsnoop.settings.values import parse_listen
from socketsnoop.errors import SnoopError
from socketsnoop.kernel.abi import R_INCOMPLETE
from socketsnoop.output.metrics import OTHER, MetricsSink, comm_label
from socketsnoop.pipeline.decode import make_record_row, make_row

from support.net import free_port, nft_drop
from support.procs import conversation, run_client, spawn, start_server
from support.prom import Prometheus, sample_sum, scrape

EV_STATE, EV_RETRANSMIT, EV_RESET_SENT, EV_RESET_RECEIVED = 1, 2, 3, 4
ESTABLISHED, SYN_SENT, CLOSE = 1, 2, 7
HOSTILE = b'q"\\\n}{=,x'  # quote, backslash, newline, braces, '=' and ',': 10 bytes, fits a 16-byte comm


def private_loopback():
    """A loopback address of this test's own (all of 127/8 is on lo): a filter on it (-a) sees only the
    test's traffic, even while other work churns through every port number."""
    return f"127.{random.randint(20, 250)}.{random.randint(1, 250)}.{random.randint(2, 250)}"


RESULTS = {"closed": 1, "reset-sent": 2, "reset-received": 3, "refused": 4, "timeout": 5, "unreachable": 6}
DIRECTIONS = {None: 0, "out": 1, "in": 2}


def record(direction="out", result="closed", duration_ns=None, handshake_ns=None, rtt_us=None, comm=b"curl",
           complete=True):
    """A record row (abi.RECORD_ROW) as the kernel's decoded record is, from friendly values."""
    ts = 10**12
    return make_record_row(ts_ns=ts, start_ns=ts - duration_ns if duration_ns else 0, handshake_ns=handshake_ns or 0,
                           rtt_us=rtt_us or 0, result=RESULTS[result], direction=DIRECTIONS[direction], comm=comm,
                           flags=0 if complete else R_INCOMPLETE, pid=7, sport=40000, dport=80, states=(2, 1, 7))


@pytest.fixture
def sink():
    made = []

    def make(labels=None):
        s = MetricsSink("127.0.0.1", free_port(), labels).open()
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


# -- the sink, fed by the test ---------------------------------------------------------------------------

def test_counts_from_rows_and_records(sink):
    s = sink()
    rows = ([make_row(type=EV_STATE, newstate=ESTABLISHED, comm=b"a")] * 7
            + [make_row(type=EV_STATE, newstate=CLOSE)] * 3
            + [make_row(type=EV_RETRANSMIT, newstate=ESTABLISHED)] * 2
            + [make_row(type=EV_RESET_SENT, newstate=0)] * 4 + [make_row(type=EV_RESET_RECEIVED, newstate=2)])
    s.write(rows[:5], None)
    s.write(rows[5:], None)
    s.write_records([record(duration_ns=3_000_000, handshake_ns=200_000, rtt_us=80),
                     record(direction="out", result="refused"), record(direction="out", result="timeout"),
                     record(direction="in", result="reset-sent", duration_ns=2_000_000_000, rtt_us=40_000),
                     record(direction=None, result="closed", complete=False)], None)
    m = scrape(s.port)
    assert sample_sum(m, "socketsnoop_state_changes_total", state="ESTABLISHED") == 7
    assert sample_sum(m, "socketsnoop_state_changes_total", state="CLOSE") == 3
    assert sample_sum(m, "socketsnoop_retransmissions_total") == 2
    assert sample_sum(m, "socketsnoop_resets_sent_total") == 4
    assert sample_sum(m, "socketsnoop_resets_received_total") == 1
    assert sample_sum(m, "socketsnoop_connections_total") == 5
    assert sample_sum(m, "socketsnoop_connections_total", direction="out", result="refused") == 1
    assert sample_sum(m, "socketsnoop_connections_total", direction="unknown") == 1
    assert sample_sum(m, "socketsnoop_failed_connects_total", cause="refused") == 1
    assert sample_sum(m, "socketsnoop_failed_connects_total", cause="timeout") == 1
    assert sample_sum(m, "socketsnoop_failed_connects_total", cause="unreachable") == 0
    # histograms: only the records that know the value; buckets are cumulative, le inclusive
    assert m[("socketsnoop_connection_duration_seconds_count", frozenset())] == 2
    assert m[("socketsnoop_connection_duration_seconds_bucket", frozenset({("le", "0.01")}))] == 1
    assert m[("socketsnoop_connection_duration_seconds_bucket", frozenset({("le", "1.0")}))] == 1
    assert m[("socketsnoop_connection_duration_seconds_bucket", frozenset({("le", "5.0")}))] == 2
    assert m[("socketsnoop_connection_duration_seconds_sum", frozenset())] == pytest.approx(2.003)
    assert m[("socketsnoop_handshake_seconds_count", frozenset())] == 1
    assert m[("socketsnoop_handshake_seconds_bucket", frozenset({("le", "0.00025")}))] == 1
    assert m[("socketsnoop_rtt_seconds_count", frozenset())] == 2
    assert m[("socketsnoop_rtt_seconds_bucket", frozenset({("le", "0.0001")}))] == 1
    assert m[("socketsnoop_rtt_seconds_sum", frozenset())] == pytest.approx(0.04008)
    # unlabelled: no comm label anywhere
    assert not any("comm" in dict(ls) for _, ls in m)


def test_label_cap_folds_the_rest_into_other(sink):
    """1,000 distinct names, a cap of 20: 20 names and 'other', and every event still counted."""
    s = sink({"comm": 20})
    rows = [make_row(type=EV_STATE, newstate=SYN_SENT, comm=b"p%d" % i) for i in range(1000)]
    for i in range(0, 1000, 128):
        s.write(rows[i:i + 128], None)
    s.write_records([record(comm=b"p%d" % i, result="refused") for i in range(1000)], None)
    m = scrape(s.port)
    for name in ("socketsnoop_state_changes_total", "socketsnoop_connections_total",
                 "socketsnoop_failed_connects_total"):
        comms = {dict(ls)["comm"] for n, ls in m if n == name}
        assert len(comms) == 21 and OTHER in comms, (name, comms)
        assert sample_sum(m, name) == 1000
    assert sample_sum(m, "socketsnoop_state_changes_total", comm=OTHER) == 980
    assert sample_sum(m, "socketsnoop_metrics_label_overflow_total", label="comm") == 980 + 980


def test_hostile_comm_cannot_break_the_exposition(sink):
    s = sink({"comm": 100, "unit": 100})
    s.write([make_row(type=EV_STATE, newstate=ESTABLISHED, comm=HOSTILE),
             make_row(type=EV_STATE, newstate=ESTABLISHED, comm=b"\x1b[2J\xff"),
             make_row(type=EV_STATE, newstate=ESTABLISHED, comm=b"-")], None)
    m = scrape(s.port)  # prometheus_client's parser: it raises on anything malformed
    names = {n for n, _ in m}
    assert all(n.startswith(("socketsnoop_", "process_")) for n in names), names
    comms = {dict(ls)["comm"]: v for (n, ls), v in m.items() if n == "socketsnoop_state_changes_total"}
    assert comms == {comm_label(HOSTILE): 1, comm_label(b"\x1b[2J\xff"): 1, r"\x2d": 1}, comms
    assert comm_label(HOSTILE) == 'q"\\\\\\n}{=,x'  # '\\' doubled, the newline as the two characters \n
    assert all(c.isprintable() for c in comms), comms  # nothing that drives a terminal
    # unit: accepted, empty until the identity of a connection's unit is resolved (no invented values)
    assert {dict(ls).get("unit") for n, ls in m if n == "socketsnoop_state_changes_total"} == {""}


@pytest.mark.parametrize("labels", [{"unit": 5}, {"unit": 5, "container": 5}, {"container": 3, "comm": 3}])
def test_unit_and_container_are_empty_until_resolved(sink, labels):
    s = sink(labels)
    s.write([make_row(type=EV_STATE, newstate=ESTABLISHED, comm=b"x"), make_row(type=EV_RETRANSMIT)], None)
    s.write_records([record()], None)
    m = scrape(s.port)  # every sample has every label asked for
    empty = {name: "" for name in labels if name != "comm"}  # no such field yet: empty, never invented
    assert sample_sum(m, "socketsnoop_connections_total", **empty) == 1
    assert sample_sum(m, "socketsnoop_state_changes_total", state="ESTABLISHED", **empty) == 1
    assert sample_sum(m, "socketsnoop_retransmissions_total", **empty) == 1
    for (name, ls), _ in m.items():
        if name.startswith(("socketsnoop_state", "socketsnoop_conn", "socketsnoop_retr")) and "_seconds" not in name:
            assert set(labels) <= set(dict(ls)), (name, ls)


# -- options and config ----------------------------------------------------------------------------------

def run(*args):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    return subprocess.run([sys.executable, "-m", "socketsnoop", *args], capture_output=True, text=True,
                          timeout=60, env=env)


@pytest.mark.parametrize("args,needle", [
    (["--metrics", "http"], "--metrics"),
    (["--metrics", "70000"], "--metrics"),
    (["--metrics", "::1:9100"], "--metrics"),
    (["--metrics", "example.com:9100"], "--metrics"),
    (["--metrics", "9100", "--metrics-labels", "pid"], "--metrics-labels"),
    (["--metrics", "9100", "--metrics-labels", "comm:0"], "--metrics-labels"),
    (["--metrics-labels", "comm"], "needs --metrics"),
    (["--metrics", "9100", "--metrics-label-limit", "0"], "--metrics-label-limit"),
])
def test_bad_metrics_options_one_line_exit_2(args, needle):
    p = run(*args, "--no-log-file")
    assert p.returncode == 2, p
    assert p.stderr.count("\n") == 1 and needle in p.stderr and "Traceback" not in p.stderr, p.stderr


def test_listen_addresses():
    assert parse_listen("9100") == ("127.0.0.1", 9100)  # loopback unless an address is given
    assert parse_listen("0.0.0.0:9200") == ("0.0.0.0", 9200)
    assert parse_listen("[::1]:9300") == ("::1", 9300)
    with pytest.raises(SnoopError):
        parse_listen("[::1]")


def test_metrics_options_in_the_config_file(tmp_path):
    conf = tmp_path / "config.toml"
    conf.write_text('metrics = 9464\nmetrics-labels = ["comm:30", "unit"]\nmetrics_label_limit = 7\n')
    opts = monitor_options(["--config", str(conf)])
    assert metrics_from(opts) == ("127.0.0.1", 9464, {"comm": 30, "unit": 7})
    conf.write_text('metrics = "0.0.0.0:9464"\n')
    assert metrics_from(monitor_options(["--config", str(conf)]))[:2] == ("0.0.0.0", 9464)
    conf.write_text('metrics = "nope"\n')
    p = run("--config", str(conf), "--no-log-file")
    assert p.returncode == 2 and "line 1: metrics: invalid value" in p.stderr, p.stderr


# -- the real monitor, scraped by the real prometheus ---------------------------------------------------------

@pytest.mark.bpf
def test_prometheus_counts_state_changes_numbers_only_mode(monitor, tmp_path):
    """`--metrics PORT -q --no-log-file`: no lines anywhere, and prometheus counts exactly the state
    changes of the N connections the test made on its own port."""
    port, mport, n, addr = free_port(), free_port(), 6, private_loopback()
    m = monitor("--metrics", str(mport), "-q", "--no-log-file", "--no-report", "-a", addr)
    with Prometheus(tmp_path, [f"127.0.0.1:{mport}"]) as prom:
        assert prom.wait_for('up{job="socket-snoop"}', 1) == 1
        conversation(addr, port, "ss-msrv", "ss-mcli", count=n)
        assert prom.wait_for('socketsnoop_state_changes_total{state="ESTABLISHED"}', 2 * n) == 2 * n
        assert prom.wait_for('socketsnoop_state_changes_total{state="SYN_SENT"}', n) == n
        assert prom.wait_for('socketsnoop_state_changes_total{state="CLOSE"}', 2 * n) == 2 * n
        assert prom.value('socketsnoop_events_lost_total{where="kernel_ring"}') == 0
    m.stop()
    assert m.proc.returncode == 0 and not m.log.exists() and "State Change" not in m.stdout
    # at least 5 state changes a side (the kernel may report FIN_WAIT2 -> FIN_WAIT2 too), all counted, in the
    # kernel: none read from its rings (counting without transfer)
    assert m.totals()["captured"] >= 5 * 2 * n and m.totals()["lines"] == 0


REFUSE = """
import socket
for _ in range({count}):
    try:
        socket.create_connection(({addr!r}, {port}), timeout=5)
    except ConnectionRefusedError:
        print("refused", flush=True)
"""


@pytest.mark.bpf
def test_prometheus_counts_connection_records(monitor, tmp_path):
    """The kernel's connection records, with --no-summary (no summary lines, the metrics still get them):
    N conversations and K connects to a closed port give prometheus N connections out and N in that
    closed, K out refused, K failed connects refused, and a duration for each of the 2N + K."""
    port, closed, mport, addr, n, k = free_port(), free_port(), free_port(), private_loopback(), 4, 3
    m = monitor("--metrics", str(mport), "-q", "--no-log-file", "--no-report", "--no-summary", "-a", addr)
    with Prometheus(tmp_path, [f"127.0.0.1:{mport}"]) as prom:
        conversation(addr, port, "ss-rsrv", "ss-rcli", count=n)
        p = spawn(REFUSE, addr=addr, port=closed, count=k)
        out, err = p.communicate(timeout=30)
        assert out.count("refused") == k, err
        assert prom.wait_for('socketsnoop_connections_total{direction="out",result="closed"}', n) == n
        assert prom.wait_for('socketsnoop_connections_total{direction="in",result="closed"}', n) == n
        assert prom.wait_for('socketsnoop_connections_total{direction="out",result="refused"}', k) == k
        assert prom.wait_for('socketsnoop_failed_connects_total{cause="refused"}', k) == k
        assert prom.value('socketsnoop_failed_connects_total{cause="timeout"}') == 0
        assert prom.value("sum(socketsnoop_connections_total)") == 2 * n + k
        assert prom.wait_for("socketsnoop_connection_duration_seconds_count", 2 * n + k) == 2 * n + k
        assert prom.value("socketsnoop_handshake_seconds_count") >= n  # the clients' at least
        assert prom.value("socketsnoop_rtt_seconds_count") >= 2 * n  # refused connects measured none
        assert prom.value('socketsnoop_events_lost_total{where="kernel_records"}') == 0
    m.stop()
    assert "Connection Summary" not in m.stdout


@pytest.mark.bpf
def test_prometheus_counts_resets_and_retransmissions(monitor, tmp_path):
    """Resets (3 connects to a closed port) and retransmissions (an nftables rule drops 30% of the
    packets to the server): prometheus' counts equal the lines of the same monitor's log, and the
    refused connects are the test's 3."""
    port, closed, mport, addr = free_port(), free_port(), free_port(), private_loopback()
    m = monitor("--metrics", str(mport), "-q", "--no-report", "-a", addr)
    with Prometheus(tmp_path, [f"127.0.0.1:{mport}"]) as prom:
        p = spawn("""
import socket
for _ in range(3):
    try:
        socket.create_connection(({addr!r}, {port}), timeout=5)
    except ConnectionRefusedError:
        print("refused", flush=True)
""", port=closed, addr=addr)
        out, err = p.communicate(timeout=30)
        assert out.count("refused") == 3, err
        srv = start_server(addr, port, "ss-mlossy", count=6)  # (6: a retransmission is then all but certain)
        try:
            with nft_drop(port, 30, syn_percent=5):
                run_client(addr, port, "ss-mretx", count=6, size=100000, timeout=60)
            srv.communicate(timeout=60)
        finally:
            srv.kill()
        time.sleep(0.5)
        lines = m.lines()
        counts = {title: sum(f" {title}: " in line for line in lines)
                  for title in ("Retransmission", "Reset Sent", "Reset Received")}
        assert counts["Retransmission"] > 0 and counts["Reset Received"] == 3, counts
        assert prom.wait_for("socketsnoop_retransmissions_total", counts["Retransmission"]) == counts["Retransmission"]
        assert prom.wait_for("socketsnoop_resets_received_total", 3) == 3
        assert prom.wait_for("socketsnoop_resets_sent_total", counts["Reset Sent"]) == counts["Reset Sent"]
        established = sum(" State Change: " in line and "STATE=Connection Established" in line for line in lines)
        assert established == 12  # 6 connections, both ends
        assert prom.wait_for('socketsnoop_state_changes_total{state="ESTABLISHED"}', established) == established
    m.stop()


@pytest.mark.bpf
def test_hostile_comm_scraped_cleanly(monitor, tmp_path):
    """A client names itself with quotes, a backslash, a newline and braces (prctl PR_SET_NAME): the
    exposition still parses (prometheus_client's parser), prometheus scrapes it (up == 1), and the label
    comes back as the name's escaped text."""
    port, mport, addr = free_port(), free_port(), private_loopback()
    m = monitor("--metrics", str(mport), "--metrics-labels", "comm", "-q", "--no-log-file", "--no-report",
                "-a", addr)
    with Prometheus(tmp_path, [f"127.0.0.1:{mport}"]) as prom:
        conversation(addr, port, "ss-hsrv", HOSTILE.decode(), count=2)
        label = comm_label(HOSTILE)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            samples = scrape(mport)
            if sample_sum(samples, "socketsnoop_state_changes_total", comm=label, state="ESTABLISHED") == 2:
                break
            time.sleep(0.3)
        assert sample_sum(samples, "socketsnoop_state_changes_total", comm=label, state="ESTABLISHED") == 2, samples
        assert sample_sum(samples, "socketsnoop_state_changes_total", comm="ss-hsrv", state="ESTABLISHED") == 2
        time.sleep(2.5)  # two more scrapes after the name appeared
        assert prom.value('up{job="socket-snoop"}') == 1
        got = prom.query('socketsnoop_state_changes_total{state="ESTABLISHED"}')
        assert {r["comm"]: v for r, v in got} == {label: 2, "ss-hsrv": 2}, got
    m.stop()


SCAN = """
import ctypes, os, socket
addr, first, per, procs = {addr!r}, {first}, {per}, {procs}
kids = []
for i in range(procs):
    pid = os.fork()
    if pid == 0:
        ctypes.CDLL(None).prctl(15, b"scan-%03d" % i, 0, 0, 0)
        refused = 0
        for port in range(first + i * per, first + (i + 1) * per):
            s = socket.socket()
            try:
                s.connect((addr, port))
            except ConnectionRefusedError:
                refused += 1
            except OSError:
                pass
            s.close()
        os._exit(0 if refused == per else 1)
    kids.append(pid)
bad = sum(os.waitpid(pid, 0)[1] != 0 for pid in kids)
print("done", bad, flush=True)
"""


@pytest.mark.bpf
def test_port_scan_keeps_series_under_the_cap(monitor, tmp_path):
    """A scan of 5,000 ports from 200 processes with 200 names, `--metrics-labels comm:50`: at most 50
    names and 'other' in any metric, and every connect still counted (sums over names)."""
    addr = private_loopback()
    mport, procs, per = free_port(), 200, 25
    m = monitor("--metrics", str(mport), "--metrics-labels", "comm:50", "-q", "--no-log-file", "--no-report",
                "-a", addr)
    with Prometheus(tmp_path, [f"127.0.0.1:{mport}"]) as prom:
        p = spawn(SCAN, addr=addr, first=40000, per=per, procs=procs)
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0 and out.startswith("done"), err
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            samples = scrape(mport)
            if sample_sum(samples, "socketsnoop_state_changes_total", state="SYN_SENT") >= procs * per:
                break
            time.sleep(0.5)
        assert sample_sum(samples, "socketsnoop_state_changes_total", state="SYN_SENT") == procs * per
        for name in {n for n, _ in samples}:
            comms = {dict(ls)["comm"] for n, ls in samples if n == name and "comm" in dict(ls)}
            assert len(comms) <= 51, (name, len(comms))
        # the cap is on the distinct values of the label, in all metrics together: 50 (49 scanners and '-',
        # no process, of the resets the kernel sent for closed ports) and 'other'
        comms = {dict(ls)["comm"] for n, ls in samples if "comm" in dict(ls)}
        assert OTHER in comms and "-" in comms and len(comms) == 51, comms
        assert sample_sum(samples, "socketsnoop_metrics_label_overflow_total", label="comm") > 0
        # and prometheus holds no more series than that
        expr = 'count(count by (comm) ({__name__=~"socketsnoop_.*", comm!=""}))'
        assert prom.wait_for(expr, 51) == 51
        assert prom.wait_for(f'sum(socketsnoop_state_changes_total{{state="SYN_SENT"}})', procs * per) == procs * per
    m.stop()


@pytest.mark.bpf
def test_events_lost_in_the_kernel_ring_are_exported(monitor):
    """A stopped reader and a tiny buffer: the kernel's lost count is exported, equal to the exit totals."""
    port, mport = free_port(), free_port()
    # a log file: the events cross to user space (with --metrics alone they are counted in the kernel)
    m = monitor("--metrics", str(mport), "-P", str(port), "--no-report", "--buffer-size", "64K", "-q")
    srv = start_server("127.0.0.1", port, "ss-mflood", count=400)
    m.proc.send_signal(signal.SIGSTOP)
    try:
        run_client("127.0.0.1", port, "ss-mflooder", count=400, size=1)
        srv.communicate(timeout=60)
    finally:
        m.proc.send_signal(signal.SIGCONT)
        srv.kill()
    time.sleep(2)  # the main loop reads the kernel's counters once a second
    lost = sample_sum(scrape(mport), "socketsnoop_events_lost_total", where="kernel_ring")
    m.stop()
    assert lost > 0 and lost == m.totals()["lost"], (lost, m.totals())


@pytest.mark.bpf
def test_events_shed_by_kind_are_exported(monitor):
    """The overload policy as a metric: what the kernel shed with the reader stopped, by kind, equal to the
    exit totals (loopback: all state changes)."""
    port, mport = free_port(), free_port()
    # a log file: the events cross to user space (with --metrics alone they are counted in the kernel)
    m = monitor("--metrics", str(mport), "-P", str(port), "--no-report", "--buffer-size", "64K", "-q")
    srv = start_server("127.0.0.1", port, "ss-mshed", count=400)
    m.proc.send_signal(signal.SIGSTOP)
    try:
        run_client("127.0.0.1", port, "ss-mshedder", count=400, size=1)
        srv.communicate(timeout=60)
    finally:
        m.proc.send_signal(signal.SIGCONT)
        srv.kill()
    time.sleep(2)  # the main loop reads the kernel's counters once a second
    text = scrape(mport)
    shed = sample_sum(text, "socketsnoop_events_shed_total", kind="state_change")
    retransmit = sample_sum(text, "socketsnoop_events_shed_total", kind="retransmit")
    m.stop()
    t = m.totals()
    assert shed > 0 and shed == t["shed_state_change"] == t["lost"] and retransmit == 0, (shed, t)


@pytest.mark.bpf
def test_metrics_port_in_use_is_one_line(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        p = run("--metrics", str(s.getsockname()[1]), "--no-log-file", "--duration", "1")
    assert p.returncode == 1 and "cannot listen on 127.0.0.1:" in p.stderr, p.stderr
    assert p.stderr.strip().count("\n") == 0 and "Traceback" not in p.stderr


def test_sink_listens_on_ipv6_loopback(sink):
    s = MetricsSink("::1", free_port()).open()
    try:
        s.write([make_row(type=EV_STATE, newstate=ESTABLISHED)], None)
        assert sample_sum(scrape(s.port, host="[::1]"), "socketsnoop_state_changes_total") == 1
    finally:
        s.close()
