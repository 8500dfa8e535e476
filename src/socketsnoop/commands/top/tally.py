"""top's counts: what the kernel sent, counted per connection's owner and peer, one interval at a time.

Two inputs, nothing formatted per event:
- opening events (the kernel sends top only the state changes to SYN_SENT, a connect, and SYN_RECV, an
  accepted connection): opened in the interval, and the connections open now (`active`, by socket address);
- connection records (one per connection, at its end): failures by cause, resets, retransmissions, bytes,
  handshake time and RTT, counted in the interval the connection ended in.

Counts are kept per flow key (owner, cgroup, direction and the listening side's endpoint, the peer), so that
any grouping (columns.GROUPINGS) is a roll-up of the same counts: switching the grouping shows the same
interval's numbers, regrouped. Every table is bounded; what a bound leaves out is counted (`untracked`).
"""

import random
from itertools import compress

from ...kernel.abi import (
    DIR_IN,
    DIR_OUT,
    IDENT_STRUCT,
    RESULT_REFUSED,
    RESULT_RESET_RECEIVED,
    RESULT_RESET_SENT,
    RESULT_TIMEOUT,
    RESULT_UNREACHABLE,
)
from ...pipeline.decode import (
    CGROUP,
    IDENT,
    NEWSTATE,
    R_CGROUP,
    R_DIRECTION,
    R_HANDSHAKE,
    R_IDENT,
    R_RECEIVED,
    R_RESULT,
    R_RETRANSMITS,
    R_RTT,
    R_SENT,
    R_SK,
    R_TS,
    R_UID,
    SK,
    TS,
    UID,
)

TCP_SYN_SENT, TCP_SYN_RECV = 2, 3
OPEN_STATES = (TCP_SYN_SENT, TCP_SYN_RECV)  # what top asks the kernel for (its state filter)

# a flow's counts in one interval: a list, indexed by these
(OPENED, ENDED, REFUSED, TIMEOUT, UNREACHABLE, RESETS_SENT, RESETS_RECEIVED, RETRANSMITS, BYTES_SENT,
 BYTES_RECEIVED) = range(10)
NCOUNTS = 10
_FAILURE = {RESULT_REFUSED: REFUSED, RESULT_TIMEOUT: TIMEOUT, RESULT_UNREACHABLE: UNREACHABLE,
            RESULT_RESET_SENT: RESETS_SENT, RESULT_RESET_RECEIVED: RESETS_RECEIVED}

MAX_FLOWS = 100_000  # flow keys counted in one interval; past it, a connection's counts are untracked
MAX_ACTIVE = 1 << 20  # open connections followed (the kernel's socket table holds as many)
MAX_SAMPLES = 4096  # handshake and RTT samples kept per flow per interval: past it, a uniform sample of them
EARLY_NS = 5 * 10**9  # how long a record that came before its opening event is remembered


def flow_key(ident, uid, cgroup, direction):
    """(pid, comm, uid, cgroup, direction, family, local address, local port, remote address, remote port),
    with the ephemeral side's port and a connect's local address left out (0 and b""): an outgoing
    connection is keyed by its peer's listening endpoint, an accepted one by our listener and its peer's
    address; one whose direction is unknown (older than top) by the peer's address alone."""
    pid, sport, dport, saddr, daddr, comm, family = IDENT_STRUCT.unpack(ident)
    if direction == DIR_OUT:
        return pid, comm, uid, cgroup, direction, family, b"", 0, daddr, dport
    if direction == DIR_IN:
        return pid, comm, uid, cgroup, direction, family, saddr, sport, daddr, 0
    return pid, comm, uid, cgroup, direction, family, b"", 0, daddr, 0


class Samples:
    """Up to MAX_SAMPLES values; past that a uniform sample of all those added (reservoir sampling)."""

    __slots__ = ("values", "seen")

    def __init__(self):
        self.values = []
        self.seen = 0

    def add(self, value):
        self.seen += 1
        if len(self.values) < MAX_SAMPLES:
            self.values.append(value)
        else:
            i = random.randrange(self.seen)
            if i < MAX_SAMPLES:
                self.values[i] = value


