"""--syslog relp://: RELP to the real rsyslogd's imrelp (Debian's rsyslog-relp), restarted mid-run: every
message arrives (duplicates allowed, none lost), and the exit's Outputs line says so."""

import os
import re
import signal
import socket
import subprocess
import threading
import time

import pytest
from support.net import free_port
from support.procs import REFUSER, spawn

from socketsnoop.logformat.base import Clock
from socketsnoop.output.relp import RelpSink, frame, parse_frames, syslog_sink
from socketsnoop.output.syslog import SyslogSink, parse_url

IMRELP = "/usr/lib/x86_64-linux-gnu/rsyslog/imrelp.so"
needs_rsyslog = pytest.mark.skipif(not os.path.exists(IMRELP), reason="needs rsyslog-relp (imrelp)")


class RelpCollector:
    """rsyslogd with imrelp alone on a loopback port, writing each message's MSG to d/relp.log."""

    def __init__(self, d):
        self.dir, self.port, self.proc = d, free_port(), None
        self.log = d / "relp.log"
        self.conf = d / "rsyslog-relp.conf"
        self.conf.write_text(f"""\
global(workDirectory="{d}" maxMessageSize="64k")
module(load="imrelp")
template(name="m" type="string" string="%msg%\\n")
input(type="imrelp" address="127.0.0.1" port="{self.port}" ruleset="relp")
ruleset(name="relp") {{ action(type="omfile" file="{self.log}" template="m") }}
""")

    @property
    def url(self):
        return f"relp://127.0.0.1:{self.port}"

    def start(self):
        self.proc = subprocess.Popen(["rsyslogd", "-n", "-f", str(self.conf), "-i", str(self.dir / "relp.pid")],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        end = time.monotonic() + 20
        while time.monotonic() < end:
            with socket.socket() as s:
                if not s.connect_ex(("127.0.0.1", self.port)):
                    return self
            assert self.proc.poll() is None, self.proc.communicate()[0]
            time.sleep(0.05)
        raise AssertionError("rsyslogd (imrelp) did not start")

    def stop(self):
        if self.proc is None:
            return ""
        self.proc.send_signal(signal.SIGTERM)
        try:
            out, _ = self.proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        self.proc = None
        return out

    def messages(self):
        return self.log.read_text(errors="surrogateescape").splitlines() if self.log.exists() else []


@pytest.fixture
def relp(tmp_path):
    c = RelpCollector(tmp_path)
    try:
        yield c.start()
    finally:
        c.stop()


def _wait(pred, timeout=20):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.1)
    return False


def test_frames():
    assert frame(7, b"syslog", b"<30>1 x") == b"7 syslog 7 <30>1 x\n"
    assert frame(9, b"close") == b"9 close 0\n"
    data = b"1 rsp 21 200 OK\nrelp_version=0\n2 rsp 6 200 OK\n0 serverclose 0\n3 rsp 6 20"
    assert parse_frames(data) == ([(1, b"rsp", b"200 OK\nrelp_version=0"), (2, b"rsp", b"200 OK"),
                                   (0, b"serverclose", b"")], b"3 rsp 6 20")
    assert isinstance(syslog_sink(Clock(), True, parse_url("relp://h")), RelpSink)
    assert type(syslog_sink(Clock(), True, parse_url("tcp://h"))) is SyslogSink
    assert str(parse_url("relp://logs")) == "relp://logs:2514"


@needs_rsyslog
def test_relp_every_message_arrives_across_a_restart(relp):
    """Messages stream in while rsyslogd is stopped and started again (so some are in the window, sent and
    not acknowledged, when it goes): every one arrives, none is counted as dropped."""
    said = []
    sink = RelpSink(Clock(), True, relp.url, warn=said.append).open()
    sent = []

    def stream(n, pause=0.002):
        for _ in range(n):
            text = f"relp test message {len(sent)}"
            sent.append(text)
            sink.notice(text, {"event": "lost_events", "lost": len(sent)})
            time.sleep(pause)

    writer = threading.Thread(target=stream, args=(3000,))
    writer.start()
    try:
        assert _wait(lambda: len(relp.messages()) >= 300)
        relp.stop()  # mid-stream
        time.sleep(1)
        relp.start()
    finally:
        writer.join()
    time.sleep(1)
    sink.close()
    assert sink.dropped() == 0, (sink.dropped(), said)
    assert sink.connects >= 2 and any("connected again" in s for s in said), said
    assert _wait(lambda: not set(sent) - set(relp.messages()), 10), len(set(sent) - set(relp.messages()))


@needs_rsyslog
@pytest.mark.bpf
def test_monitor_relp_with_rsyslogd_restarted(monitor, relp):
    closed = free_port()
    m = monitor("-P", str(closed), "--no-report", "-q", "--syslog", relp.url)

    def round_(n=20):
        spawn(REFUSER, comm=b"ss-relp", port=closed, count=n).communicate(timeout=60)

    round_()
    assert _wait(lambda: len(relp.messages()) >= len(m.lines()) >= 60), "nothing arrived before the restart"
    relp.stop()
    round_()
    time.sleep(1)
    relp.start()
    round_()
    time.sleep(1)
    assert m.stop() == 0, m.stderr
    lines = m.lines()
    assert len(lines) >= 3 * 60
    assert _wait(lambda: not set(lines) - set(relp.messages()), 10), len(set(lines) - set(relp.messages()))
    out = next(x for x in m.stderr.splitlines() if x.startswith("Outputs: "))
    assert re.match(r"Outputs: syslog dropped=0( sent_again=\d+)?$", out), out
