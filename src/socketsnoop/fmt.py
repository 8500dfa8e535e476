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
        return "-"  # no process
    if raw == b"-":
        return r"\x2d"  # a process named "-" is not "no process"
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


_STATES = [state_name(n) for n in range(32)]


class _Formatter:
    """What both formats share: the time as text, cached per millisecond and per second.

    format(row) takes a decoded event as a tuple in struct event's order
    (events.Event is such a tuple) and returns one line, newline included.
    """

    millis = [".%03d" % i for i in range(1000)]

    def __init__(self, clock: Clock):
        self._offset = clock.offset_ns
        self._ms = None
        self._stamp = ""
        self._sec = None
        self._prefix = ""

    def _second(self, sec):
        raise NotImplementedError

    def stamp(self, ts_ns: int) -> str:
        """The time as text, remade only when the millisecond changes (hundreds of events share one)."""
        ms = (ts_ns + self._offset) // 1_000_000
        if ms != self._ms:
            self._ms = ms
            sec = ms // 1000
            if sec != self._sec:
                self._sec = sec
                self._prefix = self._second(sec)
            self._stamp = self._prefix + self.millis[ms % 1000]
        return self._stamp


class TextFormatter(_Formatter):
    """The seed's line format, local time: 'Dec 30 2024 22:05:25.454 State Change: SRC=...'."""

    def __init__(self, clock: Clock):
        super().__init__(clock)
        # per family: address bytes -> text as it stands before ':port' (IPv6 in brackets)
        self.addrs = {4: _Cache(lambda raw: format_addr(4, raw)), 6: _Cache(lambda raw: f"[{format_addr(6, raw)}]")}
        self.comms = _Cache(escape_comm, 4096)
        self.tails = [f" STATE={describe_state(n)}\n" for n in range(32)]
        self.titles = {t: f" {title}: SRC=" for t, title in EVENT_TITLES.items()}

    def _second(self, sec):
        return time.strftime("%b %d %Y %H:%M:%S", time.localtime(sec))

    def format(self, row) -> str:
        ts, _sk, _ino, sa, da, pid, _ns, sp, dp, fam, typ, _old, new, _own, _fl, comm = row
        addrs = self.addrs[fam]
        return (f"{self.stamp(ts)}{self.titles[typ]}{addrs[sa]}:{sp} DST={addrs[da]}:{dp} PID={pid} "
                f"COMM={self.comms[comm]}{self.tails[new & 31]}")


class JsonFormatter(_Formatter):
    """One JSON object per line; the schema is in the README. Built from cached, already-safe pieces:
    only COMM comes from outside, and it goes through json.dumps. Time: RFC 3339, UTC, milliseconds."""

    millis = [".%03dZ" % i for i in range(1000)]

    def __init__(self, clock: Clock):
        super().__init__(clock)
        self.addrs = {4: _Cache(lambda raw: format_addr(4, raw)), 6: _Cache(lambda raw: format_addr(6, raw))}
        self.comms = _Cache(lambda raw: json.dumps(comm_text(raw), ensure_ascii=True), 4096)
        self.events = {t: f'","event":"{name}","family":' for t, name in EVENT_NAMES.items()}
        self.olds = ["null"] + [f'"{_STATES[n]}"' for n in range(1, 32)]
        self.news = [f'"new_state":"{_STATES[n]}","description":"{describe_state(n)}","netns":' for n in range(32)]
        self.owners = [f',"owner":"{OWNER_NAMES.get(n, "current")}","old_state":' for n in range(8)]

    def _second(self, sec):
        return datetime.datetime.fromtimestamp(sec, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")

    def format(self, row) -> str:
        ts, sk, _ino, sa, da, pid, ns, sp, dp, fam, typ, old, new, own, _fl, comm = row
        addrs = self.addrs[fam]
        return (f'{{"timestamp":"{self.stamp(ts)}{self.events[typ]}{fam},"src":"{addrs[sa]}","sport":{sp},'
                f'"dst":"{addrs[da]}","dport":{dp},"pid":{pid},"comm":{self.comms[comm]}{self.owners[own & 7]}'
                f'{self.olds[old & 31]},{self.news[new & 31]}{ns},"sock":"0x{sk:x}"}}\n')

    def record(self, row) -> dict:
        return json.loads(self.format(row))
