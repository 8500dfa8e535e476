"""Helpers of the scale tests: a private network namespace, a fleet of server and client processes holding
tens of thousands of connections in it, and the kernel's own count of state changes (a private tracefs
instance) to check the monitor against."""

import contextlib
import os
import random
import socket
import struct
import subprocess
import sys
import textwrap
import time

from socketsnoop.kernel.bpfobject import BpfObject
from socketsnoop.kernel.libbpf import possible_cpus

from support.net import TRACEFS, tracefs
from support.system import sh, uniq


# a fleet process: names itself, may hold up to 20,000 files, prints "ready" once its sockets are up, then
# on a line from stdin closes them all ("close"; "reset": with SO_LINGER 0, so that the kernel sends a reset
# from the close() itself), prints "closed" and waits for stdin to close
_FLEET = """
import ctypes, os, resource, socket, struct, sys
ctypes.CDLL(None).prctl(15, {comm!r}, 0, 0, 0)
resource.setrlimit(resource.RLIMIT_NOFILE, (20000, 20000))
n, host, port = {count}, {host!r}, {port}
if {server}:
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((host, port))
    srv.listen(4096)
    print("listening", flush=True)
    socks = [srv.accept()[0] for _ in range(n)]
else:
    socks = [socket.create_connection((host, port), timeout=60) for _ in range(n)]
print("ready", flush=True)
cmd = sys.stdin.readline().strip()
if cmd == "reset":
    linger = struct.pack("ii", 1, 0)
    for s in socks:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
for s in socks:
    s.close()
if {server}:
    srv.close()
print("closed", flush=True)
sys.stdin.read()
"""


def free_high_ports(n):
    """n ports above the host's ephemeral range (no client of the host's own tests takes them) and above
    helpers.free_port's range (no server of another test listens there), free now."""
    lo = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[1]) + 1
    lo = max(lo, 30001)
    ports = set()
    while len(ports) < n:
        p = random.randint(lo, 65535)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", p))
            except OSError:
                continue
        ports.add(p)
    return sorted(ports)


@contextlib.contextmanager
def private_netns(**sysctls):
    """A network namespace of its own, loopback up, with its own sysctls (the host's untouched)."""
    ns = uniq("ssscale")
    try:
        sh("ip", "netns", "add", ns)
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        for k, v in sysctls.items():
            sh("ip", "netns", "exec", ns, "sysctl", "-q", "-w", f"{k}={v}")
        yield ns
    finally:
        sh("ip", "netns", "delete", ns, check=False)


