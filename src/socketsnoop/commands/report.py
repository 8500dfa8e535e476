"""`socket-snoop report FILE...`: lifecycles and a summary from logs the monitor wrote.

Reads text lines (the seed format) and JSON lines, plain or gzip-compressed
(rotated files), in any mix. Files are read in the order of their first
timestamp, so `report /var/log/socket_monitor.log*` works whatever order the
shell gives. A line that is not one of ours is counted and skipped.

Nothing read from a file reaches the output as it was read: addresses are
checked (digits, hex, ':' and '.', no IPv6 scope id), COMM is printed in the
monitor's escaped form, and file names are escaped. Memory is bounded
whatever the input: lines over MAX_LINE characters are skipped without being
held whole, and each table keeps at most TABLE_LIMIT keys (what it leaves
out is counted and reported).
"""

import argparse
import datetime
import gzip
import ipaddress
import json
import re
import sys
import zlib
from collections import Counter, OrderedDict, namedtuple

from ..errors import SnoopError
from ..kernel.abi import EV_RESET_RECEIVED, EV_RESET_SENT, EV_RETRANSMIT, EV_STATE
from ..output.formats import Clock, JsonFormatter, TextFormatter, escape_comm, escape_token, format_endpoint
from ..output.tracker import Tracker
from ..pipeline.decode import (
    EVENT_NAMES,
    EVENT_TITLES,
    TCP_CLOSE,
    TCP_ESTABLISHED,
    describe_state,
    make_row,
    state_name,
)
from .options import add_filter_args, filters_from

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
    r"(?: POD=(?P<pod>\S+))?\s*$",
    re.ASCII,
)
CONTAINER_ID = re.compile(r"[0-9a-f]{12,64}", re.ASCII)
MAX_NAME = 4096  # characters of a logged name (user, unit, cgroup, pod, exe) that the report takes
JSON_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z", re.ASCII)
_ESCAPE = re.compile(r"\\x([0-9a-fA-F]{2})")
_JSON_BYTE = re.compile(rb"\\x([89a-fA-F][0-9a-fA-F])")  # what comm_text's backslashreplace makes of a non-UTF-8 byte
ADDR_CHARS = re.compile(r"[0-9a-fA-F:.]{1,45}", re.ASCII)  # no scope id ('%...'), nothing to drive a terminal
MAX_LINE = 64 * 1024  # characters; a longer line is malformed
TABLE_LIMIT = 100_000  # distinct keys per summary table and per join map
MAX_PID = 2**32 - 1
MAX_COUNT = 10_000_000  # --top, --max-tracked
# times a line may have: years 2 to 9998, so that every time zone can print them (local text, UTC JSON)
MIN_SEC = int(datetime.datetime(2, 1, 1, tzinfo=datetime.timezone.utc).timestamp())
MAX_SEC = int(datetime.datetime(9999, 1, 1, tzinfo=datetime.timezone.utc).timestamp()) - 1

# one logged event: src/dst ipaddress objects, comm the raw name, sock the socket address if logged (JSON); the
# owner's names where the log has them (JSON lines, text lines written with --context), else None
Record = namedtuple("Record", "ts_ns kind family src sport dst dport pid comm newstate sock uid user cgroup unit "
                              "container pod", defaults=(None,) * 6)


def _name(value):
    """A logged name (JSON): a string of sane length, else None (left out, as unknown)."""
    return value if isinstance(value, str) and 0 < len(value) <= MAX_NAME else None


def _text_name(value):
    """A --context value of a text line (escape_token's form) back to the name."""
    return unescape_comm(value).decode("utf-8", "surrogateescape") if value else None


class Malformed(ValueError):
    pass


