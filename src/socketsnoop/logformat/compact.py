"""The compact line: the console's columns for people, in the style of tcplife and tcpstates (--format compact).
The log file never holds it (it keeps the text line users parse), and nothing reads it back.

  TIME             PID COMM             LOCAL                 REMOTE                EVENT / RESULT DIR  DURATION TX/RX
  18:00:14.023   25708 curl             127.0.0.1:49484       127.0.0.1:8000        SYN_SENT>ESTABLISHED
  18:00:14.029   25708 curl             127.0.0.1:49484       127.0.0.1:8000        closed         out   5.326ms 78/6717
  18:00:14.034   25710 curl             127.0.0.1:47518       127.0.0.1:8001        RESET-RECEIVED SYN_SENT
  18:00:14.034   25710 curl             127.0.0.1:47518       127.0.0.1:8001        refused        out   0.047ms 0/0

An event shows its state change (OLD>NEW), or RETRANSMIT, RESET-SENT or RESET-RECEIVED with the state it came
in; a connection record its result, direction, duration (cut, not rounded) and bytes sent/received (K, M, G:
powers of 1024). An IPv4 line fits in 120 columns (an IPv6 one may be longer). COMM is escaped as the text line
escapes it (escape.py: one token of printable ASCII); a name whose escaped form is wider than its column is cut
at a whole escape and ends in '+' (the log file has it whole). --context's names are the log file's, not shown here.
"""

import time

from ..kernel.abi import EV_DROP, EV_RESET_RECEIVED, EV_RESET_SENT, EV_RETRANSMIT, EV_STATE
from .base import STATES, Cache, Clock, LineFormatter
from .escape import escape_comm, format_addr
from .words import DIRECTION_NAMES, RESULT_NAMES

PID_W, COMM_W, ADDR_W, RESULT_W, DIR_W, DURATION_W = 7, 16, 21, 14, 3, 9
HEADER = (f"{'TIME':<12} {'PID':>{PID_W}} {'COMM':<{COMM_W}} {'LOCAL':<{ADDR_W}} {'REMOTE':<{ADDR_W}} "
          f"{'EVENT / RESULT':<{RESULT_W}} {'DIR':<{DIR_W}} {'DURATION':>{DURATION_W}} TX/RX\n")
EVENT_WORDS = {EV_RETRANSMIT: "RETRANSMIT", EV_RESET_SENT: "RESET-SENT", EV_RESET_RECEIVED: "RESET-RECEIVED",
               EV_DROP: "DROP"}
_UNITS = "KMGTPE"


def human_bytes(n):
    """A byte count in at most 4 characters: 9999, 9.8K, 512K, 1.0M ... (powers of 1024)."""
    if n < 10000:
        return str(n)
    value = float(n)
    for unit in _UNITS:
        value /= 1024
        if value < 9.95:
            return f"{value:.1f}{unit}"
        if value < 999.5:
            return f"{value:.0f}{unit}"
    return f"{value:.0f}Z"  # past 2**70: not a TCP connection's


def human_duration(ns):
    """A duration in at most 9 characters, cut (not rounded, so that no unit overflows its digits): 0.041ms,
    40.638ms, 12.345s, 4321.1s, 98765h."""
    if ns < 1_000_000_000:
        us = ns // 1000
        return f"{us // 1000}.{us % 1000:03d}ms"
    if ns < 1000 * 1_000_000_000:
        ms = ns // 1_000_000
        return f"{ms // 1000}.{ms % 1000:03d}s"
    if ns < 10000 * 1_000_000_000:
        ds = ns // 100_000_000
        return f"{ds // 10}.{ds % 10}s"
    return f"{ns // 3_600_000_000_000}h"


def fit_comm(text, width=COMM_W):
    """An escaped name cut to width at a whole token (a character or a \\xNN escape), marked by a final '+'."""
    if len(text) <= width:
        return text
    out, i = [], 0
    while i < len(text):
        token = text[i:i + 4] if text[i] == "\\" else text[i]
        if sum(map(len, out)) + len(token) > width - 1:
            break
        out.append(token)
        i += len(token)
    return "".join(out) + "+"


def event_word(typ, old, new):
    """The event column: OLD>NEW for a state change, else the event's word and the state it came in."""
    if typ == EV_STATE:
        return f"{STATES[old]}>{STATES[new]}"
    return f"{EVENT_WORDS.get(typ, f'EVENT_{typ}')} {STATES[new]}"


class CompactFormatter(LineFormatter):
    """The compact console line, local time 'HH:MM:SS.mmm'. lines(rows) and record_lines(rows) as the other
    formats have them; header is the line of column names (for a terminal)."""

    header = HEADER

    def __init__(self, clock: Clock):
        super().__init__(clock)
        self.comms = Cache(lambda raw: fit_comm(escape_comm(raw)), 4096)
        self._addrs[6] = Cache(lambda raw: f"[{format_addr(6, raw)}]")
        self._events = {}  # (type, old, new) -> the event column's text
        self._record_mids = [[f"{RESULT_NAMES.get(r, 'closed'):<{RESULT_W}} {DIRECTION_NAMES.get(d, '-'):<{DIR_W}} "
                              for d in range(4)] for r in range(8)]

    def _second(self, sec):
        return time.strftime("%H:%M:%S", time.localtime(sec))

    def _ident_texts(self, unpacked):
        rests, rest = self._rests.get, self._rest
        return [f" {pid:>{PID_W}} {(p := rests(r) or rest(r))[2 if pid else 3]:<{COMM_W}} "
                f"{f'{p[0]}{sport}':<{ADDR_W}} {f'{p[1]}{dport}':<{ADDR_W}} "
                for pid, sport, dport, r in unpacked]

    def _event(self, key):
        if len(self._events) >= 4096:
            self._events.clear()
        text = self._events[key] = event_word(*key) + "\n"
        return text

    def lines(self, rows):
        stamps, stamp, idents = self._stamps.get, self._stamp, self._event_idents(rows)
        events, event, off = self._events.get, self._event, self._offset
        return [f"{stamps(ms := (ts + off) // 1_000_000) or stamp(ms)}{idents[who]}"
                f"{events(key := (typ, old, new)) or event(key)}"
                for ts, _sk, _ino, _ns, typ, old, new, _own, _fl, who, _uid, _cg in rows]

    def record_lines(self, rows):
        """Connection records: result, direction, duration ('-': began before the monitor) and bytes."""
        stamps, stamp, idents = self._stamps.get, self._stamp, self._record_idents(rows)
        mids, off = self._record_mids, self._offset
        return [f"{stamps(ms := (ts + off) // 1_000_000) or stamp(ms)}{idents[who]}"
                f"{mids[result & 7][direction & 3]}"
                f"{human_duration(ts - start) if start and not flags & 1 else '-':>{DURATION_W}} "
                f"{sent if sent < 10000 else human_bytes(sent)}/"
                f"{received if received < 10000 else human_bytes(received)}\n"
                for (ts, _sk, start, _hs, sent, received, _cg, _ino, _states, _ns, _re, _rtt, _uid, result, direction,
                     _n, flags, _own, who, _drops, _slots) in rows]

    def _drop_line(self, line, reason):
        return f"{line[:-1]} {reason}\n"
