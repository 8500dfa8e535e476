"""`socket-snoop report FILE...`: lifecycles and a summary from logs the monitor wrote.

Reads text lines (the seed format) and JSON lines, plain or gzip-compressed
(rotated files), in any mix. Files are read in the order of their first
timestamp, so `report /var/log/socket_monitor.log*` works whatever order the
shell gives. A line that is not one of ours is counted and skipped.
"""

import argparse
import datetime
import gzip
import ipaddress
import json
import re
import sys
from collections import Counter, namedtuple

from .errors import SnoopError
from .events import (
    EVENT_NAMES,
    EVENT_TITLES,
    RESET_RECEIVED,
    RESET_SENT,
    RETRANSMIT,
    STATE_CHANGE,
    Event,
    describe_state,
    state_name,
)
from .filters import parse_cidr, parse_comm, parse_pid, parse_port, parse_state
from .fmt import Clock, JsonFormatter, TextFormatter, escape_comm, format_addr, format_endpoint
from .tracker import Tracker

TCP_ESTABLISHED, TCP_CLOSE = 1, 7
MONTHS = {m: i for i, m in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)}
TITLE_KINDS = {title: kind for kind, title in EVENT_TITLES.items()}
NAME_KINDS = {name: kind for kind, name in EVENT_NAMES.items()}
DESCRIPTIONS = {describe_state(n): n for n in range(32)}
STATE_NAMES = {state_name(n): n for n in range(32)}
TEXT_LINE = re.compile(
    r"(?P<ts>[A-Z][a-z]{2} \d{2} \d{4} \d{2}:\d{2}:\d{2})\.(?P<ms>\d{3}) "
    r"(?P<title>State Change|Retransmission|Reset Sent|Reset Received): "
    r"SRC=(?P<src>\S+) DST=(?P<dst>\S+) PID=(?P<pid>\d+) COMM=(?P<comm>\S+) STATE=(?P<state>.+?)\s*$"
)
JSON_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z")
_ESCAPE = re.compile(r"\\x([0-9a-fA-F]{2})")

# one logged event: src/dst ipaddress objects, comm the raw name, sock the socket address if logged (JSON)
Record = namedtuple("Record", "ts_ns kind family src sport dst dport pid comm newstate sock")


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


def parse_endpoint(text):
    """'10.0.0.1:80' -> (4, IPv4Address, 80); '[2001:db8::1]:443' -> (6, IPv6Address, 443)."""
    if text.startswith("["):
        addr, sep, port = text[1:].partition("]:")
        family, cls = 6, ipaddress.IPv6Address
    else:
        addr, sep, port = text.rpartition(":")
        family, cls = 4, ipaddress.IPv4Address
    if not sep or not port.isdigit() or int(port) > 65535:
        raise Malformed(f"bad endpoint {text!r}")
    try:
        return family, cls(addr), int(port)
    except ValueError:
        raise Malformed(f"bad address {addr!r}") from None


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

    @staticmethod
    def _text_seconds(stamp):
        mon, day, year, hms = stamp.split(" ")
        h, m, s = hms.split(":")
        try:
            return datetime.datetime(int(year), MONTHS[mon], int(day), int(h), int(m), int(s)).timestamp()
        except (KeyError, ValueError):
            raise Malformed(f"bad time {stamp!r}") from None

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
        sec = self._cached(self._secs, m["ts"], self._text_seconds)
        fam, src, sport = self.endpoint(m["src"])
        fam2, dst, dport = self.endpoint(m["dst"])
        if fam != fam2:
            raise Malformed("SRC and DST of different families")
        state = DESCRIPTIONS.get(m["state"])
        if state is None:
            raise Malformed(f"unknown state {m['state']!r}")
        ts_ns = int(sec) * 1_000_000_000 + int(m["ms"]) * 1_000_000
        return Record(ts_ns, TITLE_KINDS[m["title"]], fam, src, sport, dst, dport, int(m["pid"]),
                      unescape_comm(m["comm"]), state, None)

    def parse_json(self, line):
        try:
            d = json.loads(line)
            kind = NAME_KINDS[d["event"]]
            fam = d["family"]
            cls = {4: ipaddress.IPv4Address, 6: ipaddress.IPv6Address}[fam]
            src, dst = cls(d["src"]), cls(d["dst"])
            sport, dport, pid = d["sport"], d["dport"], d["pid"]
            if not all(type(v) is int and 0 <= v for v in (sport, dport, pid)) or max(sport, dport) > 65535:
                raise ValueError("bad number")
            state = STATE_NAMES[d["new_state"]]
            comm = d["comm"]
            if not isinstance(comm, str):
                raise ValueError("bad comm")
            stamp = d["timestamp"]
            if not isinstance(stamp, str) or not JSON_TIME.fullmatch(stamp):
                raise ValueError("bad timestamp")
            sec = self._cached(self._secs, stamp[:19] + "Z", lambda k: datetime.datetime.fromisoformat(k).timestamp())
            frac = stamp[19:].rstrip("Z")
            ms = int(frac[1:4].ljust(3, "0")) if frac.startswith(".") else 0
            sock = int(d["sock"], 16) if isinstance(d.get("sock"), str) else None
            sock = sock or None
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise Malformed(f"bad JSON event: {e}") from None
        return Record(int(sec) * 1_000_000_000 + ms * 1_000_000, kind, fam, src, sport, dst, dport, pid,
                      comm.encode("utf-8", "backslashreplace"), state, sock)


