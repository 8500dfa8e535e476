"""The fast path's reading: each file's bytes in blocks (gunzipped if need be), whole lines of each block
parsed by DuckDB's SQL (engine_sql.py's patterns) into the table `entries`; the lines the patterns do not
take, but for blank ones and those over MAX_LINE bytes, parsed by the Python reader, as before.

Bounded as files.py is: a block is BLOCK bytes and the rest of a line carried over; a line over MAX_LINE bytes
is dropped as it comes (a file without newlines takes no memory) and counted; blank lines are counted.
"""

import re

from ...logformat.reader import DESCRIPTIONS, STATE_NAMES
from ...logformat.words import EVENT_NAMES, EVENT_TITLES
from . import engine_sql as q
from .files import BLANK_START, MAX_LINE, READ_ERRORS, open_log, show_path, unreadable
from .parse import Malformed, Summary

BLOCK = 4 << 20  # bytes read at a time
BATCH = 1 << 18
# blank lines, up to 65,536 a match (the re module's memory grows with a match's repetitions)
BLANK_RUN = re.compile(rb"(?:[ \t\r\f\v]*\n){1,65536}")
SPARSE_LINES = 1 << 16  # lines in a block over which they are split here (a block of 4 MB holds 26,000 of ours)  # lines parsed at a time (the patterns are compiled once a query; DuckDB splits a batch over threads)
RAW = "INSERT INTO rawlines SELECT unnest(range(?, ? + len(l))), unnest(l) FROM (SELECT string_split(?, chr(10)) AS l)"

ENTRY_COLUMNS = (
    "n BIGINT, host VARCHAR, summ BOOLEAN, sec BIGINT, ms INTEGER, loc BOOLEAN, kind UTINYINT, fam UTINYINT, "
    "src VARCHAR, sport INTEGER, dst VARCHAR, dport INTEGER, pid BIGINT, comm VARCHAR, news UTINYINT, sock UBIGINT, "
    "uid BIGINT, usr VARCHAR, cgroup VARCHAR, unit VARCHAR, container VARCHAR, result VARCHAR, dir VARCHAR, "
    "dur BIGINT, hs BIGINT, sent HUGEINT, recv HUGEINT, retr BIGINT, rtt BIGINT")
NAMES = ("n", "host", "summ", "sec", "ms", "loc", "kind", "fam", "src", "sport", "dst", "dport", "pid", "comm",
         "news", "sock", "uid", "usr", "cgroup", "unit", "container", "result", "dir", "dur", "hs", "sent", "recv",
         "retr", "rtt")
TYPES = [c.split()[1] for c in ENTRY_COLUMNS.split(", ")]
TITLE_LIST = q.literal([EVENT_TITLES[k] for k in sorted(EVENT_TITLES)])
KIND_LIST = q.literal([EVENT_NAMES[k] for k in sorted(EVENT_NAMES)])
FIRST_KIND = min(EVENT_TITLES)
DESC_LIST = q.literal(list(DESCRIPTIONS))
STATE_LIST = q.literal(list(STATE_NAMES))
MONTHS = q.literal(["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"])


TEXT_WORDS = {"SRC": 1, "DST": 2, "PID": 3, "COMM": 4, "RESULT": 5, "DIR": 6, "DURATION": 7, "HANDSHAKE": 8,
              "SENT": 9, "RECEIVED": 10, "RETRANSMITS": 11, "RTT": 12, "UID": 13, "STATES": 14}


def _word(key):
    """The value of ' KEY=' in a text line's body (the patterns checked it is there once): by its place among
    the words after 'SRC=' (w), else found."""
    if key in TEXT_WORDS:
        return f"w[{TEXT_WORDS[key]}][{len(key) + 2}:]" if key != "SRC" else "w[1]"
    return f"split_part(split_part(body, ' {key}=', 2), ' ', 1)"


JSON_KEYS = ("timestamp", "event", "src", "sport", "dst", "dport", "pid", "comm", "sock", "uid", "user", "cgroup", "unit",
             "container", "new_state", "result", "direction", "bytes_sent", "bytes_received", "retransmits", "rtt_ms",
             "handshake_ms", "duration_ms")
