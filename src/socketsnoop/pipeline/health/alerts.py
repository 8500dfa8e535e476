"""What every warning kind shares: the warning itself (HealthWarning), its settings (Thresholds), and the life of a
warning per key (Alerts): said when its condition starts, said again at most once per interval while it
lasts (with how many times it was seen), and one last time when the condition clears. Keys are bounded: past
MAX_KEYS per kind a new key is not tracked, only counted (overflow), so a flood of distinct sources cannot grow
the monitor's memory."""

import collections
import ipaddress
from typing import NamedTuple

MAX_KEYS = 1024  # keys tracked per kind (destinations, hosts, owners, remote addresses)
ACTIVE, CLEARED = "active", "cleared"


class Thresholds(NamedTuple):
    """The --warn KIND=VALUE settings (settings/warnings.py declares and parses them)."""
    close_wait_leak: float = 60.0  # seconds a socket stays in CLOSE_WAIT before it counts
    connect_failures: int = 10  # failed connects to one destination within WINDOW_S
    retransmits: float = 5.0  # percent of a remote host's segments retransmitted (at least MIN_RETRANSMITS)
    port_scan: int = 20  # distinct closed ports one remote address touched within SCAN_WINDOW_S
    syn_flood: int = 100  # half-open connections of one listener with their SYN-ACK sent again within 10 s
    port_exhaustion: int = 5  # connects failed for want of a local port, to one destination within WINDOW_S
    interval: float = 60.0  # a warning that lasts is said again at most this often (seconds)
    accept_queue_overflow: int = 1  # packets one listener dropped for a full accept queue within 10 s


class Owner(NamedTuple):
    """Who a warning is about: the process (pid, raw comm), its uid and cgroup, and identity bytes of one of
    its connections (for logformat's owner names: USER, UNIT, CONTAINER)."""
    pid: int
    comm: bytes
    uid: int
    cgroup: int
    ident: bytes


class HealthWarning(NamedTuple):
    """One warning line: kind (e.g. 'close-wait-leak'), status ACTIVE or CLEARED, owner (an Owner or None),
    fields ((name, value) pairs, values int, float or str we made), words: what was seen and its usual cause."""
    ts_ns: int
    kind: str
    status: str
    owner: Owner | None
    fields: tuple
    words: str


class Alerts:
    """The warnings of one kind, per key. update(now, key, owner, fields, words) each tick the condition
    holds; settle(now) at the end of the tick says CLEARED for the keys whose condition no longer holds."""

    def __init__(self, kind, interval_s):
        self.kind = kind
        self.interval_ns = int(interval_s * 1e9)
        self.active = {}  # key -> [last said ns, times seen, owner, fields]
        self.seen = set()  # keys whose condition held this tick
        self.out = []
        self.overflow = 0  # warnings not tracked: MAX_KEYS keys already were

    def update(self, now, key, owner, fields, words):
        state = self.active.get(key)
        if state is None:
            if len(self.active) >= MAX_KEYS:
                self.overflow += 1
                return
            state = self.active[key] = [now, 1, owner, fields]
            self.out.append(HealthWarning(now, self.kind, ACTIVE, owner, (*fields, ("seen", 1)), words))
        else:
            state[1] += 1
            state[2:] = owner, fields
            if now - state[0] >= self.interval_ns:
                state[0] = now
                self.out.append(HealthWarning(now, self.kind, ACTIVE, owner, (*fields, ("seen", state[1])), words))
        self.seen.add(key)

    def settle(self, now, cleared_words):
        """The tick's warnings, CLEARED ones included (their last fields, and cleared_words)."""
        for key in [k for k in self.active if k not in self.seen]:
            _said, seen, owner, fields = self.active.pop(key)
            self.out.append(HealthWarning(now, self.kind, CLEARED, owner, (*fields, ("seen", seen)), cleared_words))
        self.seen.clear()
        out, self.out = self.out, []
        return out


def bounded_get(table, key, make, limit=MAX_KEYS):
    """table[key], made by make() when missing; None (not tracked) when the table holds limit keys already."""
    value = table.get(key)
    if value is None and len(table) < limit:
        value = table[key] = make()
    return value


def owner_of(ident, uid, cgroup):
    """The Owner of an event's or a record's identity bytes (kernel/abi.py IDENT_STRUCT: pid first, comm at 40)."""
    return Owner(int.from_bytes(ident[:4], "little"), ident[40:56].split(b"\0", 1)[0], uid, cgroup, ident)


def addr_text(family, raw):
    """An address of the kernel's bytes as text (ours: nothing from outside)."""
    return str(ipaddress.ip_address(raw[:4] if family == 4 else raw[:16]))


class Window:
    """Counts over the last `seconds`, in one-second buckets (at most `seconds` of them): add(ts_ns, *values),
    sums(now_ns) -> the values' sums over the window."""

    __slots__ = ("span", "buckets")

    def __init__(self, seconds):
        self.span = int(seconds)
        self.buckets = collections.deque()  # [second, value, ...]

    def add(self, ts_ns, *values):
        sec = ts_ns // 1_000_000_000
        b = self.buckets
        if b and b[-1][0] == sec:
            last = b[-1]
            for i, v in enumerate(values, 1):
                last[i] += v
        else:
            b.append([sec, *values])
            if len(b) > self.span + 1:
                b.popleft()

    def sums(self, now_ns):
        cut = now_ns // 1_000_000_000 - self.span
        b = self.buckets
        while b and b[0][0] <= cut:
            b.popleft()
        if not b:
            return None
        return [sum(col) for col in zip(*b)][1:]
