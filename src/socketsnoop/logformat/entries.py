"""What the reader gives: a logged event, a logged connection (a summary line), an endpoint; and Malformed."""

import ipaddress
import re
from typing import NamedTuple

MAX_U32, MAX_U64 = 2**32 - 1, 2**64 - 1
MAX_PID = MAX_U32
ADDR_CHARS = re.compile(r"[0-9a-fA-F:.]{1,45}", re.ASCII)  # no scope id ('%...'), nothing to drive a terminal


class LoggedEvent(NamedTuple):
    """One logged event (a text line or a JSON object with an event kind)."""
    ts_ns: int
    kind: int  # EV_*
    family: int  # 4 or 6
    src: ipaddress.IPv4Address | ipaddress.IPv6Address
    sport: int
    dst: ipaddress.IPv4Address | ipaddress.IPv6Address
    dport: int
    pid: int
    comm: bytes  # the raw name (b'' for no process, PID 0, and for the empty name)
    newstate: int
    sock: int | None  # the socket's address, if the line has it (JSON)
    # the owner's names where the line has them (JSON lines; text lines written with --context), else None
    uid: int | None = None
    user: str | None = None
    cgroup: str | None = None
    unit: str | None = None
    container: str | None = None  # 64 hex (JSON) or 12 (text)
    pod: str | None = None
    host: str | None = None  # the host of a central syslog's line (its prefix); None in the monitor's own log
    reason: str | None = None  # a drop's (kind EV_DROP): the kernel's name for it, or its number


class LoggedWarning(NamedTuple):
    """One health warning line (text 'Warning: KIND status=...' or JSON "event": "warning"): its kind and status,
    and its owner where it has one (pid 0, comm b'' for none)."""
    ts_ns: int
    kind: str  # e.g. 'close-wait-leak' (letters and '-': checked)
    status: str  # 'active' or 'cleared'
    pid: int
    comm: bytes
    host: str | None = None


class LoggedConnection(NamedTuple):
    """One connection's summary line (text 'Connection Summary:' or JSON "event": "connection")."""
    ts_ns: int
    family: int  # 4 or 6
    src: ipaddress.IPv4Address | ipaddress.IPv6Address
    sport: int
    dst: ipaddress.IPv4Address | ipaddress.IPv6Address
    dport: int
    pid: int
    comm: bytes  # the raw name
    result: str  # one of RESULTS
    direction: str | None  # "in", "out"; None when unknown
    duration_us: int | None  # microseconds (the lines' precision); None when unknown
    handshake_us: int | None
    sent: int  # payload bytes
    received: int
    retransmits: int
    rtt_us: int | None
    uid: int
    states: tuple  # state names (STATE_NAMES keys), in order
    states_cut: bool  # the history was cut short before the last state
    complete: bool  # False: the connection began before the monitor
    sock: int | None  # the socket's address, if the line has it (JSON)
    host: str | None = None  # the host of a central syslog's line (its prefix); None in the monitor's own log
    # the owner's names where the line has them (JSON lines; text lines written with --context), else None
    user: str | None = None
    cgroup: str | None = None
    unit: str | None = None
    container: str | None = None  # 64 hex (JSON) or 12 (text)
    pod: str | None = None
    drops: int = 0  # packets of the connection the kernel dropped (lines of older versions: 0)
    drop_reason: str | None = None  # the most frequent reason of those, if any


class Endpoint(NamedTuple):
    family: int
    addr: ipaddress.IPv4Address | ipaddress.IPv6Address
    port: int


class Malformed(ValueError):
    pass


def parse_addr(family, text):
    """An address as the monitor writes it; anything else (a scope id, other characters, not a str) is Malformed."""
    if not isinstance(text, str) or not ADDR_CHARS.fullmatch(text):
        raise Malformed("bad address")
    try:
        return (ipaddress.IPv4Address if family == 4 else ipaddress.IPv6Address)(text)
    except ValueError:
        raise Malformed("bad address") from None


def parse_endpoint(text):
    """'10.0.0.1:80' -> Endpoint(4, IPv4Address, 80); '[2001:db8::1]:443' -> Endpoint(6, IPv6Address, 443)."""
    if text.startswith("["):
        addr, sep, port = text[1:].partition("]:")
        family = 6
    else:
        addr, sep, port = text.rpartition(":")
        family = 4
    if not sep or not (port.isascii() and port.isdigit()) or len(port) > 5 or int(port) > 65535:
        raise Malformed("bad endpoint")
    return Endpoint(family, parse_addr(family, addr), int(port))
