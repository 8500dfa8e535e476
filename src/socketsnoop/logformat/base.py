"""What every line kind shares: the clock, the time as text (made once per millisecond), the text of a
connection's identity (addresses, ports, owner: made once per connection side) and of a record's states.

Work that repeats is done once: the caches are plain dicts, read with .get() (the fastest lookup there is)
and filled on a miss, which also keeps them bounded. The identity bytes (kernel/abi.py IDENT_STRUCT: pid,
ports, addresses, comm, family) are what most events of a connection's side share, so they are the key.
"""

import time
from itertools import compress
from operator import itemgetter

from ..kernel.abi import EV_DROP, IDENT_HEAD, IDENT_REST, R_INCOMPLETE, R_STATES_CUT
from ..kernel.dropreasons import reason_name
from ..pipeline.decode import CGROUP, IDENT, INO, R_IDENT, TYPE, UID, states_of
from .escape import EMPTY_NAME, format_addr
from .words import state_name


class Cache(dict):
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


STATES = [state_name(n) for n in range(256)]
_type = itemgetter(TYPE)
_who, _r_who = itemgetter(IDENT), itemgetter(R_IDENT)  # an event's, a record's identity bytes
HISTORY_FLAGS = R_INCOMPLETE | R_STATES_CUT
assert (R_INCOMPLETE, HISTORY_FLAGS) == (1, 3)  # the record lines test them as literals: the fastest


def history(packed, n, flags):
    """A record's states as names: a leading '...' when it began before us, '...' before the last when cut."""
    names = [STATES[s] for s in states_of(packed, n)]
    if flags & R_STATES_CUT and len(names) > 1:
        names.insert(len(names) - 1, "...")
    if flags & R_INCOMPLETE:
        names.insert(0, "...")
    return names


def millis(ns):
    """Nanoseconds as milliseconds with microsecond precision: 1.234."""
    return f"{ns / 1e6:.3f}"


# text per connection side (identity bytes): bounded, a few MB at most; under churn each entry
# serves the several events of one side of a connection, and a miss only costs making it again
IDENT_CACHE = 16384
# an identity's text is made from its pid, ports and rest (abi.IDENT_HEAD): the rest (addresses, comm, family) is
# what the connections of one process to one peer share, so its pieces of text are made once (_pieces)


def with_drop_reasons(batch, mend):
    """batch(rows) -> one output per row, made to end drop events with their reason: mend(output, reason name)
    for each drop row (a pass over each batch, made only with --drops). A drop row's INO holds the reason."""

    def mended(rows):
        out = batch(rows)
        if EV_DROP in map(_type, rows):
            for i, row in enumerate(rows):
                if row[TYPE] == EV_DROP:
                    out[i] = mend(out[i], reason_name(row[INO]))
        return out

    return mended


