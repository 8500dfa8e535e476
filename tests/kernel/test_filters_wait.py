"""Identity filters that wait: a unit or cgroup named in a filter that does not exist when the monitor starts
is a warning, not an error, and the kernel filter catches it from the moment it appears (a timer's nightly
job, a container started after the monitor); when it goes, it is dropped."""

import time

import pytest

from support.cgroups import cgroups
from support.net import free_port
from support.procs import run_client, start_server
from support.system import uniq

pytestmark = pytest.mark.bpf
SETTLE_S = 5  # the monitor looks for the names every 2 s (pipeline/filter_cgroups.py)


def serve_and_connect(mount, path, port, comm):
    srv = start_server("127.0.0.1", port, comm, count=1, cgroup=mount + path if path else None)
    try:
        run_client("127.0.0.1", port, comm + "c")
        srv.communicate(timeout=30)
    finally:
        if srv.poll() is None:
            srv.kill()
            srv.communicate()


def comms(m):
    return {r["comm"] for r in m.records()}


def test_a_unit_that_starts_after_the_monitor(monitor):
    unit = f"{uniq('ss-late')}.service"
    path = f"/system.slice/{unit}"
    port = free_port()
    inc = monitor("-P", str(port), "--unit", unit, "--json", "--no-report", log_name="inc.log")
    exc = monitor("-P", str(port), "--exclude-unit", unit, "--json", "--no-report", log_name="exc.log")
    for m in (inc, exc):
        assert any("unit" in line and unit in line and "warning" in line for line in m.stderr_head), m.stderr_head
    serve_and_connect(None, None, port, "ss-lbefore")  # before the unit: outside it
    with cgroups(path) as mount:
        time.sleep(SETTLE_S)
        serve_and_connect(mount, path, port, "ss-lin")  # the server in the unit, its client outside
    inc.stop()
    exc.stop()
    assert comms(inc) == {"ss-lin"}, inc.records()  # the unit's server side only, from its start
    assert "ss-lin" not in comms(exc) and {"ss-lbefore", "ss-lbeforec", "ss-linc"} <= comms(exc), exc.records()
    assert "appeared" in inc.stderr


def test_a_cgroup_path_that_appears_later_and_goes(monitor):
    path = f"/{uniq('ss-latecg')}.slice/x.service"
    port = free_port()
    m = monitor("-P", str(port), "--cgroup", path, "--json", "--no-report")
    with cgroups(path) as mount:
        time.sleep(SETTLE_S)
        serve_and_connect(mount, path, port, "ss-cgin")
    time.sleep(SETTLE_S)  # gone: dropped from the kernel's map, and nothing else passes
    serve_and_connect(None, None, port, "ss-cgout")
    m.stop()
    assert comms(m) == {"ss-cgin"}, m.records()
