"""`report --export-parquet DIR`: the entries the report counted (after its filters and time bounds), as Parquet
files for the fleet's own engines (DuckDB, ClickHouse, Spark ...): DIR/events and DIR/connections (the
connections' summary lines, the kernel's records), each partitioned by host and day (UTC): host=H/day=D/*.parquet,
the host and day also a column of every file (an engine that does not read Hive partitions has them too).

The lines without a host (the monitor's own log) have the host "local". Times are UTC (TIMESTAMP, and ts_ns);
names as the report shows them (escaped); docs/parquet.md has the report's main questions as SQL over them.
"""

import os

from ...errors import SnoopError
from ...logformat.words import EVENT_NAMES
from .engine_cols import STATE_LIST

LOCAL_HOST = "local"
EVENT_LIST = "[" + ", ".join(f"'{EVENT_NAMES.get(k, '')}'" for k in range(max(EVENT_NAMES) + 1)) + "]"
COMMON = (f"coalesce(host, '{LOCAL_HOST}') AS host, strftime(make_timestamp(ts // 1000), '%Y-%m-%d') AS day, "
          "make_timestamp(ts // 1000) AS time, ts AS ts_ns, fam AS family, src, sport, dst, dport, local, remote, "
          "pid, comm")
EVENTS = (f"SELECT {COMMON}, {EVENT_LIST}[kind + 1] AS event, {STATE_LIST}[news + 1] AS new_state, "
          "side, sock::UBIGINT AS sock, uid, usr AS user, cgroup, unit, container FROM ev_side")
CONNECTIONS = (f"SELECT {COMMON}, result, dir AS direction, dur AS duration_us, hs AS handshake_us, rtt AS rtt_us, "
               "sent::UBIGINT AS bytes_sent, recv::UBIGINT AS bytes_received, retr AS retransmits, "
               "sock::UBIGINT AS sock, uid, usr AS user, cgroup, unit, container FROM su_all")


def export(con, directory):
    """Writes DIR/events and DIR/connections (existing files there are overwritten); a SnoopError (status 1)
    if it cannot."""
    for name, query in (("events", EVENTS), ("connections", CONNECTIONS)):
        path = os.path.join(os.path.abspath(directory), name)
        try:
            os.makedirs(path, exist_ok=True)
        except OSError as e:
            raise SnoopError(f"socket-snoop report: --export-parquet: {ascii(path)[1:-1]}: {e.strerror}", 1) from None
        con.execute(f"COPY ({query}) TO '{_quoted(path)}' (FORMAT parquet, PARTITION_BY (host, day), "
                    "WRITE_PARTITION_COLUMNS true, OVERWRITE_OR_IGNORE true)")


def _quoted(text):
    return text.replace("'", "''")
