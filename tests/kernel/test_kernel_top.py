"""`socket-snoop top` on the real kernel, with real traffic from processes with distinct names: connections
that close in order (one client in a unit-shaped cgroup), refused ones, one timed out, one reset, one held
open. Its JSON snapshots against what the test made and against the monitor's connection records of the same
run; its screen in tmux, as a person uses it (keys to regroup and sort, q to quit)."""

import json
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter, defaultdict
from contextlib import ExitStack

import pytest

from support.cgroups import cgroups
from support.net import free_port, netns_pair
from support.procs import Monitor, spawn
from support.system import sh, uniq

pytestmark = pytest.mark.bpf

PRELUDE = """
import ctypes, socket, struct, sys, time
ctypes.CDLL(None).prctl(15, {comm!r}, 0, 0, 0)
"""

# accepts `count` connections: reads until the client's FIN (or `expect` bytes), replies, closes (linger0: a reset)
SERVER = PRELUDE + """
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(('127.0.0.1', {port}))
srv.listen(16)
print('listening', flush=True)
for _ in range({count}):
    conn, _ = srv.accept()
    got = 0
    while got < {expect} or not {expect}:
        chunk = conn.recv(65536)
        if not chunk:
            break
        got += len(chunk)
    conn.sendall(b'r' * {reply})
    if {linger0}:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
    conn.close()
"""

# `count` connections: send `size` bytes, (unless reset_expected) shut down, read to the end; hold: wait for a
# line on stdin before sending; a refused or timed-out connect is printed and counted
CLIENT = PRELUDE + """
for _ in range({count}):
    c = socket.socket()
    c.settimeout(30)
    try:
        c.connect(({host!r}, {port}))
    except OSError as e:
        print('error', e.errno, flush=True)
        c.close()
        continue
    if {hold}:
        print('connected', flush=True)
        sys.stdin.readline()
    c.sendall(b's' * {size})
    try:
        if not {reset_expected}:
            c.shutdown(socket.SHUT_WR)
        while c.recv(65536):
            pass
    except ConnectionResetError:
        print('reset', flush=True)
    c.close()
print('done', flush=True)
"""


def server(port, comm, count, expect=0, reply=7, linger0=False):
    p = spawn(SERVER, comm=comm.encode(), port=port, count=count, expect=expect, reply=reply, linger0=linger0)
    assert p.stdout.readline().strip() == "listening", p.stderr.read()
    return p


def client(port, comm, count=1, size=100, host="127.0.0.1", hold=False, reset_expected=False, **kw):
    return spawn(CLIENT, comm=comm.encode(), host=host, port=port, count=count, size=size, hold=hold,
                 reset_expected=reset_expected, **kw)


def done(p, timeout=60):
    out, err = p.communicate(timeout=timeout)
    assert p.returncode == 0, err
    return out