# -- parsing ------------------------------------------------------------------
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
    """'10.0.0.1:80' -> (4, IPv4Address, 80); '[2001:db8::1]:443' -> (6, IPv6Address, 443)."""
    if text.startswith("["):
        addr, sep, port = text[1:].partition("]:")
        family = 6
    else:
        addr, sep, port = text.rpartition(":")
        family = 4
    if not sep or not (port.isascii() and port.isdigit()) or len(port) > 5 or int(port) > 65535:
        raise Malformed("bad endpoint")
    return family, parse_addr(family, addr), int(port)


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

    def endpoint(self, text):
        return self._cached(self._endpoints, text, parse_endpoint)

    def parse(self, line):
        """A Record, or raises Malformed."""
        s = line.lstrip()
        if s.startswith("{"):
            return self.parse_json(s)
        return self.parse_text(line)

    def parse_text(self, line):
        m = TEXT_LINE.match(line)
        if not m:
            raise Malformed("not a socket-snoop line")
        sec = self._seconds(m["ts"], self._text_seconds)
        fam, src, sport = self.endpoint(m["src"])
        fam2, dst, dport = self.endpoint(m["dst"])
        if fam != fam2:
            raise Malformed("SRC and DST of different families")
        state = DESCRIPTIONS.get(m["state"])
        if state is None:
            raise Malformed("unknown state")
        ts_ns = int(sec) * 1_000_000_000 + int(m["ms"]) * 1_000_000
        return Record(ts_ns, TITLE_KINDS[m["title"]], fam, src, sport, dst, dport, int(m["pid"]),
                      unescape_comm(m["comm"]), state, None, None, _text_name(m["user"]), None,
                      _text_name(m["unit"]), m["container"], _text_name(m["pod"]))

    def parse_json(self, line):
        try:
            d = json.loads(line)
            kind = NAME_KINDS[d["event"]]
            fam = d["family"]
            if type(fam) is not int or fam not in (4, 6):
                raise ValueError("bad family")
            src, dst = parse_addr(fam, d["src"]), parse_addr(fam, d["dst"])
            sport, dport, pid = d["sport"], d["dport"], d["pid"]
            if (not all(type(v) is int and 0 <= v for v in (sport, dport, pid)) or max(sport, dport) > 65535
                    or pid > MAX_PID):
                raise ValueError("bad number")
            state = STATE_NAMES[d["new_state"]]
            comm = d["comm"]
            if not isinstance(comm, str):
                raise ValueError("bad comm")
            stamp = d["timestamp"]
            if not isinstance(stamp, str) or not JSON_TIME.fullmatch(stamp):
                raise ValueError("bad timestamp")
            sec = self._seconds(stamp[:19] + "Z", lambda k: datetime.datetime.fromisoformat(k).timestamp())
            frac = stamp[19:].rstrip("Z")
            ms = int(frac[1:4].ljust(3, "0")) if frac.startswith(".") else 0
            sock = int(d["sock"], 16) if isinstance(d.get("sock"), str) else None
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


def parse_time(value, option):
    """'YYYY-MM-DD HH:MM[:SS]' (local time) or ISO 8601 -> epoch nanoseconds."""
    text = value.strip()
    formats = ("accepted: 'YYYY-MM-DD', 'YYYY-MM-DD HH:MM[:SS]' (local time) or ISO 8601 with a zone "
               "(e.g. 2024-12-30T21:05:25Z)")
    try:
        dt = datetime.datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    except ValueError:
        raise SnoopError(f"socket-snoop report: {option}: invalid time {value!r}: {formats}", 2) from None
    try:
        return int(dt.timestamp() * 1e9)  # naive: local time
    except (ValueError, OverflowError, OSError):  # e.g. 0001-01-01 in local time: before year 1 in UTC
        raise SnoopError(f"socket-snoop report: {option}: time {value!r} out of range; {formats}", 2) from None


def count_option(option):
    """--top, --max-tracked: a whole number from 1 to MAX_COUNT."""
    def conv(value):
        try:
            n = int(value)
        except ValueError:
            n = None
        if n is None or not 1 <= n <= MAX_COUNT:
            raise SnoopError(f"socket-snoop report: {option}: invalid value {value!r}: a positive whole number "
                             f"up to {MAX_COUNT}", 2)
        return n
    return conv


def show_path(path):
    """A file name for a message: as it is if printable, else quoted with its non-printables escaped."""
    return path if path.isprintable() else ascii(path)


