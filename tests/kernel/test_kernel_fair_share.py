"""The monitor at a fair share of the CPU: started in the workload's own session (one scheduling group, as in
a pod or a shared login) beside 8 client and 8 server processes churning connections as fast as the machine
allows, with default options, it loses nothing: it raises its own priority (--priority-boost, default 10)
when it runs as root. At the workload's priority (--priority-boost 0) the same run sheds 220,000 of its
500,000 events here (bench/README.md, "Lossless at a fair share")."""

import os
import subprocess

import pytest

from support.net import free_port
from support.procs import Monitor

pytestmark = pytest.mark.bpf

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def loadgen(tmp_path_factory):
    """bench/loadgen.c, built: Python cannot make connections fast enough."""
    out = str(tmp_path_factory.mktemp("loadgen") / "loadgen")
    subprocess.run(["cc", "-O2", "-o", out, os.path.join(REPO, "bench", "loadgen.c")], check=True)
    return out


def nice_values(pid):
    """The nice value of each thread of process `pid` (Linux keeps one per thread)."""
    out = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/stat") as f:
            out.append(int(f.read().rsplit(")", 1)[1].split()[16]))
    return out


def test_the_monitor_raises_its_priority_and_never_lowers_it(monitor):
    base = os.getpriority(os.PRIO_PROCESS, 0)
    m = monitor("-q", "--metrics", str(free_port()))  # the metrics server's thread too
    assert set(nice_values(m.proc.pid)) == {min(base, -10)}
    assert m.stop() == 0, m.stderr
    m = monitor("-q", "--priority-boost", "0")
    assert set(nice_values(m.proc.pid)) == {base}
    assert m.stop() == 0, m.stderr
    m = monitor("-q", "--priority-boost", "3")
    assert set(nice_values(m.proc.pid)) == {min(base, -3)}
    assert m.stop() == 0 and "priority" not in m.stderr, m.stderr


def test_lossless_beside_8_clients_and_8_servers_in_its_session(monitor, loadgen):
    """Default options (the exit report and a summary line per connection), the monitor a child of this
    test as the workload is: the same session, so the same scheduling group."""
    m = monitor("-q", summary=True)
    port = free_port()
    r = subprocess.run([loadgen, str(port), "4", "8", "8"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    conns = int(r.stdout.split("connections=")[1].split()[0])
    assert m.stop(settle=1) == 0, m.stderr
    t = m.totals()
    assert conns > 10000, r.stdout  # a flood: the monitor had to keep up with it
    assert t["seen"] >= 9 * conns, (conns, t)  # 10 state changes a connection: it saw them
    assert t["lost"] == 0 and t["missed"] == 0 and t["records_lost"] == 0, (conns, t)


def test_without_cap_sys_nice_one_line_and_it_runs(tmp_path):
    """Root without CAP_SYS_NICE (a container, a unit that does not grant it) cannot raise its priority: one
    line says so, and it runs at the nice value it was given."""
    if subprocess.run(["setpriv", "--help"], capture_output=True).returncode != 0:
        pytest.skip("needs setpriv")
    m = Monitor(tmp_path, "-q")
    m.args[:0] = ["setpriv", "--bounding-set=-sys_nice", "--inh-caps=-sys_nice"]
    try:
        m.start()
        assert set(nice_values(m.proc.pid)) == {os.getpriority(os.PRIO_PROCESS, 0)}
        assert m.stop() == 0, m.stderr
    finally:
        m.kill()
    said = [line for line in m.stderr.splitlines() if "priority" in line]
    assert len(said) == 1 and "CAP_SYS_NICE" in said[0], m.stderr
