"""Networks for the tests: free ports, network namespaces and veth pairs, nftables drops, MIB counters,
trace event counts, sockets settling. Every name is unique and removed in a finally."""

import contextlib
import os
import random
import socket
import subprocess
import textwrap
import time

from support.system import sh, uniq

_PORTS_GIVEN = set()


def free_port():
    """A port free for TCP on v4 and v6 loopback, below the ephemeral range so clients never take it, and
    never one this process handed out before (two calls in one test must not get the same port)."""
    for _ in range(200):
        port = random.randint(10000, 30000)
        if port in _PORTS_GIVEN:
            continue
        try:
            for fam, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
                with socket.socket(fam) as s:
                    s.bind((host, port))
            _PORTS_GIVEN.add(port)
            return port
        except OSError:
            continue
    raise RuntimeError("no free port")



@contextlib.contextmanager
def nft_drop(port, percent, table=None, match="", syn_percent=None):
    """An nftables input rule that drops `percent` % of TCP packets to `port` (netem is not in this kernel),
    of those that `match` (more nft expressions) picks. With `syn_percent`, SYNs are dropped at that rate
    instead: before 6.11 a SYN's timeout doubles (1, 3, 7, 15, 31, 63 s), so six SYNs dropped in a row
    (0.3**6, 1 in 1,400 at 30%) outlast a 60 s connect."""
    table = table or uniq("ssdrop")

    def sample(pct):
        return f"numgen random mod 100 < {pct}" if pct < 100 else ""  # (nft refuses "< 100")
    if syn_percent is None:
        body = f"tcp dport {port} {match} {sample(percent)} drop"
    else:
        body = (f"tcp dport {port} tcp flags & syn == syn {match} {sample(syn_percent)} drop\n"
                f"tcp dport {port} tcp flags & syn == 0 {match} {sample(percent)} drop")
    rules = textwrap.dedent("""
        table inet {table} {{
            chain input {{
                type filter hook input priority -10; policy accept;
                {body}
            }}
        }}
    """).format(table=table, body=body)
    sh("nft", "-f", "-", input=rules)
    try:
        yield table
    finally:
        sh("nft", "delete", "table", "inet", table, check=False)


TRACEFS = "/sys/kernel/tracing"


def tracefs():
    """tracefs mounted where it is looked for (a fresh machine may not have it mounted: mounted here once)."""
    if not os.path.isdir(os.path.join(TRACEFS, "events")):
        subprocess.run(["mount", "-t", "tracefs", "nodev", TRACEFS], check=False)
    return TRACEFS


@contextlib.contextmanager
def trace_count(event, filter_expr, buffer_kb=8192):
    """Count the hits of a trace event (e.g. sock/inet_sock_set_state) that pass an ftrace filter, in a tracefs
    instance of our own: the kernel's own count, an oracle independent of any BPF program. Yields a function
    that returns the count so far (what the buffers hold plus what they overwrote or dropped)."""
    inst = os.path.join(tracefs(), "instances", uniq("sstrace"))
    os.mkdir(inst)
    try:
        with open(os.path.join(inst, "buffer_size_kb"), "w") as f:
            f.write(str(buffer_kb))
        with open(os.path.join(inst, "options", "overwrite"), "w") as f:
            f.write("0")  # a full buffer drops new events and counts each ("dropped events"): exact
        with open(os.path.join(inst, "events", event, "filter"), "w") as f:
            f.write(filter_expr)
        with open(os.path.join(inst, "events", event, "enable"), "w") as f:
            f.write("1")

        def count():
            total = 0
            for cpu in os.listdir(os.path.join(inst, "per_cpu")):
                with open(os.path.join(inst, "per_cpu", cpu, "stats")) as f:
                    stats = dict(line.split(":", 1) for line in f if ":" in line)
                total += sum(int(stats.get(k, "0").split()[0])
                             for k in ("entries", "overrun", "commit overrun", "dropped events"))
            return total
        yield count
    finally:
        with contextlib.suppress(OSError):
            with open(os.path.join(inst, "events", event, "enable"), "w") as f:
                f.write("0")
        os.rmdir(inst)