class Fleet:
    """Server and client processes in netns ns, one server per port, `per_process` sockets each; client i
    connects to server i."""

    def __init__(self, ns, ports, per_process, host="127.0.0.1", server_comm="ss-scsrv", client_comm="ss-sccli"):
        self.ns, self.ports, self.n, self.host = ns, ports, per_process, host
        self.server_comm, self.client_comm = server_comm, client_comm
        self.servers, self.clients = [], []

    def _spawn(self, port, server):
        src = textwrap.dedent(_FLEET).format(comm=(self.server_comm if server else self.client_comm).encode(),
                                             count=self.n, host=self.host, port=port, server=server)
        return subprocess.Popen(["ip", "netns", "exec", self.ns, sys.executable, "-c", src], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    @staticmethod
    def _expect(p, word, timeout=120):
        line = p.stdout.readline()
        if line.strip() != word:
            p.kill()
            raise AssertionError(f"fleet process {p.pid}: expected {word!r}, got {line!r}: {p.stderr.read()[-2000:]}")

    def start(self):
        """Every connection up (servers listening first, then every client connected and every server
        having accepted all of its own)."""
        self.servers = [self._spawn(p, True) for p in self.ports]
        for p in self.servers:
            self._expect(p, "listening")
        self.clients = [self._spawn(p, False) for p in self.ports]
        for p in self.clients + self.servers:
            self._expect(p, "ready")
        return self

    def close(self, procs, how="close"):
        """Tell procs to close all their sockets at once (all told first, then waited for)."""
        for p in procs:
            p.stdin.write(how + "\n")
            p.stdin.flush()
        for p in procs:
            self._expect(p, "closed")

    @property
    def pids(self):
        """(server pids, client pids): ip netns exec execs the program, so they are the Popen pids."""
        return [p.pid for p in self.servers], [p.pid for p in self.clients]

    def settled(self, timeout=60):
        """Until no socket of the namespace is in a state that changes on its own (a handshake, a close
        under way): only TIME_WAIT (which the trace event does not follow) or nothing is left."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            out = sh("ip", "netns", "exec", self.ns, "ss", "-tanH", "exclude", "time-wait").stdout
            if not out.strip():
                return
            time.sleep(0.2)
        raise AssertionError(f"sockets still changing state after {timeout}s: {out[:2000]}")

    def stop(self):
        for p in self.servers + self.clients:
            if p.poll() is None:
                p.kill()
            try:
                p.communicate(timeout=30)
            except Exception:  # noqa: BLE001 (cleanup goes on)
                pass


class StateChangeCount:
    """The kernel's own count of inet_sock_set_state hits whose local or remote port is in ports: the trace
    event in a private tracefs instance, independent of BPF. count() = entries + overrun over the CPUs (the
    ring may wrap; what it overwrote is counted in overrun)."""

    def __init__(self, ports, buffer_kb=8192):
        self.ports = ports
        self.buffer_kb = buffer_kb
        self.name = uniq("sscount")
        self.dir = os.path.join(TRACEFS, "instances", self.name)

    def _write(self, rel, text):
        with open(os.path.join(self.dir, rel), "w") as f:
            f.write(text)

    def __enter__(self):
        tracefs()
        os.mkdir(self.dir)
        try:
            self._write("buffer_size_kb", str(self.buffer_kb))
            cond = " || ".join(f"sport == {p} || dport == {p}" for p in self.ports)
            self._write("events/sock/inet_sock_set_state/filter", f"protocol == 6 && ({cond})")
            self._write("events/sock/inet_sock_set_state/enable", "1")
        except BaseException:
            self.__exit__()
            raise
        return self

    def stop(self):
        self._write("events/sock/inet_sock_set_state/enable", "0")

    def count(self):
        total, dropped = 0, 0
        cpus = os.path.join(self.dir, "per_cpu")
        for cpu in os.listdir(cpus):
            stats = dict(line.split(":", 1) for line in open(os.path.join(cpus, cpu, "stats")) if ":" in line)
            total += int(stats["entries"]) + int(stats["overrun"])
            dropped += int(stats.get("dropped events", "0"))
        assert dropped == 0, f"the tracefs instance dropped {dropped} events: its count is not exact"
        return total

    def __exit__(self, *exc):
        with contextlib.suppress(OSError):
            self._write("events/sock/inet_sock_set_state/enable", "0")
        for _ in range(50):
            try:
                os.rmdir(self.dir)
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.1)  # busy while a reader has it open


class PortCounter:
    """tests/bpf/port_counter.bpf.o attached: the hits of inet_sock_set_state with one of ports at either end
    that a BPF program was run for (count()), and those the kernel skipped it for (misses())."""

    OBJECT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bpf", "port_counter.bpf.o")
    MAX_PORTS = 8

    def __init__(self, ports):
        assert len(ports) <= self.MAX_PORTS
        self.ports = list(ports)
        self.obj = None

    def __enter__(self):
        with open(self.OBJECT, "rb") as f:
            self.obj = BpfObject(f.read())
        try:
            padded = self.ports + [0] * (self.MAX_PORTS - len(self.ports))
            self.obj.set_rodata({"ports": struct.pack(f"<{self.MAX_PORTS}H", *padded)})
            code, msg, log = self.obj.load()
            assert not code, f"{msg}: {log[-5:]}"
            code, msg = self.obj.attach("count_ports")
            assert not code, msg
        except BaseException:
            self.obj.close()
            raise
        return self

    def count(self):
        ncpus = possible_cpus()
        raw = self.obj.lookup("hits", struct.pack("<I", 0), 8 * ncpus)
        return sum(struct.unpack(f"<{ncpus}Q", raw))

    def misses(self):
        return self.obj.recursion_misses("count_ports")

    def detach(self):
        self.obj.detach()

    def __exit__(self, *exc):
        self.obj.close()
