"""Format: events to the seed's log lines, or to JSON lines.

Text (the seed's /var/log/socket_monitor.log, which users parse):
  Dec 30 2024 22:05:25.454 State Change: SRC=10.100.10.150:39134 DST=10.100.10.202:8000 PID=30512 COMM=audacious STATE=Connection Closing (FIN_WAIT1)

Everything a process or a packet controls (COMM) is escaped, so no line can
be forged and no terminal driven. Work that repeats is done once: the time
text per millisecond, and the text of a connection side's addresses, ports
and owner, keyed by the event's identity bytes (events.IDENT), which most of
a connection's events share.
"""

import datetime
import ipaddress
import json
import time

from ..kernel.abi import IDENT_STRUCT, R_INCOMPLETE, R_STATES_CUT
from ..pipeline.decode import (
    R_CGROUP,
    R_IDENT,
    R_UID,
    DIRECTION_NAMES,
    EVENT_NAMES,
    EVENT_TITLES,
    OWNER_NAMES,
    RESULT_NAMES,
    describe_state,
    state_name,
    states_of,
)
from ..pipeline.identity import owner_key

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


def escape_token(text: str) -> str:
    """A name from outside (a user, a unit, a cgroup's) as one safe token of a text line, as COMM is."""
    return "".join(_ESCAPES[b] for b in text.encode("utf-8", "surrogateescape")) or "-"


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
    """A dict that makes a missing value with make(key), and forgets everything past a bound."""

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


_STATES = [state_name(n) for n in range(256)]
_JSON_DIRECTIONS = {n: f'"{name}"' for n, name in DIRECTION_NAMES.items()}
_HISTORY_FLAGS = R_INCOMPLETE | R_STATES_CUT
assert (R_INCOMPLETE, _HISTORY_FLAGS) == (1, 3)  # record_lines tests them as literals: the fastest


def history(packed, n, flags):
    """A record's states as names: a leading '...' when it began before us, '...' before the last when cut."""
    names = [_STATES[s] for s in states_of(packed, n)]
    if flags & R_STATES_CUT and len(names) > 1:
        names.insert(len(names) - 1, "...")
    if flags & R_INCOMPLETE:
        names.insert(0, "...")
    return names


def millis(ns):
    """Nanoseconds as milliseconds with microsecond precision: 1.234."""
    return f"{ns / 1e6:.3f}"
# text per connection side (events.IDENT bytes): bounded, a few MB at most; under churn each entry
# serves the several events of one side of a connection, and a miss only costs making it again
IDENT_CACHE = 16384