JSON_PATHS = "[" + ", ".join(f"'$.{k}'" for k in JSON_KEYS) + "]"


def _jstr(key):
    """A JSON line's value as text ('' where it has none: the patterns checked the rest), from j, the list of
    its values parsed once."""
    return f"coalesce(j[{JSON_KEYS.index(key) + 1}], '')"


def _jnum(key):
    return f"coalesce(j[{JSON_KEYS.index(key) + 1}], 'null')"


def _us(v):
    """'40.638ms' (text) or 40.638 (JSON, as JSON's parser gives it: 40.6 for 40.600) -> microseconds; '-' or
    null -> NULL."""
    return (f"CASE WHEN {v} = '-' THEN NULL WHEN {v} = 'null' THEN NULL WHEN {v} LIKE '%ms' THEN "
            f"split_part({v}, '.', 1)::BIGINT * 1000 + split_part({v}, '.', 2)[1:3]::BIGINT "
            f"ELSE ({v}::DECIMAL(18, 3) * 1000)::BIGINT END")


def _name(v, json):
    """A name as the tables keep it: JSON '' unknown and '-' escaped; text '-' unknown, '' not there."""
    if json:
        return f"CASE WHEN {v} = '' THEN NULL WHEN {v} = '-' THEN '\\x2d' ELSE {v} END"
    return f"nullif(nullif({v}, '-'), '')"


def _endpoints(src, sport, dst, dport, pid, comm):
    return (f"{src} AS src, {sport}::INTEGER AS sport, {dst} AS dst, {dport}::INTEGER AS dport, "
            f"{pid}::BIGINT AS pid, {comm} AS comm")


TEXT_COMM = _word("COMM")
JSON_COMM = _jstr("comm")
TEXT_SEC = ("epoch(make_timestamp(body[8:11]::BIGINT, list_position(" + MONTHS + ", body[1:3]), body[5:6]::BIGINT, "
            "body[13:14]::BIGINT, body[16:17]::BIGINT, body[19:20]::DOUBLE))::BIGINT")
JSON_STAMP = "replace(" + _jstr("timestamp") + "[1:19], 'T', ' ')"
TEXT_COMMON = (f"n, host, {TEXT_SEC} AS sec, body[22:24]::INTEGER AS ms, true AS loc, 4 AS fam, "
               + _endpoints(f"split_part({_word('SRC')}, ':', 1)", f"split_part({_word('SRC')}, ':', 2)",
                            f"split_part({_word('DST')}, ':', 1)", f"split_part({_word('DST')}, ':', 2)", _word("PID"),
                            f"CASE WHEN {TEXT_COMM} = '-' AND {_word('PID')}::BIGINT > 0 THEN '\\x00' "
                            f"ELSE {TEXT_COMM} END")
               + f", {_name(_word('USER'), False)} AS usr, {_name(_word('UNIT'), False)} AS unit, "
                 f"nullif({_word('CONTAINER')}, '') AS container")
JSON_COMMON = (f"n, host, epoch({JSON_STAMP}::TIMESTAMP)::BIGINT AS sec, {_jstr('timestamp')}[21:23]::INTEGER AS ms, "
               "false AS loc, 4 AS fam, "
               + _endpoints(_jstr("src"), _jnum("sport"), _jstr("dst"), _jnum("dport"), _jnum("pid"),
                            f"CASE WHEN {JSON_COMM} = '-' THEN '\\x2d' ELSE replace({JSON_COMM}, ' ', '\\x20') END")
               + f", ('0x' || nullif(ltrim({_jstr('sock')}[3:], '0'), ''))::UBIGINT AS sock, "
                 f"{_name(_jstr('user'), True)} AS usr, nullif({_jstr('cgroup')}, '') AS cgroup, "
                 f"{_name(_jstr('unit'), True)} AS unit, nullif({_jstr('container')}[:12], '') AS container")
DESCRIPTION = ("rtrim(split_part(split_part(split_part(split_part(split_part(split_part(body, ' STATE=', 2), ' USER=', 1), "
               "' UNIT=', 1), ' USER_UNIT=', 1), ' CONTAINER=', 1), ' POD=', 1), ' ')")
