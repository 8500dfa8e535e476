"""Warnings about one process's sockets: close-wait-leak (sockets its peer closed and it never did) and
port-exhaustion (connects that failed before a SYN could be sent: no local port left towards a destination).

Fed with the decoded rows the dispatch already has; the rows that matter are picked at C speed (compress over
a map of a C-level test), so a batch with none of them costs no Python per row."""

import os
from itertools import compress, filterfalse
from operator import itemgetter

from ..decode import (
    CGROUP,
    IDENT,
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
    UID,
)
from ..owners import tcp_sockets
from .alerts import Alerts, Window, addr_text, bounded_get, owner_of

CLOSE_WAIT, LAST_ACK, SYN_SENT, CLOSE, LISTEN = 8, 9, 2, 7, 10
MAX_CONFIRMED = 8  # owners whose sockets are confirmed in /proc per tick (the most sockets first)
MAX_SOCKETS = 65536  # CLOSE_WAIT sockets followed; past it, counted as overflow
_sk = itemgetter(SK)
_MOVES = bytes(1 if n == CLOSE_WAIT else 2 if n == LAST_ACK else 0 for n in range(256))  # bytes.translate
_INTO = bytes(int(n == CLOSE_WAIT) for n in range(256))
_OUT = bytes(int(n == LAST_ACK) for n in range(256))
_LEFT = bytes(int(n == 2) for n in range(256))  # of _MOVES
_r_sk = itemgetter(R_SK)
_r_states = itemgetter(R_STATES, R_NSTATES)
NO_PORT_STATES = (SYN_SENT | CLOSE << 4, 2)  # a record's packed history SYN_SENT>CLOSE
WINDOW_S = 60


def held_in_proc(pid, proc="/proc"):
    """How many sockets in CLOSE_WAIT the process holds, as /proc shows them: among its file descriptors, or
    not accepted yet on one of its listening ports. The events say which sockets; /proc confirms them before a
    warning (an exit event lost to a full ring would otherwise look like a leak). 0 for a process gone."""
    inodes = set()
    try:
        fds = os.listdir(f"{proc}/{pid}/fd")
    except OSError:
        return 0
    for fd in fds:
        try:
            link = os.readlink(f"{proc}/{pid}/fd/{fd}")
        except OSError:  # closed since (the listing's own, among others)
            continue
        if link.startswith("socket:[") and link[8:-1].isdigit():
            inodes.add(int(link[8:-1]))
    ports = {s[2] for s in tcp_sockets(proc, {LISTEN}, pid) if s[6] in inodes}
    return sum(1 for s in tcp_sockets(proc, {CLOSE_WAIT}, pid) if s[6] in inodes or (not s[6] and s[2] in ports))


