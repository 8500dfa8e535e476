"""Scale, bursts and accounting, on the real kernel: 90,000 sockets held at once by 10 processes (5 servers,
5 clients, 9,000 each: one process may open 20,000 files here) in a private network namespace, closed all at
once.

Two counts to check the monitor against, both for the test's ports only:
  - the trace event's own count (scale.StateChangeCount: a private tracefs instance, independent of BPF);
  - the hits a BPF program was run for (scale.PortCounter: a trivial program on the same tracepoint).
They differ on this host: the kernel runs no BPF program at all (neither socket-snoop's nor the trivial one,
nor a classic tracepoint program) for some hits in softirqs that interrupt particular tasks, and counts them
nowhere (recursion_misses stays 0); see bench/README.md, "Nothing missed silently". So the exact checks are against
the hits BPF could see; the difference from the trace event is reported, and bounded.

Each test talks on ports of its own, above every ephemeral range (scale.free_high_ports), and filters the
monitor on them in the kernel (-P); the counters count the same ports. The network namespace keeps the
fleet's ephemeral ports and sysctls private (the kernel program sees every namespace).
"""

import contextlib
import re
import shutil
import subprocess
import time

import pytest

from support.scale import (
    Fleet,
    PortCounter,
    StateChangeCount,
    free_high_ports,
    private_netns,
)

pytestmark = pytest.mark.bpf

PER_PROCESS = 9000  # sockets per process: 5 servers and 5 clients, 90,000 sockets, 45,000 connections
PROCESSES = 5
CONNS = PER_PROCESS * PROCESSES
# client ports above support.net.free_port's range (10000-30000), where other tests' servers and filters are
NETNS_SYSCTLS = {"net.ipv4.ip_local_port_range": "30001 60999", "net.core.somaxconn": "8192"}
# the most hits the kernel may hide from every BPF program in one test (see the module's comment): at most
# one in 200 here, in the worst of 30 runs 1,114 of 450,010
INVISIBLE_MAX = 450_010 // 200

LINE = re.compile(r"^\S+ \d\d \d{4} \S+ (?P<title>[A-Z][a-z]+(?: [A-Z][a-z]+)?): SRC=(?P<src>\S+):(?P<sport>\d+) "
                  r"DST=(?P<dst>\S+):(?P<dport>\d+) PID=(?P<pid>\d+) COMM=(?P<comm>\S+) ")


def parse(lines):
    """The event lines (a health warning is a line of its own: the mass close's resets from the clients' side can
    read as a port scan from 127.0.0.1, as they would from any one address)."""
    out = []
    for line in lines:
        if line[25:34] == "Warning: ":
            continue
        m = LINE.match(line)
        assert m, f"line not in the expected format: {line!r}"
        out.append(m.group("title", "sport", "dport", "pid", "comm"))
    return out


def titles_of(rows):
    titles = {}
    for title, *_ in rows:
        titles[title] = titles.get(title, 0) + 1
    return titles


def scale_monitor(monitor, ports, *args):
    """The monitor with default options, filtered in the kernel on the test's ports (the listeners' lines,
    with their unspecified remote address, included: every hit of the ports is then a line), console off."""
    return monitor("-q", "--include-unspecified", *[a for p in ports for a in ("-P", str(p))], *args,
                   ready_timeout=60, summary=True)


def wait_quiet(m, seconds=1.0, timeout=120):
    """Until the monitor's log file stops growing for `seconds` (it has read what the kernel wrote)."""
    end = time.monotonic() + timeout
    last, since = -1, time.monotonic()
    while time.monotonic() < end:
        size = m.log.stat().st_size if m.log.exists() else 0
        if size != last:
            last, since = size, time.monotonic()
        elif time.monotonic() - since >= seconds:
            return
        time.sleep(0.2)


class Run:
    """One fleet under the monitor, with both counts; finish() stops everything in order."""

    def __init__(self, monitor, *monitor_args):
        self.monitor, self.monitor_args = monitor, monitor_args

    def __enter__(self):
        self.ports = free_high_ports(PROCESSES)
        self.stack = contextlib_stack = contextlib.ExitStack()
        try:
            ns = contextlib_stack.enter_context(private_netns(**NETNS_SYSCTLS))
            self.oracle = contextlib_stack.enter_context(StateChangeCount(self.ports))
            self.reference = contextlib_stack.enter_context(PortCounter(self.ports))
            self.fleet = Fleet(ns, self.ports, PER_PROCESS)
            contextlib_stack.callback(self.fleet.stop)
            self.m = scale_monitor(self.monitor, self.ports, *self.monitor_args)
        except BaseException:
            contextlib_stack.close()
            raise
        return self

    def finish(self):
        """Every socket settled, the monitor caught up and stopped, then the counts read."""
        self.fleet.settled()
        wait_quiet(self.m)
        assert self.m.stop(settle=0.5, timeout=120) == 0, self.m.stderr
        self.reference.detach()
        self.oracle.stop()
        self.count, self.seen_by_bpf, self.ref_misses = self.oracle.count(), self.reference.count(), \
            self.reference.misses()
        self.t = self.m.totals()
        self.rows = parse(self.m.lines())
        self.titles = titles_of(self.rows)

    def __exit__(self, *exc):
        self.stack.close()

    def figures(self):
        return (f"trace event={self.count} BPF-visible={self.seen_by_bpf} (reference misses {self.ref_misses}) "
                f"lines={self.titles} totals={self.t}")

    def check_accounting(self):
        """Every hit of the test's ports a BPF program could see is a line or counted (lost: buffer full;
        missed: skipped by the kernel, which counts every port); the trace event's count bounds both."""
        t, lines, figures = self.t, self.titles.get("State Change", 0), self.figures()
        assert lines <= self.count and self.seen_by_bpf <= self.count, figures
        assert lines + t["lost"] + t["missed"] >= self.seen_by_bpf, (
            f"{self.seen_by_bpf - lines} state changes a BPF program saw are neither lines nor counted: {figures}")
        assert lines <= self.seen_by_bpf + self.ref_misses, figures  # none doubled
        assert self.count - self.seen_by_bpf <= INVISIBLE_MAX, f"the kernel hid too many hits from BPF: {figures}"
        # the totals add up: every hit is captured, lost or filtered; every line is a captured event or a record
        assert t["seen"] == t["captured"] + t["lost"] + t["filtered"], figures
        assert t["lines"] == len(self.rows) == t["captured"] + self.titles.get("Connection Summary", 0), figures
        assert self.titles.get("Connection Summary", 0) == t["records"], figures


