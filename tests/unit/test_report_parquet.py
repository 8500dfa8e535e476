"""`socket-snoop report --export-parquet DIR`: the Parquet files, and docs/parquet/*.sql run unchanged on DuckDB
and on ClickHouse (chdb, embedded ClickHouse) over them, with the report's own numbers.

A central log of three hosts (tests/support/reportlogs.py) is reported with --json and exported; each SQL file
runs on both engines (a view `connections` over the files, as docs/parquet.md defines it for each) and gives the
same rows on both, and the rows the report's tables have.
"""

import csv
import io
import json
import os
import subprocess
import sys

import pytest
from socketsnoop.commands.report import engine
from support.reportlogs import write_log

pytestmark = pytest.mark.skipif(not engine.available(),
                                reason="the optional package duckdb is not installed (socket-snoop[fast-report])")
SQL = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "parquet")
QUERIES = sorted(f for f in os.listdir(SQL) if f.endswith(".sql"))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    d = tmp_path_factory.mktemp("parquet")
    log = d / "central.log"
    write_log(log, 6_000, context=True, hosts=3, seed=11)
    out = d / "out"
    r = subprocess.run([sys.executable, "-m", "socketsnoop", "report", "--no-lifecycles", "--json",
                        "--export-parquet", str(out), str(log)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return str(out), json.loads(r.stdout)


def duckdb_rows(directory, sql):
    import duckdb
    con = duckdb.connect()
    con.execute(f"CREATE VIEW connections AS SELECT * FROM read_parquet('{directory}/connections/*/*/*.parquet')")
    return [tuple(str(v) for v in row) for row in con.execute(sql).fetchall()]


def clickhouse_rows(directory, sql):
    chdb = pytest.importorskip("chdb", reason="chdb (embedded ClickHouse) is not installed: pip install chdb")
    from chdb import session
    s = session.Session()
    try:
        s.query("CREATE DATABASE IF NOT EXISTS snoop ENGINE = Atomic; USE snoop")
        s.query(f"CREATE VIEW connections AS SELECT * FROM file('{directory}/connections/*/*/*.parquet', Parquet) "
                "SETTINGS schema_inference_make_columns_nullable = 1")
        text = str(s.query(sql, "CSV"))
    finally:
        s.close()
    assert chdb
    return [tuple(row) for row in csv.reader(io.StringIO(text))]


@pytest.mark.parametrize("name", QUERIES)
def test_same_rows_on_duckdb_and_clickhouse(exported, name):
    directory, _ = exported
    with open(os.path.join(SQL, name)) as f:
        sql = f.read()
    rows = duckdb_rows(directory, sql)
    assert rows
    assert clickhouse_rows(directory, sql) == rows


def test_numbers_are_the_reports(exported):
    directory, doc = exported
    hosts = {h["host"]: h["connection_summaries"] for h in doc["hosts"]}
    q = {name: duckdb_rows(directory, open(os.path.join(SQL, name)).read()) for name in QUERIES}
    first = sorted(hosts)[0]  # the queries' LIMIT 10 over rows ordered by host: the first host's rows
    failed = [(f["remote"], str(f["failed"])) for f in hosts[first]["failed_by_destination"]]
    assert [(r, n) for h, r, n in q["failures_by_destination.sql"]] == failed
    talkers = [(str(p["pid"]), p["comm"], str(p["bytes_sent"]), str(p["bytes_received"]), str(p["connections"]))
               for p in hosts[first]["top_processes_by_bytes"]]
    assert [row[1:] for row in q["top_talkers.sql"]] == talkers
    resets = [(h, c, str(n)) for h in sorted(hosts) for c, n in sorted(hosts[h]["failed_by_cause"].items())
              if c in ("reset-sent", "reset-received")]
    assert q["resets_by_sender.sql"] == resets
    slowest = sorted((c["handshake_ms"] for s in hosts.values() for c in s["slowest_handshakes"]), reverse=True)
    assert [float(row[-1]) / 1000 for row in q["slow_handshakes.sql"]] == slowest[:10]
