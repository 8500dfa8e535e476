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

from collections import deque

from .events import EVENT_TITLES, RETRANSMIT, STATE_CHANGE, describe_state
from .fmt import escape_comm, format_addr, format_endpoint

TCP_CLOSE = 7
TCP_TIME_WAIT, TCP_NEW_SYN_RECV = 6, 12  # sockets that never report CLOSE (not full sockets)
# tuple positions of struct event's fields (events.Event)
_TS, _SK, _PID, _SPORT, _TYPE, _NEW = 0, 1, 5, 7, 10, 12


class Tracker:
    def __init__(self, max_conns=10000, max_steps=32):
        self.max_conns = max_conns
        self.max_steps = max_steps
        self.open = {}  # socket address (or tuple, for a reset with no socket) -> connection
        self.closed = deque(maxlen=max_conns)
        self.left_out = 0

    def __len__(self):
        return len(self.open) + len(self.closed)

    def add(self, row):
        """One event (a tuple in events.Event's order). A connection is [first row, last row, steps, retransmits]
        where the last row gives the latest addresses and owner, and steps are (ts, type, state)."""
        key = row[_SK]
        c = self.open.get(key)
        typ, new = row[_TYPE], row[_NEW]
        if c is None:
            c = [row, row, [], 0, 0]
            if not key or (typ != STATE_CHANGE and new in (TCP_TIME_WAIT, TCP_NEW_SYN_RECV)):
                self._close(c)  # no socket, or one that is not a connection we follow
                c[2].append((row[_TS], typ, new))
                return
            if len(self.open) >= self.max_conns:
                self._close(self.open.pop(next(iter(self.open))))
            self.open[key] = c
        elif row[_SPORT] or not c[1][_SPORT]:  # keep the local port once connect() has chosen one
            c[1] = row
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

    def report(self, stamp):
        """The seed's 'Connection Lifecycles:' report, lines without newlines; stamp(ts_ns) -> str."""
        yield "Connection Lifecycles:"
        for first, last, steps, retransmits, dropped in self.connections():
            fam = last[9]
            src = format_endpoint(fam, format_addr(fam, last[3]), last[_SPORT])
            dst = format_endpoint(fam, format_addr(fam, last[4]), last[8])
            owner = last if last[_PID] else first
            secs = (last[_TS] - first[_TS]) / 1e9
            yield (f"Connection: {src} -> {dst}  (PID={owner[_PID]} COMM={escape_comm(owner[15])} "
                   f"duration={secs:.3f}s retransmits={retransmits})")
            for ts, typ, new in steps:
                what = describe_state(new) if typ == STATE_CHANGE else EVENT_TITLES[typ]
                yield f"  {stamp(ts)}: {what}"
            if dropped:
                yield f"  ... {dropped} more steps not kept"
        if self.left_out:
            yield (f"({self.left_out} connections not shown: the report keeps the {self.max_conns} most "
                   "recently closed and as many of the most recently opened)")
