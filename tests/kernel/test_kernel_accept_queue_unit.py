"""accept-queue-overflow under the service unit's restrictions: its capabilities (no CAP_SYS_ADMIN, so no
setns into another network namespace) and its address families (RestrictAddressFamilies=), applied by
support/unitsandbox.py as the kernel applies them in the unit. The monitor must survive a sock_diag socket it
cannot make, read what it can, and say (once, and counted at exit) what it could not."""

import re
import time

import pytest

from support import unitsandbox
from support.net import free_port, listen_overflows, private_netns
from support.procs import Monitor, spawn
from test_kernel_accept_queue import CLIENTS, STUCK_SERVER  # a listener that never accepts, a crowd of connects

pytestmark = [pytest.mark.bpf, pytest.mark.skipif(unitsandbox.available() is not None,
                                                  reason=str(unitsandbox.available()))]

WARNING = re.compile(r" Warning: accept-queue-overflow status=active .*\bport=(\d+)\b")
CANNOT = "socket-snoop: warning: accept-queue-overflow: cannot read the accept queues of"
UNREAD = re.compile(r"accept-queue-overflow: (\d+) reads of a network namespace's accept queues failed "
                    r"\(said at the first\): (\d+) packets refused")


def _overflow(mon, port, netns=None):
    """A listener that never accepts, in netns (ours: None), crowded; then the monitor's ticks; then stopped."""
    server = spawn(STUCK_SERVER.format(port=port, host="127.0.0.1"), netns=netns)
    try:
        assert server.stdout.readline().strip() == "listening"
        clients = spawn(CLIENTS.format(port=port, host="127.0.0.1", n=30), netns=netns)
        assert clients.stdout.readline().strip() == "done"
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and mon.proc.poll() is None:
            time.sleep(0.2)
        assert mon.proc.poll() is None, f"the monitor ended: {mon.proc.communicate()[1]}"
    finally:
        server.kill()
        server.communicate()
        rc = mon.stop()
    assert rc == 0 and "Traceback" not in mon.stderr, mon.stderr
    return [line for line in mon.stderr.splitlines() if line.startswith(CANNOT)], UNREAD.search(mon.stderr)


def _monitor(tmp_path, port, families=None):
    # --priority-boost 0: the unit's Nice= is systemd's to set (it has no CAP_SYS_NICE)
    mon = Monitor(tmp_path, "--warn", "accept-queue-overflow=1", "--port", str(port), "--priority-boost", "0",
                  warnings=True)
    mon.args[:0] = unitsandbox.prefix(families=families)
    return mon.start()


def test_the_units_families_let_it_read_its_own_namespace(tmp_path):
    """The unit as `service install` writes it: the listener of the monitor's own namespace is named."""
    port = free_port()
    mon = _monitor(tmp_path, port)
    said, unread = _overflow(mon, port)
    assert not said and not unread, mon.stderr
    assert str(port) in {m.group(1) for m in map(WARNING.search, mon.lines()) if m}, mon.lines()[-10:]


def test_without_af_netlink_it_survives_and_says_so(tmp_path):
    """A unit that refuses AF_NETLINK (as every unit before this fix did): no traceback, no restart; the reason
    said once, the failed reads counted at exit."""
    port = free_port()
    mon = _monitor(tmp_path, port, families=["AF_UNIX"])
    said, unread = _overflow(mon, port)
    assert len(said) == 1, mon.stderr
    assert "our network namespace" in said[0] and "Address family not supported" in said[0], said
    assert "RestrictAddressFamilies=" in said[0] and "AF_NETLINK" in said[0], said
    assert unread and int(unread.group(1)) >= 1, mon.stderr


def test_another_namespace_without_cap_sys_admin_is_counted_and_said(tmp_path):
    """The unit's capabilities have no CAP_SYS_ADMIN: setns() into the listener's namespace is refused. Its
    overflows cannot be given to the listener: that is said once, with why, and counted at exit."""
    port = free_port()
    with private_netns() as ns:
        mon = _monitor(tmp_path, port)
        said, unread = _overflow(mon, port, netns=ns)
        overflows = listen_overflows(ns)
    assert overflows > 0
    assert len(said) == 1, mon.stderr
    assert "another network namespace" in said[0] and "setns: Operation not permitted" in said[0], said
    assert "CAP_SYS_ADMIN" in said[0], said
    assert unread and int(unread.group(1)) >= 1 and int(unread.group(2)) <= overflows, mon.stderr
    print(said[0], unread.group(0), sep="\n")
