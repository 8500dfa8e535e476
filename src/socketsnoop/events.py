"""Decode: the kernel's struct event (bpf/socketsnoop.h), mirrored, and TCP state names."""

import struct
from collections import namedtuple

# struct event, 96 bytes; tests/test_layout.py checks this against the C header's BTF.
EVENT_FORMAT = "<QQQIBBBBB3xIHH16s16s16sB3x"
EVENT = struct.Struct(EVENT_FORMAT)
Event = namedtuple(
    "Event",
    "ts_ns skaddr ino netns type oldstate newstate owner flags pid sport dport saddr daddr comm family",
)

# Decoding. A row is struct event with its identity fields (pid .. family: the same for most events of
# a connection's side) left as one bytes object, which formatters key their caches by. Row positions:
TS, SK, INO, NETNS, TYPE, OLDSTATE, NEWSTATE, OWNER, FLAGS, IDENT = range(10)
ROW_FORMAT = "<QQQIBBBBB3x57s3x"
ROW = struct.Struct(ROW_FORMAT)
RECORD = struct.Struct("<8x" + ROW_FORMAT[1:])  # behind a ring buffer record's 8-byte header
IDENT_FORMAT = "<IHH16s16s16sB"
IDENT_STRUCT = struct.Struct(IDENT_FORMAT)
Row = namedtuple("Row", "ts_ns skaddr ino netns type oldstate newstate owner flags ident")
Ident = namedtuple("Ident", "pid sport dport saddr daddr comm family")


def ident_of(row) -> Ident:
    """A row's identity fields, decoded."""
    return Ident._make(IDENT_STRUCT.unpack(row[IDENT]))


def make_ident(pid, sport, dport, saddr, daddr, comm, family) -> bytes:
    return IDENT_STRUCT.pack(pid, sport, dport, saddr, daddr, comm, family)


def make_row(ts_ns=0, skaddr=0, ino=0, netns=0, type=1, oldstate=0, newstate=0, owner=0, flags=0,
             pid=0, sport=0, dport=0, saddr=bytes(16), daddr=bytes(16), comm=b"", family=4) -> Row:
    """A row from named fields (report, tests): what decoding the kernel's event gives."""
    return Row(ts_ns, skaddr, ino, netns, type, oldstate, newstate, owner, flags,
               make_ident(pid, sport, dport, saddr, daddr, comm, family))


# enum ss_event_type
STATE_CHANGE, RETRANSMIT, RESET_SENT, RESET_RECEIVED = 1, 2, 3, 4
EVENT_NAMES = {
    STATE_CHANGE: "state_change",
    RETRANSMIT: "retransmit",
    RESET_SENT: "reset_sent",
    RESET_RECEIVED: "reset_received",
}
EVENT_TITLES = {
    STATE_CHANGE: "State Change",
    RETRANSMIT: "Retransmission",
    RESET_SENT: "Reset Sent",
    RESET_RECEIVED: "Reset Received",
}

# enum ss_owner, plus what user space adds
OWNER_CURRENT, OWNER_SOCKET, OWNER_LISTENER, OWNER_NONE, OWNER_PROC = 0, 1, 2, 3, 4
OWNER_NAMES = {
    OWNER_CURRENT: "current",  # no owner known: the task the kernel ran the event in
    OWNER_SOCKET: "socket",  # the process that made a system call on the socket
    OWNER_LISTENER: "listener",  # passive open: the listening socket's owner
    OWNER_NONE: "none",  # no socket at all (reset to a closed port): pid 0
    OWNER_PROC: "proc",  # found in /proc (the socket predates the monitor)
}
F_OWNER_UNVERIFIED = 1

# counters (enum ss_counter)
C_SEEN, C_FILTERED, C_SENT, C_LOST = 0, 1, 2, 3
C_SEEN_STATE, C_SEEN_RETRANSMIT, C_SEEN_RESET_SENT, C_SEEN_RESET_RECEIVED = 4, 5, 6, 7
C_NESTED = 8
C_MAX = 9

# include/net/tcp_states.h
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


def state_name(num):
    return TCP_STATES.get(num, "NONE" if num == 0 else f"STATE_{num}")


def describe_state(num):
    """The seed's words for a state, e.g. 'Connection Closing (FIN_WAIT1)'."""
    name = state_name(num)
    if num == 1:
        return "Connection Established"
    if num == 7:
        return "Connection Closed"
    if num in (2, 3, 12):
        return f"Connection Opening ({name})"
    if num in (4, 5, 6, 8, 9, 11):
        return f"Connection Closing ({name})"
    if num == 10:
        return "Listening (LISTEN)"
    if num == 0:
        return "No Socket"
    return f"Unknown ({name})"
