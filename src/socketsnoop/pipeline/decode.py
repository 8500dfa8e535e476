"""Decode: rows of the kernel's struct event and struct conn_record (layout: kernel/abi.py), and the kernel's
numbers for TCP states. Their words in the log (titles, descriptions, result names) are logformat/words.py's."""

from bisect import bisect_right
from operator import itemgetter

from ..kernel.abi import DIR_OUT, DROP_SLOT, DROP_SLOTS, IDENT_STRUCT, OWNER_SOCKET, RESULT_CLOSED, Ident, RecordRow, Row

# Row positions: a row is struct event decoded with its identity fields (pid .. family: the same for most
# events of a connection's side) left as one bytes object, which formatters key their caches by; then the
# owner's uid and the socket's cgroup v2 id.
TS, SK, INO, NETNS, TYPE, OLDSTATE, NEWSTATE, OWNER, FLAGS, IDENT, UID, CGROUP = range(12)


def ident_of(row) -> Ident:
    """A row's identity fields, decoded."""
    return Ident._make(IDENT_STRUCT.unpack(row[IDENT]))


def make_ident(pid, sport, dport, saddr, daddr, comm, family) -> bytes:
    return IDENT_STRUCT.pack(pid, sport, dport, saddr, daddr, comm, family)


def make_row(ts_ns=0, skaddr=0, ino=0, netns=0, type=1, oldstate=0, newstate=0, owner=0, flags=0,
             pid=0, sport=0, dport=0, saddr=bytes(16), daddr=bytes(16), comm=b"", family=4, uid=0,
             cgroup=0) -> Row:
    """A row from named fields (report, tests): what decoding the kernel's event gives."""
    return Row(ts_ns, skaddr, ino, netns, type, oldstate, newstate, owner, flags,
               make_ident(pid, sport, dport, saddr, daddr, comm, family), uid, cgroup)


# what user space adds to enum ss_owner
OWNER_PROC = 4

# include/net/tcp_states.h: the kernel's names (the -s option takes them)
TCP_STATES = {
    1: "ESTABLISHED",
    2: "SYN_SENT",
    3: "SYN_RECV",
    4: "FIN_WAIT1",
    5: "FIN_WAIT2",
    6: "TIME_WAIT",
    7: "CLOSE",
    8: "CLOSE_WAIT",
    9: "LAST_ACK",
    10: "LISTEN",
    11: "CLOSING",
    12: "NEW_SYN_RECV",
    13: "BOUND_INACTIVE",
}
STATE_NUMBERS = {name: num for num, name in TCP_STATES.items()}
TCP_ESTABLISHED, TCP_TIME_WAIT, TCP_CLOSE, TCP_NEW_SYN_RECV = 1, 6, 7, 12

_ts = itemgetter(TS)
# more rows than this in the spare ring at once: it is rescuing a full main ring (RE-ENTRY, 2 in the BPF source)
MERGE_SORT_LIMIT = 256


def merge_by_time(rows, extra):
    """rows (in time order, near enough) with a few extra rows (the spare ring's) put in their places by
    time; a row of extra goes after rows of the same time. Many extra rows mean the spare ring is rescuing
    a full main one: we are behind, and sorting would only put us further behind; they follow the main
    ring's rows then (each ring is in time order)."""
    if len(extra) > MERGE_SORT_LIMIT:
        rows.extend(extra)
        return rows
    extra.sort(key=_ts)
    times = [r[TS] for r in rows]
    for r in reversed(extra):  # from the last: the positions found in `times` stay right
        rows.insert(bisect_right(times, r[TS]), r)
    return rows


# -- connection records (struct conn_record) ------------------------------------------------------------------

# Record row positions: struct conn_record decoded with its identity left as one bytes object (abi.RECORD_ROW)
(R_TS, R_SK, R_START, R_HANDSHAKE, R_SENT, R_RECEIVED, R_CGROUP, R_INO, R_STATES, R_NETNS, R_RETRANSMITS, R_RTT,
 R_UID, R_RESULT, R_DIRECTION, R_NSTATES, R_FLAGS, R_OWNER, R_IDENT, R_DROPS, R_DROP_SLOTS) = range(21)


def states_of(packed, n):
    """The state numbers of a record's history (4 bits each, the first in the low bits)."""
    return tuple((packed >> (4 * i)) & 0xF for i in range(n))


def ident_of_record(row) -> Ident:
    return Ident._make(IDENT_STRUCT.unpack(row[R_IDENT]))


def make_record_row(ts_ns=0, skaddr=0, start_ns=0, handshake_ns=0, bytes_sent=0, bytes_received=0, cgroup=0, ino=0,
                    states=(), netns=0, retransmits=0, rtt_us=0, uid=0, result=RESULT_CLOSED, direction=DIR_OUT,
                    flags=0, owner=OWNER_SOCKET, pid=0, sport=0, dport=0, saddr=bytes(16), daddr=bytes(16),
                    comm=b"", family=4, drop_slots=()) -> RecordRow:
    """A record row from named fields (tests, report): what decoding the kernel's record gives. drop_slots:
    ((reason, count), ...), at most DROP_SLOTS of them."""
    slots = b"".join(DROP_SLOT.pack(*s) for s in drop_slots).ljust(DROP_SLOT.size * DROP_SLOTS, b"\0")
    packed = sum((s & 0xF) << (4 * i) for i, s in enumerate(states))
    return RecordRow(ts_ns, skaddr, start_ns, handshake_ns, bytes_sent, bytes_received, cgroup, ino, packed, netns,
                     retransmits, rtt_us, uid, result, direction, len(states), flags, owner,
                     make_ident(pid, sport, dport, saddr, daddr, comm, family), sum(c for _r, c in drop_slots), slots)


def drop_slots_of(raw):
    """A record's drop slots (its R_DROP_SLOTS bytes) as ((reason, count), ...), most frequent first."""
    slots = [s for s in DROP_SLOT.iter_unpack(raw) if s[1]]
    return tuple(sorted(slots, key=lambda s: -s[1]))
