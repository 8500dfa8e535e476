"""The report's fast path: DuckDB (an embedded analytical engine: in-process, vectorised, parallel, spilling to
disk) parses the lines (engine_load.py) and counts the tables in SQL; the result fills the same Report objects
the Python path makes, so render.py writes both alike.

Bounded: DuckDB works within LOAD_LIMIT while it reads the files and MEMORY_LIMIT after, on THREADS (one for a
statement that runs out of memory on two: Session), spilling to a temporary directory of its own
(removed at the end); Python holds one block of lines and the first --top rows of each table. The tables are exact
(every key counted: no table limit to leave events out of), and tops with ties keep the Python path's order
(first seen first, or by key where the Python path sorts by key).
"""

import datetime
import heapq
import importlib
import importlib.util
import ipaddress
import os
import shutil
import tempfile
from collections import Counter

from ...kernel.abi import EV_CONNECTION
from ...logformat.escape import unescape_comm
from ...pipeline.decode import TCP_CLOSE
from .aggregate import MAX_DROP_REASONS, MAX_HOSTS, OTHER_HOSTS, ResetKey
from . import engine_life, engine_sides
from .engine_export import export
from .engine_sides import ENDPOINT, EST
from .engine_load import Fallback, Loader
from .summaries import Conn, Process

# DuckDB's own buffers: the process stays under 200 MiB with Python and the library (peak RSS: reading 1M JSON
# lines, 215 MB at 96MB; 197 at 80MB, and 203 after it at 96MB over 10M lines, 197 at 88MB)
LOAD_LIMIT = "80MB"  # while the files are read (two threads parsing lines, whose working memory is beyond it)
MEMORY_LIMIT = "88MB"  # the tables counted after
THREADS = 2


def available():
    """The optional extra (socket-snoop[fast-report]) is installed; without it, the Python path."""
    return importlib.util.find_spec("duckdb") is not None


def _duckdb():
    """The package, imported when the fast path runs: every command imports this module (cli.py), and the
    live monitor and the Python path would carry its library for nothing (about 20 MB of RSS and 0.1 s at
    start)."""
    return importlib.import_module("duckdb")


def connect(tmpdir):
    # a database file in the directory, so that the tables too are held by DuckDB's buffers within the limit
    # (an in-memory database's tables are not spilled)
    threads = min(THREADS, os.cpu_count() or 1)
    return Session(_open(tmpdir, LOAD_LIMIT, threads), threads, tmpdir)


def _open(tmpdir, limit, threads):
    return _duckdb().connect(os.path.join(tmpdir, "report.duckdb"), config={
        "memory_limit": limit, "threads": threads, "temp_directory": tmpdir, "preserve_insertion_order": False})


class Session:
    """A DuckDB connection whose statement that runs out of memory is run again on one thread: each thread
    groups into hash tables of its own, and one thread's fit where two did not (the connections' grouping at
    10M text lines within 88MB). The statements after it have two threads again. Slower for that statement,
    and still far faster than the Python path, which an error here falls back to."""

    def __init__(self, con, threads, tmpdir=None):
        self.con, self.threads, self.tmpdir = con, threads, tmpdir
        self.retried = 0  # statements run again on one thread

    def reopen(self, limit):
        """The database closed and opened again within limit: DuckDB lets go of its buffers and caches (about
        40 MB of RSS after the tables of 1M lines), which a lower limit alone does not."""
        self.con.close()
        self.con = _open(self.tmpdir, limit, self.threads)

    def execute(self, sql, *args):
        try:
            return self.con.execute(sql, *args)
        except _duckdb().OutOfMemoryException:
            if self.threads == 1:
                raise
        self.retried += 1
        self.con.execute("SET threads = 1")
        try:
            return self.con.execute(sql, *args)
        finally:
            self.con.execute(f"SET threads = {self.threads}")

    def __getattr__(self, name):
        return getattr(self.con, name)


