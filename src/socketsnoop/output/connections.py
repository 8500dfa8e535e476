"""The exit report, from the kernel's connection records: each connection's owner, result, duration, bytes and
states, the most recent first kept (bounded), then the connections still open at exit (from /proc).

Keeping a record costs one append of the row the kernel sent (a deque of --max-tracked); text is made only
for the report, once.
"""

import ipaddress
from collections import deque

from ..pipeline.decode import (
    R_DIRECTION,
    R_FLAGS,
    R_HANDSHAKE,
    R_NSTATES,
    R_RECEIVED,
    R_RESULT,
    R_RETRANSMITS,
    R_RTT,
    R_SENT,
    R_START,
    R_STATES,
    R_TS,
    TCP_ESTABLISHED,
    ident_of_record,
    states_of,
)
from ..kernel.abi import EV_STATE, R_INCOMPLETE
from ..logformat.base import history, millis
from ..logformat.escape import escape_comm, format_addr, format_endpoint
from ..logformat.words import DIRECTION_NAMES, RESULT_NAMES, describe_state

# states of a socket that is a connection still open (not LISTEN, TIME_WAIT, CLOSE, NEW_SYN_RECV)
OPEN_STATES = frozenset((1, 2, 3, 4, 5, 8, 9, 11))


class ConnectionReport:
    """Connection records (abi.RECORD_ROW tuples), the max_conns most recent."""

    def __init__(self, max_conns=1000):
        self.max_conns = max_conns
        self.closed = deque(maxlen=max_conns)
        self.count = 0

    def add(self, rows):
        self.closed.extend(rows)
        self.count += len(rows)

    @property
    def left_out(self):
        return self.count - len(self.closed)

    def lines(self, stamp, open_conns=(), filters=None, owner_of=None):
        """The report's lines (no newlines). stamp(ts_ns) -> text; open_conns: pipeline.owners.tcp_sockets()
        rows; filters: pipeline.filters.Filters (None: all); owner_of(inode) -> (pid, comm) or None."""
        yield "Connection Lifecycles:"
        for row in self.closed:
            yield from self._record(row, stamp)
        shown_open = 0
        for family, laddr, lport, raddr, rport, state, ino in open_conns:
            if state not in OPEN_STATES:
                continue
            pid, comm = ((owner_of(ino) if owner_of else None) or (0, b""))[:2]
            if filters is not None and not filters.match(
                    EV_STATE, family, _ip(family, laddr), lport, _ip(family, raddr), rport, pid, comm, state):
                continue
            shown_open += 1
            yield (f"Connection: {format_endpoint(family, format_addr(family, laddr), lport)} -> "
                   f"{format_endpoint(family, format_addr(family, raddr), rport)}  (PID={pid} "
                   f"COMM={escape_comm(comm, pid)} open at exit: {describe_state(state)})")
        if self.left_out:
            yield (f"({self.left_out} connections not shown: the report keeps the {self.max_conns} most "
                   "recently closed)")
        yield f"Connections: {len(self.closed) + shown_open} shown, {self.left_out} not shown"

    @staticmethod
    def _record(row, stamp):
        who = ident_of_record(row)
        fam = who.family
        end, start, flags = row[R_TS], row[R_START], row[R_FLAGS]
        complete = start and not flags & R_INCOMPLETE
        secs = (end - start) / 1e9 if complete else 0.0
        handshake, rtt = row[R_HANDSHAKE], row[R_RTT]
        yield (f"Connection: {format_endpoint(fam, format_addr(fam, who.saddr), who.sport)} -> "
               f"{format_endpoint(fam, format_addr(fam, who.daddr), who.dport)}  (PID={who.pid} "
               f"COMM={escape_comm(who.comm, who.pid)} duration={secs:.3f}s retransmits={row[R_RETRANSMITS]})")
        states = states_of(row[R_STATES], row[R_NSTATES])
        if complete and states:
            yield f"  {stamp(start)}: {describe_state(states[0])}"
            if handshake and TCP_ESTABLISHED in states and row[R_DIRECTION] == 1:
                yield f"  {stamp(start + handshake)}: {describe_state(TCP_ESTABLISHED)}"
        yield f"  {stamp(end)}: {describe_state(states[-1]) if states else 'Connection Closed'}"
        yield (f"  result={RESULT_NAMES.get(row[R_RESULT], 'closed')} "
               f"direction={DIRECTION_NAMES.get(row[R_DIRECTION], '-')} sent={row[R_SENT]} "
               f"received={row[R_RECEIVED]} handshake={millis(handshake) + 'ms' if handshake else '-'} "
               f"rtt={millis(rtt * 1000) + 'ms' if rtt else '-'}")
        yield "  states: " + " > ".join(history(row[R_STATES], row[R_NSTATES], flags))


def _ip(family, raw):
    return ipaddress.ip_address(raw[:4] if family == 4 else raw[:16])