RANGES = "sport <= 65535 AND dport <= 65535 AND pid <= 4294967295"
SUMMARY_RANGES = (f"{RANGES} AND uid <= 4294967295 AND retr <= 4294967295 AND sent <= 18446744073709551615 "
                  "AND recv <= 18446744073709551615")


def _summary(word, dir_value, states_ok):
    return (f"true AS summ, {word('uid')}::BIGINT AS uid, {word('result')} AS result, {dir_value} AS dir, "
            f"{_us(word('duration'))} AS dur, {_us(word('handshake'))} AS hs, {word('sent')}::HUGEINT AS sent, "
            f"{word('received')}::HUGEINT AS recv, {word('retransmits')}::BIGINT AS retr, "
            f"{_us(word('rtt'))} AS rtt, {states_ok} AS states_ok")


_TEXT_KEYS = {"uid": "UID", "result": "RESULT", "duration": "DURATION", "handshake": "HANDSHAKE", "sent": "SENT",
              "received": "RECEIVED", "retransmits": "RETRANSMITS", "rtt": "RTT"}
_JSON_KEYS = {"uid": "uid", "duration": "duration_ms", "handshake": "handshake_ms", "sent": "bytes_sent",
              "received": "bytes_received", "retransmits": "retransmits", "rtt": "rtt_ms"}


def _text_word(k):
    return _word(_TEXT_KEYS[k])


def _json_word(k):
    return _jstr("result") if k == "result" else _jnum(_JSON_KEYS[k])


def _full(pattern):
    """The pattern without its groups (RE2 then matches in one pass of its DFA)."""
    return "regexp_full_match(line, '" + re.sub(r"(?<!\\)\((?!\?)", "(?:", pattern) + "')"


JSON_DIRECTION = "nullif(trim(" + _jnum("direction") + ", '\"'), 'null')"


# each line classified by the patterns (what: 1 JSON event, 2 JSON summary, 3 text event, 4 text summary; -1 too
# long, -2 blank, 0 none), and its body: our line behind the syslog prefix, if any (whose host it names)
PARSE = f"""
CREATE OR REPLACE TEMP TABLE stage AS
WITH c AS (
  SELECT n, line, CASE WHEN strlen(line) > {MAX_LINE} THEN -1 WHEN regexp_full_match(line, '[ \\t\\r\\f\\v]*') THEN -2
    WHEN contains(line, '"event":"connection"') THEN CASE WHEN {_full(q.JSON_SUMMARY)} THEN 2 ELSE 0 END
    WHEN contains(line, '{{"timestamp":') THEN CASE WHEN {_full(q.JSON_EVENT)} THEN 1 ELSE 0 END
    WHEN contains(line, ' Connection Summary: ') THEN CASE WHEN {_full(q.TEXT_SUMMARY)} THEN 4 ELSE 0 END
    WHEN {_full(q.TEXT_EVENT)} THEN 3 ELSE 0 END AS what
  FROM rawlines
), p AS (  -- (what is a column of c here: an alias referred to in its own SELECT would be computed again)
  SELECT *, what > 0 AND line[1] <> '{{' AND NOT (line[12] = ' ' AND line[15] = ':') AS pre FROM c
)
SELECT n, line, what,
  CASE WHEN pre THEN string_split(line[:strpos(line, ' socket-snoop') - 1], ' ')[-1] END AS host,
  rtrim(CASE WHEN pre THEN ltrim(line[strpos(line, ' socket-snoop') + 13:], '[]0123456789: ') ELSE line END,
        ' ' || chr(9) || chr(13) || chr(12) || chr(11)) AS body
FROM p
"""