def load(paths, parser, by_host, lines, filters, since, until, top, export_dir=None, lifecycles=False):
    """Reads the files (in this order) into DuckDB and fills by_host (aggregate.ByHost) with a Report per
    host, and their lifecycles if asked (engine_life.py); Fallback if the fast path cannot read them as the
    Python path does. export_dir: where the entries counted go as Parquet (engine_export.py), if given."""
    tmpdir = tempfile.mkdtemp(prefix="socket-snoop-report-")
    try:
        con = connect(tmpdir)
        loader = Loader(con, tmpdir, parser, lines, by_host, by_host.names)
        for path in paths:
            loader.read(path)
        con.execute(f"SET memory_limit = '{MEMORY_LIMIT}'")
        try:
            _prepare(con, filters, since, until)
            if export_dir is not None:
                engine_sides.event_sides(con)
                export(con, export_dir)
            fill(con, by_host, top)
            if lifecycles:
                engine_life.walk(con, by_host.reports)
        except (_duckdb().Error, engine_life.CutShort) as e:  # out of memory, the temporary directory full
            raise Fallback(f"DuckDB: {str(e).splitlines()[0]}") from None
        con.close()
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def _local_offsets(con):
    """Text lines' times are local: the zone's offset of each minute they name, as Python's mktime gives it."""
    minutes = [m for (m,) in con.execute("SELECT DISTINCT sec // 60 FROM entries WHERE loc AND what = 1").fetchall()]
    epoch = datetime.datetime(1970, 1, 1)
    offs = [int((epoch + datetime.timedelta(minutes=m)).timestamp()) - m * 60 for m in minutes]
    con.execute("CREATE TABLE offsets AS SELECT unnest(?::BIGINT[]) AS minute, unnest(?::BIGINT[]) AS off",
                [minutes, offs])


def _prepare(con, filters, since, until):
    """`all_` (every entry, its host as the report groups them, its time), `ev` (the events wanted), `su` (the
    summary lines wanted), and the connections' sides (engine_sides.py). all_ and ev are views: a copy of every
    event costs more than the few scans of `entries` the tables take."""
    _local_offsets(con)
    con.execute(f"""
CREATE TABLE hosts AS SELECT host, first, CASE WHEN row_number() OVER (ORDER BY first) <= {MAX_HOSTS} THEN host
  ELSE '{OTHER_HOSTS}' END AS hkey FROM (SELECT host, min(n) AS first FROM (
    SELECT host, n FROM entries WHERE what = 1 UNION ALL SELECT host, n FROM warns) GROUP BY host)""")
    con.execute(f"""
CREATE VIEW all_ AS SELECT e.* EXCLUDE (host), h.hkey AS host,
  (e.sec + coalesce(o.off, 0)) * 1000000000 + e.ms * 1000000 AS ts,
  {ENDPOINT.format('e.src', 'e.sport')} AS local, {ENDPOINT.format('e.dst', 'e.dport')} AS remote
FROM (SELECT * EXCLUDE (what, rest) FROM entries WHERE what = 1) e JOIN hosts h ON h.host IS NOT DISTINCT FROM e.host
LEFT JOIN offsets o ON e.loc AND o.minute = e.sec // 60""")
    bounds = " AND ".join(c for c in (since is not None and f"ts >= {int(since)}",
                                      until is not None and f"ts <= {int(until)}") if c) or "true"
    passing = "true"
    if filters._tests:
        _filter_table(con, filters)
        passing = "n IN (SELECT n FROM passing)"
    con.execute(f"CREATE VIEW su_all AS SELECT * FROM all_ WHERE summ AND {bounds} AND {passing}")
    # the columns the tables read (the export reads su_all): the endpoints' texts are made after the grouping
    # (REMOTE) or for the top rows alone (_top_conns), not for every summary line
    con.execute(f"CREATE TABLE su AS SELECT {SU_COLUMNS} FROM su_all")
    con.execute(f"CREATE VIEW ev AS SELECT * FROM all_ WHERE NOT summ AND {bounds} AND {passing}")
    engine_sides.prepare(con)


