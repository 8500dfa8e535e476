"""The lifecycle of each connection, for the report printed on exit.

O(1) per event and bounded: at most `max_conns` connections are kept (the
least recently active are let go first, and counted), each with at most
`max_steps` timed steps.
"""

from collections import OrderedDict

from .events import EVENT_TITLES, RETRANSMIT, STATE_CHANGE, describe_state

TCP_CLOSE = 7
_DESCRIPTIONS = {n: describe_state(n) for n in range(32)}


class Connection:
    __slots__ = ("src", "dst", "pid", "comm", "first_ns", "last_ns", "steps", "retransmits", "dropped_steps")

    def __init__(self, src, dst, pid, comm, ts):
        self.src, self.dst, self.pid, self.comm = src, dst, pid, comm
        self.first_ns = self.last_ns = ts
        self.steps = []
        self.retransmits = 0
        self.dropped_steps = 0


class Tracker:
    def __init__(self, max_conns=10000, max_steps=32):
        self.max_conns = max_conns
        self.max_steps = max_steps
        self.conns = OrderedDict()
        self.left_out = 0
        self._seq = 0

    def add(self, key, ts_ns, src, dst, pid, comm, what, closed=False, retransmit=False):
        """Record one step `what` (a description) of connection `key` (the kernel socket address)."""
        conns = self.conns
        c = conns.get(key)
        if c is None:
            c = conns[key] = Connection(src, dst, pid, comm, ts_ns)
            if len(conns) > self.max_conns:
                conns.popitem(last=False)
                self.left_out += 1
        else:
            conns.move_to_end(key)
            if not src.endswith(":0"):  # the local port is known once connect() has bound it
                c.src = src
            c.dst = dst
            if pid:
                c.pid, c.comm = pid, comm
        c.last_ns = ts_ns
        if retransmit:
            c.retransmits += 1
        if len(c.steps) < self.max_steps:
            c.steps.append((ts_ns, what))
        else:
            c.dropped_steps += 1
        if closed:  # the kernel may reuse the socket's address for a new connection
            self._seq += 1
            conns[("closed", self._seq)] = conns.pop(key)

    def add_event(self, ev, src, dst, comm):
        """One decoded event; src/dst are 'addr:port' strings, comm the escaped name."""
        key = ev.skaddr or (src, dst)  # a reset answering a closed port has no socket
        if ev.type == STATE_CHANGE:
            self.add(key, ev.ts_ns, src, dst, ev.pid, comm, _DESCRIPTIONS.get(ev.newstate) or
                     describe_state(ev.newstate), closed=ev.newstate == TCP_CLOSE)
        else:
            self.add(key, ev.ts_ns, src, dst, ev.pid, comm, EVENT_TITLES[ev.type],
                     retransmit=ev.type == RETRANSMIT)

    def report(self, stamp):
        """The seed's 'Connection Lifecycles:' report, lines without newlines; stamp(ts_ns) -> str."""
        yield "Connection Lifecycles:"
        for c in self.conns.values():
            secs = (c.last_ns - c.first_ns) / 1e9
            yield (f"Connection: {c.src} -> {c.dst}  (PID={c.pid} COMM={c.comm} duration={secs:.3f}s "
                   f"retransmits={c.retransmits})")
            for ts, what in c.steps:
                yield f"  {stamp(ts)}: {what}"
            if c.dropped_steps:
                yield f"  ... {c.dropped_steps} more steps not kept"
        if self.left_out:
            yield f"({self.left_out} older connections not shown: the report keeps the {self.max_conns} most recent)"
