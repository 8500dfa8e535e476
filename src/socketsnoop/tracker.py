"""The lifecycle of each connection, for the report printed on exit.

O(1) per event and bounded. Per event it keeps only numbers (time, type,
state) and a reference to the event's tuple; text is made once, for the
report. At most `max_conns` closed connections are kept (the most recently
closed), and at most `max_conns` open ones (the most recently opened: the
oldest is let go, as when it closes, if a connection never reports CLOSE,
e.g. under `-s ESTABLISHED`); the report counts the connections it let go.
An event that belongs to no connection we follow (a reset answering a
closed port, a timewait or request socket) is an entry of its own, closed
at once.
"""

from collections import OrderedDict, deque

from .events import (
    EVENT_TITLES,
    RETRANSMIT,
    STATE_CHANGE,
    TCP_CLOSE,
    TCP_NEW_SYN_RECV,
    TCP_TIME_WAIT,
    describe_state,
)
from .fmt import escape_comm, format_addr, format_endpoint

# tuple positions of struct event's fields (events.Event)
_TS, _SK, _PID, _SPORT, _TYPE, _NEW = 0, 1, 5, 7, 10, 12


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
        """One event (a tuple in events.Event's order). A connection is a list [first time, last row, steps,
        retransmits, steps not kept, local port]: the last row gives the latest addresses and owner, the
        local port is the last one that was not 0 (SYN_SENT has none yet), steps are (ts, type, state)."""
        key = row[_SK]
        c = self.open.get(key)
        typ, new = row[_TYPE], row[_NEW]
        if c is None:
            c = [row[_TS], row, [], 0, 0, row[_SPORT]]
            if not key or (typ != STATE_CHANGE and new in (TCP_TIME_WAIT, TCP_NEW_SYN_RECV)):
                self._close(c)  # no socket, or one that is not a connection we follow
                c[2].append((row[_TS], typ, new))
                return
            if len(self.open) >= self.max_conns:
                self._close(self.open.popitem(last=False)[1])
            self.open[key] = c
        else:
            c[1] = row
            if row[_SPORT]:
                c[5] = row[_SPORT]
        steps = c[2]
        if len(steps) < self.max_steps:
            steps.append((row[_TS], typ, new))
        else:
            c[4] += 1
        if typ == RETRANSMIT:
            c[3] += 1
        elif typ == STATE_CHANGE and new == TCP_CLOSE:  # done: the kernel may reuse the socket's address
            del self.open[key]
            self._close(c)

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
        steps [(ts_ns, what)], steps_not_kept."""
        first_ts, last, steps, retransmits, dropped, sport = c
        fam = last[9]
        return {
            "src": format_endpoint(fam, format_addr(fam, last[3]), sport),
            "dst": format_endpoint(fam, format_addr(fam, last[4]), last[8]),
            "pid": last[_PID], "comm": escape_comm(last[15]),
            "first_ns": first_ts, "last_ns": last[_TS], "retransmits": retransmits,
            "steps": [(ts, describe_state(new) if typ == STATE_CHANGE else EVENT_TITLES[typ]) for ts, typ, new in steps],
            "steps_not_kept": dropped,
        }

    def report(self, stamp):
        """The seed's 'Connection Lifecycles:' report, lines without newlines; stamp(ts_ns) -> str."""
        yield "Connection Lifecycles:"
        for c in self.connections():
            d = self.describe(c)
            secs = (d["last_ns"] - d["first_ns"]) / 1e9
            yield (f"Connection: {d['src']} -> {d['dst']}  (PID={d['pid']} COMM={d['comm']} "
                   f"duration={secs:.3f}s retransmits={d['retransmits']})")
            for ts, what in d["steps"]:
                yield f"  {stamp(ts)}: {what}"
            if d["steps_not_kept"]:
                yield f"  ... {d['steps_not_kept']} more steps not kept"
        if self.left_out:
            yield (f"({self.left_out} connections not shown: the report keeps the {self.max_conns} most "
                   "recently closed and as many of the most recently opened)")
        yield f"Connections: {len(self)} shown, {self.left_out} not shown"