# the lines taken, as entries (a number out of range, or a date that does not exist: left to the Python reader)
TAKE = f"""
INSERT INTO entries BY NAME
SELECT * EXCLUDE (ok, states_ok) FROM (
SELECT {JSON_COMMON}, false AS summ, list_position({KIND_LIST}, {_jstr('event')}) - 1 + {FIRST_KIND} AS kind,
  list_position({STATE_LIST}, {_jstr('new_state')}) - 1 AS news,
  CASE WHEN {_jnum('uid')} <> 'null' AND {_jnum('uid')}::BIGINT <= 4294967295 THEN {_jnum('uid')}::BIGINT END AS uid,
  try_strptime({JSON_STAMP}, '%Y-%m-%d %H:%M:%S') IS NOT NULL AND {RANGES} AS ok
FROM (SELECT *, json_extract_string(body, {JSON_PATHS}) AS j FROM stage WHERE what = 1)
UNION ALL BY NAME
SELECT {JSON_COMMON}, {_summary(_json_word, JSON_DIRECTION, 'true')},
  try_strptime({JSON_STAMP}, '%Y-%m-%d %H:%M:%S') IS NOT NULL AND {SUMMARY_RANGES} AS ok
FROM (SELECT *, json_extract_string(body, {JSON_PATHS}) AS j FROM stage WHERE what = 2)
UNION ALL BY NAME
SELECT {TEXT_COMMON}, false AS summ, list_position({TITLE_LIST}, split_part(body[26:], ': SRC=', 1)) - 1
  + {FIRST_KIND} AS kind, list_position({DESC_LIST}, {DESCRIPTION}) - 1 AS news,
  try_strptime(body[1:11], '%b %d %Y') IS NOT NULL AND {RANGES} AS ok
FROM (SELECT *, string_split(split_part(body, ': SRC=', 2), ' ') AS w FROM stage WHERE what = 3)
UNION ALL BY NAME
SELECT {TEXT_COMMON}, {_summary(_text_word, f"nullif({_word('DIR')}, '-')", f"strlen({_word('STATES')}) <= 400")},
  try_strptime(body[1:11], '%b %d %Y') IS NOT NULL AND {SUMMARY_RANGES} AS ok
FROM (SELECT *, string_split(split_part(body, ': SRC=', 2), ' ') AS w FROM stage WHERE what = 4)
) WHERE ok AND states_ok IS NOT false
"""
# what TAKE did not take: to the Python reader (numbered lines), and the counts of the others
LEFT = "SELECT n, line FROM stage WHERE what = 0 OR what > 0 AND n NOT IN (SELECT n FROM entries WHERE n >= ? AND n < ?)"
LEFT_PLAIN = "SELECT n, line FROM stage WHERE what = 0"
COUNTS = "SELECT count(*) FILTER (what = -1), count(*) FILTER (what = -2) FROM stage"


