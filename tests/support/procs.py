"""Processes of the tests: the real monitor as a child process, and named servers and clients making real
TCP traffic (a process name is what the monitor logs as COMM)."""

import json
import signal
import subprocess
import sys
import textwrap
import time

from support.system import READY


class Monitor:
    """socket-snoop running as a child process, with a log file in a temp dir."""

    def __init__(self, tmp_path, *args, log_name="monitor.log", ready_timeout=60, summary=False, warnings=False):
        """summary: keep the Connection Summary lines (tests of the per-event lines leave them out: --no-summary);
        warnings: keep the health warnings (a test that counts lines leaves them out: --no-warnings; a slow guest's
        load can raise one)."""
        self.log = tmp_path / log_name
        quiet = [] if summary or {"--summary-only", "--failed", "--no-summary"} & set(args) else ["--no-summary"]
        log = [] if "--no-log-file" in args else ["--log-file", str(self.log)]
        calm = [] if warnings else ["--no-warnings"]  # on by default: a test that counts lines leaves them out
        self.args = [sys.executable, "-m", "socketsnoop", *log, *quiet, *calm, *args]
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
        """The 'Totals: seen=.. captured=..' line of the exit summary (on stderr), as a dict of ints."""
        for line in self.stderr.splitlines():
            if line.startswith("Totals: "):
                return {k: int(v) for k, v in (kv.split("=") for kv in line[8:].split())}
        raise AssertionError(f"no Totals line in:\n{self.stderr}")


# --- traffic: small Python programs that name themselves (prctl PR_SET_NAME) --------------

_PRELUDE = """
import ctypes, os, socket, sys, time
ctypes.CDLL(None).prctl(15, {comm!r}, 0, 0, 0)
"""

# connects count times to a closed port (each refused): a burst of events and failed-connection records
REFUSER = """
import ctypes, socket
ctypes.CDLL(None).prctl(15, {comm!r}, 0, 0, 0)
for _ in range({count}):
    s = socket.socket()
    try:
        s.connect(("127.0.0.1", {port}))
    except ConnectionRefusedError:
        pass
    s.close()
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