def _filter_table(con, filters):
    """The filters (Python functions, as the monitor's) asked once per distinct key of what they test."""
    keys = con.execute("""SELECT DISTINCT summ, kind, fam, src, sport, dst, dport, pid, comm, news, uid, usr, cgroup,
        unit, container FROM all_""").fetchall()
    ok = []
    for key in keys:
        summ, kind, fam, src, sport, dst, dport, pid, comm, news, uid, usr, cgroup, unit, container = key
        src, dst, raw = ipaddress.ip_address(src), ipaddress.ip_address(dst), unescape_comm(comm)
        if summ:
            good = filters.match(EV_CONNECTION, fam, src, sport, dst, dport, pid, raw, TCP_CLOSE)
        else:
            user = unescape_comm(usr).decode("utf-8", "surrogateescape") if usr is not None else None
            good = filters.match(kind, fam, src, sport, dst, dport, pid, raw, news, uid, user, cgroup,
                                 unescape_comm(unit).decode("utf-8", "surrogateescape") if unit else None, container)
        if good:
            ok.append(key)
    con.execute("CREATE TABLE ok_keys (summ BOOLEAN, kind UTINYINT, fam UTINYINT, src VARCHAR, sport INTEGER, "
                "dst VARCHAR, dport INTEGER, pid BIGINT, comm VARCHAR, news UTINYINT, uid BIGINT, usr VARCHAR, "
                "cgroup VARCHAR, unit VARCHAR, container VARCHAR)")
    if ok:
        cols = list(zip(*ok))
        con.execute("INSERT INTO ok_keys SELECT " + ", ".join(f"unnest(?::{t}[])" for t in (
            "BOOLEAN", "UTINYINT", "UTINYINT", "VARCHAR", "INTEGER", "VARCHAR", "INTEGER", "BIGINT", "VARCHAR",
            "UTINYINT", "BIGINT", "VARCHAR", "VARCHAR", "VARCHAR", "VARCHAR")), [list(c) for c in cols])
    con.execute("""CREATE TABLE passing AS SELECT a.n FROM all_ a JOIN ok_keys k ON
        a.summ = k.summ AND a.kind IS NOT DISTINCT FROM k.kind AND a.fam = k.fam AND a.src = k.src
        AND a.sport = k.sport AND a.dst = k.dst AND a.dport = k.dport AND a.pid = k.pid AND a.comm = k.comm
        AND a.news IS NOT DISTINCT FROM k.news AND a.uid IS NOT DISTINCT FROM k.uid
        AND a.usr IS NOT DISTINCT FROM k.usr AND a.cgroup IS NOT DISTINCT FROM k.cgroup
        AND a.unit IS NOT DISTINCT FROM k.unit AND a.container IS NOT DISTINCT FROM k.container""")


def _top(order, top):
    return f"\0QUALIFY row_number() OVER (PARTITION BY host ORDER BY {order}) <= {int(top)} ORDER BY host, {order}"


def _rows(con, sql):
    """{host: [row without its host]} of a query whose first column is the host, in the query's order; the
    query's _top() applies to its result."""
    if "\0" in sql:
        inner, qualify = sql.split("\0")
        sql = f"SELECT * FROM ({inner}) {qualify}"
    out = {}
    for row in con.execute(sql).fetchall():
        out.setdefault(row[0], []).append(row[1:])
    return out


SU_COLUMNS = "host, n, ts, fam, dst, dport, pid, comm, dir, result, sent, recv, hs, dur, rtt"
REMOTE = ENDPOINT.format("dst", "dport")  # of a group by (fam, dst, dport): one text each, as all_'s remote
BUCKET = "CASE WHEN {0} = 0 THEN 0 ELSE least(floor(log2({0}))::INTEGER + 1, 64) END"


def fill(con, by_host, top):
    """A Report per host in by_host, its counts and the first top rows of its tables from the tables of
    _prepare (what render.py reads of a Report)."""
    hosts = [h for (h,) in con.execute("SELECT hkey FROM hosts GROUP BY hkey ORDER BY min(first)").fetchall()]
    reports = {}
    for host in hosts:
        r = reports[host] = by_host.reports[host] = by_host.make()
        r.malformed = None
    for host, kind, n in con.execute(
            "SELECT h.hkey, w.kind, count(*) FROM warns w JOIN hosts h ON h.host IS NOT DISTINCT FROM w.host "
            "WHERE w.kind IS NOT NULL GROUP BY ALL ORDER BY min(w.n)").fetchall():
        reports[host].warnings[kind] = n
    _counts(con, reports)
    _event_tables(con, reports, top)
    _record_tables(con, reports, top)