def parse_time(value, option):
    """'YYYY-MM-DD HH:MM[:SS]' (local time) or ISO 8601 -> epoch nanoseconds."""
    text = value.strip()
    try:
        dt = datetime.datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    except ValueError:
        raise SnoopError(f"socket-snoop report: {option}: invalid time {value!r}: "
                         "e.g. '2024-12-30 22:05', '2024-12-30 22:05:25' or 2024-12-30T21:05:25Z", 2) from None
    return int(dt.timestamp() * 1e9)  # naive: local time


# -- files --------------------------------------------------------------------
def open_log(path):
    """Text lines of a log, gunzipped if it is gzip (by its magic bytes, whatever its name)."""
    with open(path, "rb") as f:
        magic = f.read(2)
    if magic == b"\x1f\x8b":
        return gzip.open(path, "rt", encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")


def first_timestamp(path, parser, limit=1000):
    """The first parsable line's time, to order the files; None if there is none near the start."""
    try:
        with open_log(path) as f:
            for n, line in enumerate(f):
                if n >= limit:
                    break
                try:
                    return parser.parse(line).ts_ns
                except Malformed:
                    continue
    except (OSError, EOFError, ValueError):
        pass
    return None


# -- the analysis -------------------------------------------------------------
class Report:
    def __init__(self, filters, since=None, until=None, max_conns=100000):
        self.filters = filters
        self.since, self.until = since, until
        self.tracker = Tracker(max_conns=max_conns)
        self.ids = {}  # (local, remote) -> connection id, for logs without socket addresses
        self.pending = {}  # (remote, pid) -> connection id of a SYN_SENT line with local port 0
        self.seq = 0
        self.events = 0
        self.filtered = 0
        self.malformed = 0
        self.first_malformed = None
        self.first = self.last = None
        self.kinds = Counter()
        self.states = Counter()
        self.procs = {}  # (pid, comm) -> Counter
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
        if not self.filters.match(r.kind, r.family, r.src, r.sport, r.dst, r.dport, r.pid, r.comm, r.newstate):
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
        if proc is None:
            proc = self.procs[(r.pid, comm)] = Counter()
        if r.kind == STATE_CHANGE:
            self.states[r.newstate] += 1
            if r.newstate == TCP_ESTABLISHED:
                proc["established"] += 1
                self.remote_established[remote] += 1
        elif r.kind == RETRANSMIT:
            proc["retransmits"] += 1
        else:
            proc["resets"] += 1
            self.resets[(r.kind, local, str(r.dst), r.pid, comm)] += 1
        self.remotes[remote] += 1
        self.track(r, local, remote)

    def _conn_id(self, r, local, remote):
        """A made-up socket address for a text line's connection: its 4-tuple, and a SYN_SENT line with
        local port 0 (connect() before the kernel chose the port) joined to the next line of the same
        remote end and process that has the port."""
        tup = (local, remote)
        if r.sport == 0:
            cid = self.pending.get((remote, r.pid))
            if cid is None:
                self.seq += 1
                cid = self.pending[(remote, r.pid)] = self.seq
        else:
            cid = self.ids.get(tup)
            if cid is None:
                cid = self.pending.pop((remote, r.pid), None)
                if cid is None:
                    self.seq += 1
                    cid = self.seq
                self.ids[tup] = cid
        if r.kind == STATE_CHANGE and r.newstate == TCP_CLOSE:  # the next one of this 4-tuple is new
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
        self.tracker.add(Event(r.ts_ns, sk, 0, _packed(r.src), _packed(r.dst), r.pid, 0, r.sport, r.dport,
                               r.family, r.kind, 0, r.newstate, 0, 0, r.comm))

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
            "remotes": [{"remote": ep, "events": n, "established": self.remote_established[ep]}
                        for ep, n in self.remotes.most_common(top)],
            "resets": [{"event": EVENT_NAMES[kind], "local": local, "remote_addr": raddr, "pid": pid,
                        "comm": comm, "count": n}
                       for (kind, local, raddr, pid, comm), n in self.resets.most_common(top)],
        }

    def text(self, top, lifecycles, stamp):
        out = []
        if lifecycles:
            out += list(self.tracker.report(stamp))
            out.append(f"Connections: {len(self.tracker)} shown, {self.tracker.left_out} not shown")
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
        out.append(f"Remote endpoints (top {top}): events, established")
        for r in s["remotes"]:
            out.append(f"  {r['remote']}: {r['events']} events, {r['established']} established")
        out.append(f"Resets (top {top}): {self.kinds[RESET_SENT]} sent, {self.kinds[RESET_RECEIVED]} received")
        for r in s["resets"]:
            out.append(f"  {EVENT_TITLES[NAME_KINDS[r['event']]]}: {r['local']} <-> {r['remote_addr']} "
                       f"PID={r['pid']} COMM={r['comm']}: {r['count']}")
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
    """One of tracker.connections() ([first row, last row, steps, retransmits, dropped]) as a dict."""
    first, last, steps, retransmits, dropped = c
    fam = last[9]
    owner = last if last[5] else first
    return {
        "src": format_endpoint(fam, format_addr(fam, last[3]), last[7]),
        "dst": format_endpoint(fam, format_addr(fam, last[4]), last[8]),
        "pid": owner[5], "comm": escape_comm(owner[15]), "first": stamp(first[0]),
        "duration_s": round((last[0] - first[0]) / 1e9, 3), "retransmits": retransmits,
        "steps": [{"time": stamp(ts), "what": describe_state(new) if typ == STATE_CHANGE else EVENT_TITLES[typ]}
                  for ts, typ, new in steps],
        "steps_not_kept": dropped,
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
    p.add_argument("--top", type=int, default=10, metavar="N", help="rows in each summary table (default 10)")
    p.add_argument("--no-lifecycles", action="store_true", help="the summary only")
    p.add_argument("--max-tracked", type=int, default=100000, metavar="N",
                   help="connections kept for the lifecycles, the most recent (default 100000)")
    f = p.add_argument_group("filters (as the monitor's: values of one kind OR-ed, kinds AND-ed)")
    for flags, parse, kw in (
        (("-p", "--pid"), parse_pid, {}), (("-c", "--comm"), parse_comm, {}), (("-P", "--port"), parse_port, {}),
        (("--src-port",), parse_port, {}), (("--dst-port",), parse_port, {}), (("-a", "--addr"), parse_cidr, {}),
        (("--src",), parse_cidr, {}), (("--dst",), parse_cidr, {}), (("-s", "--state"), parse_state, {}),
    ):
        f.add_argument(*flags, action="append", default=[], **kw,
                       type=lambda v, parse=parse, opt=flags[-1]: parse(v, opt))
    f.add_argument("-4", "--ipv4", action="store_true", help="IPv4 only")
    f.add_argument("-6", "--ipv6", action="store_true", help="IPv6 only")
    f.add_argument("--no-retransmits", action="store_true", help="no retransmission events")
    f.add_argument("--no-resets", action="store_true", help="no reset events")
    p.set_defaults(include_unspecified=True)  # the log has what the monitor was told to log
    return p


def run(opts, out):
    from .cli import filters_from
    if opts.top < 1 or opts.max_tracked < 1:
        raise SnoopError("socket-snoop report: --top and --max-tracked take a positive number", 2)
    filters = filters_from(opts)
    report = Report(filters, opts.since, opts.until, opts.max_tracked)
    parser = Parser()
    for path in opts.files:  # all readable before any work
        try:
            open(path, "rb").close()
        except OSError as e:
            raise SnoopError(f"socket-snoop report: {path}: {e.strerror}", 2) from None
    firsts = [first_timestamp(path, parser) for path in opts.files]
    order = sorted(range(len(opts.files)), key=lambda i: (firsts[i] is None, firsts[i] or 0, i))
    status = 0
    for path in (opts.files[i] for i in order):
        n = 0
        try:
            with open_log(path) as f:
                for n, line in enumerate(f, 1):
                    try:
                        r = parser.parse(line)
                    except Malformed:
                        if line.strip():
                            report.bad(f"{path}:{n}")
                        continue
                    report.add(r)
        except (OSError, EOFError, gzip.BadGzipFile) as e:
            print(f"socket-snoop report: {path}: unreadable after line {n}: {e}", file=sys.stderr)
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
