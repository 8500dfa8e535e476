"""The log's words for the kernel's numbers: event kinds (text titles and JSON names), TCP states (names and
the seed's descriptions), owner kinds, connection results and directions. Every line kind and the reader
take them from here."""

from ..kernel.abi import (
    DIR_IN,
    EV_DROP,
    DIR_OUT,
    EV_RESET_RECEIVED,
    EV_RESET_SENT,
    EV_RETRANSMIT,
    EV_STATE,
    OWNER_CURRENT,
    OWNER_LISTENER,
    OWNER_NONE,
    OWNER_SOCKET,
    RESULT_CLOSED,
    RESULT_REFUSED,
    RESULT_RESET_RECEIVED,
    RESULT_RESET_SENT,
    RESULT_TIMEOUT,
    RESULT_UNREACHABLE,
)
from ..kernel.dropreasons import reason_name
from ..pipeline.decode import OWNER_PROC, TCP_STATES, drop_slots_of

EVENT_NAMES = {  # JSON "event", the journal's and syslog's event kind
    EV_STATE: "state_change",
    EV_RETRANSMIT: "retransmit",
    EV_RESET_SENT: "reset_sent",
    EV_RESET_RECEIVED: "reset_received",
    EV_DROP: "drop",
}
EVENT_TITLES = {  # the text line's title
    EV_STATE: "State Change",
    EV_RETRANSMIT: "Retransmission",
    EV_RESET_SENT: "Reset Sent",
    EV_RESET_RECEIVED: "Reset Received",
    EV_DROP: "Packet Drop",
}
CONNECTION_NAME = "connection"  # JSON "event" of a connection's summary
CONNECTION_TITLE = "Connection Summary"

OWNER_NAMES = {
    OWNER_CURRENT: "current",  # no owner known: the task the kernel ran the event in
    OWNER_SOCKET: "socket",  # the process that made a system call on the socket
    OWNER_LISTENER: "listener",  # passive open: the listening socket's owner
    OWNER_NONE: "none",  # no socket at all (reset to a closed port): pid 0
    OWNER_PROC: "proc",  # found in /proc (the socket predates the monitor)
}

RESULT_NAMES = {
    RESULT_CLOSED: "closed",
    RESULT_RESET_SENT: "reset-sent",
    RESULT_RESET_RECEIVED: "reset-received",
    RESULT_REFUSED: "refused",
    RESULT_TIMEOUT: "timeout",
    RESULT_UNREACHABLE: "unreachable",
}
DIRECTION_NAMES = {DIR_OUT: "out", DIR_IN: "in"}


def drop_reasons(raw):
    """A record's drop slots (R_DROP_SLOTS bytes) as {reason name: packets}, most frequent first; a value
    this kernel does not name is its number."""
    return {reason_name(reason): n for reason, n in drop_slots_of(raw)}


def drop_words(drops, raw):
    """The end of a Connection Summary line whose connection had packets dropped: ' DROPS=N DROP_REASON=NAME'
    (the most frequent reason of those kept; '-' if none was)."""
    top = next(iter(drop_reasons(raw)), "-")
    return f" DROPS={drops} DROP_REASON={top}"


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
