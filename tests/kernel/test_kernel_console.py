"""The monitor's standard output as a user's script meets it: the events alone, in time order (their connection
records among them), a reader that stalls or goes away never holding up the monitor or its log file."""

import datetime
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from support.net import free_port
from support.procs import conversation, run_client, start_server
from support.system import READY

pytestmark = pytest.mark.bpf

TS = r"[A-Z][a-z]{2} \d{2} \d{4} \d{2}:\d{2}:\d{2}\.\d{3}"
EVENT_LINE = re.compile(rf"^{TS} (State Change|Retransmission|Reset Sent|Reset Received|Connection Summary): SRC=")


def text_time(line):
    return datetime.datetime.strptime(line[:24], "%b %d %Y %H:%M:%S.%f")


def out_of_order(times):
    return [(i, a, b) for i, (a, b) in enumerate(zip(times, times[1:])) if b < a]


def burst(port, comm, count):
    """count connections one after the other, as fast as loopback goes: a batch of the rings then holds the
    records of the first ones and the events of the later ones."""
    srv = start_server("127.0.0.1", port, f"{comm}-srv", count=count)
    try:
        run_client("127.0.0.1", port, f"{comm}-cli", count=count, size=10)
        srv.communicate(timeout=60)
    finally:
        if srv.poll() is None:
            srv.kill()
            srv.communicate()


def test_events_and_summaries_in_time_order_on_every_output(monitor):
    port = free_port()
    text = monitor("-P", str(port), summary=True)
    js = monitor("-P", str(port), "--json", log_name="json.log", summary=True)
    for _ in range(3):
        burst(port, "ss-ord", 40)
    assert text.stop() == 0 and js.stop() == 0
    log = text.lines()
    assert sum("Connection Summary" in x for x in log) == 3 * 40 * 2, log[-5:]
    for name, lines in (("log file", log), ("stdout", text.stdout.splitlines())):
        assert all(EVENT_LINE.match(x) for x in lines), name
        bad = out_of_order([text_time(x) for x in lines])
        assert not bad, f"{name}: {len(bad)} lines out of time order, e.g. {bad[:3]}"
    entries = js.records()
    assert sum(e["event"] == "connection" for e in entries) == 3 * 40 * 2
    bad = out_of_order([e["timestamp"] for e in entries])
    assert not bad, f"JSON log: {len(bad)} lines out of time order, e.g. {bad[:3]}"
    assert [json.loads(x) for x in js.stdout.splitlines()] == entries


def test_stdout_carries_the_events_alone(monitor):
    """--json: every stdout line a JSON object; text: every one an event line; the exit summary on stderr."""
    port = free_port()
    text = monitor("-P", str(port), summary=True)
    js = monitor("-P", str(port), "--json", log_name="json.log", summary=True)
    conversation("127.0.0.1", port, "ss-out-srv", "ss-out-cli", count=2)
    assert text.stop() == 0 and js.stop() == 0
    objects = [json.loads(line) for line in js.stdout.splitlines()]  # what `| jq .` does
    assert len(objects) >= 10 and all(isinstance(o, dict) and "event" in o for o in objects)
    lines = text.stdout.splitlines()
    assert len(lines) >= 10 and all(EVENT_LINE.match(x) for x in lines), [x for x in lines if not EVENT_LINE.match(x)]
    for m in (text, js):
        assert "Stopping monitoring...\n\nConnection Lifecycles:\n" in m.stderr
        assert m.totals()["lines"] == len(m.lines())


def wait_for(path, text, timeout=20):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if path.exists() and text in path.read_text():
            return
        time.sleep(0.05)
    raise AssertionError(f"{text!r} never in {path}: {path.read_text() if path.exists() else '(none)'}")


def test_a_closed_stdout_ends_the_monitor(tmp_path):
    """socket-snoop | head -2: two lines, then the monitor stops by itself, its totals on stderr, the log
    file complete."""
    port = free_port()
    log, err, out = tmp_path / "m.log", tmp_path / "err", tmp_path / "out"
    cmd = (f"{sys.executable} -m socketsnoop -P {port} --log-file {log} 2>{err} | head -2 >{out}")
    sh = subprocess.Popen(["sh", "-c", cmd], start_new_session=True)
    try:
        wait_for(err, READY)
        conversation("127.0.0.1", port, "ss-head-srv", "ss-head-cli", count=3)
        done = time.monotonic()
        sh.wait(timeout=10)
        took = time.monotonic() - done
    finally:
        if sh.poll() is None:
            os.killpg(sh.pid, signal.SIGKILL)
            sh.wait()
    assert len(out.read_text().splitlines()) == 2
    said = err.read_text()
    assert took < 3, f"{took:.1f}s after the last connection"
    totals = next(line for line in said.splitlines() if line.startswith("Totals: "))
    lines = int(re.search(r" lines=(\d+)", totals).group(1))
    assert lines == len(log.read_text().splitlines()) >= 3 * 8, (totals, said)
    assert "Traceback" not in said and "console output stopped" not in said, said


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stalled_stdout_holds_up_nothing(tmp_path, sig):
    """socket-snoop > fifo with a reader that never reads: the log file gets every line, the console's
    drops are counted and shown, and SIGTERM (or Ctrl-C) ends it at once."""
    port = free_port()
    log, fifo = tmp_path / "m.log", tmp_path / "fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # there, never reading
    writer = os.open(fifo, os.O_WRONLY)
    proc = subprocess.Popen([sys.executable, "-m", "socketsnoop", "-P", str(port), "--log-file", str(log)],
                            stdout=writer, stderr=subprocess.PIPE, text=True)
    os.close(writer)
    try:
        assert proc.stderr.readline().startswith(READY)
        for _ in range(2):
            burst(port, "ss-fifo", 100)  # some 2,400 lines: more than a pipe holds (64 KiB)
        time.sleep(0.5)
        sent = time.monotonic()
        proc.send_signal(sig)
        _, said = proc.communicate(timeout=15)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        os.close(reader)
    assert proc.returncode == 0, said
    assert took < 2.5, f"{sig.name} took {took:.1f}s"
    log_lines = log.read_text().splitlines()
    assert sum("Connection Summary" in x for x in log_lines) == 2 * 100 * 2
    totals = next(line for line in said.splitlines() if line.startswith("Totals: "))
    assert int(re.search(r" lines=(\d+)", totals).group(1)) == len(log_lines)
    dropped = int(re.search(r"^Outputs: console dropped=(\d+)$", said, re.M).group(1))
    assert 0 < dropped <= len(log_lines), said
    assert f"warning: {dropped} events could not be written to the console" in said
