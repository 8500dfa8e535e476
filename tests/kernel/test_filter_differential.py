"""Each filter's user-space match against the kernel's verdict, on the same real events (a differential test).

One monitor runs with only the test's ports (the base), others with the base and one filter each, all at
once on the same traffic: connections over IPv4 and IPv6, refused ones, a service's cgroup, a container's,
a process run as `nobody`. The filter's user-space match (pipeline/filters.py, which judges the owners only
user space can find, and `report`) applied to the base monitor's lines must select exactly the filtered
monitor's lines: for every filter kind and every exclusion, so that the two can never drift apart.
"""

import ipaddress
import os
import uuid
from collections import Counter

import pytest
from support.cgroups import cgroups
from support.net import free_port
from support.procs import _PRELUDE, spawn, start_server
from support.system import uniq

from socketsnoop.kernel.abi import EV_CONNECTION
from socketsnoop.logformat.words import EVENT_NAMES
from socketsnoop.pipeline.decode import STATE_NUMBERS
from socketsnoop.settings.monitor import filters_from, monitor_options

pytestmark = pytest.mark.bpf

EVENT_KINDS = {**{name: kind for kind, name in EVENT_NAMES.items()}, "connection": EV_CONNECTION}
NOBODY = 65534

# waits for a line on stdin, then connects `count` times (a closed port: refused, counted as such)
ACTOR = _PRELUDE + """
sys.stdin.readline()
fam = socket.AF_INET6 if ':' in {host!r} else socket.AF_INET
for _ in range({count}):
    c = socket.socket(fam, socket.SOCK_STREAM)
    c.settimeout(20)
    try:
        c.connect(({host!r}, {port}))
        c.sendall(b'x' * 100)
        c.shutdown(socket.SHUT_WR)
        c.recv(64)
    except ConnectionRefusedError:
        pass
    c.close()
print('done', flush=True)
"""


class World:
    """The traffic's names: ports, a service's and a container's cgroups, the actors' pids (known before the
    monitors start, so that `-p` can name one)."""

    def __init__(self):
        self.ports = [free_port(), free_port(), free_port()]  # v4 service, v6 service, closed
        self.unit = f"{uniq('ss-df')}.service"
        self.unit_path = f"/system.slice/{self.unit}"
        self.container = uuid.uuid4().hex + uuid.uuid4().hex
        self.container_path = f"/system.slice/docker-{self.container}.scope"


def cases(w, actors):
    """(name, the filtered monitor's extra arguments, whether it replaces the base's -P)."""
    p1, p2, p3 = w.ports
    return {
        "pid": [["-p", str(actors["v4"].pid)]],
        "exclude-pid": [["--exclude-pid", str(actors["v4"].pid)]],
        "comm": [["-c", "ss-dfsrv6", "-c", "ss-dfrefuse"]],
        "exclude-comm": [["--exclude-comm", "ss-dfsrv4"]],
        "port": [["-P", str(p1)], True],
        "exclude-port": [["--exclude-port", str(p2)]],
        "src-port": [["--src-port", str(p1)]],
        "dst-port": [["--dst-port", str(p2)]],
        "addr": [["-a", "::1"]],
        "exclude-addr": [["--exclude-addr", "127.0.0.1"]],
        "src": [["--src", "127.0.0.0/8"]],
        "dst": [["--dst", "::1/128"]],
        "state": [["-s", "ESTABLISHED", "-s", "SYN_SENT"]],
        "uid": [["--uid", str(NOBODY)]],
        "exclude-uid": [["--exclude-uid", "nobody"]],
        "cgroup": [["--cgroup", w.unit_path]],
        "exclude-cgroup": [["--exclude-cgroup", w.unit_path]],
        "unit": [["--unit", w.unit]],
        "exclude-unit": [["--exclude-unit", w.unit]],
        "container": [["--container", w.container[:12]]],
        "exclude-container": [["--exclude-container", w.container]],
        "ipv4": [["-4"]],
        "ipv6": [["-6"]],
        "no-resets": [["--no-resets"]],
        "no-retransmits": [["--no-retransmits"]],
        "failed": [["--failed"]],
    }


