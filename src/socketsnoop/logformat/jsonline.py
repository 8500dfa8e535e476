"""The JSON line: one object per line, its keys in the order of EVENT_KEYS (events) and CONNECTION_KEYS
(connection summaries), the owner's names (pipeline.identity.Owner's fields, those known) after "comm" of an
event and in place of "uid" of a connection. Time: RFC 3339, UTC, milliseconds.

Built from cached, already-safe pieces: only COMM and the owner's names come from outside, and they go
through json.dumps (escape.comm_text first for COMM). fields.py gives the same keys and values as dicts;
reader.py reads the lines back.
"""

import datetime
import json
from itertools import compress
from operator import itemgetter

from ..kernel.abi import IDENT_HEAD
from ..pipeline.decode import IDENT, R_CGROUP, R_IDENT, R_UID, states_of
from ..pipeline.identity import owner_key
from .base import STATES, Cache, Clock, LineFormatter, IDENT_CACHE
from .escape import comm_text
from .words import CONNECTION_NAME, DIRECTION_NAMES, EVENT_NAMES, OWNER_NAMES, RESULT_NAMES, describe_state, drop_reasons

IDENT_KEYS = ("family", "src", "sport", "dst", "dport", "pid", "comm")
EVENT_KEYS = ("timestamp", "event", *IDENT_KEYS, "owner", "old_state", "new_state", "description", "netns", "sock")
CONNECTION_KEYS = ("timestamp", "event", *IDENT_KEYS, "owner", "direction", "result", "netns", "sock", "uid",
                   "bytes_sent", "bytes_received", "retransmits", "rtt_ms", "handshake_ms", "duration_ms", "states",
                   "states_truncated", "complete")
DROP_KEYS = ("drops", "drop_reasons")  # after CONNECTION_KEYS, on a record whose connection had drops


def drop_json(drops, raw):
    """',"drops":N,"drop_reasons":{"NAME":n,...}': a record's drops (names are the kernel's, safe as they are)."""
    return f',"drops":{drops},"drop_reasons":{json.dumps(drop_reasons(raw), separators=(",", ":"))}'


_who = itemgetter(IDENT)
_JSON_DIRECTIONS = {n: f'"{name}"' for n, name in DIRECTION_NAMES.items()}