class LineFormatter:
    """What both formats share: the time as text, made once per millisecond, and the text of a
    connection's identity (addresses, ports, owner), made once per connection side.

    lines(rows) takes decoded events (abi.Row tuples) and returns their lines, newline included;
    format(row) one line. Only COMM comes from outside, and it is escaped when its text is made.
    The two caches are plain dicts: the times read with .get() (the fastest lookup there is) and filled by
    _stamp() on a miss; the identities a batch lacks made together by _filled(), before its lines. Both kept
    bounded.
    """

    millis = [".%03d" % i for i in range(1000)]
    dst_label = ""  # what an identity's text puts before the destination address (text: ' DST=')

    def __init__(self, clock: Clock):
        self._offset = clock.offset_ns
        self._stamps = {}  # wall-clock milliseconds -> text
        self._win = (0, 0, "")  # the last _window(): no time is in it yet
        self._idents = {}  # identity bytes -> text
        self._rests = {}  # the rest of identity bytes (IDENT_REST) -> its pieces of the identity text
        self._histories = {}  # a record's (states, nstates, flags) -> text
        # IDENT -> (uid, cgroup, text with the owner's names): the uid and cgroup are checked (a hit costs no
        # tuple made per event)
        self._ctxs = {}
        self._owners = {}  # (cgroup, uid, pid, comm) -> the text of the owner's names
        self._unsettled = {}  # the same, while the cgroup is not known yet: (tree walks then, text)
        # address bytes -> text, per family (one address serves many connections)
        self._addrs = {4: Cache(lambda raw: format_addr(4, raw)), 6: Cache(lambda raw: format_addr(6, raw))}

    def _second(self, sec):
        raise NotImplementedError

    def _stamp(self, ms):
        if len(self._stamps) >= 4096:
            self._stamps.clear()
        text = self._stamps[ms] = self._second(ms // 1000) + self.millis[ms % 1000]
        return text

    def _window(self, ts):
        """(lo, hi, text): the time text of kernel time ts, and the times lo <= t < hi that share it (its
        millisecond). The event lines keep the last window and test each row's time against it, two comparisons
        and nothing made per row (a batch spans a few milliseconds), as
        `t if lo <= ts < hi else (t := (w := window(ts))[2], lo := w[0], hi := w[1])[0]`, and keep it in
        self._win for the next batch."""
        off = self._offset
        ms = (ts + off) // 1_000_000
        lo = ms * 1_000_000 - off
        return lo, lo + 1_000_000, self._stamps.get(ms) or self._stamp(ms)

    def _ident(self, ident):
        """The text of identity bytes, made and remembered."""
        return self._filled({ident})[ident]

    def _ident_texts(self, unpacked):
        """The texts of identities, from (pid, sport, dport, rest) tuples (IDENT_HEAD), the rest's pieces from
        self._rests.get(rest) or self._rest(rest) (a format with _filled() makes them)."""
        raise NotImplementedError

    def _pieces(self, saddr, daddr, comm, family):
        """What an identity's text takes from its addresses, comm and family, made once for all identities
        that share them: ('SRC:', dst_label + 'DST:', COMM with a process, COMM with none); an empty name is
        not "no process". (JSON makes its own.)"""
        a, name = self._addrs[family], self.comms[comm]
        return f"{a[saddr]}:", f"{self.dst_label}{a[daddr]}:", name if comm[0] else EMPTY_NAME, name

    def _rest(self, rest):
        rests = self._rests
        if len(rests) >= IDENT_CACHE:
            rests.clear()
        pieces = rests[rest] = self._pieces(*IDENT_REST.unpack(rest))
        return pieces

    def _filled(self, whos):
        """The identity texts (a dict), with one for each of whos (a set of identity bytes): those not made
        yet made in one pass, decoded together at C speed. A miss is common (each connection's side is one),
        so its fixed costs are paid once a batch, not per miss. Keeps the cache bounded (a batch's whole)."""
        idents = self._idents
        new = whos.difference(idents)
        if new:
            if len(idents) + len(new) > IDENT_CACHE:
                idents.clear()
                new = whos
            new = list(new)
            idents.update(zip(new, self._ident_texts(IDENT_HEAD.iter_unpack(b"".join(new)))))
        return idents

    def _event_idents(self, rows):
        return self._filled(set(map(_who, rows)))

    def _record_idents(self, rows):
        return self._filled(set(map(_r_who, rows)))

    def _contexts(self, rows, make):
        """The texts with the owner's names (self._ctxs: identity bytes -> (uid, cgroup, text)), with one made by
        make(who, uid, cgroup) (which remembers it once final) for each identity of rows that has none yet."""
        ctxs = self._ctxs
        whos = list(map(_who, rows))
        fresh = set(whos).difference(ctxs)
        if fresh:
            # each identity's first row: fresh loses it once seen, so compress passes over the others at C speed
            for row in compress(rows, map(fresh.__contains__, whos)):
                fresh.discard(row[IDENT])
                make(row[IDENT], row[UID], row[CGROUP])
        return ctxs

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

    def show_drops(self):
        """--drops: the drop events' lines end with their reason (the kernel sends no drop event otherwise)."""
        self.lines = with_drop_reasons(self.lines, self._drop_line)
        return self

    def _drop_line(self, line, reason):
        """A drop event's line with its reason's name added."""
        raise NotImplementedError

    def stamp(self, ts_ns: int) -> str:
        ms = (ts_ns + self._offset) // 1_000_000
        return self._stamps.get(ms) or self._stamp(ms)

    def format(self, row) -> str:
        return self.lines((row,))[0]

