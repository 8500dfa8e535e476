"""The fast path's reading: by the compiled reader where it is built (engine_scan.py); else DuckDB reads each
file itself (read_csv with one VARCHAR column: no delimiter, quote or escape;
in parallel for a plain file, gunzipped for a .gz), numbers its lines, classifies them by engine_sql.py's
patterns and cuts their fields (engine_cols.py) in one query, into the table `entries`. Only the lines the
patterns (or the compiled reader) do not take go to the Python reader, and their entries join the table.

Counted as files.py counts: a line over MAX_LINE bytes is too long, blank lines are counted. A line DuckDB
rejects (not UTF-8) is read again by Python at the byte where it starts and parsed by the Python reader. DuckDB
ends a line at a carriage return too, where files.py does not, and drops a line of about MAX_ROW bytes or more
unsaid: a file that holds either is said to the caller (Fallback), which then takes the Python path for the
whole report.
"""

import mmap
import os

from ...logformat.entries import parse_addr
from .engine_cols import CTX, ENTRY_COLUMNS, JSON_PATHS, NAMES, OK_OF, TYPES, fields_by_kind
from .engine_sql import full
from . import engine_scan
from . import engine_sql as q
from .files import MAX_LINE, READ_ERRORS, is_gzip, open_log, show_path
from ...logformat.entries import LoggedWarning
from .aggregate import warning_kind
from .parse import Malformed, Summary

MAX_ROW = 1 << 20  # read_csv's max_line_size (a line about this long or longer: unreadable_here)
LONG = MAX_ROW - 64  # a line this long or longer makes the report take the Python path (unreadable_here)
# read_csv's buffer_size: its default (about 30 MiB) is allocated afresh for every block of the file read, and the
# page faults of that were half the numbering's time (3.4 of 6 s at 10 million text lines)
BUFFER = 2 * MAX_ROW
BATCH = 2048  # lines for the Python reader parsed, then inserted, at a time
SHORT_LINES, SHORT_BYTES = 1_000_000, 16  # a .gz of this many lines, of fewer bytes than this on average: mostly blank
WINDOW = 64 << 20  # bytes of a plain file looked at a time for a carriage return
FILE_BITS = 41  # n = file number << FILE_BITS | 2 * row (+1: a line DuckDB rejected, after the row before it)


class Fallback(Exception):
    """The fast path cannot read these files as files.py does; str(): why, for the message."""


def source(path, gz):
    """read_csv of one file (a link of our own naming it: no glob, no quote in the path)."""
    # delim: the NUL byte (a file that holds one takes the Python path: unreadable_here); '\\0' in SQL is two
    # characters, a backslash and a zero, which cut a JSON line of a process named 'a\\0' (before 2026-12-07)
    return (f"read_csv('{path}', columns={{'line': 'VARCHAR'}}, header=false, delim=chr(0), quote='', escape='', "
            f"new_line='\\n', auto_detect=false, strict_mode=false, store_rejects=true, max_line_size={MAX_ROW}, "
            f"buffer_size={BUFFER}, compression='{'gzip' if gz else 'none'}')")


CONN, STAMP, SUMMARY = """contains(line, '"event":"connection"')""", """contains(line, '{"timestamp":')""", \
    "contains(line, ' Connection Summary: ')"
BLANK = "regexp_full_match(line, '[ \\t\\f\\v]*')"
# each line's kind (`k`, as WHAT classifies them: 1-4 a kind the patterns took, 0 for the Python reader, -1 too
# long, -2 blank); the cheap tests first, a pattern only on the lines they leave to it
KIND = f"""CASE WHEN line IS NULL THEN -2 WHEN strlen(line) > {MAX_LINE} THEN CASE WHEN {BLANK} THEN -2 ELSE -1 END
  WHEN {CONN} THEN CASE WHEN {full(q.JSON_SUMMARY)} THEN 2 ELSE 0 END
  WHEN {STAMP} THEN CASE WHEN {full(q.JSON_EVENT)} THEN 1 ELSE 0 END
  WHEN {SUMMARY} THEN CASE WHEN {full(q.TEXT_SUMMARY)} THEN 4 ELSE 0 END
  WHEN {full(q.TEXT_EVENT)} THEN 3 WHEN {BLANK} THEN -2 ELSE 0 END"""