class Interval:
    """One interval's counts per flow: counts[flow] (NCOUNTS ints), handshakes and RTTs (ms) per flow."""

    def __init__(self):
        self.counts = {}
        self.handshakes = {}
        self.rtts = {}
        self.untracked = 0  # connections whose counts did not fit (MAX_FLOWS)

    def of(self, flow):
        c = self.counts.get(flow)
        if c is None:
            if len(self.counts) >= MAX_FLOWS:
                self.untracked += 1
                return None
            c = self.counts[flow] = [0] * NCOUNTS
        return c

    def sample(self, table, flow, value):
        s = table.get(flow)
        if s is None:
            s = table[flow] = Samples()
        s.add(value)


class Tally:
    """The counts top shows: feed it opening events (opens()) and records (records()); take() ends the
    interval and returns it, with the open connections per flow at that moment."""

    def __init__(self):
        self.now = Interval()
        # socket address -> flow, of the connections opened since top started and not ended yet (a connection
        # older than top is not among them: /proc/net/tcp names no socket by its kernel address)
        self.active = {}
        self.active_flows = {}  # flow -> how many of `active`
        self.early = {}  # socket address -> time of a record that came before its opening event
        self.untracked_active = 0  # openings not followed (MAX_ACTIVE)

    def opens(self, rows):
        """Opening events (decoded event rows whose new state is SYN_SENT or SYN_RECV)."""
        now, active, flows, early = self.now, self.active, self.active_flows, self.early
        for row in rows:
            state = row[NEWSTATE]
            if state not in OPEN_STATES:
                continue
            flow = flow_key(row[IDENT], row[UID], row[CGROUP], DIR_OUT if state == TCP_SYN_SENT else DIR_IN)
            c = now.of(flow)
            if c is not None:
                c[OPENED] += 1
            sk = row[SK]
            if early and early.pop(sk, -1) >= row[TS]:
                continue  # its record was read first: it has ended already
            old = active.get(sk)
            if old is not None:  # a socket reopened whose record we never got (lost): the old one is gone
                self._drop_active(old)
            elif len(active) >= MAX_ACTIVE:
                self.untracked_active += 1
                continue
            active[sk] = flow
            flows[flow] = flows.get(flow, 0) + 1

    def _drop_active(self, flow):
        n = self.active_flows[flow] - 1
        if n:
            self.active_flows[flow] = n
        else:
            del self.active_flows[flow]

    def records(self, rows):
        """Connection records (decoded record rows)."""
        now, active = self.now, self.active
        for row in rows:
            flow = flow_key(row[R_IDENT], row[R_UID], row[R_CGROUP], row[R_DIRECTION])
            opened = active.pop(row[R_SK], None)
            if opened is not None:
                self._drop_active(opened)
            elif row[R_DIRECTION] in (DIR_IN, DIR_OUT) and len(self.early) < MAX_ACTIVE:
                self.early[row[R_SK]] = row[R_TS]  # its opening event may not have been read yet
            c = now.of(flow)
            if c is None:
                continue
            c[ENDED] += 1
            cause = _FAILURE.get(row[R_RESULT])
            if cause is not None:
                c[cause] += 1
            c[RETRANSMITS] += row[R_RETRANSMITS]
            c[BYTES_SENT] += row[R_SENT]
            c[BYTES_RECEIVED] += row[R_RECEIVED]
            if row[R_HANDSHAKE]:
                now.sample(now.handshakes, flow, row[R_HANDSHAKE] / 1e6)
            if row[R_RTT]:
                now.sample(now.rtts, flow, row[R_RTT] / 1e3)

    def take(self, now_ns):
        """The interval that ends now: (Interval, {flow: open connections}); a new interval begins.
        now_ns: CLOCK_MONOTONIC, the kernel's clock, to forget records that came early long ago."""
        done, self.now = self.now, Interval()
        if self.early:
            old = now_ns - EARLY_NS
            self.early = dict(compress(self.early.items(), (ts >= old for ts in self.early.values())))
        return done, dict(self.active_flows)