def _counts(con, reports):
    for host, total, summ in con.execute("SELECT host, count(*), count(*) FILTER (summ) FROM all_ GROUP BY host")\
            .fetchall():
        reports[host].summaries_read = summ
        reports[host].filtered = total
    for host, events, first, last in con.execute(
            "SELECT host, count(*) FILTER (NOT summ), min(ts), max(ts) FROM (SELECT host, ts, false AS summ FROM ev "
            "UNION ALL SELECT host, ts, true FROM su) GROUP BY host").fetchall():
        r = reports[host]
        r.events, r.first, r.last = events, first, last
    for host, n in con.execute("SELECT host, count(*) FROM su GROUP BY host").fetchall():
        reports[host].records.count = n
    for r in reports.values():
        r.filtered -= r.events + r.records.count
    for host, kind, n in con.execute("SELECT host, kind, count(*) FROM ev GROUP BY ALL ORDER BY ALL").fetchall():
        reports[host].kinds[kind] = n
    for host, state, n in con.execute(
            "SELECT host, news, count(*) FROM ev WHERE kind = 1 GROUP BY ALL ORDER BY host, min(n)").fetchall():
        reports[host].states[state] = n
    for table, col in (("established_per_minute", f"ev WHERE {EST}"), ("per_minute", "su")):
        for host, m, n in con.execute(f"SELECT host, ts // 60000000000, count(*) FROM {col} GROUP BY ALL ORDER BY ALL")\
                .fetchall():
            getattr(reports[host], table).minutes[m] = n


def _event_tables(con, reports, top):
    counts = f"count(*) FILTER ({EST}) AS est, count(*) FILTER (kind = 2) AS retr, count(*) FILTER (kind > 2) AS rst"
    for host, rows in _rows(con, f"SELECT host, pid, comm, {counts} FROM ev GROUP BY ALL "
                                 f"{_top('est + retr + rst DESC, pid, comm', top)}").items():
        for pid, comm, est, retr, rst in rows:
            reports[host].procs[Process(pid, comm)] = _counter(established=est, retransmits=retr, resets=rst)
    for table, col in (("units", "unit"), ("containers", "container"), ("users", "coalesce(usr, uid::VARCHAR)")):
        for host, rows in _rows(con, f"SELECT host, {col} AS name, count(*) AS events, {counts} FROM ev "
                                     f"WHERE {col} IS NOT NULL GROUP BY ALL {_top('events DESC, name', top)}").items():
            for name, events, est, retr, rst in rows:
                reports[host].owners[table][name] = _counter(events=events, established=est, retransmits=retr,
                                                             resets=rst)
    for host, rows in _rows(con, f"{engine_sides.REMOTES} {_top('c DESC, f', top)}").items():
        for ep, side, port, n, est, _ in rows:
            reports[host].remotes[(ep, side, port)] = n
            reports[host].remote_established[(ep, side, port)] = est
    for host, rows in _rows(con, "SELECT host, kind, local, dst, pid, comm, count(*) AS c, min(n) AS f FROM ev "
                                 f"WHERE kind > 2 GROUP BY ALL {_top('c DESC, f', top)}").items():
        for kind, local, dst, pid, comm, n, _ in rows:
            reports[host].resets[ResetKey(kind, local, dst, pid, comm)] = n


def _counter(**counts):
    return Counter({k: v for k, v in counts.items() if v})


def _conn(row):
    local, remote, pid, comm, direction, result, sent, recv, hs, dur, ts = row
    return Conn(local, remote, pid, comm, direction, result, int(sent), int(recv), hs, dur, ts)


def _top_conns(con, reports, top):
    """The connections with the most bytes and the slowest handshakes: the top rows by (v DESC, n) per host (a
    heap of top per host, max_by, not a window sorting every summary line), then those rows' fields."""
    order = f"({{0}})::HUGEINT * {1 << 62} + ({(1 << 62) - 1} - n)"  # v DESC, n ASC (n < 2^62, v < 2^65)
    tops = {}
    for table, value, where in (("by_bytes", "sent + recv", "true"), ("handshakes", "hs", "hs IS NOT NULL")):
        for host, rows in con.execute(f"SELECT host, max_by(({value}, n), {order.format(value)}, {int(top)}) "
                                      f"FROM su WHERE {where} GROUP BY host").fetchall():
            tops[(table, host)] = rows
    wanted = sorted({n for rows in tops.values() for _v, n in rows})
    conns = {n: _conn(row) for n, *row in con.execute(
        "SELECT n, local, remote, pid, comm, dir, result, sent, recv, hs, dur, ts FROM su_all "
        "SEMI JOIN (SELECT unnest(?::BIGINT[]) AS n) USING (n)", [wanted]).fetchall()}
    for (table, host), rows in tops.items():
        heap = getattr(reports[host].records, table)
        heap.extend((int(v), -n, conns[n]) for v, n in rows)
        heapq.heapify(heap)


