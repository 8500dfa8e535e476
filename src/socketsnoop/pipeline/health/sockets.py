"""Warnings about one process's sockets: close-wait-leak (sockets its peer closed and it never did) and
port-exhaustion (connects that failed before a SYN could be sent: no local port left towards a destination).

Fed with the decoded rows the dispatch already has; the rows that matter are picked at C speed (compress over
a map of a C-level test), so a batch with none of them costs no Python per row."""

from itertools import compress
from operator import itemgetter

from ..decode import (
    NEWSTATE,
    OLDSTATE,
    R_CGROUP,
    R_IDENT,
    R_NETNS,
    R_NSTATES,
    R_SK,
    R_STATES,
    R_TS,
    R_UID,
    SK,
    TS,
    TYPE,
    UID,
    CGROUP,
    IDENT,
)
from ...kernel.abi import EV_STATE
from .alerts import Alerts, Window, addr_text, bounded_get, owner_of

CLOSE_WAIT, SYN_SENT, CLOSE = 8, 2, 7
MAX_SOCKETS = 65536  # CLOSE_WAIT sockets followed; past it, counted as overflow
_old_new = itemgetter(OLDSTATE, NEWSTATE)
_INTO_OR_OUT_OF_CLOSE_WAIT = frozenset([(o, CLOSE_WAIT) for o in range(256)] + [(CLOSE_WAIT, n) for n in range(256)])
_r_sk = itemgetter(R_SK)
_r_states = itemgetter(R_STATES, R_NSTATES)
NO_PORT_STATES = (SYN_SENT | CLOSE << 4, 2)  # a record's packed history SYN_SENT>CLOSE
WINDOW_S = 60


class CloseWaitLeak:
    """Sockets in CLOSE_WAIT (the peer closed) for longer than the threshold, per owning process."""

    kind = "close-wait-leak"
    setting = "close_wait_leak"  # its Thresholds field

    def __init__(self, t):
        self.threshold_s = t.close_wait_leak
        self.alerts = Alerts(self.kind, t.interval)
        self.open = {}  # socket address -> (time it entered CLOSE_WAIT, Owner)
        self.before = {}  # owner (pid, comm) -> its count at the last tick, for the growth
        self.overflow = 0

    def events(self, rows):
        for r in compress(rows, map(_INTO_OR_OUT_OF_CLOSE_WAIT.__contains__, map(_old_new, rows))):
            if r[TYPE] != EV_STATE:
                continue
            if r[NEWSTATE] == CLOSE_WAIT:
                if len(self.open) < MAX_SOCKETS:
                    self.open.setdefault(r[SK], (r[TS], owner_of(r[IDENT], r[UID], r[CGROUP])))
                else:
                    self.overflow += 1
            else:
                self.open.pop(r[SK], None)

    def records(self, rows):
        """A connection's record: its end (the socket is gone, whatever events were filtered or lost)."""
        if self.open:
            sks = list(map(_r_sk, rows))
            for sk in compress(sks, map(self.open.__contains__, sks)):
                del self.open[sk]

    def tick(self, now):
        cut = now - int(self.threshold_s * 1e9)
        held = {}  # (pid, comm) -> [count, oldest, owner]
        for since, owner in self.open.values():
            if since <= cut:
                h = held.get(owner[:2])
                if h is None:
                    held[owner[:2]] = [1, since, owner]
                else:
                    h[0] += 1
                    h[1] = min(h[1], since)
        for key, (n, oldest, owner) in held.items():
            growth = n - self.before.get(key, n)
            self.alerts.update(now, key, owner, (
                ("sockets", n), ("growth", growth), ("oldest_s", (now - oldest) // 1_000_000_000),
                ("threshold_s", _num(self.threshold_s))),
                f"{n} socket{'s' if n != 1 else ''} in CLOSE_WAIT for more than {_num(self.threshold_s)} s"
                f"{', and growing' if growth > 0 else ''}: the peer closed the connection and this process never "
                "closed its side (usually a close() missing on some path, or a worker stuck)")
        self.before = {key: h[0] for key, h in held.items()}
        return self.alerts.settle(now, "no socket of this process is held in CLOSE_WAIT past the threshold now")


class PortExhaustion:
    """Connects that failed for want of a local port (connect() set SYN_SENT, found no free port, and closed:
    EADDRNOTAVAIL, no SYN sent, the source port still 0), per destination."""

    kind = "port-exhaustion"
    setting = "port_exhaustion"  # its Thresholds field

    def __init__(self, t):
        self.threshold = t.port_exhaustion
        self.alerts = Alerts(self.kind, t.interval)
        self.dests = {}  # (netns, family, daddr, dport) -> [Window, {(pid, comm): [n, Owner]}]
        self.overflow = 0

    def records(self, rows):
        for r in compress(rows, map(NO_PORT_STATES.__eq__, map(_r_states, rows))):
            who = r[R_IDENT]
            if who[4:6] != b"\0\0":  # a source port: a SYN went out (a connect closed early, not this)
                continue
            d = bounded_get(self.dests, (r[R_NETNS], who[56], who[24:40], int.from_bytes(who[6:8], "little")),
                            lambda: [Window(WINDOW_S), {}])
            if d is None:
                self.overflow += 1
                continue
            d[0].add(r[R_TS], 1)
            owner = owner_of(who, r[R_UID], r[R_CGROUP])
            p = bounded_get(d[1], owner[:2], lambda: [0, owner], 64)
            if p is not None:
                p[0] += 1

    def tick(self, now):
        for key, (window, procs) in list(self.dests.items()):
            sums = window.sums(now)
            if sums is None:
                del self.dests[key]
                continue
            if sums[0] >= self.threshold:
                top = sorted(procs.values(), key=lambda p: -p[0])[:5]
                netns, family, daddr, dport = key
                self.alerts.update(now, key, top[0][1], (
                    ("dst", addr_text(family, daddr)), ("dport", dport), ("netns", netns), ("failures", sums[0]),
                    ("window_s", WINDOW_S), ("processes", tuple((o.pid, o.comm, n) for n, o in top))),
                    f"{sums[0]} connects to this destination failed in {WINDOW_S} s for want of a local port "
                    "(EADDRNOTAVAIL): every port of ip_local_port_range towards it is in use, usually by "
                    "connections opened and closed faster than TIME_WAIT frees them, or a pool that leaks")
        return self.alerts.settle(now, "connects to this destination find a local port again")


def _num(x):
    """60.0 -> 60, 0.5 -> 0.5: a threshold as the user wrote it."""
    return int(x) if float(x).is_integer() else x

