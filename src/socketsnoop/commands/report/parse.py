"""Text and JSON lines of the logs parsed into Records (files.py reads the files).

Nothing read from a line is trusted: addresses are checked (digits, hex, ':' and '.', no IPv6 scope id), COMM
is kept raw (the output escapes it as the monitor does).
"""

import datetime
import ipaddress
import json
import re
from typing import NamedTuple

from ...pipeline.decode import DIRECTION_NAMES, EVENT_NAMES, EVENT_TITLES, RESULT_NAMES, describe_state, state_name

MONTHS = {m: i for i, m in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)}
TITLE_KINDS = {title: kind for kind, title in EVENT_TITLES.items()}
NAME_KINDS = {name: kind for kind, name in EVENT_NAMES.items()}
DESCRIPTIONS = {describe_state(n): n for n in range(32)}
STATE_NAMES = {state_name(n): n for n in range(32)}
TEXT_LINE = re.compile(
    r"(?P<ts>[A-Z][a-z]{2} \d{2} \d{4} \d{2}:\d{2}:\d{2})\.(?P<ms>\d{3}) "
    r"(?P<title>State Change|Retransmission|Reset Sent|Reset Received): "
    r"SRC=(?P<src>\S+) DST=(?P<dst>\S+) PID=(?P<pid>\d{1,10}) COMM=(?P<comm>\S+) STATE=(?P<state>.+?)"
    r"(?: USER=(?P<user>\S+))?(?: UNIT=(?P<unit>\S+))?(?: CONTAINER=(?P<container>[0-9a-f]{12}))?"
    r"(?: POD=(?P<pod>\S+))?\s*$",  # --context's names
    re.ASCII,
)
# a central rsyslog's file: the host and program before our line. RFC 3164 as rsyslog's default file format
# writes it (`Dec  1 21:05:58 host1 socket-snoop[123]: LINE`; RSYSLOG_FileFormat has an RFC 3339 time; of a
# message that came in as RFC 5424 the tag has no colon: `socket-snoop[123] LINE`), and
# RFC 5424 as RSYSLOG_SyslogProtocol23Format does (`<30>1 TIME host1 socket-snoop 123 MSGID [SD...] LINE`).
# Only the program socket-snoop's lines; a host name is printable ASCII without spaces (RFC 5424's PRINTUSASCII)
SYSLOG_3164 = re.compile(
    r"(?:<\d{1,3}>)?(?:[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d|\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,9})?(?:Z|[+-]\d\d:\d\d)) "
    r"(?P<host>[!-~]{1,255}) socket-snoop(?:\[\d{1,10}\])?:? (?P<msg>.*)", re.ASCII | re.DOTALL)
SYSLOG_5424 = re.compile(
    r"<\d{1,3}>1 \S+ (?P<host>[!-~]{1,255}) socket-snoop [!-~]{1,128} [!-~]{1,32} "
    r"(?:-|(?:\[(?:[^\]\"]|\"(?:[^\"\\]|\\.)*\")*\])+)(?: \ufeff?(?P<msg>.*))?", re.DOTALL)