def _record_tables(con, reports, top):
    for host, sent, recv in con.execute("SELECT host, sum(sent), sum(recv) FROM su GROUP BY host").fetchall():
        reports[host].records.sent, reports[host].records.received = int(sent), int(recv)
    for host, result, n in con.execute("SELECT host, result, count(*) FROM su WHERE result <> 'closed' GROUP BY ALL")\
            .fetchall():
        reports[host].records.causes[result] = n
    failed = "FROM su WHERE result <> 'closed' GROUP BY host, fam, dst, dport"
    for host, rows in _rows(con, f"SELECT d.host, d.remote, s.result, s.c FROM (SELECT * FROM (SELECT host, fam, dst, "
                                 f"dport, {REMOTE} AS remote, count(*) AS t {failed}) QUALIFY row_number() OVER "
                                 f"(PARTITION BY host ORDER BY t DESC, remote) <= {int(top)}) d JOIN (SELECT host, fam, "
                                 f"dst, dport, result, count(*) AS c {failed}, result) s ON d.host IS NOT DISTINCT FROM "
                                 "s.host AND d.fam = s.fam AND d.dst = s.dst AND d.dport = s.dport").items():
        for remote, result, n in rows:
            reports[host].records.failed_dst.setdefault(remote, Counter())[result] = n
    _top_conns(con, reports, top)
    _drops(con, reports)
    for host, rows in _rows(con, "SELECT host, pid, comm, sum(sent) AS s, sum(recv) AS r, count(*) AS c FROM su "
                                 f"GROUP BY ALL {_top('s + r DESC, c DESC, pid, comm', top)}").items():
        for pid, comm, s, r, c in rows:
            reports[host].records.proc_bytes[Process(pid, comm)] = [int(s), int(r), c]
    for host, rows in _rows(con, "SELECT host, pid, comm, count(*) AS c FROM su WHERE result = 'reset-sent' "
                                 f"GROUP BY ALL {_top('c DESC, pid, comm', top)}").items():
        for pid, comm, n in rows:
            reports[host].records.resets_sent[Process(pid, comm)] = n
    for host, rows in _rows(con, f"SELECT host, {REMOTE} AS remote, count(*) AS c FROM su WHERE result = 'reset-received' "
                                 f"GROUP BY host, fam, dst, dport {_top('c DESC, remote', top)}").items():
        for remote, n in rows:
            reports[host].records.resets_received[remote] = n
    for attr, col in (("durations", "dur"), ("handshake_times", "hs"), ("rtts", "rtt")):
        for host, b, n in con.execute(f"SELECT host, {BUCKET.format(col)} AS b, count(*) FROM su WHERE {col} IS NOT NULL "
                                      "GROUP BY ALL").fetchall():
            getattr(reports[host].records, attr).buckets[b] = n


def _drops(con, reports):
    """The connections whose summary line (wanted: su) says the kernel dropped packets (the table `drops` of the
    Python reader's lines: the patterns leave them to it), by their most frequent reason, as aggregate.py
    counts them: the first MAX_DROP_REASONS names in the order they come, any others as "other"."""
    for host, reason, n, packets in con.execute(f"""
SELECT host, CASE WHEN rk <= {MAX_DROP_REASONS} THEN reason ELSE 'other' END AS r, sum(c)::BIGINT, sum(p)::BIGINT
FROM (SELECT host, reason, count(*) AS c, sum(drops) AS p, row_number() OVER (PARTITION BY host ORDER BY min(n)) AS rk
  FROM (SELECT host, n, coalesce(d.reason, '-') AS reason, d.drops FROM su JOIN drops d USING (n)) GROUP BY host, reason)
GROUP BY host, r ORDER BY host, min(rk)""").fetchall():
        reports[host].drop_reasons[reason] = n
        reports[host].dropped += packets