class _Formatter:
    """What both formats share: the time as text, made once per millisecond, and the text of a
    connection's identity (addresses, ports, owner), made once per connection side.

    lines(rows) takes decoded events (events.Row tuples) and returns their lines, newline included;
    format(row) one line. Only COMM comes from outside, and it is escaped when its text is made.
    The two caches are plain dicts, read with .get() (the fastest lookup there is) and filled by
    _stamp() and _ident() on a miss, which also keep them bounded.
    """

    millis = [".%03d" % i for i in range(1000)]

    def __init__(self, clock: Clock):
        self._offset = clock.offset_ns
        self._stamps = {}  # wall-clock milliseconds -> text
        self._idents = {}  # events.IDENT bytes -> text
        self._histories = {}  # a record's (states, nstates, flags) -> text
        # IDENT -> (uid, cgroup, text with the owner's names): the uid and cgroup are checked (a hit costs no
        # tuple made per event)
        self._ctxs = {}
        self._owners = {}  # (cgroup, uid, pid, comm) -> the text of the owner's names
        self._unsettled = {}  # the same, while the cgroup is not known yet: (tree walks then, text)
        # address bytes -> text, per family (one address serves many connections)
        self._addrs = {4: _Cache(lambda raw: format_addr(4, raw)), 6: _Cache(lambda raw: format_addr(6, raw))}

    def _second(self, sec):
        raise NotImplementedError

    def _stamp(self, ms):
        if len(self._stamps) >= 4096:
            self._stamps.clear()
        text = self._stamps[ms] = self._second(ms // 1000) + self.millis[ms % 1000]
        return text

    def _ident(self, ident):
        """The text of events.IDENT bytes, made and remembered (one function: a miss is common)."""
        raise NotImplementedError

    def _owner(self, key):
        """(text of the owner's names, final) for (cgroup, uid, pid, comm): the identity is asked once per such key
        (connections of one process share it), and again while its answer is not final."""
        text = self._owners.get(key)
        if text is not None:
            return text, True
        walks = self.identity.walks() if hasattr(self.identity, "walks") else None
        unsettled = self._unsettled.get(key)
        if unsettled is not None and unsettled[0] == walks:  # no walk of the cgroup tree since: the same answer
            return unsettled[1], False
        owner, final = self.identity.owner(*key)
        text = self._owner_text(owner)
        if final or walks is not None:
            cache = self._owners if final else self._unsettled
            if len(cache) >= IDENT_CACHE:
                cache.clear()
            cache[key] = text if final else (walks, text)
        return text, final

    def _owner_text(self, owner):
        raise NotImplementedError

    def stamp(self, ts_ns: int) -> str:
        ms = (ts_ns + self._offset) // 1_000_000
        return self._stamps.get(ms) or self._stamp(ms)

    def format(self, row) -> str:
        return self.lines((row,))[0]


class TextFormatter(_Formatter):
    """The seed's line format, local time: 'Dec 30 2024 22:05:25.454 State Change: SRC=...'. With an
    identity (pipeline/identity.Identity) and context, the owner's names follow STATE=: ' USER=... UNIT=...
    CONTAINER=<12 hex> POD=...', those known, made once per (cgroup, uid, connection side)."""

    def __init__(self, clock: Clock, identity=None, context=False):
        super().__init__(clock)
        self.identity = identity
        self.bare_tails = [f" STATE={describe_state(n)}" for n in range(256)]
        if identity is not None and context:
            self.lines = self._lines_context
            self.record_lines = self._record_lines_context
        self._addrs[6] = _Cache(lambda raw: f"[{format_addr(6, raw)}]")  # as format_endpoint puts them
        self.comms = _Cache(escape_comm, 4096)
        self.tails = [f" STATE={describe_state(n)}\n" for n in range(256)]
        # ' RESULT=closed DIR=out DURATION=', by result (& 7) and direction (& 3)
        self._record_mids = [[f" RESULT={RESULT_NAMES.get(r, 'closed')} DIR={DIRECTION_NAMES.get(d, '-')} DURATION="
                              for d in range(4)] for r in range(8)]
        self.titles = {t: f" {title}: SRC=" for t, title in EVENT_TITLES.items()}

    def _second(self, sec):
        return time.strftime("%b %d %Y %H:%M:%S", time.localtime(sec))

    def _ident(self, ident):
        idents = self._idents
        if len(idents) >= IDENT_CACHE:
            idents.clear()
        pid, sport, dport, saddr, daddr, comm, family = IDENT_STRUCT.unpack(ident)
        addrs = self._addrs[family]
        text = idents[ident] = f"{addrs[saddr]}:{sport} DST={addrs[daddr]}:{dport} PID={pid} COMM={self.comms[comm]}"
        return text

    def lines(self, rows):
        stamps, stamp, idents, ident = self._stamps.get, self._stamp, self._idents.get, self._ident
        titles, tails, off = self.titles, self.tails, self._offset
        return [f"{stamps(ms := (ts + off) // 1_000_000) or stamp(ms)}{titles[typ]}{idents(who) or ident(who)}"
                f"{tails[new]}"
                for ts, _sk, _ino, _ns, typ, _old, new, _own, _fl, who, _uid, _cg in rows]

    def _owner_text(self, owner):
        return "".join(f" {name}={escape_token(value)}" for name, value in (
            ("USER", owner.user), ("UNIT", owner.unit), ("USER_UNIT", owner.user_unit),
            ("CONTAINER", owner.container and owner.container[:12]),
            ("POD", owner.pod)) if value) + "\n"

    def _context(self, who, uid, cgroup):
        """The text after STATE= for identity bytes, uid and cgroup, made and remembered once it is final."""
        text, final = self._owner(owner_key(cgroup, uid, who))
        if final:
            if len(self._ctxs) >= IDENT_CACHE:
                self._ctxs.clear()
            self._ctxs[who] = (uid, cgroup, text)
        return text

    def _lines_context(self, rows):
        stamps, stamp, idents, ident = self._stamps.get, self._stamp, self._idents.get, self._ident
        ctxs, ctx = self._ctxs.get, self._context
        titles, tails, off = self.titles, self.bare_tails, self._offset
        return [f"{stamps(ms := (ts + off) // 1_000_000) or stamp(ms)}{titles[typ]}{idents(who) or ident(who)}"
                f"{tails[new]}{(c := ctxs(who)) and c[0] == uid and c[1] == cg and c[2] or ctx(who, uid, cg)}"
                for ts, _sk, _ino, _ns, typ, _old, new, _own, _fl, who, uid, cg in rows]


    def _history(self, key):
        text = self._histories[key] = ">".join(history(*key))
        return text

    def record_lines(self, rows):
        """Connection records (abi.RECORD_ROW tuples): 'Connection Summary: SRC=... RESULT=... UID=...'.
        The owner's text is the cached one of its last event (the same identity bytes)."""
        stamps, stamp, idents, ident = self._stamps.get, self._stamp, self._idents.get, self._ident
        histories, mids, off = self._histories, self._record_mids, self._offset
        if len(histories) > 4096:
            histories.clear()
        return [
            f"{stamps(ms := (ts + off) // 1_000_000) or stamp(ms)} Connection Summary: SRC={idents(who) or ident(who)}"
            f"{mids[result & 7][direction & 3]}"
            f"{f'{(ts - start) / 1e6:.3f}ms' if start and not flags & 1 else '-'} HANDSHAKE="
            f"{f'{handshake / 1e6:.3f}ms' if handshake else '-'} SENT={sent} RECEIVED={received} RETRANSMITS={retrans}"
            f" RTT={f'{rtt / 1e3:.3f}ms' if rtt else '-'} UID={uid} STATES="
            f"{histories.get(key := (states, nstates, flags & 3)) or self._history(key)}\n"
            for (ts, _sk, start, handshake, sent, received, _cg, _ino, states, _ns, retrans, rtt, uid, result, direction,
                 nstates, flags, _own, who) in rows]


    def _record_lines_context(self, rows):
        """Records with the owner's names after STATES= (--context), as the events have them after STATE=."""
        owner = self._owner
        return [line[:-1] + owner(owner_key(row[R_CGROUP], row[R_UID], row[R_IDENT]))[0]
                for line, row in zip(TextFormatter.record_lines(self, rows), rows)]


class JsonFormatter(_Formatter):
    """One JSON object per line; the schema is in the README. Built from cached, already-safe pieces:
    only COMM comes from outside, and it goes through json.dumps. Time: RFC 3339, UTC, milliseconds."""

    millis = [".%03dZ" % i for i in range(1000)]

    def __init__(self, clock: Clock, identity=None):
        super().__init__(clock)
        self.identity = identity
        if identity is not None:
            self.lines = self._lines_identity
            self.record_lines = self._record_lines_identity
        self.comms = _Cache(lambda raw: json.dumps(comm_text(raw), ensure_ascii=True), 4096)
        self.events = {t: f'","event":"{name}","family":' for t, name in EVENT_NAMES.items()}
        self.olds = ["null"] + [f'"{_STATES[n]}"' for n in range(1, 256)]
        self.news = [f',"new_state":"{_STATES[n]}","description":"{describe_state(n)}","netns":'
                     for n in range(256)]
        self.owners = [f',"owner":"{OWNER_NAMES.get(n, "current")}","old_state":' for n in range(256)]
        # ',"owner":"socket","direction":"out","result":"closed","netns":' by owner, result, direction
        self._record_mids = [[[f',"owner":"{OWNER_NAMES.get(o, "current")}","direction":{_JSON_DIRECTIONS.get(d, "null")},'
                               f'"result":"{RESULT_NAMES.get(r, "closed")}","netns":' for d in range(4)]
                              for r in range(8)] for o in range(8)]

    def _second(self, sec):
        return datetime.datetime.fromtimestamp(sec, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")

    def _ident(self, ident):
        idents = self._idents
        if len(idents) >= IDENT_CACHE:
            idents.clear()
        pid, sport, dport, saddr, daddr, comm, family = IDENT_STRUCT.unpack(ident)
        addrs = self._addrs[family]
        text = idents[ident] = (f'{family},"src":"{addrs[saddr]}","sport":{sport},"dst":"{addrs[daddr]}",'
                                f'"dport":{dport},"pid":{pid},"comm":{self.comms[comm]}')
        return text

    def lines(self, rows):
        stamps, stamp, idents, ident = self._stamps.get, self._stamp, self._idents.get, self._ident
        events, owners, olds, news, off = self.events, self.owners, self.olds, self.news, self._offset
        return [f'{{"timestamp":"{stamps(ms := (ts + off) // 1_000_000) or stamp(ms)}{events[typ]}'
                f'{idents(who) or ident(who)}{owners[own]}{olds[old]}{news[new]}{ns},"sock":"0x{sk:x}"}}\n'
                for ts, sk, _ino, ns, typ, old, new, own, _fl, who, _uid, _cg in rows]

    def _ident_identity(self, who, uid, cgroup):
        """The identity text and the owner's names (uid, user, cgroup, unit, container, pod, exe: those
        known) for identity bytes, uid and cgroup, remembered once final."""
        names, final = self._owner(owner_key(cgroup, uid, who))
        text = (self._idents.get(who) or self._ident(who)) + names
        if final:
            ctxs = self._ctxs
            if len(ctxs) >= IDENT_CACHE:
                ctxs.clear()
            ctxs[who] = (uid, cgroup, text)
        return text

    def _owner_text(self, owner):
        return "".join(f',"{name}":{json.dumps(value, ensure_ascii=True)}'
                       for name, value in zip(owner._fields, owner) if value is not None)

    def _lines_identity(self, rows):
        stamps, stamp, idents, ident = self._stamps.get, self._stamp, self._ctxs.get, self._ident_identity
        events, owners, olds, news, off = self.events, self.owners, self.olds, self.news, self._offset
        return [f'{{"timestamp":"{stamps(ms := (ts + off) // 1_000_000) or stamp(ms)}{events[typ]}'
                f'{(c := idents(who)) and c[0] == uid and c[1] == cg and c[2] or ident(who, uid, cg)}'
                f'{owners[own]}{olds[old]}{news[new]}{ns},'
                f'"sock":"0x{sk:x}"}}\n'
                for ts, sk, _ino, ns, typ, old, new, own, _fl, who, uid, cg in rows]

    def record(self, row) -> dict:
        return json.loads(self.format(row))

    def _history(self, key):
        states, n, _flags = key  # "complete" and "states_truncated" say what the text's '...' says
        text = self._histories[key] = json.dumps([_STATES[s] for s in states_of(states, n)], separators=(",", ":"))
        return text

    def record_lines(self, rows):
        """Connection records (abi.RECORD_ROW tuples) as JSON objects with "event": "connection"."""
        stamps, stamp, idents, ident = self._stamps.get, self._stamp, self._idents.get, self._ident
        histories, mids, off = self._histories, self._record_mids, self._offset
        if len(histories) > 4096:
            histories.clear()
        return [
            f'{{"timestamp":"{stamps(ms := (ts + off) // 1_000_000) or stamp(ms)}","event":"connection","family":'
            f'{idents(who) or ident(who)}{mids[own & 7][result & 7][direction & 3]}{ns},"sock":"0x{sk:x}","uid":{uid},'
            f'"bytes_sent":{sent},"bytes_received":{received},"retransmits":{retrans},'
            f'"rtt_ms":{f"{rtt / 1e3:.3f}" if rtt else "null"},'
            f'"handshake_ms":{f"{handshake / 1e6:.3f}" if handshake else "null"},'
            f'"duration_ms":{f"{(ts - start) / 1e6:.3f}" if start and not flags & 1 else "null"},'
            f'"states":{histories.get(key := (states, nstates, flags & 3)) or self._history(key)},'
            f'"states_truncated":{"true" if flags & 2 else "false"},"complete":{"false" if flags & 1 else "true"}}}\n'
            for (ts, sk, start, handshake, sent, received, _cg, _ino, states, ns, retrans, rtt, uid, result, direction,
                 nstates, flags, own, who) in rows]

    def _record_lines_identity(self, rows):
        """Records with the owner's names (user, cgroup, unit, container, pod, exe: those known) after "uid"."""
        owner = self._owner
        out = []
        for line, row in zip(JsonFormatter.record_lines(self, rows), rows):
            names = owner(owner_key(row[R_CGROUP], row[R_UID], row[R_IDENT]))[0]
            uid = f',"uid":{row[R_UID]}'
            # the names' own "uid" key stands where the record's was; the others follow it
            out.append(line.replace(uid, names if names.startswith(uid) else uid + names, 1))
        return out


class FieldsFormatter(JsonFormatter):
    """The JSON line's keys and values as a dict per event, for outputs of structured fields (the journal,
    syslog): the same keys, in the same order, with the same values as JsonFormatter's line (test_outputs_unit.py
    checks it). Only the outputs that need it pay for it; JsonFormatter's own path is untouched."""

    def __init__(self, clock: Clock):
        super().__init__(clock)
        self._sides = {}  # events.IDENT bytes -> the identity's (key, value) pairs
        self.event_names = dict(EVENT_NAMES)
        self.owner_names = [OWNER_NAMES.get(n, "current") for n in range(256)]
        self.old_names = [None] + _STATES[1:]
        self.descriptions = [describe_state(n) for n in range(256)]

    def _side(self, ident):
        sides = self._sides
        if len(sides) >= IDENT_CACHE:
            sides.clear()
        pid, sport, dport, saddr, daddr, comm, family = IDENT_STRUCT.unpack(ident)
        addrs = self._addrs[family]
        side = sides[ident] = (("family", family), ("src", addrs[saddr]), ("sport", sport), ("dst", addrs[daddr]),
                               ("dport", dport), ("pid", pid), ("comm", comm_text(comm)))
        return side

    def fields(self, rows):
        """[{key: value}] per row, as json.loads of JsonFormatter's line would give."""
        stamps, stamp, sides, side, off = self._stamps.get, self._stamp, self._sides.get, self._side, self._offset
        out = []
        for ts, sk, _ino, ns, typ, old, new, own, _fl, who, _uid, _cg in rows:
            d = {"timestamp": stamps(ms := (ts + off) // 1_000_000) or stamp(ms), "event": self.event_names[typ]}
            d.update(sides(who) or side(who))
            d["owner"] = self.owner_names[own]
            d["old_state"] = self.old_names[old]
            d["new_state"] = _STATES[new]
            d["description"] = self.descriptions[new]
            d["netns"] = ns
            d["sock"] = f"0x{sk:x}"
            out.append(d)
        return out


class FieldsEncoder(FieldsFormatter):
    """The same fields as FieldsFormatter's, already encoded for an output: pair(key, value) -> bytes is the
    output's encoding of one field (b"" for a null value), sep what goes between two. Each piece is encoded
    once and remembered: per event type, owner kind and state, per connection side (the identity bytes),
    per millisecond and per namespace; only the socket address is encoded per event. encode(rows) gives,
    per row, (event type, the timestamp's text, the fields' bytes: all but the timestamp unless
    with_timestamp). test_outputs_unit.py checks the outputs made with it against the general path."""

    def __init__(self, clock: Clock, pair, sep=b"", with_timestamp=True):
        super().__init__(clock)
        self.pair, self.sep, self.with_timestamp = pair, sep, with_timestamp

        def piece(key, value):  # a field with the separator before it, or nothing for a null value
            b = pair(key, value)
            return sep + b if b else b""

        self.piece = piece
        self.e_events = {t: pair("event", name) for t, name in self.event_names.items()}
        self.e_owners = [piece("owner", n) for n in self.owner_names]
        self.e_olds = [piece("old_state", n) for n in self.old_names]
        self.e_news = [piece("new_state", _STATES[n]) + piece("description", self.descriptions[n]) for n in range(256)]
        self.e_sides, self.e_stamps, self.e_netns = {}, {}, {}

    def _e_side(self, ident):
        if len(self.e_sides) >= IDENT_CACHE:
            self.e_sides.clear()
        b = self.e_sides[ident] = b"".join(self.piece(k, v) for k, v in self._sides.get(ident) or self._side(ident))
        return b

    def _e_stamp(self, text):
        if len(self.e_stamps) >= 4096:
            self.e_stamps.clear()
        b = self.e_stamps[text] = self.pair("timestamp", text) + self.sep if self.with_timestamp else b""
        return b

    def _e_ns(self, ns):
        if len(self.e_netns) >= 4096:
            self.e_netns.clear()
        b = self.e_netns[ns] = self.piece("netns", ns)
        return b

    def encode(self, rows):
        stamps, stamp, off = self._stamps.get, self._stamp, self._offset
        e_stamps, e_stamp, sides, side, nss, ns_ = self.e_stamps.get, self._e_stamp, self.e_sides.get, self._e_side, \
            self.e_netns.get, self._e_ns
        events, owners, olds, news, piece = self.e_events, self.e_owners, self.e_olds, self.e_news, self.piece
        out = []
        for ts, sk, _ino, ns, typ, old, new, own, _fl, who, _uid, _cg in rows:
            text = stamps(ms := (ts + off) // 1_000_000) or stamp(ms)
            out.append((typ, text, b"".join((e_stamps(text) or e_stamp(text), events[typ], sides(who) or side(who),
                                             owners[own], olds[old], news[new], nss(ns) or ns_(ns),
                                             piece("sock", f"0x{sk:x}")))))
        return out
