"""Decode: the kernel's struct event (bpf/socketsnoop.h), mirrored, and TCP state names."""

import struct
from collections import namedtuple

# struct event, 96 bytes; tests/test_layout.py checks this against the C header's BTF.
EVENT_FORMAT = "<QQQ16s16sIIHHBBBBBB6x16s"
EVENT = struct.Struct(EVENT_FORMAT)
# the same, behind a ring buffer record's 8-byte header
RECORD = struct.Struct("<8x" + EVENT_FORMAT[1:])

Event = namedtuple(
    "Event",
    "ts_ns skaddr ino saddr daddr pid netns sport dport family type oldstate newstate owner flags comm",
)

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
