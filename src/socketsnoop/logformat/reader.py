"""The reader: one log line (text, JSON, or either behind a central syslog's prefix) back to its fields, as a
LoggedEvent or a LoggedConnection (a connection's summary line), or Malformed.

Nothing read is trusted: addresses are checked (digits, hex, ':' and '.', no IPv6 scope id), COMM is given
raw (escape.py's escaping reversed), and every step takes time linear in the line: text lines are cut
with str.partition/split and only short, anchored patterns without nested repetition look at a piece;
the syslog prefixes' patterns have bounded repetitions only.
"""

import datetime
import json
import re

from .entries import (
    MAX_PID,
    MAX_U32,
    MAX_U64,
    LoggedConnection,
    LoggedEvent,
    LoggedWarning,
    Malformed,
    parse_addr,
    parse_endpoint,
)
from .escape import comm_from_json, unescape_comm
from .text import CONTAINER_TEXT, CONTEXT_KEYS
from .warning import WARNING_NAME, WARNING_TITLE
from ..kernel.abi import EV_DROP
from .words import (
    CONNECTION_NAME,
    CONNECTION_TITLE,
    DIRECTION_NAMES,
    EVENT_NAMES,
    EVENT_TITLES,
    RESULT_NAMES,
    describe_state,
    state_name,
)

MONTHS = {m: i for i, m in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)}
TITLE_KINDS = {title: kind for kind, title in EVENT_TITLES.items()}
NAME_KINDS = {name: kind for kind, name in EVENT_NAMES.items()}
DESCRIPTIONS = {describe_state(n): n for n in range(32)}
STATE_NAMES = {state_name(n): n for n in range(32)}
RESULTS = frozenset(RESULT_NAMES.values())
DIRECTIONS = frozenset(DIRECTION_NAMES.values())
# the text line's time and the space after it: 'Dec 30 2024 22:05:25.454 '
WARNING_HEAD = re.compile(r"([a-z][a-z-]{0,40}) status=(active|cleared)(?: PID=(\d{1,10}) COMM=(\S+))?(?: |$)", re.ASCII)
TEXT_STAMP = re.compile(r"[A-Z][a-z]{2} \d\d \d{4} \d\d:\d\d:\d\d\.\d{3} ", re.ASCII)
STAMP_LEN = 25
TEXT_MS = re.compile(r"\d{1,14}\.\d{3}ms", re.ASCII)  # DURATION, HANDSHAKE, RTT
STATES_TEXT = re.compile(r"[A-Z0-9_.>]{0,400}", re.ASCII)
TRAILING = " \t\n\r\f\v"  # what may end a text line (ASCII whitespace)
_OTHER_SPACE = re.compile(r"[\t\n\r\f\v]")  # ASCII whitespace but the space, which split() has taken
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
CONTAINER_TEXT_ID = re.compile(r"[0-9a-f]{%d}" % CONTAINER_TEXT, re.ASCII)
MAX_NAME = 4096  # characters of a logged name (user, unit, cgroup, pod) that the reader takes
MAX_MS = MAX_U64 / 1e6  # a duration in ms that fits the kernel's u64 nanoseconds
JSON_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z", re.ASCII)
# times a line may have: years 2 to 9998, so that every time zone can print them (local text, UTC JSON)
MIN_SEC = int(datetime.datetime(2, 1, 1, tzinfo=datetime.timezone.utc).timestamp())
MAX_SEC = int(datetime.datetime(9999, 1, 1, tzinfo=datetime.timezone.utc).timestamp()) - 1
REASON = re.compile(r"[A-Z0-9_]{1,64}", re.ASCII)  # a drop reason's name (the kernel's), or its number
SUMMARY_KEYS = ("DST", "PID", "COMM", "RESULT", "DIR", "DURATION", "HANDSHAKE", "SENT", "RECEIVED", "RETRANSMITS",
                "RTT", "UID", "STATES")


def _digits(text, most):
    return 0 < len(text) <= most and text.isascii() and text.isdigit()


def _number(text, most, limit):
    """A text line's decimal number of at most `most` digits and at most `limit`, else Malformed."""
    if not _digits(text, most) or int(text) > limit:
        raise Malformed("bad number")
    return int(text)