# -- files --------------------------------------------------------------------
def open_log(path):
    """Text lines of a log, gunzipped if it is gzip (by its magic bytes, whatever its name)."""
    with open(path, "rb") as f:
        magic = f.read(2)
    if magic == b"\x1f\x8b":
        return gzip.open(path, "rt", encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")


# what a damaged file raises while it is read (zlib.error: a corrupted .gz)
READ_ERRORS = (OSError, EOFError, gzip.BadGzipFile, zlib.error)


def read_lines(f, max_line=MAX_LINE, max_chars=None):
    """The file's lines; a line over max_line characters (its newline not counted) comes as None, read in
    pieces of at most max_line + 1 characters dropped as they come: a file without newlines takes no memory.
    max_chars: stop after about that many characters."""
    readline = f.readline
    size = max_line + 1
    total = 0
    while max_chars is None or total < max_chars:
        line = readline(size)
        if not line:
            return
        total += len(line)
        if len(line) < size or line.endswith("\n"):
            yield line
            continue
        while line and not line.endswith("\n"):  # the rest of the long line, dropped
            if max_chars is not None and total >= max_chars:
                return
            line = readline(size)
            total += len(line)
        yield None


def first_timestamp(path, parser, limit=1000):
    """The first parsable line's time, to order the files; None if there is none near the start."""
    try:
        with open_log(path) as f:
            for n, line in enumerate(read_lines(f, max_chars=limit * 1024)):
                if n >= limit:
                    break
                if line is None:
                    continue
                try:
                    return parser.parse(line).ts_ns
                except Malformed:
                    continue
    except (*READ_ERRORS, ValueError):
        pass
    return None


# -- the analysis -------------------------------------------------------------
class Report:
    """Bounded: each summary table keeps at most table_limit keys (the first ones seen; the events of the
    others are counted in left_out), the join maps at most max(table_limit, max_conns) (the oldest entry goes),
    and the tracker at most max_conns connections closed and as many open."""

    def __init__(self, filters, since=None, until=None, max_conns=100000, table_limit=TABLE_LIMIT):
        self.filters = filters
        self.since, self.until = since, until
        self.tracker = Tracker(max_conns=max_conns)
        self.table_limit = table_limit
        self.join_limit = max(table_limit, max_conns)
        self.left_out = Counter()  # table -> events it did not count (it was full); "joins" -> entries dropped
        self.ids = OrderedDict()  # (local, remote) -> connection id, for logs without socket addresses
        self.pending = OrderedDict()  # (remote, pid) -> connection id of a SYN_SENT line with local port 0
        self.seq = 0
        self.events = 0
        self.filtered = 0
        self.malformed = 0
        self.first_malformed = None
        self.first = self.last = None
        self.kinds = Counter()
        self.states = Counter()
        self.procs = {}  # (pid, comm) -> Counter
        # the owner's names, where the logs carry them: unit, container (12 hex), user -> Counter
        self.owners = {"units": {}, "containers": {}, "users": {}}
        self.remotes = Counter()
        self.remote_established = Counter()
        self.resets = Counter()

    def bad(self, where):
        self.malformed += 1
        if self.first_malformed is None:
            self.first_malformed = where

    def add(self, r):
        if (self.since is not None and r.ts_ns < self.since) or (self.until is not None and r.ts_ns > self.until):
            self.filtered += 1
            return
        if not self.filters.match(r.kind, r.family, r.src, r.sport, r.dst, r.dport, r.pid, r.comm, r.newstate,
                                  r.uid, r.user, r.cgroup, r.unit, r.container):
            self.filtered += 1
            return
        self.events += 1
        if self.first is None or r.ts_ns < self.first:
            self.first = r.ts_ns
        if self.last is None or r.ts_ns > self.last:
            self.last = r.ts_ns
        local = format_endpoint(r.family, r.src, r.sport)
        remote = format_endpoint(r.family, r.dst, r.dport)
        comm = escape_comm(r.comm)
        self.kinds[r.kind] += 1
        proc = self.procs.get((r.pid, comm))
        if proc is None and self._room(self.procs, "processes"):
            proc = self.procs[(r.pid, comm)] = Counter()
        groups = [proc]
        user = r.user if r.user is not None else (str(r.uid) if r.uid is not None else None)
        for table, key in (("units", r.unit), ("containers", r.container and r.container[:12]), ("users", user)):
            if key is not None:
                key = escape_token(key)
                counts = self.owners[table].get(key)
                if counts is None and self._room(self.owners[table], table):
                    counts = self.owners[table][key] = Counter()
                if counts is not None:
                    counts["events"] += 1
                    groups.append(counts)
        count_remote = remote in self.remotes or self._room(self.remotes, "remotes")
        if count_remote:
            self.remotes[remote] += 1
        if r.kind == EV_STATE:
            self.states[r.newstate] += 1
            if r.newstate == TCP_ESTABLISHED:
                for g in groups:
                    if g is not None:
                        g["established"] += 1
                if count_remote:
                    self.remote_established[remote] += 1
        elif r.kind == EV_RETRANSMIT:
            for g in groups:
                if g is not None:
                    g["retransmits"] += 1
        else:
            for g in groups:
                if g is not None:
                    g["resets"] += 1
            key = (r.kind, local, str(r.dst), r.pid, comm)
            if key in self.resets or self._room(self.resets, "resets"):
                self.resets[key] += 1
        self.track(r, local, remote)

    def _room(self, table, name):
        """True if the table can take one more key; else the event is counted as left out of it."""
        if len(table) < self.table_limit:
            return True
        self.left_out[name] += 1
        return False

    def _join(self, table, key, cid):
        """table[key] = cid, the oldest entry dropped if the table is full."""
        if len(table) >= self.join_limit:
            table.popitem(last=False)
            self.left_out["joins"] += 1
        table[key] = cid

    def _conn_id(self, r, local, remote):
        """A made-up socket address for a text line's connection: its 4-tuple, and a SYN_SENT line with
        local port 0 (connect() before the kernel chose the port) joined to the next line of the same
        remote end and process that has the port."""
        tup = (local, remote)
        if r.sport == 0:
            cid = self.pending.get((remote, r.pid))
            if cid is None:
                self.seq += 1
                cid = self.seq
                self._join(self.pending, (remote, r.pid), cid)
        else:
            cid = self.ids.get(tup)
            if cid is None:
                cid = self.pending.pop((remote, r.pid), None)
                if cid is None:
                    self.seq += 1
                    cid = self.seq
                self._join(self.ids, tup, cid)
        if r.kind == EV_STATE and r.newstate == TCP_CLOSE:  # the next one of this 4-tuple is new
            self.ids.pop(tup, None)
            if r.sport == 0:
                self.pending.pop((remote, r.pid), None)
        return cid

    def track(self, r, local, remote):
        if r.sock is not None:
            sk = r.sock
        elif r.newstate == 0:  # a reset answering no socket: the tracker keys it by its addresses
            sk = 0
        else:
            sk = self._conn_id(r, local, remote)
        self.tracker.add(make_row(ts_ns=r.ts_ns, skaddr=sk, type=r.kind, newstate=r.newstate, pid=r.pid,
                                  sport=r.sport, dport=r.dport, saddr=_packed(r.src), daddr=_packed(r.dst),
                                  comm=r.comm, family=r.family))

    # -- output ---------------------------------------------------------------
    def summary(self, top):
        procs = sorted(self.procs.items(), key=lambda kv: (-sum(kv[1].values()), kv[0]))
        return {
            "events": self.events,
            "filtered_out": self.filtered,
            "malformed": self.malformed,
            "first_ns": self.first,
            "last_ns": self.last,
            "by_event": {EVENT_NAMES[k]: n for k, n in sorted(self.kinds.items())},
            "states": {state_name(s): n for s, n in self.states.most_common()},
            "processes": [{"pid": pid, "comm": comm, "established": c["established"],
                           "retransmits": c["retransmits"], "resets": c["resets"]}
                          for (pid, comm), c in procs[:top]],
            **{table: [{"name": name, "events": c["events"], "established": c["established"],
                        "retransmits": c["retransmits"], "resets": c["resets"]}
                       for name, c in sorted(rows.items(), key=lambda kv: (-kv[1]["events"], kv[0]))[:top]]
               for table, rows in self.owners.items()},
            "remotes": [{"remote": ep, "events": n, "established": self.remote_established[ep]}
                        for ep, n in self.remotes.most_common(top)],
            "resets": [{"event": EVENT_NAMES[kind], "local": local, "remote_addr": raddr, "pid": pid,
                        "comm": comm, "count": n}
                       for (kind, local, raddr, pid, comm), n in self.resets.most_common(top)],
            "table_limit": self.table_limit,
            "left_out": dict(sorted(self.left_out.items())),
        }

    def left_out_lines(self):
        """What the bounded tables let go, in words; [] if nothing."""
        lo = self.left_out
        if not lo:
            return []
        parts = [f"{lo[k]} events not counted in {what}" for k, what in
                 (("processes", "Processes"), ("units", "Units"), ("containers", "Containers"), ("users", "Users"),
                  ("remotes", "Remote endpoints"), ("resets", "Resets")) if lo[k]]
        if parts:
            parts[0] = parts[0] + f" (each table keeps its first {self.table_limit} keys)"
        if lo["joins"]:
            parts.append(f"{lo['joins']} of the oldest unclosed connections forgotten for joining lines "
                         f"(more than {self.join_limit} at once): their later lines start new connections")
        return ["Left out: " + "; ".join(parts)]

    def text(self, top, lifecycles, stamp):
        out = []
        if lifecycles:
            out += list(self.tracker.report(stamp))
            out.append("")
        s = self.summary(top)
        span = (f"{stamp(self.first)} to {stamp(self.last)}" if self.first is not None else "no events")
        out.append(f"Summary: {self.events} events ({span}); {self.filtered} filtered out; "
                   f"{self.malformed} malformed lines skipped")
        out.append("  by event: " + (", ".join(f"{EVENT_TITLES[NAME_KINDS[k]]} {n}"
                                               for k, n in s["by_event"].items()) or "none"))
        out.append("  states reached: " + (", ".join(f"{k} {n}" for k, n in s["states"].items()) or "none"))
        out.append(f"Processes (top {top}): established, retransmits, resets")
        for p in s["processes"]:
            out.append(f"  PID={p['pid']} COMM={p['comm']}: {p['established']} established, "
                       f"{p['retransmits']} retransmits, {p['resets']} resets")
        for table, title in (("units", "Units"), ("containers", "Containers"), ("users", "Users")):
            if s[table]:  # only when the logs carry them (JSON, or text written with --context)
                out.append(f"{title} (top {top}): events, established, retransmits, resets")
                for g in s[table]:
                    out.append(f"  {g['name']}: {g['events']} events, {g['established']} established, "
                               f"{g['retransmits']} retransmits, {g['resets']} resets")
        out.append(f"Remote endpoints (top {top}): events, established")
        for r in s["remotes"]:
            out.append(f"  {r['remote']}: {r['events']} events, {r['established']} established")
        out.append(f"Resets (top {top}): {self.kinds[EV_RESET_SENT]} sent, {self.kinds[EV_RESET_RECEIVED]} received")
        for r in s["resets"]:
            out.append(f"  {EVENT_TITLES[NAME_KINDS[r['event']]]}: {r['local']} <-> {r['remote_addr']} "
                       f"PID={r['pid']} COMM={r['comm']}: {r['count']}")
        out += self.left_out_lines()
        return out

    def json(self, top, lifecycles, stamp):
        """stamp: RFC 3339 UTC, as the monitor's JSON lines."""
        s = self.summary(top)
        for k in ("first_ns", "last_ns"):
            s[k.replace("_ns", "")] = stamp(s.pop(k)) if s[k] is not None else None
        if lifecycles:
            s["connections"] = [_connection(c, stamp) for c in self.tracker.connections()]
            s["connections_not_kept"] = self.tracker.left_out
        return json.dumps(s, indent=2)


def _packed(ip):
    return ip.packed.ljust(16, b"\0")


def _connection(c, stamp):
    """One of tracker.connections() as a dict for --json."""
    d = Tracker.describe(c)
    return {
        "src": d["src"], "dst": d["dst"], "pid": d["pid"], "comm": d["comm"], "first": stamp(d["first_ns"]),
        "duration_s": round((d["last_ns"] - d["first_ns"]) / 1e9, 3), "retransmits": d["retransmits"],
        "steps": [{"time": stamp(ts), "what": what} for ts, what in d["steps"]],
        "steps_not_kept": d["steps_not_kept"],
    }


def build_parser():
    p = argparse.ArgumentParser(
        prog="socket-snoop report",
        description="Connection lifecycles and a summary from socket-snoop logs (text or JSON lines, "
                    "rotated .gz files too). Malformed lines are counted and skipped.",
    )
    p.error = lambda message: p.exit(2, f"{p.prog}: {message} (see {p.prog} --help)\n")
    p.add_argument("files", nargs="+", metavar="FILE", help="log files, e.g. /var/log/socket_monitor.log*")
    p.add_argument("--since", type=lambda v: parse_time(v, "--since"), metavar="TIME",
                   help="events at or after TIME: 'YYYY-MM-DD HH:MM[:SS]' local time, or ISO 8601")
    p.add_argument("--until", type=lambda v: parse_time(v, "--until"), metavar="TIME", help="events at or before TIME")
    p.add_argument("--json", action="store_true", help="one JSON document instead of text")
    p.add_argument("--top", type=count_option("--top"), default=10, metavar="N",
                   help="rows in each summary table (default 10)")
    p.add_argument("--no-lifecycles", action="store_true", help="the summary only")
    p.add_argument("--max-tracked", type=count_option("--max-tracked"), default=100000, metavar="N",
                   help=f"connections kept for the lifecycles, the most recent (default 100000, at most {MAX_COUNT})")
    add_filter_args(p.add_argument_group("filters (as the monitor's: values of one kind OR-ed, kinds AND-ed)"))
    p.set_defaults(include_unspecified=True)  # the log has what the monitor was told to log
    return p


def run(opts, out):
    for option, value in (("--top", opts.top), ("--max-tracked", opts.max_tracked)):
        count_option(option)(value)  # also when opts were made without the parser
    filters = filters_from(opts)
    report = Report(filters, opts.since, opts.until, opts.max_tracked)
    parser = Parser()
    for path in opts.files:  # all readable before any work
        try:
            open(path, "rb").close()
        except OSError as e:
            raise SnoopError(f"socket-snoop report: {show_path(path)}: {e.strerror}", 2) from None
    firsts = [first_timestamp(path, parser) for path in opts.files]
    order = sorted(range(len(opts.files)), key=lambda i: (firsts[i] is None, firsts[i] or 0, i))
    status = 0
    for path in (opts.files[i] for i in order):
        n = 0
        try:
            with open_log(path) as f:
                for n, line in enumerate(read_lines(f), 1):
                    if line is None:  # too long
                        report.bad(f"{show_path(path)}:{n}")
                        continue
                    try:
                        r = parser.parse(line)
                    except Malformed:
                        if line.strip():
                            report.bad(f"{show_path(path)}:{n}")
                        continue
                    report.add(r)
        except READ_ERRORS as e:
            why = e.strerror if isinstance(e, OSError) and e.strerror else str(e) or type(e).__name__
            print(f"socket-snoop report: {show_path(path)}: unreadable after line {n}: {ascii(why)[1:-1]}",
                  file=sys.stderr)
            status = 1
    clock = Clock()
    clock.offset_ns = 0  # the times here are epoch nanoseconds already
    lifecycles = not opts.no_lifecycles
    if opts.json:
        out.write(report.json(opts.top, lifecycles, JsonFormatter(clock).stamp) + "\n")
    else:
        out.write("\n".join(report.text(opts.top, lifecycles, TextFormatter(clock).stamp)) + "\n")
    if report.malformed:
        print(f"socket-snoop report: {report.malformed} malformed lines skipped (the first at "
              f"{report.first_malformed})", file=sys.stderr)
    return status


def main(argv):
    opts = build_parser().parse_args(argv)
    try:
        return run(opts, sys.stdout)
    except BrokenPipeError:
        return 0