# the file's lines numbered, stored once (numbering is one ordered pass: DuckDB runs it on one thread; an
# insert that keeps the file's order instead, to number by rowid, runs on one thread too, and longer)
NUMBER = "CREATE OR REPLACE TABLE lines AS SELECT {base} + 2 * row_number() OVER () AS n, line FROM {src}"
# then one query on every thread classifies every line and cuts the fields of those the patterns take (each
# kind's expressions on its own lines alone: CASE k) into `entries`: what 1 an entry, 0 a line for the Python
# reader (its text in `rest`, kept for an IPv6 line too: Loader._canonical), -1 too long, -2 blank
LOAD = """
INSERT INTO entries BY NAME
WITH c AS (SELECT n, line, {kind} AS k FROM lines),
p AS (SELECT *, line[1] <> '{{' AND (line[1] = '<' OR NOT (line[12] = ' ' AND line[15] = ':')) AS pre FROM c),
b AS (SELECT n, k, line, CASE WHEN k > 0 AND pre THEN string_split(line[:strpos(line, ' socket-snoop') - 1], ' ')[-1]
    END AS host, {body} AS body FROM p),
x AS (SELECT *, CASE WHEN k IN (1, 2) THEN {json_parsed} END AS j, CASE WHEN k IN (3, 4) THEN {text_parsed} END AS w
  FROM b),
v AS (SELECT *, {ctx} AS ctx FROM x),
y AS (SELECT n, k, line, host, {fields} FROM v),
z AS (SELECT *, k > 0 AND coalesce({ok}, false) AS ok FROM y)
SELECT * EXCLUDE (k, line, states_ok, ok), CASE WHEN ok THEN 1 WHEN k > 0 THEN 0 ELSE k END AS what,
  CASE WHEN k >= 0 AND (NOT ok OR fam = 6) THEN line END AS rest
FROM z
"""
JSON_PARSED = f"json_extract_string(body, {JSON_PATHS})"
TEXT_PARSED = "string_split(split_part(body, ': SRC=', 2), ' ')"
# the line without its syslog prefix and trailing blanks; rtrim copies every line it is given (0.65 CPU-s a
# million text lines), so only the lines that end with a blank go through it
TRIM = "rtrim({0}, ' ' || chr(9) || chr(12) || chr(11))"
PAST_PREFIX = "ltrim(line[strpos(line, ' socket-snoop') + 13:], '[]0123456789: ')"
BODY = (f"CASE WHEN k <= 0 THEN NULL WHEN pre THEN {TRIM.format(PAST_PREFIX)} "
        f"WHEN line[-1] IN (' ', chr(9), chr(12), chr(11)) THEN {TRIM.format('line')} ELSE line END")


def load_queries(src, base):
    """The queries that load one file: its lines numbered, then every line into `entries`."""
    # the lines' table by zstd: DuckDB's own choice (dictionary, FSST) was most of the numbering's one thread
    # (0.98 s of 1M text lines against 0.42 s uncompressed); uncompressed, the table is written to the
    # temporary directory as it is (4.4 GB at 10M JSON lines, 10.7 s of system time); zstd costs what
    # uncompressed does at 1M lines, an eighth of its size (20 MB a million text lines, 31 MB JSON)
    yield "SET force_compression = 'zstd'"
    yield NUMBER.format(base=base, src=src)
    yield "SET force_compression = 'auto'"
    yield LOAD.format(kind=KIND, body=BODY, json_parsed=JSON_PARSED, text_parsed=TEXT_PARSED,
                      ctx=CTX, fields=fields_by_kind(), ok=OK_OF)


REJECTS = "SELECT line, min(byte_position), bool_or(error_type = 'LINE SIZE OVER MAXIMUM') FROM reject_errors GROUP BY line ORDER BY line"


