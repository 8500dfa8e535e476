"""The README's "Many hosts" section, used as it is written: its central rsyslog configuration run by the real
rsyslogd (then `socket-snoop report` on the files it wrote, grouped by host), its Prometheus scrape config and
alert rules checked by promtool and loaded by the real prometheus, scraping real monitors (the lost-events
alert fires when events are lost; the refusals alert's expression holds when connects are refused)."""

import io
import json
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from socketsnoop.commands import report
from test_metrics import private_loopback

from support.net import free_port
from support.procs import Monitor, conversation, run_client, spawn, start_server
from support.prom import Prometheus

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_block(name):
    """The fenced block right after `<!-- name -->` in the README."""
    m = re.search(rf"<!-- {re.escape(name)} -->\n```[a-z]*\n(.*?)```", README.read_text(), re.S)
    assert m, f"no {name} block in the README"
    return m.group(1)


def prometheus_files(tmp_path, targets=None, interval=None):
    """The README's prometheus.yml and rules, written to tmp_path: the rules file where the config names it,
    the targets and the intervals replaced when given. Returns (config path, rules path, config text)."""
    rules = tmp_path / "socket-snoop-rules.yml"
    rules.write_text(readme_block("socket-snoop-rules.yml"))
    config = readme_block("prometheus.yml").replace("/etc/prometheus/socket-snoop-rules.yml", str(rules))
    if targets is not None:
        config = re.sub(r"- targets: \[.*\]", "- targets: " + json.dumps(targets), config)
    if interval:
        config = config.replace("scrape_interval: 15s", f"scrape_interval: {interval}\n  evaluation_interval: {interval}")
    path = tmp_path / "prometheus.yml"
    path.write_text(config)
    return path, rules, config


