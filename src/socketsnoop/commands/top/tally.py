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


# a flow: (direction, uid, cgroup id, the identity bytes that name it). The identity (kernel/abi.py IDENT_FORMAT:
# pid 0:4, sport 4:6, dport 6:8, saddr 8:24, daddr 24:40, comm 40:56, family 56) without the ephemeral side's
# port: an outgoing connection is named by pid, the peer's listening endpoint, comm, family; an accepted one by
# pid, our listening endpoint, the peer's address, comm, family; one older than top by pid, peer, comm, family.
# Slices, not a decoding per connection: flow_fields() decodes a flow once, when the rows are made.
_NO_PORT, _NO_ADDR = bytes(2), bytes(16)


def flow_of(ident, uid, cgroup, direction):
    if direction == DIR_OUT:
        return direction, uid, cgroup, ident[:4] + ident[6:8] + ident[24:]
    if direction == DIR_IN:
        return direction, uid, cgroup, ident[:6] + ident[8:]
    return direction, uid, cgroup, ident[:4] + ident[24:]


def flow_fields(flow):
    """(pid, comm, uid, cgroup, direction, family, local address, local port, remote address, remote port) of
    a flow: b"" and 0 for what does not name it (a connect's local end, an accepted connection's peer port)."""
    direction, uid, cgroup, key = flow
    if direction == DIR_OUT:
        ident = key[:4] + _NO_PORT + key[4:6] + _NO_ADDR + key[6:]
    elif direction == DIR_IN:
        ident = key[:6] + _NO_PORT + key[6:]
    else:
        ident = key[:4] + _NO_PORT + _NO_PORT + _NO_ADDR + key[4:]
    pid, sport, dport, saddr, daddr, comm, family = IDENT_STRUCT.unpack(ident)
    if direction == DIR_IN:
        return pid, comm, uid, cgroup, direction, family, saddr, sport, daddr, 0
    return pid, comm, uid, cgroup, direction, family, b"", 0, daddr, dport


class Interval:
    """One interval's counts per flow: counts[flow] (NCOUNTS ints); handshake times (ns) and RTTs (us) per flow,
    at most MAX_SAMPLES each, past which a uniform sample of all of them (reservoir sampling)."""

    def __init__(self):
        self.counts = {}
        self.handshakes = {}
        self.rtts = {}
        self.sampled = {}  # (table id, flow) -> values offered, once a flow's samples are full
        self.untracked = 0  # connections whose counts did not fit (MAX_FLOWS)

    def new(self, flow):
        """A flow's counts, new in this interval (None past MAX_FLOWS: counted as untracked)."""
        if len(self.counts) >= MAX_FLOWS:
            self.untracked += 1
            return None
        c = self.counts[flow] = [0] * NCOUNTS
        return c

    def full(self, table, flow, value):
        """A sample for a flow that has MAX_SAMPLES: it replaces one at random, with the right odds."""
        key = (id(table), flow)
        seen = self.sampled[key] = self.sampled.get(key, MAX_SAMPLES) + 1
        i = random.randrange(seen)
        if i < MAX_SAMPLES:
            table[flow][i] = value


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
        counts = now.counts
        for row in rows:
            state = row[NEWSTATE]
            ident = row[IDENT]
            if state == TCP_SYN_SENT:
                flow = (DIR_OUT, row[UID], row[CGROUP], ident[:4] + ident[6:8] + ident[24:])
            elif state == TCP_SYN_RECV:
                flow = (DIR_IN, row[UID], row[CGROUP], ident[:6] + ident[8:])
            else:
                continue
            c = counts.get(flow) or now.new(flow)
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

    def forget(self, sks):
        """Connections that ended, whose records the filters left out (an owner only user space could check):
        no longer open."""
        for sk in sks:
            flow = self.active.pop(sk, None)
            if flow is not None:
                self._drop_active(flow)

    def _drop_active(self, flow):
        n = self.active_flows[flow] - 1
        if n:
            self.active_flows[flow] = n
        else:
            del self.active_flows[flow]

    def records(self, rows):
        """Connection records (decoded record rows)."""
        now, active, early = self.now, self.active, self.early
        counts, handshakes, rtts = now.counts, now.handshakes, now.rtts
        for row in rows:
            direction = row[R_DIRECTION]
            flow = flow_of(row[R_IDENT], row[R_UID], row[R_CGROUP], direction)
            opened = active.pop(row[R_SK], None)
            if opened is not None:
                self._drop_active(opened)
            elif direction and len(early) < MAX_ACTIVE:
                early[row[R_SK]] = row[R_TS]  # its opening event may not have been read yet
            c = counts.get(flow) or now.new(flow)
            if c is None:
                continue
            c[ENDED] += 1
            cause = _FAILURE.get(row[R_RESULT])
            if cause is not None:
                c[cause] += 1
            c[RETRANSMITS] += row[R_RETRANSMITS]
            c[BYTES_SENT] += row[R_SENT]
            c[BYTES_RECEIVED] += row[R_RECEIVED]
            value = row[R_HANDSHAKE]
            if value:
                kept = handshakes.get(flow)
                if kept is None:
                    handshakes[flow] = [value]
                elif len(kept) < MAX_SAMPLES:
                    kept.append(value)
                else:
                    now.full(handshakes, flow, value)
            value = row[R_RTT]
            if value:
                kept = rtts.get(flow)
                if kept is None:
                    rtts[flow] = [value]
                elif len(kept) < MAX_SAMPLES:
                    kept.append(value)
                else:
                    now.full(rtts, flow, value)

    def take(self, now_ns):
        """The interval that ends now: (Interval, {flow: open connections}); a new interval begins.
        now_ns: CLOCK_MONOTONIC, the kernel's clock, to forget records that came early long ago."""
        done, self.now = self.now, Interval()
        if self.early:
            old = now_ns - EARLY_NS
            self.early = dict(compress(self.early.items(), (ts >= old for ts in self.early.values())))
        return done, dict(self.active_flows)