def unreadable_here(path, gz):
    """Why DuckDB would not read this file's lines as files.py does, or None: a carriage return (DuckDB ends a
    line there too), a NUL byte (DuckDB cuts its line there: a line of a log zeroed by a crash read as blank,
    or a line cut at a NUL read as one of ours), or a line of LONG bytes or more (DuckDB's reader drops it unsaid, with or without a newline,
    and numbers the lines after it one less); or, in a .gz, lines so short on average that they are mostly blank
    (a few KB that unpack to millions of blank lines: DuckDB numbers and classifies each, about a microsecond
    a line, where the Python path skips a blank run a block at a time). Read a window at a time: C speed,
    bounded memory."""
    run = 0  # bytes of the line that the window before ended in
    lines = size = 0
    for data in _windows(path, gz):
        if data.find(b"\r") >= 0:  # not `in`: an mmap's `in` goes byte by byte in Python's sequence protocol
            return "a carriage return in a line"
        if data.find(b"\0") >= 0:  # read_csv's delimiter: DuckDB would drop the rest of its line unsaid
            return "a NUL byte in a line"
        run = _longest(data, run)
        if run >= LONG:
            return f"a line of {LONG} bytes or more"
        if gz:  # (bytes: counted at C speed; a plain file's work is bounded by its size)
            lines, size = lines + data.count(b"\n"), size + len(data)
    if lines >= SHORT_LINES and size < lines * SHORT_BYTES:
        return f"{lines:,} lines of {size / lines:.1f} bytes on average (mostly blank: the Python path skips them faster)"
    return None


def _longest(data, run):
    """LONG if a line of data (its first one continuing run bytes of the window before) has LONG bytes or more,
    else the bytes of data after its last newline (plus run if it has none). A line of LONG bytes holds a whole
    block of LONG // 2 aligned from the first newline: one find a block, and the exact length only of the lines
    that hold a block without a newline."""
    first = data.find(b"\n")
    if first < 0:
        return run + len(data)
    if run + first >= LONG:
        return LONG
    block = LONG // 2
    for start in range(first + 1, len(data) - block + 1, block):
        if data.find(b"\n", start, start + block) < 0:
            end = data.find(b"\n", start + block)
            if (end if end >= 0 else len(data)) - data.rfind(b"\n", 0, start) - 1 >= LONG:
                return LONG
    return len(data) - data.rfind(b"\n") - 1