def test_owners_at_90000_concurrent_sockets(monitor):
    """Every line of the test's ports carries its true owner with 90,000 sockets open at once (more than the
    old LRU owner map's 65,536 entries): server sockets the server's pid, client sockets the client's; the
    servers then close with SO_LINGER 0, and the resets (sent from close(), received in softirq context)
    carry the server's and the client's pid, never ksoftirqd's, swapper's or another process's."""
    with Run(monitor) as run:
        run.fleet.start()
        run.fleet.close(run.fleet.servers, "reset")  # the servers' resets, from close()
        run.fleet.close(run.fleet.clients)
        run.finish()
    spids, cpids = run.fleet.pids
    server_of = {p: str(pid) for p, pid in zip(run.ports, spids)}
    client_of = {p: str(pid) for p, pid in zip(run.ports, cpids)}
    wrong, resets = [], 0
    for title, sport, dport, pid, comm in run.rows:
        sport, dport = int(sport), int(dport)
        if sport in server_of:  # the server's side: its listener, its accepted sockets, their resets
            want = (server_of[sport], "ss-scsrv")
        else:  # the client's side (SYN_SENT has local port 0)
            want = (client_of.get(dport), "ss-sccli")
        if (pid, comm) != want:
            wrong.append((title, sport, dport, pid, comm, want))
        elif title == "Reset Sent":
            resets += 1
    assert not wrong, f"{len(wrong)} lines with the wrong owner, e.g. {wrong[:5]}; {run.figures()}"
    assert len(run.rows) > 10 * CONNS, run.figures()  # ~5 state changes, a record, a reset per socket
    assert resets == CONNS, run.figures()  # one from each server socket's close(), by its server
    run.check_accounting()
    assert run.t["lost"] == 0 and run.t["records_lost"] == 0, run.figures()


def test_mass_close_of_90000_sockets_loses_nothing(monitor):
    """45,000 connections (90,000 sockets) closed by all ten processes at once, with default options:
    nothing lost, every state change a BPF program could see is a line, every connection's two records
    written (but for connections whose last state change the kernel hid from BPF)."""
    with Run(monitor) as run:
        run.fleet.start()
        wait_quiet(run.m)  # the handshakes read: what follows is the burst of the close alone
        run.fleet.close(run.fleet.servers + run.fleet.clients)
        run.finish()
    print(run.figures())
    run.check_accounting()
    t = run.t
    assert t["lost"] == 0 and t["records_lost"] == 0 and t["missed"] == 0, run.figures()
    # exact but for hits the kernel skipped the reference program for (recursion_misses: it was running)
    assert run.seen_by_bpf <= run.titles["State Change"] <= run.seen_by_bpf + run.ref_misses, run.figures()
    assert 2 * CONNS - (run.count - run.seen_by_bpf) <= t["records"] <= 2 * CONNS, run.figures()


BPFTRACE_COUNTER = """
tracepoint:sock:inet_sock_set_state /args->protocol == 6/ { @hits[cpu] = count(); @by_port[args->dport] = count(); }
interval:ms:5 { print(@hits); print(@by_port, 3); }
"""


@pytest.mark.skipif(not shutil.which("bpftrace"), reason="bpftrace is not installed")
def test_accounting_with_another_bpf_program_on_the_tracepoint(monitor, tmp_path):
    """With bpftrace attached to sock:inet_sock_set_state at the same time, its maps read every 5 ms (the
    reads disable instrumentation on their CPU: bpftrace's own program misses hits, ours must not): the
    hits of the test's ports socket-snoop saw (seen less filtered) plus its missed cover every hit a BPF
    program was run for, and the totals add up."""
    script = tmp_path / "count.bt"
    script.write_text(BPFTRACE_COUNTER)
    out = tmp_path / "bpftrace.out"
    bt = subprocess.Popen(["bpftrace", "-o", str(out), str(script)], stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and bt.poll() is None and "@hits" not in (
                out.read_text(errors="replace")[:100000] if out.exists() else ""):
            time.sleep(0.2)  # attached, and printing its maps
        assert bt.poll() is None and out.exists(), bt.stderr.read() if bt.poll() is not None else "no output"
        with Run(monitor) as run:
            run.fleet.start()
            run.fleet.close(run.fleet.servers + run.fleet.clients)
            run.finish()
    finally:
        bt.terminate()
        try:
            bt.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            bt.kill()
            bt.communicate()
    print(run.figures())
    t = run.t
    ours_seen = t["seen"] - t["filtered"]  # every hit of the ports passes the filters; all others fail them
    assert ours_seen + t["missed"] >= run.seen_by_bpf, run.figures()
    assert "@hits" in out.read_text(errors="replace")[-100000:], "bpftrace stopped reading its maps"
    run.check_accounting()
