"""Test helpers: the real monitor as a process, real TCP traffic from named processes,
unique ports, nftables tables and network namespaces that are always cleaned up."""

import atexit
import contextlib
import json
import mmap
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.parse
import urllib.request
import uuid

import prometheus_client
import socketsnoop
from prometheus_client.parser import text_string_to_metric_families
from socketsnoop.kernel.ringbuf import RingBuffer

READY = "Monitoring socket connections..."


def bpf_unavailable_reason():
    if os.geteuid() != 0:
        return "not root"
    if not os.path.exists("/sys/kernel/btf/vmlinux"):
        return "kernel has no BTF"
    return None


_unprivileged_copy = []


def unprivileged_command(user=65534):
    """(argv prefix, env) that run `python -m socketsnoop` as an unprivileged user, or None where no Python
    such a user can run is known. The checkout (and its .venv) may sit in a home directory of mode 0700,
    out of that user's reach: the installed package is copied once to a directory anyone can read, and
    run by the interpreter the venv was made from."""
    python = os.path.realpath(sys.executable)
    if python.startswith(("/root/", "/home/")) or not shutil.which("setpriv"):
        return None
    if not _unprivileged_copy:
        top = tempfile.mkdtemp(prefix="ss-unpriv-")
        atexit.register(shutil.rmtree, top, True)
        for package in (socketsnoop, prometheus_client):  # and its one dependency, which the venv holds
            shutil.copytree(os.path.dirname(package.__file__), os.path.join(top, package.__name__),
                            ignore=shutil.ignore_patterns("__pycache__"))
        for root, dirs, files in os.walk(top):
            os.chmod(root, 0o755)
            for f in files:
                os.chmod(os.path.join(root, f), 0o644)
        _unprivileged_copy.append(top)
    env = dict(os.environ, PYTHONPATH=_unprivileged_copy[0], PYTHONDONTWRITEBYTECODE="1")
    env.pop("VIRTUAL_ENV", None)
    prefix = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", python, "-m", "socketsnoop"]
    return prefix, env


def uniq(prefix):
    """A name no other test or concurrent run uses (nft tables, netns: 15 chars max for links)."""
    return f"{prefix}{os.getpid() % 10000}{uuid.uuid4().hex[:4]}"


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


class Monitor:
    """socket-snoop running as a child process, with a log file in a temp dir."""

    def __init__(self, tmp_path, *args, log_name="monitor.log", ready_timeout=20, summary=False):
        """summary: keep the Connection Summary lines (tests of the per-event lines leave them out: --no-summary)."""
        self.log = tmp_path / log_name
        quiet = [] if summary or {"--summary-only", "--failed", "--no-summary"} & set(args) else ["--no-summary"]
        self.args = [sys.executable, "-m", "socketsnoop", "--log-file", str(self.log), *quiet, *args]
        self.ready_timeout = ready_timeout
        self.proc = None
        self.stdout = self.stderr = ""
        self.stderr_head = []

    def start(self):
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                break
            self.stderr_head.append(line)
            if line.startswith(READY):
                return self
        self.kill()
        raise AssertionError(f"monitor never became ready: {''.join(self.stderr_head)}{self.stderr}")

    def stop(self, sig=signal.SIGINT, settle=0.3, timeout=30):
        """Let the last events arrive, stop it, return (exit status, stdout, stderr)."""
        time.sleep(settle)
        self.proc.send_signal(sig)
        self.stdout, rest = self.proc.communicate(timeout=timeout)
        self.stderr = "".join(self.stderr_head) + rest
        return self.proc.returncode

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()

    def lines(self):
        return self.log.read_text().splitlines() if self.log.exists() else []

    def records(self):
        return [json.loads(line) for line in self.lines()]

    def totals(self):
        """The 'Totals: seen=.. captured=..' line of the exit report, as a dict of ints."""
        for line in self.stdout.splitlines():
            if line.startswith("Totals: "):
                return {k: int(v) for k, v in (kv.split("=") for kv in line[8:].split())}
        raise AssertionError(f"no Totals line in:\n{self.stdout}")


# --- traffic: small Python programs that name themselves (prctl PR_SET_NAME) --------------

_PRELUDE = """
import ctypes, os, socket, sys, time
ctypes.CDLL(None).prctl(15, {comm!r}, 0, 0, 0)
"""

SERVER = _PRELUDE + """
fam = socket.AF_INET6 if ':' in {host!r} else socket.AF_INET
srv = socket.socket(fam, socket.SOCK_STREAM)
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
if fam == socket.AF_INET6 and {dual}:
    srv.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
srv.bind(({host!r}, {port}))
srv.listen(64)
print('listening', flush=True)
for _ in range({count}):
    conn, _ = srv.accept()
    data = b''
    while True:
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
    conn.sendall(b'ok:%d' % len(data))
    conn.close()
srv.close()
"""