def wait_port_settled(port, timeout=30, netns=None):
    """Wait until no TCP socket on port (at either end) is in a state it will still leave: only LISTEN and
    TIME_WAIT ones remain (a timewait socket makes no more state changes). In network namespace `netns`, if
    given, else in the test's own."""
    hexport = f"{port:04X}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        busy = 0
        if netns:
            rows = sh("ip", "netns", "exec", netns, "cat", "/proc/net/tcp", "/proc/net/tcp6").stdout.splitlines()
        else:
            rows = []
            for path in ("/proc/net/tcp", "/proc/net/tcp6"):
                with open(path) as f:
                    rows += f.read().splitlines()
        for line in rows:
            fields = line.split()
            if len(fields) < 4 or fields[0] == "sl":
                continue
            local, remote, state = fields[1:4]
            if hexport in (local[-4:], remote[-4:]) and state not in ("06", "0A"):
                busy += 1
        if not busy:
            return
        time.sleep(0.2)
    raise AssertionError(f"{busy} sockets on port {port} still changing state after {timeout}s")


@contextlib.contextmanager
def private_netns():
    """A network namespace of its own, with only lo (up): its /proc/net/snmp counts only what the test does."""
    ns = uniq("ssn")
    try:
        sh("ip", "netns", "add", ns)
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        yield ns
    finally:
        sh("ip", "netns", "delete", ns, check=False)


def listen_overflows(ns):
    """TcpExt ListenOverflows of network namespace ns: packets refused because a listener's accept queue was full."""
    out = sh("ip", "netns", "exec", ns, "cat", "/proc/net/netstat").stdout
    head, values = [line.split()[1:] for line in out.splitlines() if line.startswith("TcpExt:")]
    return int(dict(zip(head, values))["ListenOverflows"])


def tcp_mib(ns, name):
    """A counter of the Tcp: lines of /proc/net/snmp in network namespace ns (IPv4 and IPv6 together)."""
    out = sh("ip", "netns", "exec", ns, "cat", "/proc/net/snmp").stdout
    head, values = [line.split()[1:] for line in out.splitlines() if line.startswith("Tcp:")]
    return int(dict(zip(head, values))[name])


@contextlib.contextmanager
def netns_pair(v4_prefix="198.18", v6_prefix="fd53:5353"):
    """Two network namespaces joined by a veth pair: hosts .1 and .2 (and ::1, ::2)."""
    a, b = uniq("ssa"), uniq("ssb")
    octet = random.randint(1, 250)
    try:
        sh("ip", "netns", "add", a)
        sh("ip", "netns", "add", b)
        sh("ip", "link", "add", f"v{a}", "netns", a, "type", "veth", "peer", "name", f"v{b}", "netns", b)
        hosts = {}
        for ns, n in ((a, 1), (b, 2)):
            dev = f"v{ns}"
            v4 = f"{v4_prefix}.{octet}.{n}"
            v6 = f"{v6_prefix}:{octet:x}::{n}"
            sh("ip", "-n", ns, "addr", "add", f"{v4}/24", "dev", dev)
            sh("ip", "-n", ns, "addr", "add", f"{v6}/64", "dev", dev, "nodad")
            sh("ip", "-n", ns, "link", "set", dev, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            hosts[ns] = (v4, v6)
        yield a, b, hosts
    finally:
        for ns in (a, b):
            sh("ip", "netns", "delete", ns, check=False)


# --- real Prometheus and its HTTP API -----------------------------------------------------


def snmp(netns=None):
    """The Tcp counters of /proc/net/snmp (of a network namespace): {'ActiveOpens': n, ...}."""
    cmd = ["cat", "/proc/net/snmp"]
    text = sh(*(["ip", "netns", "exec", netns] if netns else []), *cmd).stdout
    rows = [line.split()[1:] for line in text.splitlines() if line.startswith("Tcp:")]
    return dict(zip(rows[0], map(int, rows[1])))


@contextlib.contextmanager
def netns_sysctl(netns, name, value):
    """A sysctl of a private network namespace (its own copy: the host's stays as it is)."""
    sh("ip", "netns", "exec", netns, "sysctl", "-qw", f"{name}={value}")
    yield


# --- cgroup v2 ---------------------------------------------------------------------------
