"""Format: events to the seed's log lines, or to JSON lines.

Text (the seed's /var/log/socket_monitor.log, which users parse):
  Dec 30 2024 22:05:25.454 State Change: SRC=10.100.10.150:39134 DST=10.100.10.202:8000 PID=30512 COMM=audacious STATE=Connection Closing (FIN_WAIT1)

Everything a process or a packet controls (COMM) is escaped, so no line can
be forged and no terminal driven. Work that repeats is cached: the time prefix
per second, address strings, escaped names.
"""

import datetime
import ipaddress
import json
import time

from .events import (
    EVENT_NAMES,
    EVENT_TITLES,
    OWNER_NAMES,
    describe_state,
    state_name,
)

_SAFE = frozenset(range(0x21, 0x7F)) - {ord("\\")}
_ESCAPES = {b: chr(b) if b in _SAFE else f"\\x{b:02x}" for b in range(256)}


def escape_comm(raw: bytes) -> str:
    """A task name as a single safe token: space, control, non-ASCII and '\\' bytes become \\xNN."""
    raw = raw.split(b"\0", 1)[0]
    if not raw:
        return "-"
    return "".join(_ESCAPES[b] for b in raw)


def comm_text(raw: bytes) -> str:
    """A task name for JSON (json.dumps escapes what could drive a terminal)."""
    return raw.split(b"\0", 1)[0].decode("utf-8", "backslashreplace")


def format_addr(family: int, raw: bytes) -> str:
    if family == 4:
        return "%d.%d.%d.%d" % (raw[0], raw[1], raw[2], raw[3])
    return str(ipaddress.IPv6Address(raw[:16]))


def format_endpoint(family: int, addr: str, port: int) -> str:
    """10.0.0.1:80, or [2001:db8::1]:443."""
    if family == 6:
        return f"[{addr}]:{port}"
    return f"{addr}:{port}"


class _Cache(dict):
    """A dict that forgets everything when it grows past a bound (addresses, names)."""

    def __init__(self, make, limit=65536):
        super().__init__()
        self.make = make
        self.limit = limit

    def __missing__(self, key):
        if len(self) >= self.limit:
            self.clear()
        value = self[key] = self.make(key)
        return value


class Clock:
    """Kernel CLOCK_MONOTONIC nanoseconds to wall-clock seconds: one offset, taken once per run."""

    def __init__(self):
        self.offset_ns = time.time_ns() - time.monotonic_ns()

    def wall(self, ts_ns: int) -> float:
        return (ts_ns + self.offset_ns) / 1e9


class TextFormatter:
    """The seed's line format, local time."""

    def __init__(self, clock: Clock):
        self.clock = clock
        self._sec = None
        self._prefix = ""
        self.addrs = _Cache(lambda k: format_addr(k[0], k[1]))
        self.comms = _Cache(escape_comm, 4096)
        self.states = _Cache(lambda s: f" STATE={describe_state(s)}\n", 256)
        self.titles = {t: f" {title}: SRC=" for t, title in EVENT_TITLES.items()}

    def stamp(self, ts_ns: int) -> str:
        """'Dec 30 2024 22:05:25.454', the strftime part cached per second."""
        ns = ts_ns + self.clock.offset_ns
        sec, rest = divmod(ns, 1_000_000_000)
        if sec != self._sec:
            self._sec = sec
            self._prefix = time.strftime("%b %d %Y %H:%M:%S", time.localtime(sec))
        return "%s.%03d" % (self._prefix, rest // 1_000_000)

    def endpoint(self, family, raw, port):
        addr = self.addrs[(family, raw)]
        return f"[{addr}]:{port}" if family == 6 else f"{addr}:{port}"

    def format(self, ev) -> str:
        fam = ev.family
        return (
            f"{self.stamp(ev.ts_ns)}{self.titles[ev.type]}{self.endpoint(fam, ev.saddr, ev.sport)}"
            f" DST={self.endpoint(fam, ev.daddr, ev.dport)} PID={ev.pid} COMM={self.comms[ev.comm]}"
            f"{self.states[ev.newstate]}"
        )


class JsonFormatter:
    """One JSON object per line; the schema is in the README."""

    def __init__(self, clock: Clock):
        self.clock = clock
        self.addrs = _Cache(lambda k: format_addr(k[0], k[1]))
        self._sec = None
        self._prefix = ""
        self._dumps = json.JSONEncoder(ensure_ascii=True, separators=(",", ":")).encode

    def stamp(self, ts_ns: int) -> str:
        """RFC 3339, UTC, milliseconds: 2026-11-26T19:02:03.120Z."""
        ns = ts_ns + self.clock.offset_ns
        sec, rest = divmod(ns, 1_000_000_000)
        if sec != self._sec:
            self._sec = sec
            self._prefix = datetime.datetime.fromtimestamp(sec, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
        return "%s.%03dZ" % (self._prefix, rest // 1_000_000)

    def record(self, ev) -> dict:
        fam = ev.family
        return {
            "timestamp": self.stamp(ev.ts_ns),
            "event": EVENT_NAMES.get(ev.type, str(ev.type)),
            "family": fam,
            "src": self.addrs[(fam, ev.saddr)],
            "sport": ev.sport,
            "dst": self.addrs[(fam, ev.daddr)],
            "dport": ev.dport,
            "pid": ev.pid,
            "comm": comm_text(ev.comm),
            "owner": OWNER_NAMES.get(ev.owner, "current"),
            "old_state": state_name(ev.oldstate) if ev.oldstate else None,
            "new_state": state_name(ev.newstate),
            "description": describe_state(ev.newstate),
            "netns": ev.netns,
            "sock": "0x%x" % ev.skaddr,
        }

    def format(self, ev) -> str:
        return self._dumps(self.record(ev)) + "\n"