CLIENT = _PRELUDE + """
fam = socket.AF_INET6 if ':' in {host!r} else socket.AF_INET
for _ in range({count}):
    c = socket.socket(fam, socket.SOCK_STREAM)
    c.settimeout({timeout})
    c.connect(({host!r}, {port}))
    c.sendall(b'x' * {size})
    c.shutdown(socket.SHUT_WR)
    reply = c.recv(64)
    c.close()
    print(reply.decode(), flush=True)
"""


def spawn(code, netns=None, cgroup=None, uid=None, **kw):
    """A Python program; in cgroup (a cgroup v2 directory) from its start, before it makes any socket, and as
    uid (with that gid) if given."""
    src = textwrap.dedent(code).format(**kw)
    cmd = [sys.executable, "-c", src]
    if uid is not None:
        cmd = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", *cmd]
    if cgroup:
        cmd = ["sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', str(cgroup), *cmd]
    if netns:
        cmd = ["ip", "netns", "exec", netns, *cmd]
    return subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def start_server(host, port, comm, count=1, dual=False, netns=None, cgroup=None, uid=None):
    p = spawn(SERVER, netns=netns, cgroup=cgroup, uid=uid, comm=comm.encode(), host=host, port=port, count=count,
              dual=dual)
    line = p.stdout.readline()
    assert line.strip() == "listening", p.stderr.read()
    return p


def run_client(host, port, comm, count=1, size=10, timeout=20, netns=None, cgroup=None, uid=None):
    p = spawn(CLIENT, netns=netns, cgroup=cgroup, uid=uid, comm=comm.encode(), host=host, port=port, count=count,
              size=size, timeout=timeout)
    out, err = p.communicate(timeout=timeout * count + 30)
    assert p.returncode == 0, err
    return p.pid, out


def conversation(host, port, server_comm, client_comm, count=1, size=10, dual=False, server_host=None):
    """One server, one client, `count` connections; returns (server pid, client pid)."""
    srv = start_server(server_host or host, port, server_comm, count=count, dual=dual)
    try:
        cpid, out = run_client(host, port, client_comm, count=count, size=size)
        srv.communicate(timeout=30)
        assert out.count("ok:") == count
    finally:
        if srv.poll() is None:
            srv.kill()
            srv.communicate()
    return srv.pid, cpid


# --- the shared kernel: always clean up --------------------------------------------------

def sh(*cmd, check=True, **kw):
    return subprocess.run(cmd, check=check, capture_output=True, text=True, **kw)


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


@contextlib.contextmanager
def trace_count(event, filter_expr, buffer_kb=8192):
    """Count the hits of a trace event (e.g. sock/inet_sock_set_state) that pass an ftrace filter, in a tracefs
    instance of our own: the kernel's own count, an oracle independent of any BPF program. Yields a function
    that returns the count so far (what the buffers hold plus what they overwrote or dropped)."""
    inst = os.path.join(TRACEFS, "instances", uniq("sstrace"))
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

PROMETHEUS = "/usr/bin/prometheus"


def scrape(port, host="127.0.0.1"):
    """The text exposition of a metrics endpoint, parsed by prometheus_client's own parser:
    {(metric sample name, frozenset of label items): value}."""
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def sample_sum(samples, name, **labels):
    """The sum of a metric's samples whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


class Prometheus:
    """The real prometheus (Debian's package) with a private config, TSDB in a temp dir, a free loopback
    port, scraping `targets` every second; query() is its HTTP API."""

    def __init__(self, tmp_path, targets, rules_text=None, config_text=None):
        self.dir = tmp_path / uniq("prom")
        self.dir.mkdir()
        self.port = free_port()
        rule_files = ""
        if rules_text is not None:
            (self.dir / "rules.yml").write_text(rules_text)
            rule_files = f"rule_files: [{str(self.dir / 'rules.yml')!r}]\n"
        scrape = textwrap.dedent(f"""\
            scrape_configs:
              - job_name: socket-snoop
                static_configs:
                  - targets: {json.dumps(list(targets))}
            """)
        self.config = self.dir / "prometheus.yml"
        self.config.write_text(config_text if config_text is not None else
                               f"global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n{rule_files}{scrape}")
        self.proc = None
        self.targets = list(targets)

    def __enter__(self):
        self.log = open(self.dir / "prometheus.out", "w")
        self.proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={self.config}", f"--storage.tsdb.path={self.dir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}"], stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, (self.dir / "prometheus.out").read_text()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            time.sleep(0.2)
        else:
            raise AssertionError("prometheus never became ready: " + (self.dir / "prometheus.out").read_text())
        # its discovery hands targets to the scrapers about 5 s after start: wait for every first scrape
        if self.targets and self.wait_for("count(up == 1)", len(self.targets), timeout=40) != len(self.targets):
            raise AssertionError(f"prometheus never scraped {self.targets}: {self.api('targets')}")
        return self

    def __exit__(self, *exc):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()

    def api(self, path, **params):
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=10) as r:
            body = json.load(r)
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr):
        """An instant query: [(labels dict, float value)]."""
        return [(r["metric"], float(r["value"][1])) for r in self.api("query", query=expr)["result"]]

    def value(self, expr):
        """The one value of a query that returns one series (None: no series)."""
        res = self.query(expr)
        assert len(res) <= 1, res
        return res[0][1] if res else None

    def wait_for(self, expr, want, timeout=30):
        """Until the query's value equals `want`; returns the last value seen."""
        deadline = time.monotonic() + timeout
        got = None
        while time.monotonic() < deadline:
            got = self.value(expr)
            if got == want:
                return got
            time.sleep(0.5)
        return got

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

def cgroup2_mount():
    """Where cgroup v2 is mounted here (/sys/fs/cgroup, or /sys/fs/cgroup/unified on a hybrid host), or None."""
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            if right.split()[:1] == ["cgroup2"]:
                return left.split()[4]
    return None


@contextlib.contextmanager
def cgroups(*paths):
    """Cgroup v2 directories in real shapes (paths relative to the v2 root, e.g. /system.slice/x.service),
    made with their parents where missing; on the way out, processes still in them are killed and every
    directory made here is removed (a parent another test still uses stays). Yields the mount."""
    mount = cgroup2_mount()
    if mount is None:
        raise RuntimeError("no cgroup2 mount on this host")
    made = []
    try:
        for rel in paths:
            parts = [p for p in rel.split("/") if p]
            for i in range(1, len(parts) + 1):
                d = os.path.join(mount, *parts[:i])
                try:
                    os.mkdir(d)
                    made.append(d)
                except FileExistsError:
                    pass
        yield mount
    finally:
        for d in reversed(made):
            for _ in range(50):
                try:
                    os.rmdir(d)
                    break
                except FileNotFoundError:
                    break
                except OSError:  # busy: a process still in it, or a child another test made
                    try:
                        with open(os.path.join(d, "cgroup.procs")) as f:
                            pids = [int(p) for p in f.read().split()]
                    except OSError:
                        pids = []
                    if not pids and os.listdir(d) and any(
                            os.path.isdir(os.path.join(d, e)) for e in os.listdir(d)):
                        break  # another test's cgroup below it: leave the parent to that test
                    for pid in pids:
                        with contextlib.suppress(OSError):
                            os.kill(pid, signal.SIGKILL)
                    time.sleep(0.1)


class RingFile:
    """A file laid out as a BPF ring buffer map is (kernel/bpf/ringbuf.c): a consumer page, a producer
    page, then `size` data bytes; records are put in as the kernel's producer does (an 8-byte header,
    length | busy | discard bits and a page offset, the data padded to 8, wrapping past the end of the
    data). `ring` is socket-snoop's RingBuffer reading it (no epoll: a memfd cannot be waited on)."""

    def __init__(self, size, record_size, start=0):
        self.page, self.size = mmap.PAGESIZE, size
        self.fd = os.memfd_create("socketsnoop-test-ring")
        os.ftruncate(self.fd, 2 * self.page + size)
        self.mem = mmap.mmap(self.fd, 2 * self.page + size)
        self.consumer = self.producer = start
        self.ring = RingBuffer(self.fd, size, record_size, wakeups=False)

    @property
    def consumer(self):
        return int.from_bytes(self.mem[0:8], "little")

    @consumer.setter
    def consumer(self, pos):
        self.mem[0:8] = pos.to_bytes(8, "little")

    @property
    def producer(self):
        return int.from_bytes(self.mem[self.page: self.page + 8], "little")

    @producer.setter
    def producer(self, pos):
        self.mem[self.page: self.page + 8] = pos.to_bytes(8, "little")

    def _write(self, pos, data):
        base, off = 2 * self.page, pos % self.size
        first = min(len(data), self.size - off)
        self.mem[base + off: base + off + first] = data[:first]
        self.mem[base: base + len(data) - first] = data[first:]  # the part past the end, at the start

    def put(self, data, busy=False, discard=False, length=None):
        """One record at the producer position: its header (length, or len(data)), then data, padded to 8.
        Returns the position of its header."""
        pos = self.producer
        length = len(data) if length is None else length
        header = length | (1 << 31 if busy else 0) | (1 << 30 if discard else 0)
        self._write(pos, header.to_bytes(4, "little") + bytes(4) + data + bytes(-len(data) % 8))
        self.producer = pos + 8 + ((length + 7) & ~7)
        return pos

    def put_raw(self, records):
        """Records as the kernel wrote them (headers included, each padded to 8), at the producer position."""
        self._write(self.producer, records)
        self.producer += len(records)

    def set_header(self, pos, header):
        self._write(pos, header.to_bytes(4, "little"))

    def close(self):
        self.ring.close()
        self.mem.close()
        os.close(self.fd)