def _windows(path, gz):
    if gz:
        with open_log(path) as f:
            while data := f.read(WINDOW // 16):
                yield data
        return
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        for off in range(0, size, WINDOW):
            with mmap.mmap(f.fileno(), min(WINDOW, size - off), access=mmap.ACCESS_READ, offset=off) as m:
                yield m


class Loader:
    """Files into the table `entries` of con; the lines set aside counted in lines (files.LineCounts), the
    malformed ones in by_host (aggregate.ByHost), names cut in names (bounds.Names)."""

    def __init__(self, con, tmpdir, parser, lines, by_host, names):
        self.con, self.tmpdir, self.parser, self.lines, self.by_host, self.names = \
            con, tmpdir, parser, lines, by_host, names
        con.execute(f"CREATE TABLE entries ({ENTRY_COLUMNS}, what TINYINT, rest VARCHAR)")
        # two kinds of lines the patterns leave to the Python reader, kept beside `entries` (no column of theirs in
        # the insert of every line): the health warnings (the kind if active) and the packets dropped that a
        # connection's summary line says
        con.execute("CREATE TABLE warns (n BIGINT, host VARCHAR, kind VARCHAR)")
        con.execute("CREATE TABLE drops (n BIGINT, drops BIGINT, reason VARCHAR)")
        self.warns, self.drops = [], []
        self.file_no = 0
        self.first_bad = None  # (file number, line, 'FILE:LINE') of the first malformed line

    def read(self, path):
        """One file; Fallback if the fast path cannot read it as files.py does."""
        self.file_no += 1
        where = show_path(path)
        base = self.file_no << FILE_BITS
        lib = engine_scan.library()
        if lib is not None:
            self._read_compiled(lib, path, where, base)
            return
        try:
            gz = is_gzip(path)
            why = unreadable_here(path, gz)
            if why:
                raise Fallback(f"{where}: {why}")
        except READ_ERRORS as e:
            raise Fallback(f"{where}: {e}") from None
        link = os.path.join(self.tmpdir, f"f{self.file_no}")
        os.symlink(os.path.abspath(path), link)
        src = source(link, gz)
        con = self.con
        try:
            for query in load_queries(src, base):
                con.execute(query)
            con.execute("DROP TABLE lines")
            self._canonical(base)
            rejects = con.execute(REJECTS).fetchall()
            con.execute("DELETE FROM reject_errors")
            con.execute("DELETE FROM reject_scans")
        except Exception as e:  # duckdb.Error: a damaged .gz, a file that went away
            raise Fallback(f"{where}: {str(e).splitlines()[0]}") from None
        self._rest(path, where, base, gz, rejects)

    def _read_compiled(self, lib, path, where, base):
        """A log by the compiled reader (engine_scan.py): no pattern, no numbering pass; the lines it does not
        take to the Python reader, as DuckDB's are. None of DuckDB's reader's limits apply (a carriage
        return, a line of a MiB, a .gz of blank lines)."""
        try:
            scan = engine_scan.read(lib, self.con, path, base)
            self._canonical(base)
        except (*READ_ERRORS, MemoryError) as e:
            raise Fallback(f"{where}: {e}") from None
        except Exception as e:  # duckdb.Error
            raise Fallback(f"{where}: {str(e).splitlines()[0]}") from None
        first_long = None if scan.first_long is None else base + 2 * scan.first_long
        self._rest(path, where, base, False, [], (scan.blank, scan.too_long, first_long))

    def _canonical(self, base):
        """The IPv6 addresses the patterns took that are not in the Python reader's form (ipaddress's str: zeros
        compressed), checked once each: their lines go to the Python reader (what 0), which reads them as it
        always did. A batch at a time, into a table: bounded, however many there are."""
        bounds = [base, base + (1 << FILE_BITS)]
        con, cur = self.con, self.con.cursor()
        con.execute("CREATE OR REPLACE TABLE odd6 (a VARCHAR)")
        cur.execute("SELECT DISTINCT unnest([src, dst]) FROM entries WHERE what = 1 AND fam = 6 AND n >= ? AND n < ?",
                    bounds)
        odd = False
        while batch := cur.fetchmany(8192):
            if rows := [a for (a,) in batch if not _canonical6(a)]:
                con.execute("INSERT INTO odd6 SELECT unnest(?::VARCHAR[])", [rows])
                odd = True
        cur.close()
        if odd:
            con.execute("UPDATE entries SET what = 0 WHERE what = 1 AND fam = 6 AND n >= ? AND n < ? AND "
                        "(src IN (SELECT a FROM odd6) OR dst IN (SELECT a FROM odd6))", bounds)
        con.execute("DROP TABLE odd6")

    def _rest(self, path, where, base, gz, rejects, counted=None):
        """The lines the patterns did not take, to the Python reader (file order); the ones DuckDB rejected
        read again here; too long and blank ones counted (counted: blank, too long and the first too long's n,
        as the compiled reader counted them; else from `entries`)."""
        con, counts = self.con, self.lines
        blank, too_long, first_long = counted or con.execute(
            "SELECT count(*) FILTER (what = -2), count(*) FILTER (what = -1), min(n) FILTER (what = -1) FROM entries "
            "WHERE n >= ? AND n < ?", [base, base + (1 << FILE_BITS)]).fetchone()
        counts.too_long += too_long
        counts.blank += blank
        reject_lines = [line for line, _, _ in rejects]
        if first_long is not None:
            self._bad(where, self._line(first_long - base, reject_lines), too_long)
        for line, pos, kind in rejects:
            text = None if kind else self._reread(path, gz, pos)
            rows_before = line - 1 - reject_lines.index(line)
            self._parse(base + 2 * rows_before + 1, text, where, line)
        # one sorted scan, read a bounded batch at a time (a cursor of its own: each batch's entries are inserted
        # by con as it goes), not a scan of every entry for each batch; its rows counted (DuckDB 2.0.1 ended a
        # sorted result short without an error when the sort ran out of memory: engine_life.py)
        bounds = [base, base + (1 << FILE_BITS)]
        (wanted,) = con.execute("SELECT count(*) FROM entries WHERE what = 0 AND n > ? AND n < ?", bounds).fetchone()
        cur, read = con.cursor(), 0
        try:
            cur.execute("SELECT n, rest FROM entries WHERE what = 0 AND n > ? AND n < ? ORDER BY n", bounds)
            while batch := cur.fetchmany(BATCH):
                read += len(batch)
                rows = []
                for n, text in batch:
                    row = self._parse(n, text, where, None, reject_lines, base, insert=False)
                    if row is not None:
                        rows.append(row)
                self._insert(rows)
        finally:
            cur.close()
        if read != wanted:
            raise Fallback(f"{where}: DuckDB gave {read} of the {wanted} lines for the Python reader")

    def _line(self, row, reject_lines):
        """A file's line number of the row DuckDB numbered row (2 * row in n), past the rejected lines before it."""
        line = row // 2
        for r in reject_lines:
            if r <= line:
                line += 1
        return line

    def _reread(self, path, gz, pos):
        """The line that starts at byte pos (of the uncompressed data); None if over MAX_LINE bytes."""
        with open_log(path) as f:
            if gz:
                while pos > 0:
                    pos -= len(f.read(min(pos, 1 << 20)) or b"x" * pos)
            else:
                f.seek(pos)
            data = f.read(MAX_LINE + 1)
        nl = data.find(b"\n")
        if nl < 0 and len(data) > MAX_LINE:
            return None
        return data[:nl if nl >= 0 else len(data)].decode("utf-8", "replace")

    def _parse(self, n, text, where, line, reject_lines=(), base=0, insert=True):
        """One line by the Python reader: its row of `entries`, or None (a warning, or counted as malformed)."""
        try:
            if text is None:
                self.lines.too_long += 1
                raise Malformed("too long")
            row = self._row(n, self.parser.parse(text))
        except Malformed:
            self._bad(where, line if line is not None else self._line(n - base, reject_lines))
            return None
        if insert:
            self._insert([row] if row is not None else [])
        return row

    def _bad(self, where, line, count=1):
        self.by_host.malformed += count
        key = (self.file_no, line)
        if self.first_bad is None or key < self.first_bad[:2]:
            self.first_bad = (*key, f"{where}:{line}")
            self.by_host.first_malformed = self.first_bad[2]

    def _insert(self, rows):
        if rows:  # one statement, its columns as lists (executemany runs one per row)
            self.con.execute(f"INSERT INTO entries ({', '.join(NAMES)}, what) SELECT "
                             + ", ".join(f"unnest(?::{TYPES[c]}[])" for c in NAMES) + ", 1",
                             [list(c) for c in zip(*rows)])
        for table, kept, types in (("warns", self.warns, "BIGINT VARCHAR VARCHAR"),
                                   ("drops", self.drops, "BIGINT BIGINT VARCHAR")):
            if kept:
                self.con.execute(f"INSERT INTO {table} SELECT " + ", ".join(f"unnest(?::{t}[])" for t in types.split()),
                                 [list(c) for c in zip(*kept)])
                kept.clear()

    def _row(self, n, r):
        """An entry of the Python reader as a row of `entries` (names as the report's tables keep them); None
        for a health warning line, kept for `warns` (its kind if it says the warning is active, as aggregate.py
        counts them: no time bounds, no filters)."""
        if r.__class__ is LoggedWarning:
            self.warns.append((n, r.host, warning_kind(r)))
            return None
        names = self.names
        comm = names.comm(r.comm, r.pid)
        src, dst = (str(r.src), str(r.dst))
        user = names.name(r.user) if r.user is not None else None
        unit = names.name(r.unit) if r.unit is not None else None
        container = r.container[:12] if r.container else None
        sec, ms = divmod(r.ts_ns, 1_000_000_000)
        common = [n, r.host, r.__class__ is Summary, sec, ms // 1_000_000, False]
        if r.__class__ is Summary:
            if r.drops:
                self.drops.append((n, r.drops, r.drop_reason))
            return [*common, None, r.family, src, r.sport, dst, r.dport, r.pid, comm, None, r.sock, r.uid, user,
                    r.cgroup, unit, container, r.result, r.direction, r.duration_us, r.handshake_us, r.sent,
                    r.received, r.retransmits, r.rtt_us]
        return [*common, r.kind, r.family, src, r.sport, dst, r.dport, r.pid, comm, r.newstate, r.sock, r.uid, user,
                r.cgroup, unit, container, None, None, None, None, None, None, None, None]


def _canonical6(text):
    """Whether the Python reader reads this IPv6 address text (parse_addr) as the same text."""
    try:
        return str(parse_addr(6, text)) == text
    except Malformed:
        return False