class Loader:
    """Files into the table `entries` of con; the lines set aside counted in lines (files.LineCounts), the
    malformed ones in by_host (aggregate.ByHost: its bad()), names cut in names (bounds.Names)."""

    def __init__(self, con, parser, lines, bad, names):
        self.con, self.parser, self.lines, self.bad, self.names = con, parser, lines, bad, names
        con.execute(f"CREATE TABLE entries ({ENTRY_COLUMNS})")
        con.execute("CREATE TEMP TABLE rawlines (n BIGINT, line VARCHAR)")
        self.file_no = 0
        self.pending = []  # [(first line, last line + 1)] of the lines in rawlines

    def read(self, path):
        """One file, in blocks; Unreadable if it cannot be read to its end (after the lines before)."""
        self.file_no += 1
        base = self.file_no << 40  # n: the file's number, then the line's
        where = show_path(path)
        counts = self.lines
        counts.line = 0
        rest, skipping = b"", False
        try:
            with open_log(path) as f:
                while data := f.read(BLOCK):
                    if skipping:
                        nl = data.find(b"\n")
                        if nl < 0:
                            continue
                        skipping, data = False, data[nl + 1:]
                        self._parse(base, where)  # the lines before it first: malformed ones are named in order
                        counts.line += 1
                        counts.too_long += 1
                        self.bad(f"{where}:{counts.line}")
                    buf = rest + data if rest else data
                    nl = buf.rfind(b"\n")
                    whole, rest = (buf[:nl], buf[nl + 1:]) if nl >= 0 else (None, buf)
                    if whole is not None:
                        self._block(whole, base, where)
                    if len(rest) > MAX_LINE:
                        rest, skipping = b"", True
                if rest and not skipping:
                    self._block(rest, base, where)
                self._parse(base, where)
                if skipping:
                    counts.line += 1
                    counts.too_long += 1
                    self.bad(f"{where}:{counts.line}")
        except READ_ERRORS as e:
            raise unreadable(path, e, counts) from None

    def _block(self, whole, base, where):
        """Whole lines (without the last newline), numbered from self.lines.line + 1, to rawlines; parsed once
        BATCH lines wait."""
        counts = self.lines
        k = whole.count(b"\n") + 1
        lo = base + counts.line + 1
        if k > SPARSE_LINES:
            self._sparse(whole, lo)
        else:
            self.con.execute(RAW, [lo, lo, whole.decode("utf-8", "replace")])
        self.pending.append((lo, lo + k))
        counts.line += k
        if sum(hi - lo for lo, hi in self.pending) >= BATCH:
            self._parse(base, where)

    def _sparse(self, whole, lo):
        """A block of many short lines (runs of blank ones, say: a .gz may hold millions): the blank ones
        counted here a run at a time, as files.py does, the others to rawlines."""
        ns, texts = [], []
        pos, end, n = 0, len(whole), lo
        data = whole + b"\n"
        while pos <= end:
            if data[pos] in BLANK_START and (m := BLANK_RUN.match(data, pos)):
                k = data.count(b"\n", pos, m.end())
                self.lines.blank += k
                n += k
                pos = m.end()
                continue
            nl = data.find(b"\n", pos)
            ns.append(n)
            texts.append(data[pos:nl].decode("utf-8", "replace"))
            n += 1
            pos = nl + 1
        if ns:
            self.con.execute("INSERT INTO rawlines SELECT unnest(?::BIGINT[]), unnest(?::VARCHAR[])", [ns, texts])

    def _parse(self, base, where):
        """The lines waiting in rawlines: to entries, or to the Python reader; the others counted."""
        if not self.pending:
            return
        lo, hi = self.pending[0][0], self.pending[-1][1]
        self.pending = []
        counts, con = self.lines, self.con
        con.execute(PARSE)
        con.execute("DELETE FROM rawlines")
        taken = con.execute(TAKE).fetchone()[0]
        too_long, blank = con.execute(COUNTS).fetchone()
        counts.too_long += too_long
        counts.blank += blank
        matched = con.execute("SELECT count(*) FROM stage WHERE what > 0").fetchone()[0]
        left = con.execute(
            "SELECT n, NULL FROM stage WHERE what = -1 UNION ALL " + (LEFT if matched > taken else LEFT_PLAIN)
            + " ORDER BY n", [lo, hi] if matched > taken else [])
        insert = con.cursor()  # another connection to the database: entries while `left` is read
        while marks := left.fetchmany(8192):  # the lines for the Python reader, a bounded number at a time
            rows = []
            for n, line in marks:
                try:
                    if line is None:
                        raise Malformed("too long")
                    rows.append(self._row(n, self.parser.parse(line)))
                except Malformed:
                    self.bad(f"{where}:{n - base}")
            if rows:  # one statement, its columns as lists (executemany runs one per row)
                insert.execute(f"INSERT INTO entries ({', '.join(NAMES)}) SELECT "
                               + ", ".join(f"unnest(?::{t}[])" for t in TYPES), [list(c) for c in zip(*rows)])
        insert.close()

    def _row(self, n, r):
        """An entry of the Python reader as a row of `entries` (names as the report's tables keep them)."""
        names = self.names
        comm = names.comm(r.comm, r.pid)
        src, dst = (str(r.src), str(r.dst))
        user = names.name(r.user) if r.user is not None else None
        unit = names.name(r.unit) if r.unit is not None else None
        container = r.container[:12] if r.container else None
        sec, ms = divmod(r.ts_ns, 1_000_000_000)
        common = [n, r.host, r.__class__ is Summary, sec, ms // 1_000_000, False]
        if r.__class__ is Summary:
            return [*common, None, r.family, src, r.sport, dst, r.dport, r.pid, comm, None, r.sock, r.uid, user,
                    r.cgroup, unit, container, r.result, r.direction, r.duration_us, r.handshake_us, r.sent,
                    r.received, r.retransmits, r.rtt_us]
        return [*common, r.kind, r.family, src, r.sport, dst, r.dport, r.pid, comm, r.newstate, r.sock, r.uid, user,
                r.cgroup, unit, container, None, None, None, None, None, None, None, None]

