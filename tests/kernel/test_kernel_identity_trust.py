"""Who owns a connection, as far as it can be trusted, with the real kernel program and real cgroups:
names a user plants in the cgroup subtree systemd delegates to it (user@UID.service) name nothing but that
user's own units; an exec'd program's connections carry its own executable; the metrics' unit and container
labels are the identity the JSON shows.
"""

import contextlib
import os
import re
import subprocess
import sys
import time
import uuid

import pytest

from support.cgroups import cgroups
from support.net import free_port
from support.procs import _PRELUDE, run_client, spawn, start_server
from support.prom import sample_sum, scrape
from support.system import uniq

pytestmark = pytest.mark.bpf

DELEGATED = "/user.slice/user-65534.slice/user@65534.service"


def hex64():
    return uuid.uuid4().hex + uuid.uuid4().hex


@contextlib.contextmanager
def delegated_to_nobody(mount, *planted):
    """user@65534.service given to nobody as systemd delegates it (the directory and its cgroup.procs,
    cgroup.threads, cgroup.subtree_control chowned to the user), and `planted` (paths below it) made by
    nobody itself with mkdir; the planted ones removed on the way out."""
    top = mount + DELEGATED
    for name in ("", "cgroup.procs", "cgroup.threads", "cgroup.subtree_control"):
        os.chown(os.path.join(top, name), 65534, 65534)
    made = []
    try:
        for rel in planted:
            p = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "mkdir", "-p",
                                top + rel], capture_output=True, text=True)
            assert p.returncode == 0, p.stderr
            parts = [x for x in rel.split("/") if x]
            made += [top + "/" + "/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        yield
    finally:
        for d in sorted(set(made), key=len, reverse=True):
            with contextlib.suppress(OSError):
                os.rmdir(d)


def test_names_planted_in_a_delegated_subtree_name_nothing(monitor):
    """As nobody, in its delegated user@65534.service: mkdir app.slice/<svc> (a system unit's name) and
    docker-<id>.scope (a real container's id). Neither makes nobody's connections part of that unit or
    container: --exclude-unit and --exclude-container (which also name the real ones, so the monitors start)
    keep them, --unit leaves them out, and the JSON and --context show the unit as user@65534.service with
    the planted name as the user's own (user_unit, USER_UNIT=), with no container."""
    svc = f"{uniq('sstest-bk')}.service"
    cid = hex64()
    real_svc, real_dock = f"/system.slice/{svc}", f"/system.slice/docker-{cid}.scope"
    plant_svc, plant_dock = f"/app.slice/{svc}", f"/docker-{cid}.scope"
    port = free_port()
    with cgroups(real_svc, real_dock, DELEGATED) as mount, delegated_to_nobody(mount, plant_svc, plant_dock):
        common = ("-P", str(port), "--no-report", "--buffer-size", "1M")
        m_all = monitor(*common, "--json", log_name="all.log")
        m_ctx = monitor(*common, "--context", log_name="ctx.log")
        m_xunit = monitor(*common, "--json", "--exclude-unit", svc, log_name="xunit.log")
        m_unit = monitor(*common, "--context", "--unit", svc, log_name="unit.log")
        m_xcont = monitor(*common, "--json", "--exclude-container", cid[:12], log_name="xcont.log")
        srv = start_server("127.0.0.1", port, "ss-trsrv", count=4)
        try:
            run_client("127.0.0.1", port, "ss-trsvc", cgroup=mount + real_svc)
            run_client("127.0.0.1", port, "ss-trdock", cgroup=mount + real_dock)
            run_client("127.0.0.1", port, "ss-trplsvc", cgroup=mount + DELEGATED + plant_svc, uid=65534)
            run_client("127.0.0.1", port, "ss-trpldock", cgroup=mount + DELEGATED + plant_dock, uid=65534)
            srv.communicate(timeout=30)
        finally:
            srv.kill()
        for m in (m_all, m_ctx, m_xunit, m_unit, m_xcont):
            m.stop()

    def comms(m):
        return {r["comm"] for r in m.records() if r["comm"].startswith("ss-tr") and r["comm"] != "ss-trsrv"}

    assert comms(m_all) == {"ss-trsvc", "ss-trdock", "ss-trplsvc", "ss-trpldock"}
    assert comms(m_xunit) == {"ss-trdock", "ss-trplsvc", "ss-trpldock"}
    assert comms(m_xcont) == {"ss-trsvc", "ss-trplsvc", "ss-trpldock"}
    unit_lines = [ln for ln in m_unit.lines() if "COMM=ss-tr" in ln]
    assert unit_lines and all("COMM=ss-trsvc " in ln and ln.endswith(f" USER=root UNIT={svc}") for ln in unit_lines)
    for r in m_all.records():
        if r["comm"] == "ss-trplsvc":
            assert (r["cgroup"], r["unit"], r["user_unit"], r["user"]) == (
                DELEGATED + plant_svc, "user@65534.service", svc, "nobody"), r
        if r["comm"] == "ss-trpldock":
            assert (r["unit"], r["user_unit"]) == ("user@65534.service", f"docker-{cid}.scope"), r
            assert "container" not in r, r
        if r["comm"] == "ss-trdock":
            assert r["container"] == cid, r
    ctx = {re.search(r"COMM=(\S+)", ln).group(1): ln for ln in m_ctx.lines() if "COMM=ss-trpl" in ln}
    assert ctx["ss-trplsvc"].endswith(f" USER=nobody UNIT=user@65534.service USER_UNIT={svc}"), ctx
    assert ctx["ss-trpldock"].endswith(f" USER=nobody UNIT=user@65534.service USER_UNIT=docker-{cid}.scope"), ctx


# a client that connects, waits for a line, execs bash, which connects again and waits for its stdin to close
EXECS = _PRELUDE + """
c = socket.create_connection(('127.0.0.1', {port}))
c.sendall(b'x')
c.shutdown(socket.SHUT_WR)
c.recv(64)
c.close()
print('connected', flush=True)
sys.stdin.readline()
os.execv('/bin/bash', ['bash', '-c', 'exec 3<>/dev/tcp/127.0.0.1/{port}; echo y >&3; exec 3>&-; '
                                     'echo again; read line'])
"""


def wait_for(pred, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return False


def test_exe_follows_an_exec(monitor):
    """A process connects as Python, then execs bash, which connects again: each connection's events carry
    the executable of the program that made it (the monitor read the first before the exec: the test waits
    for its line before letting the process exec)."""
    port = free_port()
    bash = os.path.realpath("/bin/bash")
    m = monitor("-P", str(port), "--json", "--no-report", "--buffer-size", "1M", log_name="exec.log")
    srv = start_server("127.0.0.1", port, "ss-exsrv", count=2)
    p = spawn(EXECS, comm=b"ss-exfirst", port=port)
    try:
        assert p.stdout.readline().strip() == "connected", p.stderr.read()
        assert wait_for(lambda: any('"comm":"ss-exfirst"' in ln and "CLOSE" in ln for ln in m.lines()))
        p.stdin.write("go\n")
        p.stdin.flush()
        assert p.stdout.readline().strip() == "again", p.stderr.read()
        assert wait_for(lambda: any('"comm":"bash"' in ln for ln in m.lines()))
        p.stdin.close()
        p.wait(timeout=30)
        srv.communicate(timeout=30)
    finally:
        p.kill()
        srv.kill()
    m.stop()
    first = [r for r in m.records() if r["comm"] == "ss-exfirst"]
    second = [r for r in m.records() if r["comm"] == "bash" and r["pid"] == p.pid]
    assert first and second
    assert {r["exe"] for r in first} == {os.path.realpath(sys.executable)}, first
    assert {r["exe"] for r in second} == {bash}, second


def test_metrics_unit_and_container_labels(monitor):
    """--metrics-labels unit,container: a real scrape has the unit and container of the sockets' cgroups (a
    service's, a Docker scope's), for state changes and connection records, as the JSON shows them; a socket
    in no container gets the empty value."""
    svc = f"{uniq('sstest-mx')}.service"
    cid = hex64()
    svc_path, dock_path = f"/system.slice/{svc}", f"/system.slice/docker-{cid}.scope"
    port, mport = free_port(), free_port()
    with cgroups(svc_path, dock_path) as mount:
        m = monitor("-P", str(port), "--no-report", "--buffer-size", "1M", "--metrics", f"127.0.0.1:{mport}",
                    "--metrics-labels", "unit,container", summary=True, log_name="mx.log")
        mj = monitor("-P", str(port), "--no-report", "--buffer-size", "1M", "--json", log_name="mxj.log")
        srv = start_server("127.0.0.1", port, "ss-mxsrv", count=3)
        try:
            run_client("127.0.0.1", port, "ss-mxsvc", cgroup=mount + svc_path)
            run_client("127.0.0.1", port, "ss-mxdock", cgroup=mount + dock_path, count=2)
            srv.communicate(timeout=30)
        finally:
            srv.kill()
        deadline = time.monotonic() + 20
        while True:
            got = scrape(mport)
            conns = sample_sum(got, "socketsnoop_connections_total", unit=f"docker-{cid}.scope", container=cid)
            if conns >= 2 or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        m.stop()
        mj.stop()
    est = {"state": "ESTABLISHED"}
    assert sample_sum(got, "socketsnoop_state_changes_total", unit=svc, container="", **est) == 1, got
    assert sample_sum(got, "socketsnoop_state_changes_total", unit=f"docker-{cid}.scope", container=cid, **est) == 2
    assert sample_sum(got, "socketsnoop_connections_total", unit=svc, direction="out") == 1
    assert conns == 2
    assert sample_sum(got, "socketsnoop_state_changes_total", **est) == 6  # and the server's 3, in its own cgroup
    units = {r.get("unit") for r in mj.records() if r["comm"] in ("ss-mxsvc", "ss-mxdock")}
    assert units == {svc, f"docker-{cid}.scope"}
