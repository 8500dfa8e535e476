"""The lifecycle of each connection in the logs: its steps (state changes, retransmissions, resets) in order.

Works on the parsed log entries (parse.Record), keyed by the socket's address where the line has one (JSON)
or by a connection id the report makes up from the addresses (text). Bounded: at most max_conns closed
connections (the most recently closed) and max_conns open ones (the most recently opened: a connection that
never logs CLOSE, e.g. under `-s ESTABLISHED`, is let go oldest first, as when it closes), at most max_steps
steps each, and a byte budget shared by every host's lifecycles (the oldest connections go to make room).
What is let go is counted. An entry that belongs to no connection followed (a reset answering a closed port,
a timewait or request socket) is a connection of its own, closed at once.
"""

from array import array
from collections import OrderedDict, deque

from ...kernel.abi import EV_RETRANSMIT, EV_STATE
from ...logformat.escape import format_endpoint
from ...logformat.words import EVENT_TITLES, describe_state
from ...pipeline.decode import STATE_NUMBERS, TCP_CLOSE, TCP_NEW_SYN_RECV, TCP_TIME_WAIT
from .bounds import CONN_BYTES, STEP_BYTES

TCP_SYN_SENT, TCP_SYN_RECV = STATE_NUMBERS["SYN_SENT"], STATE_NUMBERS["SYN_RECV"]


class Connection:
    """One connection's lifecycle: the identity of its last entry (the local port the last one known: a
    connecting socket has none yet at SYN_SENT), its first max_steps steps (an array of ts_ns, kind << 8 |
    new state: 16 bytes a step), its retransmissions, the steps not kept, and its side: "client" if its first
    step is SYN_SENT, "server" if it is SYN_RECV, else None."""

    __slots__ = ("first_ns", "last_ns", "family", "src", "sport", "dst", "dport", "pid", "comm", "steps",
                 "retransmits", "steps_not_kept", "side", "cost")

    def __init__(self, entry, comm):
        self.first_ns = entry.ts_ns
        self.sport = 0
        self.steps = array("q", (entry.ts_ns, entry.kind << 8 | entry.newstate))
        self.retransmits = self.steps_not_kept = 0
        first = entry.newstate if entry.kind == EV_STATE else None
        self.side = "client" if first == TCP_SYN_SENT else "server" if first in (TCP_SYN_RECV, TCP_NEW_SYN_RECV) \
            else None
        self.cost = CONN_BYTES + len(comm)
        self.update(entry, comm)

    def update(self, entry, comm):
        self.last_ns = entry.ts_ns
        self.family, self.src, self.dst, self.dport, self.pid, self.comm = (
            entry.family, entry.src, entry.dst, entry.dport, entry.pid, comm)
        if entry.sport:
            self.sport = entry.sport

    def step_list(self):
        """[(ts_ns, kind, new state)] of the steps kept."""
        steps = self.steps
        return [(steps[i], steps[i + 1] >> 8, steps[i + 1] & 255) for i in range(0, len(steps), 2)]

    def describe(self):
        """In words: a dict of src, dst, pid, comm (escaped), first_ns, last_ns, retransmits, steps
        [(ts_ns, what)], steps_not_kept."""
        fam = self.family
        return {
            "src": format_endpoint(fam, self.src, self.sport), "dst": format_endpoint(fam, self.dst, self.dport),
            "pid": self.pid, "comm": self.comm, "first_ns": self.first_ns, "last_ns": self.last_ns,
            "retransmits": self.retransmits,
            "steps": [(ts, describe_state(new) if kind == EV_STATE else EVENT_TITLES[kind]) for ts, kind, new in
                      self.step_list()],
            "steps_not_kept": self.steps_not_kept,
        }


class Lifecycles:
    def __init__(self, budget, max_conns=1000, max_steps=32):
        self.budget = budget
        self.max_conns = max_conns
        self.max_steps = max_steps
        # key -> connection, oldest first (an OrderedDict: the oldest is let go often when CLOSE lines are missing)
        self.open = OrderedDict()
        self.closed = deque()
        self.left_out = 0

    def __len__(self):
        return len(self.open) + len(self.closed)

    def add(self, key, entry, comm):
        """One entry (comm: its escaped name) to the connection key names (0: none); the Connection, or None
        if there was no room for a new one."""
        c = self.open.get(key)
        if c is None:
            return self._new(key, entry, comm)
        c.update(entry, comm)
        if len(c.steps) < 2 * self.max_steps and (self.budget.take(STEP_BYTES) or self._room_for_step()):
            c.steps.extend((entry.ts_ns, entry.kind << 8 | entry.newstate))
            c.cost += STEP_BYTES
        else:
            c.steps_not_kept += 1
        if entry.kind == EV_RETRANSMIT:
            c.retransmits += 1
        elif entry.kind == EV_STATE and entry.newstate == TCP_CLOSE:  # done: the kernel may reuse the address
            del self.open[key]
            self._close(c)
        return c

    def _new(self, key, entry, comm):
        c = Connection(entry, comm)
        while not self.budget.take(c.cost):
            if not self._let_go():
                self.left_out += 1
                return None
        if entry.kind == EV_RETRANSMIT:
            c.retransmits += 1
        if not key or (entry.kind != EV_STATE and entry.newstate in (TCP_TIME_WAIT, TCP_NEW_SYN_RECV)) or (
                entry.kind == EV_STATE and entry.newstate == TCP_CLOSE):
            self._close(c)  # no socket, a socket that is not a connection followed, or one seen only at its end
            return c
        if len(self.open) >= self.max_conns:
            self._close(self.open.popitem(last=False)[1])
        self.open[key] = c
        return c

    def _close(self, c):
        if len(self.closed) >= self.max_conns:
            self._drop(self.closed.popleft())
        self.closed.append(c)

    def _drop(self, c):
        self.budget.give(c.cost)
        self.left_out += 1

    def _let_go(self):
        """The oldest closed connection, else the oldest open one, let go; False if there is none."""
        if self.closed:
            self._drop(self.closed.popleft())
        elif self.open:
            self._drop(self.open.popitem(last=False)[1])
        else:
            return False
        return True

    def _room_for_step(self):
        """Room for one more step, from the oldest closed connections only (not the one this step is for)."""
        while self.closed:
            self._drop(self.closed.popleft())
            if self.budget.take(STEP_BYTES):
                return True
        return False

    def connections(self):
        """Closed connections (oldest first), then open ones."""
        yield from self.closed
        yield from self.open.values()

    def recent(self, n):
        """The n most recent of connections(), in the same order."""
        opened = list(self.open.values())[-n:] if n else []
        k = n - len(opened)
        closed = [self.closed[i] for i in range(max(0, len(self.closed) - k), len(self.closed))] if k > 0 else []
        return closed + opened

    def lines(self, conns, stamp, more=None):
        """The 'Connection Lifecycles:' text of conns, lines without newlines; stamp(ts_ns) -> str; more(c):
        text (safe) to add to a connection's first line, inside its parentheses, or ''."""
        yield "Connection Lifecycles:"
        for c in conns:
            d = c.describe()
            secs = (d["last_ns"] - d["first_ns"]) / 1e9
            yield (f"Connection: {d['src']} -> {d['dst']}  (PID={d['pid']} COMM={d['comm']} "
                   f"duration={secs:.3f}s retransmits={d['retransmits']}{more(c) if more else ''})")
            for ts, what in d["steps"]:
                yield f"  {stamp(ts)}: {what}"
            if d["steps_not_kept"]:
                yield f"  ... {d['steps_not_kept']} more steps not kept"