class CloseWaitLeak:
    """Sockets in CLOSE_WAIT (the peer closed) for longer than the threshold, per owning process."""

    kind = "close-wait-leak"
    setting = "close_wait_leak"  # its Thresholds field
    states = (CLOSE_WAIT, LAST_ACK)  # the events it needs: into CLOSE_WAIT, and out of it by close()

    def __init__(self, t):
        self.threshold_s = t.close_wait_leak
        self.alerts = Alerts(self.kind, t.interval)
        # socket address -> its event into CLOSE_WAIT (a row: its time first): under churn nearly every server
        # socket passes through, so the owner is made only for the few still there at a tick
        self.open = {}
        self.before = {}  # owner (pid, comm) -> its count at the last tick, for the growth
        self.overflow = 0

    def events(self, rows, news):
        """The sockets whose last move in the batch was into CLOSE_WAIT, found at C speed (news: the rows' new
        states as bytes). A socket leaves CLOSE_WAIT into LAST_ACK (its process closed it: an event) or CLOSE
        (a reset, an abort: its record ends it), so the new states alone tell both moves: no other pass over
        the rows, and Python only for the few sockets not followed yet."""
        if CLOSE_WAIT not in news and not (self.open and LAST_ACK in news):
            return
        open_ = self.open
        into_rows = list(compress(rows, news.translate(_INTO)))
        into = list(map(_sk, into_rows))
        out = list(map(_sk, compress(rows, news.translate(_OUT))))
        entered, left = set(into), set(out)
        # the batch's few sockets tested against the followed ones, never the other way: a set operation with
        # a dict walks the dict, holes of its deleted entries included (thousands under churn)
        gone = set(filter(open_.__contains__, left))
        if len(entered) < len(into) or len(left) < len(out) or not gone.isdisjoint(entered):
            # a socket in and out more than once in the batch (its address reused): by the order of its moves
            self._in_order(rows, news, into_rows)
            return
        for sk in gone:  # each moved at most once each way here: out of CLOSE_WAIT, followed and not back
            del open_[sk]
        entered.difference_update(left)  # into it and out again within the batch
        entered = set(filterfalse(open_.__contains__, entered))
        if entered:
            self._follow(compress(into_rows, map(entered.__contains__, into)), len(entered))

    def _in_order(self, rows, news, into_rows):
        """The batch's moves in their order (into_rows: its rows into CLOSE_WAIT, as the caller found them)."""
        moves = news.translate(_MOVES)  # CLOSE_WAIT -> 1, LAST_ACK -> 2, else 0
        moved = list(compress(rows, moves))
        sks, kinds = list(map(_sk, moved)), moves.translate(None, b"\0")  # (the moves, zeros deleted)
        last = dict(zip(sks, kinds))  # socket -> its last move in the batch
        open_ = self.open
        left = set(compress(sks, kinds.translate(_LEFT)))
        for sk in list(filter(open_.__contains__, left)):  # out of it (maybe back since)
            del open_[sk]
        stay = set(filterfalse(open_.__contains__, compress(last, map((1).__eq__, last.values()))))
        if stay:  # each socket's last entry into CLOSE_WAIT (its time: since then): the last of its rows in a dict
            last_in = dict(zip(map(_sk, into_rows), into_rows))
            self._follow(map(last_in.__getitem__, stay), len(stay))

    def _follow(self, rows, n):
        """Follow the sockets of these rows (their entry into CLOSE_WAIT), n of them. A connection's record
        comes after its events (pipeline/rings.py holds the records back until the events older than them are
        read): one that came first all the same leaves an entry that the /proc check at the threshold forgets."""
        open_ = self.open
        if len(open_) + n > MAX_SOCKETS:
            self.overflow += n
            return
        rows = list(rows)
        open_.update(zip(map(_sk, rows), rows))

    def records(self, rows):
        """A connection's record: its end (the socket is gone, whatever events were filtered or lost)."""
        if self.open:
            sks = list(map(_r_sk, rows))
            for sk in compress(sks, map(self.open.__contains__, sks)):
                del self.open[sk]

    def tick(self, now):
        cut = now - int(self.threshold_s * 1e9)
        held = {}  # (pid, comm) -> [count, oldest, owner]
        for r in self.open.values():
            since = r[TS]
            if since <= cut:
                owner = owner_of(r[IDENT], r[UID], r[CGROUP])
                h = held.get(owner[:2])
                if h is None:
                    held[owner[:2]] = [1, since, owner]
                else:
                    h[0] += 1
                    h[1] = min(h[1], since)
        for key, (n, oldest, owner) in sorted(held.items(), key=lambda kv: -kv[1][0])[:MAX_CONFIRMED]:
            n = min(n, held_in_proc(owner.pid))
            if not n:  # events missed (the exit's lost, the record read first): not held, forget them
                self.open = {sk: r for sk, r in self.open.items()
                             if r[TS] > cut or owner_of(r[IDENT], r[UID], r[CGROUP])[:2] != key}
                held[key][0] = 0
                continue
            growth = n - self.before.get(key, n)
            self.alerts.update(now, key, owner, (
                ("sockets", n), ("growth", growth), ("oldest_s", (now - oldest) // 1_000_000_000),
                ("threshold_s", _num(self.threshold_s))),
                f"{n} socket{'s' if n != 1 else ''} in CLOSE_WAIT for more than {_num(self.threshold_s)} s"
                f"{', and growing' if growth > 0 else ''}: the peer closed the connection and this process never "
                "closed its side (usually a close() missing on some path, or a worker stuck)")
        self.before = {key: h[0] for key, h in held.items() if h[0]}
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