def test_readme_prometheus_config_and_rules_pass_promtool(tmp_path):
    config, rules, _ = prometheus_files(tmp_path)
    r = subprocess.run(["promtool", "check", "rules", str(rules)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "SUCCESS: 2 rules found" in r.stdout, r.stdout + r.stderr
    r = subprocess.run(["promtool", "check", "config", str(config)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "SUCCESS" in r.stdout, r.stdout + r.stderr
    # and promtool would say so if they were wrong
    rules.write_text(rules.read_text().replace("rate(", "rate[", 1))
    r = subprocess.run(["promtool", "check", "rules", str(rules)], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0


REFUSER = """
import socket, time
while True:
    try:
        socket.create_connection(({addr!r}, {port}), timeout=5)
    except ConnectionRefusedError:
        pass
    time.sleep(0.01)
"""


@pytest.mark.bpf
def test_readme_alert_rules_in_prometheus(monitor, tmp_path):
    """The README's config and rules in the real prometheus, scraping two real monitors: one that loses
    events (a stopped reader, a tiny buffer), one that sees a process connect to a closed port about 100
    times a second. SocketSnoopEventsLost fires for the first only; SocketSnoopRefusals' expression holds
    for the second (pending: its `for` is ten minutes)."""
    port, mport, rport, addr = free_port(), free_port(), free_port(), private_loopback()
    # lossy: a log file, so that its events cross to user space, where its stopped reader loses them
    lossy = monitor("--metrics", str(mport), "-P", str(port), "--no-report", "--buffer-size", "64K", "-q")
    refusals = monitor("--metrics", str(rport), "-a", addr, "--no-report", "-q", "--no-log-file",
                       log_name="refusals.log")
    targets = [f"127.0.0.1:{mport}", f"127.0.0.1:{rport}"]
    _, _, config = prometheus_files(tmp_path, targets, "1s")
    refuser = None
    with Prometheus(tmp_path, targets, config_text=config) as prom:
        try:
            groups = prom.api("rules")["groups"]
            assert {r["name"]: r["health"] for g in groups for r in g["rules"]} == {
                "SocketSnoopRefusals": "ok", "SocketSnoopEventsLost": "ok"}, groups
            assert not prom.api("alerts")["alerts"]
            srv = start_server("127.0.0.1", port, "ss-aflood", count=400)
            lossy.proc.send_signal(signal.SIGSTOP)
            try:
                run_client("127.0.0.1", port, "ss-aflooder", count=400, size=1)
                srv.communicate(timeout=60)
            finally:
                lossy.proc.send_signal(signal.SIGCONT)
                srv.kill()
            refuser = spawn(REFUSER, addr=addr, port=free_port())
            deadline = time.monotonic() + 60
            states = {}
            while time.monotonic() < deadline:
                states = {(a["labels"]["alertname"], a["labels"]["instance"]): a["state"]
                          for a in prom.api("alerts")["alerts"]}
                if (states.get(("SocketSnoopEventsLost", targets[0])) == "firing"
                        and states.get(("SocketSnoopRefusals", targets[1])) == "pending"):
                    break
                time.sleep(0.5)
            assert states.get(("SocketSnoopEventsLost", targets[0])) == "firing", states
            assert states.get(("SocketSnoopRefusals", targets[1])) == "pending", states
            assert ("SocketSnoopEventsLost", targets[1]) not in states  # it lost nothing
            assert ("SocketSnoopRefusals", targets[0]) not in states
        finally:
            if refuser:
                refuser.kill()
                refuser.communicate()
    lossy.stop()
    refusals.stop()
    assert lossy.totals()["lost"] > 0 and refusals.totals()["lost"] == 0


def frame_5424(host, pid, line, msgid="state_change"):
    """A message as the --syslog output sends it: RFC 5424, the text log's line as MSG."""
    sd = '[socketsnoop@32473 comm="a\\"\\]b" src="127.0.0.1"]'
    return f"<30>1 2026-12-01T21:05:58.123Z {host} socket-snoop {pid} {msgid} {sd} {line}".encode()


def start_rsyslogd(tmp_path):
    """rsyslogd running the README's central configuration on a free port, writing to tmp_path/central;
    (process, port, directory) once it accepts connections."""
    central = tmp_path / "central"
    central.mkdir()
    sport = free_port()
    conf = tmp_path / "rsyslog.conf"
    conf.write_text(readme_block("rsyslog.conf").replace('port="514"', f'port="{sport}"')
                    .replace("/var/log/central", str(central)))
    rs = subprocess.Popen(["rsyslogd", "-n", "-f", str(conf), "-i", str(tmp_path / "rsyslogd.pid")],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", sport), timeout=5).close()
            return rs, sport, central
        except OSError:
            if rs.poll() is not None or time.monotonic() > deadline:
                rs.kill()
                raise AssertionError(f"rsyslogd did not start: {rs.communicate()[0]}")
            time.sleep(0.1)


def syslog_offered():
    return "--syslog" in subprocess.run([sys.executable, "-m", "socketsnoop", "--help"], capture_output=True,
                                        text=True, timeout=60).stdout


def wait_lines(files, want, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(f.exists() and f.read_text().count("\n") >= want for f in files):
            return
        time.sleep(0.2)


def check_report(files, sent):
    """`socket-snoop report` on each of rsyslog's files: a section per host, each with the events it sent
    (sent: host -> its lines)."""
    want = sum(len(v) for v in sent.values())
    for f in files:
        text = f.read_text()
        assert text.count("\n") == want, (f, text[:2000])
        if f.name == "socket-snoop.log":  # RSYSLOG_TraditionalFileFormat
            assert re.match(r"[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d host", text), text[:300]
        else:
            assert text.startswith("<30>1 "), text[:300]
        buf = io.StringIO()
        assert report.run(report.build_parser().parse_args([str(f), "--json"]), buf) == 0
        doc = json.loads(buf.getvalue())
        assert doc["malformed"] == 0
        got = {h["host"]: h for h in doc["hosts"]}
        assert set(got) == set(sent), got.keys()
        for host, ls in sent.items():
            assert got[host]["events"] == len(ls), (host, got[host])
            established = sum("STATE=Connection Established" in ln for ln in ls)
            assert got[host]["states"].get("ESTABLISHED", 0) == established, got[host]
        buf = io.StringIO()
        report.run(report.build_parser().parse_args([str(f), "--no-lifecycles"]), buf)
        text = buf.getvalue()
        assert [ln for ln in text.splitlines() if ln.startswith("Host ")] == [f"Host {h}" for h in sorted(sent)], text
        assert f"Hosts: {len(sent)} ({', '.join(sorted(sent))}); 0 malformed lines skipped" in text


@pytest.mark.bpf
def test_central_rsyslog_report_by_host(monitor, tmp_path):
    """The README's central rsyslog configuration, run by the real rsyslogd, receiving from socket-snoop on
    three hosts. Where `socket-snoop --help` offers --syslog, three real monitors, each in a UTS namespace of
    its own named host1, host2, host-3 (`unshare --uts`), send their events over TCP; without it the test
    sends a real monitor's lines as that output frames them (RFC 5424, the text line as MSG; host1 over TCP,
    octet-counted, host2 and host-3 over UDP). `socket-snoop report` on each file rsyslog wrote (its
    traditional format and RFC 5424) groups the events by host, each host with the events it sent."""
    port, addr = free_port(), private_loopback()
    rs, sport, central = start_rsyslogd(tmp_path)
    files = [central / "socket-snoop.log", central / "socket-snoop-5424.log"]
    try:
        if syslog_offered():
            monitors = {}
            for host in ("host1", "host2", "host-3"):
                m = Monitor(tmp_path, "-a", addr, "--no-report", "-q", "--syslog", f"tcp://127.0.0.1:{sport}",
                            log_name=f"{host}.log")
                m.args = ["unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"', host, *m.args]
                monitors[host] = m.start()
            try:
                conversation(addr, port, "ss-central", "ss-edge", count=3)
            finally:
                for m in monitors.values():
                    m.stop()
            sent = {host: m.lines() for host, m in monitors.items()}
            assert all(len(v) >= 30 for v in sent.values()), sent
        else:
            m = monitor("-a", addr, "--no-report", "-q")
            conversation(addr, port, "ss-central", "ss-edge", count=3)
            m.stop()
            lines = m.lines()
            assert len(lines) >= 30 and all(" State Change: " in ln for ln in lines), lines  # 5 a side, or a repeat
            sent = {"host1": lines, "host2": lines[:10],
                    "host-3": [ln for ln in lines if "STATE=Connection Established" in ln]}
            with socket.create_connection(("127.0.0.1", sport), timeout=10) as tcp:
                tcp.sendall(b"".join(b"%d %s" % (len(f), f) for f in (frame_5424("host1", 11, ln) for ln in lines)))
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                for host in ("host2", "host-3"):
                    for ln in sent[host]:
                        udp.sendto(frame_5424(host, 22, ln), ("127.0.0.1", sport))
                        time.sleep(0.001)
        wait_lines(files, sum(len(v) for v in sent.values()))
    finally:
        rs.terminate()
        out, _ = rs.communicate(timeout=30)
    check_report(files, sent)
