"""The text line (the seed's /var/log/socket_monitor.log, which users parse) and the Connection Summary line:

  Dec 30 2024 22:05:25.454 State Change: SRC=10.100.10.150:39134 DST=10.100.10.202:8000 PID=30512 COMM=audacious STATE=Connection Closing (FIN_WAIT1)
  Dec 01 2026 21:25:53.173 Connection Summary: SRC=... DST=... PID=... COMM=... RESULT=closed DIR=out DURATION=40.638ms HANDSHAKE=0.050ms SENT=100 RECEIVED=7 RETRANSMITS=0 RTT=0.031ms UID=1000 STATES=SYN_SENT>ESTABLISHED>...

With --context the owner's names follow STATE= (or STATES=): ' USER=... UNIT=... CONTAINER=<12 hex> POD=...',
those known. Every value from outside is one escaped token (escape.py); reader.py reads these lines back.
"""

import time

from ..pipeline.decode import R_CGROUP, R_DROP_SLOTS, R_DROPS, R_IDENT, R_UID
from ..pipeline.identity import owner_key
from .base import Cache, Clock, LineFormatter, IDENT_CACHE, history
from .escape import escape_comm, escape_token, format_addr
from .words import CONNECTION_TITLE, DIRECTION_NAMES, EVENT_TITLES, RESULT_NAMES, describe_state, drop_words

CONTEXT_KEYS = ("USER", "UNIT", "USER_UNIT", "CONTAINER", "POD")  # --context's names, in this order
CONTAINER_TEXT = 12  # hex digits of a container id in a text line


class TextFormatter(LineFormatter):
    """The seed's line format, local time: 'Dec 30 2024 22:05:25.454 State Change: SRC=...'. With an
    identity (pipeline/identity.Identity) and context, the owner's names follow STATE=: ' USER=... UNIT=...
    CONTAINER=<12 hex> POD=...', those known, made once per (cgroup, uid, connection side)."""

    dst_label = " DST="

    def __init__(self, clock: Clock, identity=None, context=False):
        super().__init__(clock)
        self.identity = identity
        self.bare_tails = [f" STATE={describe_state(n)}" for n in range(256)]
        if identity is not None and context:
            self.lines = self._lines_context
            self.record_lines = self._record_lines_context
        self._addrs[6] = Cache(lambda raw: f"[{format_addr(6, raw)}]")  # as format_endpoint puts them
        self.comms = Cache(escape_comm, 4096)
        self.tails = [f" STATE={describe_state(n)}\n" for n in range(256)]
        # ' RESULT=closed DIR=out DURATION=', by result (& 7) and direction (& 3)
        self._record_mids = [[f" RESULT={RESULT_NAMES.get(r, 'closed')} DIR={DIRECTION_NAMES.get(d, '-')} DURATION="
                              for d in range(4)] for r in range(8)]
        self.titles = {t: f" {title}: SRC=" for t, title in EVENT_TITLES.items()}
        self._record_title = f" {CONNECTION_TITLE}: SRC="

    def _second(self, sec):
        return time.strftime("%b %d %Y %H:%M:%S", time.localtime(sec))

    def _ident_texts(self, unpacked):
        rests, rest = self._rests.get, self._rest
        return [f"{(p := rests(r) or rest(r))[0]}{sport}{p[1]}{dport} PID={pid} COMM={p[2] if pid else p[3]}"
                for pid, sport, dport, r in unpacked]

    def lines(self, rows):
        window, idents, titles, tails = self._window, self._event_idents(rows), self.titles, self.tails
        lo, hi, t = self._win
        out = [f"{t if lo <= ts < hi else (t := (w := window(ts))[2], lo := w[0], hi := w[1])[0]}{titles[typ]}"
               f"{idents[who]}{tails[new]}"
               for ts, _sk, _ino, _ns, typ, _old, new, _own, _fl, who, _uid, _cg in rows]
        self._win = lo, hi, t
        return out

    def _owner_text(self, owner):
        return "".join(f" {name}={escape_token(value)}" for name, value in zip(CONTEXT_KEYS, (
            owner.user, owner.unit, owner.user_unit, owner.container and owner.container[:CONTAINER_TEXT], owner.pod)) if value) + "\n"

    def _context(self, who, uid, cgroup):
        """The text after STATE= for identity bytes, uid and cgroup, made and remembered once it is final."""
        text, final = self._owner(owner_key(cgroup, uid, who))
        if final:
            if len(self._ctxs) >= IDENT_CACHE:
                self._ctxs.clear()
            self._ctxs[who] = (uid, cgroup, text)
        return text

    def _lines_context(self, rows):
        window, idents, ctx = self._window, self._event_idents(rows), self._context
        ctxs = self._contexts(rows, ctx).get
        titles, tails = self.titles, self.bare_tails
        lo, hi, t = self._win
        out = [f"{t if lo <= ts < hi else (t := (w := window(ts))[2], lo := w[0], hi := w[1])[0]}{titles[typ]}"
               f"{idents[who]}{tails[new]}"
               f"{(c := ctxs(who)) and c[0] == uid and c[1] == cg and c[2] or ctx(who, uid, cg)}"
               for ts, _sk, _ino, _ns, typ, _old, new, _own, _fl, who, uid, cg in rows]
        self._win = lo, hi, t
        return out

    def _history(self, key):
        text = self._histories[key] = ">".join(history(*key))
        return text

    def record_lines(self, rows):
        """Connection records (abi.RECORD_ROW tuples): 'Connection Summary: SRC=... RESULT=... UID=...'.
        The owner's text is the cached one of its last event (the same identity bytes)."""
        stamps, stamp, idents = self._stamps.get, self._stamp, self._record_idents(rows)
        histories, mids, off, title = self._histories, self._record_mids, self._offset, self._record_title
        if len(histories) > 4096:
            histories.clear()
        return [
            f"{stamps(ms := (ts + off) // 1_000_000) or stamp(ms)}{title}{idents[who]}"
            f"{mids[result & 7][direction & 3]}"
            f"{f'{(ts - start) / 1e6:.3f}ms' if start and not flags & 1 else '-'} HANDSHAKE="
            f"{f'{handshake / 1e6:.3f}ms' if handshake else '-'} SENT={sent} RECEIVED={received} RETRANSMITS={retrans}"
            f" RTT={f'{rtt / 1e3:.3f}ms' if rtt else '-'} UID={uid} STATES="
            f"{histories.get(key := (states, nstates, flags & 3)) or self._history(key)}"
            f"{drops and drop_words(drops, slots) or ''}\n"
            for (ts, _sk, start, handshake, sent, received, _cg, _ino, states, _ns, retrans, rtt, uid, result, direction,
                 nstates, flags, _own, who, drops, slots) in rows]

    def _record_lines_context(self, rows):
        """Records with the owner's names after STATES= (--context), as the events have them after STATE=."""
        owner = self._owner
        out = []
        for line, row in zip(TextFormatter.record_lines(self, rows), rows):
            drops = drop_words(row[R_DROPS], row[R_DROP_SLOTS]) if row[R_DROPS] else ""  # stays at the end
            out.append(line[:len(line) - 1 - len(drops)] + owner(owner_key(row[R_CGROUP], row[R_UID],
                                                                            row[R_IDENT]))[0][:-1] + drops + "\n")
        return out

    def _drop_line(self, line, reason):
        return f"{line[:-1]} REASON={reason}\n"