CONTAINER_ID = re.compile(r"[0-9a-f]{12,64}", re.ASCII)
MAX_NAME = 4096  # characters of a logged name (user, unit, cgroup, pod) that the report takes
# a connection's summary line (formats.TextFormatter.record_lines); tried only when TEXT_LINE does not match
SUMMARY_LINE = re.compile(
    r"(?P<ts>[A-Z][a-z]{2} \d{2} \d{4} \d{2}:\d{2}:\d{2})\.(?P<ms>\d{3}) Connection Summary: "
    r"SRC=(?P<src>\S+) DST=(?P<dst>\S+) PID=(?P<pid>\d{1,10}) COMM=(?P<comm>\S+) RESULT=(?P<result>[a-z-]{1,20}) "
    r"DIR=(?P<dir>in|out|-) DURATION=(?P<duration>\d{1,14}\.\d{3}ms|-) HANDSHAKE=(?P<handshake>\d{1,14}\.\d{3}ms|-) "
    r"SENT=(?P<sent>\d{1,20}) RECEIVED=(?P<received>\d{1,20}) RETRANSMITS=(?P<retransmits>\d{1,10}) "
    r"RTT=(?P<rtt>\d{1,14}\.\d{3}ms|-) UID=(?P<uid>\d{1,10}) STATES=(?P<states>[A-Z0-9_.>]{0,400})\s*$",
    re.ASCII,
)
RESULTS = frozenset(RESULT_NAMES.values())
DIRECTIONS = frozenset(DIRECTION_NAMES.values())
MAX_U32, MAX_U64 = 2**32 - 1, 2**64 - 1
MAX_MS = MAX_U64 / 1e6  # a duration in ms that fits the kernel's u64 nanoseconds
JSON_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z", re.ASCII)
_ESCAPE = re.compile(r"\\x([0-9a-fA-F]{2})")
_JSON_BYTE = re.compile(rb"\\x([89a-fA-F][0-9a-fA-F])")  # what comm_text's backslashreplace makes of a non-UTF-8 byte
ADDR_CHARS = re.compile(r"[0-9a-fA-F:.]{1,45}", re.ASCII)  # no scope id ('%...'), nothing to drive a terminal
MAX_PID = 2**32 - 1
# times a line may have: years 2 to 9998, so that every time zone can print them (local text, UTC JSON)
MIN_SEC = int(datetime.datetime(2, 1, 1, tzinfo=datetime.timezone.utc).timestamp())
MAX_SEC = int(datetime.datetime(9999, 1, 1, tzinfo=datetime.timezone.utc).timestamp()) - 1


class Record(NamedTuple):
    """One logged event."""
    ts_ns: int
    kind: int  # EV_*
    family: int  # 4 or 6
    src: ipaddress.IPv4Address | ipaddress.IPv6Address
    sport: int
    dst: ipaddress.IPv4Address | ipaddress.IPv6Address
    dport: int
    pid: int
    comm: bytes  # the raw name
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


def _name(value):
    """A logged name (JSON): a string of sane length, else None (left out, as unknown)."""
    return value if isinstance(value, str) and 0 < len(value) <= MAX_NAME else None


def _text_name(value):
    """A --context value of a text line (escape_token's form) back to the name."""
    return unescape_comm(value).decode("utf-8", "surrogateescape") if value else None


class Summary(NamedTuple):
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


class Endpoint(NamedTuple):
    family: int
    addr: ipaddress.IPv4Address | ipaddress.IPv6Address
    port: int


class Malformed(ValueError):
    pass


def unescape_comm(text):
    """fmt.escape_comm reversed: '\\x0a' -> b'\\n'; '-' (no name) -> b''."""
    if text == "-":
        return b""
    out = bytearray()
    pos = 0
    for m in _ESCAPE.finditer(text):
        out += text[pos:m.start()].encode()
        out.append(int(m.group(1), 16))
        pos = m.end()
    out += text[pos:].encode()
    return bytes(out)


def comm_from_json(text):
    """A JSON line's comm (fmt.comm_text: UTF-8, with a byte that is not UTF-8 as '\\xNN', NN >= 80) -> the raw
    name, so it prints as the text log's does. Whatever it holds, escape_comm makes it one safe token."""
    raw = text.encode("utf-8", "backslashreplace")  # lone surrogates from JSON escapes stay visible as \\udNNN
    if b"\\x" not in raw:
        return raw
    return _JSON_BYTE.sub(lambda m: bytes((int(m.group(1), 16),)), raw)


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