def _value(token, key):
    """'KEY=value' -> value, else Malformed. A value has no ASCII whitespace but STATE's spaces (other
    characters that are not ours, e.g. a control character in COMM, are read: the report escapes what it
    shows), and is not empty but for STATES (a record without states)."""
    k, sep, value = token.partition("=")
    if k != key or not sep or _OTHER_SPACE.search(value) or not value and key != "STATES":
        raise Malformed(f"no {key}")
    return value


def _text_context(words):
    """--context's ' USER=... UNIT=... USER_UNIT=... CONTAINER=... POD=...' (those known, in this order) -> their names."""
    names = dict.fromkeys(CONTEXT_KEYS)
    at = 0
    for word in words:
        key, _, value = word.partition("=")
        if " " in value or key not in names or CONTEXT_KEYS.index(key) < at:
            raise Malformed("bad context")
        at = CONTEXT_KEYS.index(key) + 1
        value = _value(word, key)
        if key == "CONTAINER":
            if not CONTAINER_TEXT_ID.fullmatch(value):
                raise Malformed("bad container")
            names[key] = value
        else:
            names[key] = _text_name(value)
    return names["USER"], names["UNIT"], names["CONTAINER"], names["POD"]


def _text_name(value):
    """A --context value of a text line (escape_token's form) back to the name."""
    name = unescape_comm(value).decode("utf-8", "surrogateescape") if value != "-" else None
    return name if name and len(name) <= MAX_NAME else None


def _json_name(value):
    """A logged name (JSON): a string of sane length, else None (left out, as unknown)."""
    return value if isinstance(value, str) and 0 < len(value) <= MAX_NAME else None


def _json_names(d):
    """(user, cgroup, unit, container, pod) of a JSON line, those it has and that are sane."""
    cgroup = _json_name(d.get("cgroup"))
    container = d.get("container")
    return (_json_name(d.get("user")), cgroup if cgroup and cgroup.startswith("/") else None,
            _json_name(d.get("unit")),
            container if isinstance(container, str) and CONTAINER_ID.fullmatch(container) else None,
            _json_name(d.get("pod")))


def _state_names(names):
    """State names as a tuple, each a known one (STATE_NAMES), else Malformed."""
    for name in names:
        if not isinstance(name, str) or name not in STATE_NAMES:
            raise Malformed("bad state")
    return tuple(names)


def _text_us(text):
    """'40.638ms' -> 40638 (microseconds), '-' -> None; else Malformed."""
    if text == "-":
        return None
    if not TEXT_MS.fullmatch(text):
        raise Malformed("bad time")
    whole, _, frac = text[:-2].partition(".")
    return int(whole) * 1000 + int(frac)


def _json_us(value):
    """A JSON line's milliseconds (a number with up to 3 decimals, or null) -> microseconds or None."""
    if value is None:
        return None
    if type(value) not in (int, float) or not 0 <= value <= MAX_MS:  # NaN fails too
        raise ValueError("bad time")
    return round(value * 1000)


def _text_states(text):
    """'...>SYN_SENT>...>CLOSE' -> (names, cut, complete)."""
    if not STATES_TEXT.fullmatch(text):
        raise Malformed("bad states")
    names = text.split(">") if text else []
    complete = not names or names[0] != "..."
    if not complete:
        del names[0]
    cut = len(names) > 1 and names[-2] == "..."
    if cut:
        del names[-2]
    return _state_names(names), cut, complete