class JsonFormatter(LineFormatter):
    """One JSON object per line; the schema is in the README. Built from cached, already-safe pieces:
    only COMM comes from outside, and it goes through json.dumps. Time: RFC 3339, UTC, milliseconds."""

    millis = [".%03dZ" % i for i in range(1000)]

    def __init__(self, clock: Clock, identity=None):
        super().__init__(clock)
        self.identity = identity
        if identity is not None:
            self.lines = self._lines_identity
            self.record_lines = self._record_lines_identity
        self.comms = Cache(lambda raw: json.dumps(comm_text(raw), ensure_ascii=True), 4096)
        self._netns = (-1, "")  # the last namespace's number and its text ('4026531840,'), for the next row's
        self.events = {t: f'","event":"{name}","family":' for t, name in EVENT_NAMES.items()}
        self._connection = f'","event":"{CONNECTION_NAME}","family":'
        self.olds = ["null"] + [f'"{STATES[n]}"' for n in range(1, 256)]
        self.news = [f',"new_state":"{STATES[n]}","description":"{describe_state(n)}","netns":'
                     for n in range(256)]
        self.owners = [f',"owner":"{OWNER_NAMES.get(n, "current")}","old_state":' for n in range(256)]
        # ',"owner":"socket","direction":"out","result":"closed","netns":' by owner, result, direction
        self._record_mids = [[[f',"owner":"{OWNER_NAMES.get(o, "current")}","direction":{_JSON_DIRECTIONS.get(d, "null")},'
                               f'"result":"{RESULT_NAMES.get(r, "closed")}","netns":' for d in range(4)]
                              for r in range(8)] for o in range(8)]

    def _second(self, sec):
        return datetime.datetime.fromtimestamp(sec, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")

    def _pieces(self, saddr, daddr, comm, family):
        """The text before the source port, between the ports, after the pid; and the raw comm, as an owner's key
        takes it (one object: its hash is made once)."""
        a = self._addrs[family]
        return (f'{family},"src":"{a[saddr]}","sport":', f',"dst":"{a[daddr]}","dport":', f',"comm":{self.comms[comm]}',
                comm)

    def _ident_texts(self, unpacked):
        rests, rest = self._rests.get, self._rest
        return [f'{(p := rests(r) or rest(r))[0]}{sport}{p[1]}{dport},"pid":{pid}{p[2]}'
                for pid, sport, dport, r in unpacked]

    def lines(self, rows):
        window, idents = self._window, self._event_idents(rows)
        events, owners, olds, news, hexa = self.events, self.owners, self.olds, self.news, hex
        (lo, hi, t), (nsv, nst) = self._win, self._netns
        out = [f'{{"timestamp":"{t if lo <= ts < hi else (t := (w := window(ts))[2], lo := w[0], hi := w[1])[0]}'
               f'{events[typ]}{idents[who]}{owners[own]}{olds[old]}{news[new]}'
               f'{nst if ns == nsv else (nst := f"{ns},", nsv := ns)[0]}"sock":"{hexa(sk)}"}}\n'
               for ts, sk, _ino, ns, typ, old, new, own, _fl, who, _uid, _cg in rows]
        self._win, self._netns = (lo, hi, t), (nsv, nst)
        return out

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

    def _identity_texts(self, rows):
        """self._ctxs, with the text of each identity of rows not in it yet whose owner's names are known (a key
        seen before: most, as a miss is each connection's side) made together, as _ident_identity makes it (its
        identity text as _ident_texts makes it, made here without going through self._idents)."""
        ctxs = self._ctxs
        whos = list(map(_who, rows))
        fresh = set(whos).difference(ctxs)
        if not fresh:
            return ctxs
        if len(ctxs) + len(fresh) > IDENT_CACHE:
            ctxs.clear()
        owners, head, rests, rest = self._owners.get, IDENT_HEAD.unpack, self._rests.get, self._rest
        discard = fresh.discard
        # each identity's first row: fresh loses it once seen, so compress passes over the others at C speed
        firsts = compress(rows, map(fresh.__contains__, whos))
        for _ts, _sk, _ino, _ns, _typ, _old, _new, _own, _fl, who, uid, cgroup in firsts:
            discard(who)
            pid, sport, dport, r = head(who)
            p = rests(r) or rest(r)
            names = owners((cgroup, uid, pid, p[3]))  # owner_key()
            if names is not None:  # (an owner not known yet is asked by the lines, per row, while not final)
                ctxs[who] = (uid, cgroup, f'{p[0]}{sport}{p[1]}{dport},"pid":{pid}{p[2]}{names}')
        return ctxs

    def _owner_text(self, owner):
        return "".join(f',"{name}":{json.dumps(value, ensure_ascii=True)}'
                       for name, value in zip(owner._fields, owner) if value is not None)

    def _lines_identity(self, rows):
        window, ident, idents = self._window, self._ident_identity, self._identity_texts(rows).get
        events, owners, olds, news, hexa = self.events, self.owners, self.olds, self.news, hex
        (lo, hi, t), (nsv, nst) = self._win, self._netns
        out = [f'{{"timestamp":"{t if lo <= ts < hi else (t := (w := window(ts))[2], lo := w[0], hi := w[1])[0]}'
               f'{events[typ]}{(c := idents(who)) and c[0] == uid and c[1] == cg and c[2] or ident(who, uid, cg)}'
               f'{owners[own]}{olds[old]}{news[new]}{nst if ns == nsv else (nst := f"{ns},", nsv := ns)[0]}'
               f'"sock":"{hexa(sk)}"}}\n'
               for ts, sk, _ino, ns, typ, old, new, own, _fl, who, uid, cg in rows]
        self._win, self._netns = (lo, hi, t), (nsv, nst)
        return out

    def _history(self, key):
        states, n, _flags = key  # "complete" and "states_truncated" say what the text's '...' says
        text = self._histories[key] = json.dumps([STATES[s] for s in states_of(states, n)], separators=(",", ":"))
        return text

    def record_lines(self, rows):
        """Connection records (abi.RECORD_ROW tuples) as JSON objects with "event": "connection"."""
        stamps, stamp, idents = self._stamps.get, self._stamp, self._record_idents(rows)
        histories, mids, off, connection = self._histories, self._record_mids, self._offset, self._connection
        hexa = hex
        if len(histories) > 4096:
            histories.clear()
        return [
            f'{{"timestamp":"{stamps(ms := (ts + off) // 1_000_000) or stamp(ms)}{connection}'
            f'{idents[who]}{mids[own & 7][result & 7][direction & 3]}{ns},"sock":"{hexa(sk)}","uid":{uid},'
            f'"bytes_sent":{sent},"bytes_received":{received},"retransmits":{retrans},'
            f'"rtt_ms":{f"{rtt / 1e3:.3f}" if rtt else "null"},'
            f'"handshake_ms":{f"{handshake / 1e6:.3f}" if handshake else "null"},'
            f'"duration_ms":{f"{(ts - start) / 1e6:.3f}" if start and not flags & 1 else "null"},'
            f'"states":{histories.get(key := (states, nstates, flags & 3)) or self._history(key)},'
            f'"states_truncated":{"true" if flags & 2 else "false"},"complete":{"false" if flags & 1 else "true"}'
            f'{drops and drop_json(drops, slots) or ""}}}\n'
            for (ts, sk, start, handshake, sent, received, _cg, _ino, states, ns, retrans, rtt, uid, result, direction,
                 nstates, flags, own, who, drops, slots) in rows]

    def _drop_line(self, line, reason):
        return f'{line[:-2]},"reason":"{reason}"}}\n'

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