class Parser:
    """Log lines -> Records, with the per-second time conversion and endpoints cached."""

    def __init__(self):
        self._secs = {}
        self._endpoints = {}

    def _cached(self, cache, key, make):
        value = cache.get(key)
        if value is None:
            if len(cache) > 65536:
                cache.clear()
            value = cache[key] = make(key)
        return value

    def _seconds(self, key, make):
        """Epoch seconds of a line's time, cached; Malformed if out of MIN_SEC..MAX_SEC."""
        sec = self._cached(self._secs, key, make)
        if not MIN_SEC <= sec <= MAX_SEC:
            raise Malformed("time out of range")
        return sec

    @staticmethod
    def _text_seconds(stamp):
        mon, day, year, hms = stamp.split(" ")
        h, m, s = hms.split(":")
        try:
            return datetime.datetime(int(year), MONTHS[mon], int(day), int(h), int(m), int(s)).timestamp()
        except (KeyError, ValueError, OverflowError, OSError):
            raise Malformed("bad time") from None

    @staticmethod
    def _json_seconds(stamp):
        return datetime.datetime.fromisoformat(stamp).timestamp()

    def endpoint(self, text):
        return self._cached(self._endpoints, text, parse_endpoint)

    def parse(self, line):
        """A Record, or raises Malformed. A line of a central syslog's file is our line behind the syslog
        prefix: its Record has the prefix's host."""
        s = line.lstrip()
        if s.startswith("{"):
            return self.parse_json(s)
        try:
            return self.parse_text(line)
        except Malformed:
            m = SYSLOG_5424.match(s) or SYSLOG_3164.match(s)
            if not m or not m["msg"]:
                raise
        msg = m["msg"].lstrip()
        r = self.parse_json(msg) if msg.startswith("{") else self.parse_text(msg)
        return r._replace(host=m["host"])

    def parse_text(self, line):
        m = TEXT_LINE.match(line)
        if not m:
            return self.parse_summary_text(line)
        sec = self._seconds(m["ts"], self._text_seconds)
        src = self.endpoint(m["src"])
        dst = self.endpoint(m["dst"])
        if src.family != dst.family:
            raise Malformed("SRC and DST of different families")
        state = DESCRIPTIONS.get(m["state"])
        if state is None:
            raise Malformed("unknown state")
        ts_ns = int(sec) * 1_000_000_000 + int(m["ms"]) * 1_000_000
        return Record(ts_ns, TITLE_KINDS[m["title"]], src.family, src.addr, src.port, dst.addr, dst.port,
                      int(m["pid"]), unescape_comm(m["comm"]), state, None, None, _text_name(m["user"]), None,
                      _text_name(m["unit"]), m["container"], _text_name(m["pod"]))

    def _json_common(self, d):
        """What every JSON line has, checked: (comm text, epoch seconds, milliseconds, socket address or None);
        ValueError (and the like) when a value is not what the monitor writes."""
        comm = d["comm"]
        if not isinstance(comm, str):
            raise ValueError("bad comm")
        stamp = d["timestamp"]
        if not isinstance(stamp, str) or not JSON_TIME.fullmatch(stamp):
            raise ValueError("bad timestamp")
        sec = self._seconds(stamp[:19] + "Z", self._json_seconds)
        frac = stamp[19:].rstrip("Z")
        ms = int(frac[1:4].ljust(3, "0")) if frac.startswith(".") else 0
        sock = int(d["sock"], 16) if isinstance(d.get("sock"), str) else None
        return comm, sec, ms, sock

    def parse_json(self, line):
        try:
            d = json.loads(line)
            kind = NAME_KINDS.get(d["event"])
            if kind is None:
                return self.parse_summary_json(d)
            fam = d["family"]
            if type(fam) is not int or fam not in (4, 6):
                raise ValueError("bad family")
            src, dst = parse_addr(fam, d["src"]), parse_addr(fam, d["dst"])
            sport, dport, pid = d["sport"], d["dport"], d["pid"]
            if (not all(type(v) is int and 0 <= v for v in (sport, dport, pid)) or max(sport, dport) > 65535
                    or pid > MAX_PID):
                raise ValueError("bad number")
            state = STATE_NAMES[d["new_state"]]
            comm, sec, ms, sock = self._json_common(d)
            sock = sock or None
            uid = d.get("uid")
            uid = uid if type(uid) is int and 0 <= uid < 2**32 else None
            cgroup = _name(d.get("cgroup"))
            cgroup = cgroup if cgroup and cgroup.startswith("/") else None
            container = d.get("container")
            container = container if isinstance(container, str) and CONTAINER_ID.fullmatch(container) else None
        except (ValueError, KeyError, TypeError, AttributeError, OverflowError, RecursionError):
            # RecursionError: deeply nested JSON ('{"a":[[[[...'); never shown, so no text from the line is kept
            raise Malformed("bad JSON event") from None
        return Record(int(sec) * 1_000_000_000 + ms * 1_000_000, kind, fam, src, sport, dst, dport, pid,
                      comm_from_json(comm), state, sock, uid, _name(d.get("user")), cgroup, _name(d.get("unit")),
                      container, _name(d.get("pod")))

    # -- summary lines: their own functions, so that the event lines' path stays as it was ------------------
    def parse_summary_text(self, line):
        """A text 'Connection Summary:' line -> Summary, or raises Malformed."""
        m = SUMMARY_LINE.match(line)
        if not m:
            raise Malformed("not a socket-snoop line")
        sec = self._seconds(m["ts"], self._text_seconds)
        src, dst = self.endpoint(m["src"]), self.endpoint(m["dst"])
        if src.family != dst.family:
            raise Malformed("SRC and DST of different families")
        result = m["result"]
        sent, received, retrans, pid, uid = (int(m[k]) for k in ("sent", "received", "retransmits", "pid", "uid"))
        if result not in RESULTS or max(sent, received) > MAX_U64 or max(retrans, pid, uid) > MAX_U32:
            raise Malformed("bad summary value")
        text = m["states"]
        names = text.split(">") if text else []
        complete = not names or names[0] != "..."
        if not complete:
            del names[0]
        cut = len(names) > 1 and names[-2] == "..."
        if cut:
            del names[-2]
        states = _state_names(names)
        d = m["dir"]
        return Summary(int(sec) * 1_000_000_000 + int(m["ms"]) * 1_000_000, src.family, src.addr, src.port,
                       dst.addr, dst.port, pid, unescape_comm(m["comm"]), result, None if d == "-" else d,
                       _text_us(m["duration"]), _text_us(m["handshake"]), sent, received, retrans,
                       _text_us(m["rtt"]), uid, states, cut, complete, None)

    def parse_summary_json(self, d):
        """A JSON line's object with "event": "connection" -> Summary, or raises Malformed."""
        try:
            if d["event"] != "connection":
                raise ValueError("unknown event")
            fam = d["family"]
            if type(fam) is not int or fam not in (4, 6):
                raise ValueError("bad family")
            src, dst = parse_addr(fam, d["src"]), parse_addr(fam, d["dst"])
            sport, dport, pid, uid = d["sport"], d["dport"], d["pid"], d["uid"]
            sent, received, retrans = d["bytes_sent"], d["bytes_received"], d["retransmits"]
            if (not all(type(v) is int and 0 <= v for v in (sport, dport, pid, uid, sent, received, retrans))
                    or max(sport, dport) > 65535 or max(pid, uid, retrans) > MAX_U32 or max(sent, received) > MAX_U64):
                raise ValueError("bad number")
            result, direction = d["result"], d["direction"]
            if not isinstance(result, str) or result not in RESULTS:
                raise ValueError("bad result")
            if direction is not None and (not isinstance(direction, str) or direction not in DIRECTIONS):
                raise ValueError("bad direction")
            names, cut, complete = d["states"], d["states_truncated"], d["complete"]
            if type(names) is not list or len(names) > 64 or type(cut) is not bool or type(complete) is not bool:
                raise ValueError("bad states")
            states = _state_names(names)
            comm, sec, ms, sock = self._json_common(d)
            times = [_json_us(d[k]) for k in ("duration_ms", "handshake_ms", "rtt_ms")]
        except (ValueError, KeyError, TypeError, AttributeError, OverflowError):
            raise Malformed("bad JSON summary") from None
        return Summary(int(sec) * 1_000_000_000 + ms * 1_000_000, fam, src, sport, dst, dport, pid,
                       comm_from_json(comm), result, direction, times[0], times[1], sent, received, retrans,
                       times[2], uid, states, cut, complete, sock or None)


def _state_names(names):
    """State names as a tuple, each a known one (STATE_NAMES), else Malformed."""
    for name in names:
        if not isinstance(name, str) or name not in STATE_NAMES:
            raise Malformed("bad state")
    return tuple(names)


def _text_us(text):
    """'40.638ms' -> 40638 (microseconds), '-' -> None (the line's form is checked by SUMMARY_LINE)."""
    if text == "-":
        return None
    whole, _, frac = text[:-2].partition(".")
    return int(whole) * 1000 + int(frac)


def _json_us(value):
    """A JSON line's milliseconds (a number with up to 3 decimals, or null) -> microseconds or None."""
    if value is None:
        return None
    if type(value) not in (int, float) or not 0 <= value <= MAX_MS:  # NaN fails too
        raise ValueError("bad time")
    return round(value * 1000)