class Parser:
    """Log lines -> LoggedEvents and LoggedConnections, with the per-second time conversion and endpoints
    cached."""

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

    def _src_dst(self, src, dst):
        src, dst = self.endpoint(src), self.endpoint(_value(dst, "DST"))
        if src.family != dst.family:
            raise Malformed("SRC and DST of different families")
        return src, dst

    def parse(self, line):
        """A LoggedEvent or LoggedConnection, or raises Malformed. A line of a central syslog's file is our
        line behind the syslog prefix: its entry has the prefix's host."""
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
        """A text line (an event's or a Connection Summary) -> its entry, or raises Malformed."""
        line = line.rstrip(TRAILING)
        if not TEXT_STAMP.match(line):
            raise Malformed("not a socket-snoop line")
        title, sep, rest = line[STAMP_LEN:].partition(": SRC=")
        if not sep and line.startswith(WARNING_TITLE + ": ", STAMP_LEN):
            return self._warning_text(line)
        kind = TITLE_KINDS.get(title)
        if not sep or kind is None:
            if sep and title == CONNECTION_TITLE:
                return self._summary_text(line, rest)
            raise Malformed("not a socket-snoop line")
        reason = None
        if kind == EV_DROP:  # '... STATE=... [names] REASON=NAME'
            rest, sep, reason = rest.rpartition(" REASON=")
            if not sep or not REASON.fullmatch(reason):
                raise Malformed("bad drop reason")
        words = rest.split(" ", 4)  # SRC DST PID COMM STATE...
        if len(words) != 5:
            raise Malformed("not a socket-snoop line")
        src, dst = self._src_dst(words[0], words[1])
        # the description, then --context's names: a description has no '=', a name's word has
        described = _value(words[4], "STATE").split(" ", 7)
        n = next((i for i, w in enumerate(described) if "=" in w), len(described))
        state = DESCRIPTIONS.get(" ".join(described[:n]))
        if state is None:
            raise Malformed("unknown state")
        user, unit, container, pod = _text_context(described[n:])
        return LoggedEvent(self._text_ns(line), kind, src.family, src.addr, src.port, dst.addr, dst.port,
                           _number(_value(words[2], "PID"), 10, MAX_PID), unescape_comm(_value(words[3], "COMM")),
                           state, None, None, user, None, unit, container, pod, reason=reason)

    def _warning_text(self, line):
        m = WARNING_HEAD.match(line, STAMP_LEN + len(WARNING_TITLE) + 2)
        if not m:
            raise Malformed("not a socket-snoop line")
        pid = _number(m[3], 10, MAX_PID) if m[3] else 0
        return LoggedWarning(self._text_ns(line), m[1], m[2], pid, unescape_comm(m[4]) if m[4] else b"")

    def _warning_json(self, d):
        kind, status, pid, comm, stamp = d["kind"], d["status"], d.get("pid", 0), d.get("comm", ""), d["timestamp"]
        if (not isinstance(kind, str) or not WARNING_HEAD.fullmatch(f"{kind} status={status}")
                or type(pid) is not int or not 0 <= pid <= MAX_PID or not isinstance(comm, str)
                or not isinstance(stamp, str) or not JSON_TIME.fullmatch(stamp)):
            raise ValueError("bad warning")
        sec = self._seconds(stamp[:19] + "Z", self._json_seconds)
        frac = stamp[19:].rstrip("Z")
        ms = int(frac[1:4].ljust(3, "0")) if frac.startswith(".") else 0
        return LoggedWarning(int(sec) * 1_000_000_000 + ms * 1_000_000, kind, status, pid, comm_from_json(comm))

    def _text_ns(self, line):
        sec = self._seconds(line[:STAMP_LEN - 5], self._text_seconds)
        return int(sec) * 1_000_000_000 + int(line[STAMP_LEN - 4:STAMP_LEN - 1]) * 1_000_000

    def _summary_text(self, line, rest):
        """A text 'Connection Summary:' line (rest: what follows SRC=) -> LoggedConnection. Its end, when the
        connection had packets dropped: ' DROPS=N DROP_REASON=NAME' (no value before it has a space: escaped)."""
        drops, reason = 0, None
        head, sep, tail = rest.rpartition(" DROPS=")
        if sep:
            n, _, reason = tail.partition(" ")
            reason = _value(reason, "DROP_REASON")
            if not REASON.fullmatch(reason) and reason != "-":
                raise Malformed("bad drop reason")
            rest, drops, reason = head, _number(n, 10, MAX_U32), None if reason == "-" else reason
        words = rest.split(" ", len(SUMMARY_KEYS) + len(CONTEXT_KEYS) + 1)
        if len(words) < len(SUMMARY_KEYS) + 1:
            raise Malformed("not a socket-snoop line")
        v = dict(zip(SUMMARY_KEYS, map(_value, words[1:], SUMMARY_KEYS)))
        src, dst = self._src_dst(words[0], words[1])
        result, direction = v["RESULT"], v["DIR"]
        if result not in RESULTS or direction not in DIRECTIONS and direction != "-":
            raise Malformed("bad summary value")
        states, cut, complete = _text_states(v["STATES"])
        user, unit, container, pod = _text_context(words[len(SUMMARY_KEYS) + 1:])
        return LoggedConnection(
            self._text_ns(line), src.family, src.addr, src.port, dst.addr, dst.port,
            _number(v["PID"], 10, MAX_PID), unescape_comm(v["COMM"]), result, None if direction == "-" else direction,
            _text_us(v["DURATION"]), _text_us(v["HANDSHAKE"]), _number(v["SENT"], 20, MAX_U64),
            _number(v["RECEIVED"], 20, MAX_U64), _number(v["RETRANSMITS"], 10, MAX_U32), _text_us(v["RTT"]),
            _number(v["UID"], 10, MAX_U32), states, cut, complete, None, None, user, None, unit, container, pod,
            drops, reason)

    def _json_common(self, d):
        """What every JSON line has, checked: (family, src, dst, sport, dport, pid, raw comm, ts_ns, socket
        address or None); ValueError (and the like) when a value is not what the monitor writes."""
        fam = d["family"]
        if type(fam) is not int or fam not in (4, 6):
            raise ValueError("bad family")
        src, dst = parse_addr(fam, d["src"]), parse_addr(fam, d["dst"])
        sport, dport, pid = d["sport"], d["dport"], d["pid"]
        if (not all(type(v) is int and 0 <= v for v in (sport, dport, pid)) or max(sport, dport) > 65535
                or pid > MAX_PID):
            raise ValueError("bad number")
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
        return (fam, src, dst, sport, dport, pid, comm_from_json(comm), int(sec) * 1_000_000_000 + ms * 1_000_000,
                sock or None)

    def parse_json(self, line):
        """A JSON line -> its entry, or raises Malformed."""
        try:
            d = json.loads(line)
            kind = NAME_KINDS.get(d["event"])
            if kind is None:
                return self._warning_json(d) if d["event"] == WARNING_NAME else self._summary_json(d)
            fam, src, dst, sport, dport, pid, comm, ts_ns, sock = self._json_common(d)
            state = STATE_NAMES[d["new_state"]]
            uid = d.get("uid")
            uid = uid if type(uid) is int and 0 <= uid <= MAX_U32 else None
            user, cgroup, unit, container, pod = _json_names(d)
            reason = d.get("reason") if kind == EV_DROP else None
            if kind == EV_DROP and not (isinstance(reason, str) and REASON.fullmatch(reason)):
                raise ValueError("bad drop reason")
        except (ValueError, KeyError, TypeError, AttributeError, OverflowError, RecursionError):
            # RecursionError: deeply nested JSON ('{"a":[[[[...'); never shown, so no text from the line is kept
            raise Malformed("bad JSON event") from None
        return LoggedEvent(ts_ns, kind, fam, src, sport, dst, dport, pid, comm, state, sock, uid, user, cgroup, unit,
                           container, pod, reason=reason)

    def _summary_json(self, d):
        """A JSON line's object with "event": "connection" -> LoggedConnection, or raises Malformed."""
        try:
            if d["event"] != CONNECTION_NAME:
                raise ValueError("unknown event")
            fam, src, dst, sport, dport, pid, comm, ts_ns, sock = self._json_common(d)
            uid, sent, received, retrans = d["uid"], d["bytes_sent"], d["bytes_received"], d["retransmits"]
            if (not all(type(v) is int and 0 <= v for v in (uid, sent, received, retrans))
                    or max(uid, retrans) > MAX_U32 or max(sent, received) > MAX_U64):
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
            times = [_json_us(d[k]) for k in ("duration_ms", "handshake_ms", "rtt_ms")]
            user, cgroup, unit, container, pod = _json_names(d)
            drops, reasons = d.get("drops", 0), d.get("drop_reasons", {})
            if (type(drops) is not int or not 0 <= drops <= MAX_U32 or type(reasons) is not dict or len(reasons) > 8
                    or not all(isinstance(k, str) and REASON.fullmatch(k) and type(n) is int for k, n in reasons.items())):
                raise ValueError("bad drops")
        except (ValueError, KeyError, TypeError, AttributeError, OverflowError):
            raise Malformed("bad JSON summary") from None
        return LoggedConnection(ts_ns, fam, src, sport, dst, dport, pid, comm, result, direction, times[0], times[1],
                                sent, received, retrans, times[2], uid, states, cut, complete, sock, None, user,
                                cgroup, unit, container, pod, drops, next(iter(reasons), None))