BATCHES = [["pid", "exclude-pid", "comm", "exclude-comm", "port", "exclude-port", "src-port"],
           ["dst-port", "addr", "exclude-addr", "src", "dst", "state", "ipv4"],
           ["uid", "exclude-uid", "cgroup", "exclude-cgroup", "unit", "exclude-unit", "ipv6"],
           ["container", "exclude-container", "no-resets", "no-retransmits", "failed"]]


def key(r):
    """An event or record as both monitors log it (each takes its own timestamp)."""
    return (r["event"], r["family"], r["src"], r["sport"], r["dst"], r["dport"], r["pid"], r["comm"],
            r.get("old_state"), r.get("new_state"), r.get("result"))


def user_space_verdict(filters, r):
    return filters.match(EVENT_KINDS[r["event"]], r["family"], ipaddress.ip_address(r["src"]), r["sport"],
                         ipaddress.ip_address(r["dst"]), r["dport"], r["pid"], r["comm"].encode(),
                         STATE_NUMBERS.get(r.get("new_state")), r.get("uid"), r.get("user"), r.get("cgroup"),
                         r.get("unit"), r.get("container"), r.get("result"))


def traffic(w, mount, actors):
    p1, p2, _p3 = w.ports
    servers = [start_server("127.0.0.1", p1, "ss-dfsrv4", count=2, cgroup=mount + w.unit_path),
               start_server("::1", p2, "ss-dfsrv6", count=2, uid=NOBODY)]
    try:
        for actor in actors.values():
            actor.stdin.write("go\n")
            actor.stdin.flush()
        for actor in actors.values():
            out, err = actor.communicate(timeout=60)
            assert "done" in out, err
        for s in servers:
            s.communicate(timeout=30)
    finally:
        for p in servers + list(actors.values()):
            if p.poll() is None:
                p.kill()
                p.communicate()


@pytest.mark.parametrize("batch", range(len(BATCHES)), ids=lambda i: "+".join(BATCHES[i]))
def test_user_space_match_gives_the_kernels_verdict(monitor, batch):
    w = World()
    p1, p2, p3 = w.ports
    base = ["-P", str(p1), "-P", str(p2), "-P", str(p3), "--json", "--no-report", "--buffer-size", "1M"]
    with cgroups(w.unit_path, w.container_path) as mount:
        actors = {"v4": spawn(ACTOR, comm=b"ss-dfcli4", host="127.0.0.1", port=p1, count=2),
                  "v6": spawn(ACTOR, comm=b"ss-dfcli6", host="::1", port=p2, count=2, uid=NOBODY,
                              cgroup=mount + w.container_path),
                  "refused": spawn(ACTOR, comm=b"ss-dfrefuse", host="127.0.0.1", port=p3, count=1)}
        table = cases(w, actors)
        whole = monitor(*base, summary=True, log_name="base.log")
        filtered = {}
        for name in BATCHES[batch]:
            args, *replace = table[name]
            own = base[6:] if replace else base
            filtered[name] = (args, monitor(*own, *args, summary=True, log_name=f"{name}.log"))
        traffic(w, mount, actors)
        whole.stop()
        for _args, m in filtered.values():
            m.stop()
    everything = whole.records()
    assert {r["event"] for r in everything} >= {"state_change", "reset_received", "connection"}, everything
    for name, (args, m) in filtered.items():
        filters = filters_from(monitor_options([*args, "--config", os.devnull, "--no-log-file"]))
        lines = everything
        if name == "failed":  # --failed: connection records only (the kernel sends no events)
            lines = [r for r in everything if r["event"] == "connection"]
        chosen = Counter(key(r) for r in lines if user_space_verdict(filters, r))
        kernel = Counter(key(r) for r in m.records())
        assert chosen == kernel, (name, chosen - kernel, kernel - chosen)
        assert kernel, f"{name}: the kernel kept nothing: the traffic does not exercise this filter"
        if name != "no-retransmits":  # (no loss here: nothing to leave out)
            assert sum(kernel.values()) < len(lines), f"{name}: the kernel left nothing out"
