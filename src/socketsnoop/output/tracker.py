"""The lifecycle of each connection, for the report printed on exit.

O(1) per event and bounded. Per event it keeps only a reference to the
event's tuple (for the first steps of each connection); text is made once,
for the report. At most `max_conns` closed connections are kept (the most recently
closed), and at most `max_conns` open ones (the most recently opened: the
oldest is let go, as when it closes, if a connection never reports CLOSE,
e.g. under `-s ESTABLISHED`); the report counts the connections it let go.
An event that belongs to no connection we follow (a reset answering a
closed port, a timewait or request socket) is an entry of its own, closed
at once.
"""

from collections import OrderedDict, deque

from ..kernel.abi import EV_RETRANSMIT, EV_STATE
from ..logformat.escape import escape_comm, format_addr, format_endpoint
from ..logformat.words import EVENT_TITLES, describe_state
from ..pipeline.decode import (
    NEWSTATE,
    SK,
    TCP_CLOSE,
    TCP_NEW_SYN_RECV,
    TCP_TIME_WAIT,
    TS,
    TYPE,
    ident_of,
)


class Connection:
    """One connection's lifecycle: its first event's time, its last event (a row), its steps (its first
    max_steps rows, kept as they are: nothing is made per event), its retransmissions, and how many
    steps were not kept."""

    __slots__ = ("first_ns", "last", "steps", "retransmits", "steps_not_kept")

    def __init__(self, row):
        self.first_ns = row[TS]
        self.last = row
        self.steps = [row]
        self.retransmits = 0
        self.steps_not_kept = 0


class Tracker:
    def __init__(self, max_conns=1000, max_steps=32):
        self.max_conns = max_conns
        self.max_steps = max_steps
        # socket address -> connection, oldest first (an OrderedDict: a dict's first key is not O(1) to find
        # after many deletions, and under churn with lost CLOSE events the oldest is let go all the time)
        self.open = OrderedDict()
        self.closed = deque(maxlen=max_conns)
        self.left_out = 0

    def __len__(self):
        return len(self.open) + len(self.closed)

    def add(self, row):
        self.add_all((row,))

    def add_all(self, rows):
        """Events (events.Row tuples), each to its Connection. The hot path: the names it uses are locals."""
        opened, get, max_conns, max_steps = self.open, self.open.get, self.max_conns, self.max_steps
        closed, connection, close_state = self.closed, Connection, TCP_CLOSE
        sk, typ_at, newstate_at, ev_state, ev_retransmit = SK, TYPE, NEWSTATE, EV_STATE, EV_RETRANSMIT
        for row in rows:
            key = row[sk]
            c = get(key)
            if c is None:
                c = connection(row)
                if not key or (row[typ_at] != ev_state and row[newstate_at] in (TCP_TIME_WAIT, TCP_NEW_SYN_RECV)):
                    self._close(c)  # no socket, or one that is not a connection we follow
                    continue
                if len(opened) >= max_conns:
                    self._close(opened.popitem(last=False)[1])
                opened[key] = c
            else:
                c.last = row
                steps = c.steps
                if len(steps) < max_steps:
                    steps.append(row)
                else:
                    c.steps_not_kept += 1
            typ = row[typ_at]
            if typ == ev_retransmit:
                c.retransmits += 1
            elif typ == ev_state and row[newstate_at] == close_state:  # done: the kernel may reuse the address
                del opened[key]
                if len(closed) == max_conns:  # self._close(c), inline: once per connection
                    self.left_out += 1
                closed.append(c)

    def _close(self, c):
        if len(self.closed) == self.max_conns:
            self.left_out += 1
        self.closed.append(c)

    def connections(self):
        """Closed connections (oldest first), then open ones."""
        yield from self.closed
        yield from self.open.values()

    @staticmethod
    def describe(c):
        """A connection in words: a dict of src, dst, pid, comm (escaped), first_ns, last_ns, retransmits,
        steps [(ts_ns, what)], steps_not_kept. The addresses and owner are the last event's; the local
        port is the last one known (a connecting socket has none yet at SYN_SENT)."""
        last, steps = c.last, c.steps
        who = ident_of(last)
        sport = who.sport
        for row in (reversed(steps) if not sport else ()):
            sport = ident_of(row).sport
            if sport:
                break
        fam = who.family
        return {
            "src": format_endpoint(fam, format_addr(fam, who.saddr), sport),
            "dst": format_endpoint(fam, format_addr(fam, who.daddr), who.dport),
            "pid": who.pid, "comm": escape_comm(who.comm),
            "first_ns": c.first_ns, "last_ns": last[TS], "retransmits": c.retransmits,
            "steps": [(r[TS], describe_state(r[NEWSTATE]) if r[TYPE] == EV_STATE else EVENT_TITLES[r[TYPE]])
                      for r in steps],
            "steps_not_kept": c.steps_not_kept,
        }

    def report(self, stamp, more=None):
        """The seed's 'Connection Lifecycles:' report, lines without newlines; stamp(ts_ns) -> str; more(c): text
        (safe) to add to a connection's first line, inside its parentheses, or ''."""
        yield "Connection Lifecycles:"
        for c in self.connections():
            d = self.describe(c)
            secs = (d["last_ns"] - d["first_ns"]) / 1e9
            yield (f"Connection: {d['src']} -> {d['dst']}  (PID={d['pid']} COMM={d['comm']} "
                   f"duration={secs:.3f}s retransmits={d['retransmits']}{more(c) if more else ''})")
            for ts, what in d["steps"]:
                yield f"  {stamp(ts)}: {what}"
            if d["steps_not_kept"]:
                yield f"  ... {d['steps_not_kept']} more steps not kept"
        if self.left_out:
            yield (f"({self.left_out} connections not shown: the report keeps the {self.max_conns} most "
                   "recently closed and as many of the most recently opened)")
        yield f"Connections: {len(self)} shown, {self.left_out} not shown"