class Top:
    """socket-snoop top as a child process, its JSON snapshots read as they come."""

    def __init__(self, *args):
        self.proc = subprocess.Popen([sys.executable, "-m", "socketsnoop", "top", *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        head = []
        while not head or not head[-1].startswith("socket-snoop top: watching"):  # after any warning
            head.append(self.proc.stderr.readline())
            assert head[-1], "".join(head) + self.proc.stderr.read()
        self.docs = []

    def next(self):
        line = self.proc.stdout.readline()
        assert line, self.proc.stderr.read()
        self.docs.append(json.loads(line))
        return self.docs[-1]

    def wait_for(self, pred, timeout=30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pred(self.next()):
                return self.docs[-1]
        raise AssertionError(f"no snapshot as expected in {timeout}s: {self.docs[-1]}")

    def stop(self):
        """SIGINT: top prints the interval so far as a last snapshot, and exits 0."""
        self.proc.send_signal(signal.SIGINT)
        out, err = self.proc.communicate(timeout=30)
        self.docs += [json.loads(line) for line in out.splitlines()]
        assert self.proc.returncode == 0, err
        return self.docs


COUNTS = ("opened", "ended", "refused", "timeout", "unreachable", "resets_sent", "resets_received", "retransmits",
          "bytes_sent", "bytes_received")


def make_traffic(ports, unit_cgroup, netns, peer, on_hold=None):
    """Real traffic on the test's ports: returns {comm: {count: value}} of what it made (by design)."""
    ok, refused, rst, drop = ports
    srv = server(ok, "ss-topsrv", count=4)
    rsrv = server(rst, "ss-toprstsrv", count=1, expect=5, reply=3, linger0=True)
    try:
        holder = client(ok, "ss-tophold", hold=True)
        assert holder.stdout.readline().strip() == "connected", holder.stderr.read()
        if on_hold:
            on_hold()
        holder.stdin.write("go\n")
        holder.stdin.flush()
        tmo = client(drop, "ss-toptmo", netns=netns, host=peer)  # about 3 s: tcp_syn_retries=1
        for p in (client(ok, "ss-topcli", count=3, cgroup=unit_cgroup), holder):
            assert done(p).count("done") == 1
        assert done(client(refused, "ss-toprefuse", count=2)).count("error 111") == 2
        assert "reset" in done(client(rst, "ss-toprstcli", size=5, reset_expected=True))
        assert "error 110" in done(tmo)
        done(srv)
        done(rsrv)
    finally:
        for p in (srv, rsrv):
            if p.poll() is None:
                p.kill()
                p.communicate()
    zero = dict.fromkeys(COUNTS, 0)
    return {
        "ss-topcli": {**zero, "opened": 3, "ended": 3, "bytes_sent": 300, "bytes_received": 21},
        "ss-tophold": {**zero, "opened": 1, "ended": 1, "bytes_sent": 100, "bytes_received": 7},
        "ss-topsrv": {**zero, "opened": 4, "ended": 4, "bytes_sent": 28, "bytes_received": 400},
        "ss-toprefuse": {**zero, "opened": 2, "ended": 2, "refused": 2},
        "ss-toprstsrv": {**zero, "opened": 1, "ended": 1, "resets_sent": 1, "bytes_sent": 3, "bytes_received": 5},
        "ss-toprstcli": {**zero, "opened": 1, "ended": 1, "resets_received": 1, "bytes_sent": 5,
                         "bytes_received": 3},
        # its SYN sent again (how many times the kernel counts: the records say, at least once)
        "ss-toptmo": {**zero, "opened": 1, "ended": 1, "timeout": 1, "retransmits": None},
    }


class Scene:
    """The ports, the unit-shaped cgroup and the namespaces (for the timeout) of one test."""

    def __init__(self, stack):
        self.ports = [free_port() for _ in range(4)]
        self.unit = f"{uniq('ss-top')}.service"
        self.mount = stack.enter_context(cgroups(f"/system.slice/{self.unit}"))
        a, b, hosts = stack.enter_context(netns_pair())
        self.netns, self.peer = a, hosts[b][0]
        sh("ip", "netns", "exec", a, "sysctl", "-qw", "net.ipv4.tcp_syn_retries=1")
        table = uniq("sstop")
        sh("ip", "netns", "exec", b, "nft", "-f", "-", input=textwrap.dedent(f"""
            table inet {table} {{
                chain input {{
                    type filter hook input priority -10; policy accept;
                    tcp dport {self.ports[3]} drop
                }}
            }}
        """))

    @property
    def cgroup(self):
        return f"{self.mount}/system.slice/{self.unit}"

    def filters(self):
        return [arg for port in self.ports for arg in ("-P", str(port))]


def summed(docs, comms):
    """{comm: {count: sum over the snapshots}} of the rows of processes named in comms (by process)."""
    out = defaultdict(Counter)
    for doc in docs:
        for row in doc["rows"]:
            if row["key"]["comm"] in comms:
                out[row["key"]["comm"]].update({k: row[k] for k in COUNTS})
    return {comm: {k: c[k] for k in COUNTS} for comm, c in out.items()}


def from_records(records, comms):
    """The same sums from the monitor's connection records."""
    out = defaultdict(Counter)
    result_key = {"refused": "refused", "timeout": "timeout", "unreachable": "unreachable",
                  "reset-sent": "resets_sent", "reset-received": "resets_received"}
    for r in records:
        if r["event"] != "connection" or r["comm"] not in comms:
            continue
        c = out[r["comm"]]
        c.update(opened=1, ended=1, retransmits=r["retransmits"], bytes_sent=r["bytes_sent"],
                 bytes_received=r["bytes_received"])
        if r["result"] in result_key:
            c[result_key[r["result"]]] += 1
    return {comm: {k: c[k] for k in COUNTS} for comm, c in out.items()}


def test_json_snapshots_equal_the_traffic_and_the_monitors_records(tmp_path):
    with ExitStack() as stack:
        scene = Scene(stack)
        monitor = Monitor(tmp_path, "--json", "--summary-only", "--no-report", *scene.filters()).start()
        stack.callback(monitor.kill)
        top = Top("--json", "--interval", "1", *scene.filters())
        stack.callback(lambda: top.proc.poll() is None and top.proc.kill())

        def held():  # while ss-tophold's connection is open, top counts it (and its accepted end) as active
            def shows(doc):
                rows = {r["key"]["comm"]: r for r in doc["rows"]}
                return rows.get("ss-tophold", {}).get("active") == 1 and rows.get("ss-topsrv", {}).get("active") == 1
            doc = top.wait_for(shows)
            assert doc["totals"]["active"] == 2, doc

        made = make_traffic(scene.ports, scene.cgroup, scene.netns, scene.peer, on_hold=held)
        time.sleep(1.5)
        docs = top.stop()
        monitor.stop()
    comms = set(made)
    got, recorded = summed(docs, comms), from_records(monitor.records(), comms)
    assert recorded["ss-toptmo"]["retransmits"] >= 1
    made["ss-toptmo"]["retransmits"] = recorded["ss-toptmo"]["retransmits"]
    for comm, want in made.items():
        assert got.get(comm) == want, f"{comm}: {got.get(comm)}"
        assert recorded.get(comm) == want, f"{comm}: {recorded.get(comm)}"
    last = {r["key"]["comm"]: r for r in docs[-1]["rows"]}
    assert all(last[c]["active"] == 0 for c in comms if c in last), docs[-1]
    # percentiles are measured values (nearest rank): each is one of the group's records', as top's own program
    # timed it (the monitor's program reads the clock a few microseconds apart from it)
    handshakes = defaultdict(set)
    for r in monitor.records():
        if r["comm"] in comms and r["handshake_ms"] is not None:
            handshakes[r["comm"]].add(r["handshake_ms"])
    seen = 0
    for doc in docs:
        for row in doc["rows"]:
            if row["key"]["comm"] in comms and row["handshake_p50_ms"] is not None:
                p50, p99 = row["handshake_p50_ms"], row["handshake_p99_ms"]
                assert p50 <= p99, row
                for p in (p50, p99):
                    assert min(abs(p - h) for h in handshakes[row["key"]["comm"]]) <= 0.05, (p, row)
                seen += 1
    assert seen >= 5
    for doc in docs:
        assert doc["totals"]["lost"] == 0 and doc["totals"]["missed"] == 0, doc["totals"]


# -- the screen, in tmux ---------------------------------------------------------------------------------------

class Tmux:
    """A detached tmux session of 120x30 running one command; its screen read as a person sees it."""

    def __init__(self, command, env=""):
        self.name = uniq("sstop")
        sh("tmux", "new-session", "-d", "-s", self.name, "-x", "120", "-y", "30", f"{env} {command}")

    def screen(self, colours=False):
        return sh("tmux", "capture-pane", "-p", *(["-e"] if colours else []), "-t", self.name).stdout

    def keys(self, *keys):
        sh("tmux", "send-keys", "-t", self.name, *keys)

    def wait_for(self, pred, timeout=40, what="screen"):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.screen()
            if pred(text):
                return text
            time.sleep(0.2)
        raise AssertionError(f"no {what} in {timeout}s:\n{self.screen()}")

    def kill(self):
        sh("tmux", "kill-session", "-t", self.name, check=False)


def title(text):
    return next((line for line in text.splitlines() if line.startswith("socket-snoop top ")), None)


def table(text, label_words):
    """{label: {column header: text}} of the table on the screen; the title's 'every N.Ns' seconds."""
    lines = text.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith(("PID COMM", "UNIT", "REMOTE HOST")))
    heads = [h.rstrip("*") for h in lines[at].split()[label_words:]]
    rows = {}
    for line in lines[at + 1:]:
        words = line.split()
        if len(words) == label_words + len(heads):
            rows[" ".join(words[:label_words])] = dict(zip(heads, words[label_words:]))
    seconds = float(title(text).split(" every ")[1].split("s ")[0])
    return rows, seconds


def test_screen_in_tmux_shows_what_the_test_made_and_q_leaves_the_terminal_clean(tmp_path):
    with ExitStack() as stack:
        scene = Scene(stack)
        args = " ".join(scene.filters())
        tmux = Tmux(f"{sys.executable} -m socketsnoop top --interval 12 {args}; echo TOP-EXIT=$?; sleep 120",
                    env="NO_COLOR=1")
        stack.callback(tmux.kill)
        first = title(tmux.wait_for(lambda s: "host:" in s, what="first snapshot"))
        made = make_traffic(scene.ports, scene.cgroup, scene.netns, scene.peer)
        text = tmux.wait_for(lambda s: title(s) != first, what="second snapshot")
        rows, seconds = table(text, 2)
        by_comm = {label.split()[1]: row for label, row in rows.items()}
        for comm, want in made.items():
            row = by_comm[comm]
            assert round(float(row["OPEN/s"]) * seconds) == want["opened"], (comm, row, seconds)
            shown = {"ACTIVE": 0, "REFUSED": want["refused"], "TIMEOUT": want["timeout"],
                     "RST-TX": want["resets_sent"], "RST-RX": want["resets_received"],
                     "SENT": want["bytes_sent"], "RECV": want["bytes_received"]}
            assert {k: int(row[k]) for k in shown} == shown, (comm, row)
        assert "\x1b[33m" not in tmux.screen(colours=True)  # NO_COLOR: the failures are not in yellow

        tmux.keys("n")  # by unit: the client in the unit-shaped cgroup has a row of its own
        text = tmux.wait_for(lambda s: " by unit " in title(s), what="grouping by unit")
        rows, seconds = table(text, 1)
        assert round(float(rows[scene.unit]["OPEN/s"]) * seconds) == 3, rows

        tmux.keys("p")
        for _ in range(2):  # OPEN/s -> ACTIVE -> REFUSED
            tmux.keys(">")
        text = tmux.wait_for(lambda s: " by process  sort REFUSED" in title(s), what="sort by REFUSED")
        rows, _ = table(text, 2)
        assert list(rows)[0].split()[1] == "ss-toprefuse", text

        # a resize redraws: wider, the columns 120 could not hold; then 80x24, fewer, the sort column kept
        sh("tmux", "resize-window", "-t", tmux.name, "-x", "160", "-y", "30")
        tmux.wait_for(lambda s: "RTT-99ms" in s, what="all the columns at 160")
        sh("tmux", "resize-window", "-t", tmux.name, "-x", "80", "-y", "24")
        text = tmux.wait_for(lambda s: "RTT-99ms" not in s and "PID COMM" in s, what="80 columns")
        rows, _ = table(text, 2)
        heads = text.splitlines()[next(i for i, line in enumerate(text.splitlines()) if line.startswith("PID COMM"))]
        assert "REFUSED*" in heads and len(heads) <= 80 and len(rows) == len(made), text

        tmux.keys("q")
        text = tmux.wait_for(lambda s: "TOP-EXIT=0" in s, what="exit")
        assert "host:" not in text and "PID COMM" not in text, text  # the alternate screen is gone
        mode = sh("tmux", "display-message", "-p", "-t", tmux.name, "#{alternate_on} #{cursor_flag}").stdout.split()
        assert mode == ["0", "1"], mode  # out of the alternate screen, the cursor shown


def test_a_destination_refusing_connects_marks_its_process_row():
    """12 connects to a closed port (connect-failures: 10 refused within 60 s, the monitor's default): the
    dialing process's row is marked with the warning, the snapshot names it, with the refusals."""
    port = free_port()
    top = Top("--json", "--interval", "1", "-P", str(port))
    try:
        assert done(client(port, "ss-topdial", count=12)).count("error 111") == 12

        def warned(doc):
            rows = {r["key"]["comm"]: r for r in doc["rows"]}
            return "connect-failures" in rows.get("ss-topdial", {}).get("warnings", ())
        doc = top.wait_for(warned)
    finally:
        top.stop()
    (w,) = [w for w in doc["warnings"] if w["comm"] == "ss-topdial"]
    assert w["kind"] == "connect-failures" and (w["dst"], w["dport"]) == ("127.0.0.1", port)
    assert w["refused"] == 12 and doc["warnings_line"].startswith("warnings: connect-failures 127.0.0.1:")
