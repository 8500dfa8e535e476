"""The JSON line's keys and values as dicts (FieldsFormatter), or already encoded for an output of structured
fields (FieldsEncoder: the journal's NAME=value fields, syslog's SD-PARAMs): the same keys, in the same order,
with the same values as jsonline.JsonFormatter's lines, without making a line to parse it again."""

from ..kernel.abi import IDENT_STRUCT
from ..pipeline.decode import R_CGROUP, R_IDENT, R_UID, states_of
from ..pipeline.identity import owner_key
from .base import STATES, Clock, IDENT_CACHE, with_drop_reasons
from .escape import comm_text
from .jsonline import CONNECTION_KEYS, DROP_KEYS, EVENT_KEYS, IDENT_KEYS, JsonFormatter
from .words import CONNECTION_NAME, DIRECTION_NAMES, EVENT_NAMES, OWNER_NAMES, RESULT_NAMES, describe_state, drop_reasons


class FieldsFormatter(JsonFormatter):
    """The JSON line's keys and values as a dict per event, for outputs of structured fields (the journal,
    syslog): the same keys, in the same order, with the same values as JsonFormatter's line
    (tests/unit/test_logformat_roundtrip.py checks it), the owner's names included when given an identity (as
    JsonFormatter's). Only the outputs that need it pay for it; JsonFormatter's own path is untouched."""

    def __init__(self, clock: Clock, identity=None):
        super().__init__(clock, identity)
        self._sides = {}  # identity bytes -> the identity's (key, value) pairs
        self._named = {}  # identity bytes -> (uid, cgroup, the identity's pairs and the owner's names): once final
        if identity is not None:
            self.fields, self.record_fields = self._fields_identity, self._record_fields_identity
        self.event_names = dict(EVENT_NAMES)
        self.owner_names = [OWNER_NAMES.get(n, "current") for n in range(256)]
        self.old_names = [None] + STATES[1:]
        self.descriptions = [describe_state(n) for n in range(256)]

    def show_drops(self):
        """--drops: a drop event's fields end with its "reason", as the JSON line does (JsonFormatter's lines too)."""
        JsonFormatter.show_drops(self)
        self.fields = with_drop_reasons(self.fields, lambda d, reason: {**d, "reason": reason})
        return self

    def _side(self, ident):
        sides = self._sides
        if len(sides) >= IDENT_CACHE:
            sides.clear()
        pid, sport, dport, saddr, daddr, comm, family = IDENT_STRUCT.unpack(ident)
        addrs = self._addrs[family]
        side = sides[ident] = tuple(zip(IDENT_KEYS, (family, addrs[saddr], sport, addrs[daddr], dport, pid,
                                                     comm_text(comm))))
        return side

    def fields(self, rows):
        """[{key: value}] per row, as json.loads of JsonFormatter's line would give."""
        stamps, stamp, sides, side, off = self._stamps.get, self._stamp, self._sides.get, self._side, self._offset
        out = []
        for ts, sk, _ino, ns, typ, old, new, own, _fl, who, _uid, _cg in rows:
            out.append(dict(zip(EVENT_KEYS, (
                stamps(ms := (ts + off) // 1_000_000) or stamp(ms), self.event_names[typ],
                *(v for _k, v in sides(who) or side(who)), self.owner_names[own], self.old_names[old], STATES[new],
                self.descriptions[new], ns, f"0x{sk:x}"))))
        return out

    def record_fields(self, rows):
        """[{key: value}] per connection record (abi.RECORD_ROW tuples), as json.loads of JsonFormatter's
        record_lines would give."""
        stamps, stamp, sides, side, off = self._stamps.get, self._stamp, self._sides.get, self._side, self._offset
        return [dict(zip(CONNECTION_KEYS + DROP_KEYS, (
            stamps(ms := (ts + off) // 1_000_000) or stamp(ms), CONNECTION_NAME,
            *(v for _k, v in sides(who) or side(who)), OWNER_NAMES.get(own & 7, "current"),
            DIRECTION_NAMES.get(direction & 3), RESULT_NAMES.get(result & 7, "closed"), ns, f"0x{sk:x}", uid, sent,
            received, retrans, float(f"{rtt / 1e3:.3f}") if rtt else None,
            float(f"{handshake / 1e6:.3f}") if handshake else None,
            float(f"{(ts - start) / 1e6:.3f}") if start and not flags & 1 else None,
            [STATES[s] for s in states_of(states, nstates)], bool(flags & 2), not flags & 1,
            *((drops, drop_reasons(slots)) if drops else ()))))
            for (ts, sk, start, handshake, sent, received, _cg, _ino, states, ns, retrans, rtt, uid, result, direction,
                 nstates, flags, own, who, drops, slots) in rows]


    def _owner_text(self, owner):
        """The owner's names as (key, value) pairs, those known: what JsonFormatter's text of them holds."""
        return tuple((name, value) for name, value in zip(owner._fields, owner) if value is not None)

    def _side_named(self, who, uid, cgroup):
        names, final = self._owner(owner_key(cgroup, uid, who))
        pairs = (self._sides.get(who) or self._side(who)) + names
        if final:
            named = self._named
            if len(named) >= IDENT_CACHE:
                named.clear()
            named[who] = (uid, cgroup, pairs)
        return pairs

    def _fields_identity(self, rows):
        """fields() with the owner's names after "comm", as JsonFormatter's lines with an identity have them."""
        stamps, stamp, named, side, off = self._stamps.get, self._stamp, self._named.get, self._side_named, self._offset
        events, owners, olds, descriptions = self.event_names, self.owner_names, self.old_names, self.descriptions
        return [dict((("timestamp", stamps(ms := (ts + off) // 1_000_000) or stamp(ms)), ("event", events[typ]),
                      *((c := named(who)) and c[0] == uid and c[1] == cg and c[2] or side(who, uid, cg)),
                      ("owner", owners[own]), ("old_state", olds[old]), ("new_state", STATES[new]),
                      ("description", descriptions[new]), ("netns", ns), ("sock", f"0x{sk:x}")))
                for ts, sk, _ino, ns, typ, old, new, own, _fl, who, uid, cg in rows]

    def _record_fields_identity(self, rows):
        """record_fields() with the owner's names after "uid" (the record's own), as JsonFormatter's lines have
        them."""
        out = []
        for fields, row in zip(FieldsFormatter.record_fields(self, rows), rows):
            names = [kv for kv in self._owner(owner_key(row[R_CGROUP], row[R_UID], row[R_IDENT]))[0] if kv[0] != "uid"]
            items = list(fields.items())
            out.append(dict(items[:_AFTER_UID] + names + items[_AFTER_UID:]))
        return out


_AFTER_UID = CONNECTION_KEYS.index("uid") + 1


class FieldsEncoder(FieldsFormatter):
    """The same fields as FieldsFormatter's, already encoded for an output: pair(key, value) -> bytes is the
    output's encoding of one field (b"" for a null value), sep what goes between two. Each piece is encoded
    once and remembered: per event type, owner kind and state, per connection side (the identity bytes),
    per millisecond and per namespace; only the socket address is encoded per event. encode(rows) gives,
    per row, (event type, the timestamp's text, the fields' bytes: all but the timestamp unless
    with_timestamp). tests/daemons/test_outputs_queued.py checks the outputs made with it against the general path."""

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
        self.e_news = [piece("new_state", STATES[n]) + piece("description", self.descriptions[n]) for n in range(256)]
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

    def show_drops(self):
        """--drops: a drop event's fields end with its reason."""
        self.encode = with_drop_reasons(self.encode,
                                        lambda out, reason: (*out[:2], out[2] + self.piece("reason", reason)))
        return self

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
