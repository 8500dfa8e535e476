"""The fast path's lifecycles: the Python path's own code (aggregate.Report.track and join_summary, lifecycles.py)
fed with the entries DuckDB parsed, in the order of their lines, instead of lines parsed again in Python.

The lifecycles are a walk in order (which connection a line belongs to depends on every line of its addresses
before it, and what is kept on the memory budget), so they are not a query: the same walk gives the same
lifecycles, the same joins of a connection to its summary line and the same counts of what was not kept. Only
the events and summary lines wanted (the time bounds and the filters, as `ev` and `su_all` have them) cross to
Python, with the fields the walk reads, SPAN lines at a time, put in order by Python: DuckDB 2.0.1 ended a
sorted result short without an error when the sort ran out of memory (every entry at 88 MB, a range of 2^17
lines at 24 MB). The rows walked are counted against the entries wanted all the same: fewer is an error, and
the report takes the Python path. Python's garbage collector is off during the walk, as for all the reading
(commands/report/__init__.py: run): its passes over the growing tables were a third of the walk's time at 1M lines.
"""

from operator import itemgetter

from .parse import Record, Summary

# line numbers fetched and sorted at a time (engine_load.py numbers two a line: 8,192 lines; 1M text lines took
# 2.5 s to fetch, 1.85 s with twice as many at a time and 13 MB more)
SPAN = 1 << 14
WALK_LIMIT = "24MB"  # DuckDB's buffers while Python walks
# the byte budgets of the joins and of the lifecycles (bounds.py's estimates; the Python path's: TABLE_BYTES,
# shared with its tables, and LIFECYCLE_BYTES), so that the walk's peak stays under the load's (about 190 MB).
# At 1M text lines the RSS after the walk was 175 MB with these, 202 MB with 28 and 36 MiB, 229 with 56 and 36.
JOIN_BYTES = 24 << 20
LIFE_BYTES = 24 << 20
# one row per entry wanted: an event (summ false: kind, news) or a summary line (result, sent, recv, dur)
FEED = """SELECT n, host, summ, ts, kind, fam, src, sport, dst, dport, pid, comm, news, sock, local, remote, result,
  sent, recv, dur FROM (
    SELECT host, n, false AS summ, ts, kind, fam, src, sport, dst, dport, pid, comm, news, sock, local, remote,
      NULL::VARCHAR AS result, NULL::HUGEINT AS sent, NULL::HUGEINT AS recv, NULL::BIGINT AS dur FROM ev
    UNION ALL SELECT host, n, true, ts, NULL, fam, src, sport, dst, dport, pid, comm, NULL, sock, local, remote,
      result, sent, recv, dur FROM su_all)
WHERE n >= ? AND n < ?"""


class CutShort(Exception):
    pass


def walk(con, reports):
    """Each wanted entry to its host's Report (reports: {host: Report}), in line order: an event to its
    lifecycle (Report.track), a summary line to the lifecycle it ends (Report.join_summary); CutShort if
    DuckDB gave fewer rows than there are. con (engine.Session) is opened again within WALK_LIMIT, and the
    walk's joins and lifecycles draw on JOIN_BYTES and LIFE_BYTES, so that its peak stays under the load's."""
    con.reopen(WALK_LIMIT)
    for report in reports.values():
        report.budget.limit = min(report.budget.limit, JOIN_BYTES)
        report.lifecycles.budget.limit = min(report.lifecycles.budget.limit, LIFE_BYTES)
    (wanted,) = con.execute("SELECT (SELECT count(*) FROM ev) + (SELECT count(*) FROM su_all)").fetchone()
    host_of, report, walked = object(), None, 0
    for rows in _rows(con):
        walked += len(rows)
        for _n, host, summ, ts, kind, fam, src, sport, dst, dport, pid, comm, news, sock, local, remote, result, \
                sent, recv, dur in rows:
            if host is not host_of and host != host_of:
                host_of, report = host, reports[host]
            if summ:
                report.join_summary(Summary(ts, fam, src, sport, dst, dport, pid, b"", result, None, dur, None,
                                            int(sent), int(recv), 0, None, 0, (), False, True, sock), local, remote)
            else:
                report.track(Record(ts, kind, fam, src, sport, dst, dport, pid, b"", news, sock), local, remote, comm)
    if walked != wanted:
        raise CutShort(f"DuckDB gave {walked} of the {wanted} entries for the lifecycles")


def _rows(con):
    """The FEED rows, SPAN lines at a time, in order (each file's lines are numbered from a base of their own,
    far apart: only the spans that hold lines are asked)."""
    for (span,) in con.execute(f"SELECT DISTINCT n // {SPAN} AS s FROM entries ORDER BY s").fetchall():
        rows = con.execute(FEED, [span * SPAN, (span + 1) * SPAN]).fetchall()
        rows.sort(key=itemgetter(0))
        yield rows
