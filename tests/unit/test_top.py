"""top's counting and rows, from decoded rows made as the kernel's are (no kernel): openings and records per
flow, active connections, a record read before its opening, groupings, percentiles, columns that fit."""

import json
import subprocess
import sys

from socketsnoop.commands.top.columns import GROUPINGS, Names, fit, percentile, rollup, sort_rows, table_lines, totals
from socketsnoop.commands.top.snapshot import Snapshot, document, header_lines
from socketsnoop.commands.top.tally import Tally
from socketsnoop.pipeline.health import RECORD_KINDS, Health
from socketsnoop.kernel.abi import DIR_IN, DIR_OUT, RESULT_CLOSED, RESULT_REFUSED, RESULT_RESET_SENT, RESULT_TIMEOUT
from socketsnoop.pipeline.decode import make_record_row, make_row

LO = bytes([127, 0, 0, 1]).ljust(16, b"\0")
PEER = bytes([10, 0, 0, 9]).ljust(16, b"\0")
SYN_SENT, SYN_RECV = 2, 3
S = 1_000_000_000


def opening(sk, ts, pid=10, comm=b"curl", dport=443, daddr=PEER, state=SYN_SENT, sport=0, saddr=LO):
    return make_row(ts_ns=ts, skaddr=sk, newstate=state, oldstate=7 if state == SYN_SENT else 10, pid=pid,
                    comm=comm, sport=sport, dport=dport, saddr=saddr, daddr=daddr, uid=1000)


def record(sk, ts, result=RESULT_CLOSED, pid=10, comm=b"curl", dport=443, sport=40000, direction=DIR_OUT,
           handshake_ns=0, rtt_us=0, sent=0, received=0, retransmits=0, daddr=PEER):
    return make_record_row(ts_ns=ts, skaddr=sk, result=result, pid=pid, comm=comm, sport=sport, dport=dport,
                           saddr=LO, daddr=daddr, direction=direction, handshake_ns=handshake_ns, rtt_us=rtt_us,
                           bytes_sent=sent, bytes_received=received, retransmits=retransmits, uid=1000)


def rows_of(tally, by="process", seconds=2.0):
    interval, active = tally.take(0)
    return {r["label"]: r for r in rollup(interval, active, by, Names(None), seconds)}


def test_openings_and_records_counted_per_process():
    t = Tally()
    t.opens([opening(1, 100), opening(2, 101), opening(3, 102, pid=20, comm=b"app", dport=5432)])
    t.records([record(1, 200, handshake_ns=50_000, rtt_us=30, sent=100, received=7),
               record(3, 201, result=RESULT_REFUSED, pid=20, comm=b"app", dport=5432)])
    rows = rows_of(t)
    assert rows["10 curl"]["opened"] == 2 and rows["10 curl"]["opened_per_s"] == 1.0
    assert rows["10 curl"]["active"] == 1 and rows["10 curl"]["ended"] == 1  # socket 2 is still open
    assert (rows["10 curl"]["bytes_sent"], rows["10 curl"]["bytes_received"]) == (100, 7)
    assert rows["10 curl"]["handshake_p50_ms"] == 0.05 and rows["10 curl"]["rtt_p99_ms"] == 0.03
    assert rows["20 app"]["refused"] == 1 and rows["20 app"]["active"] == 0
    assert rows["20 app"]["handshake_p50_ms"] is None
    # the next interval: nothing opened or ended, socket 2 still open
    rows = rows_of(t)
    assert list(rows) == ["10 curl"] and rows["10 curl"]["opened"] == 0 and rows["10 curl"]["active"] == 1


def test_a_record_read_before_its_opening_leaves_nothing_active():
    """The rings are read one after the other: a connection that opens and ends between the two reads has
    its record read first. Its opening, read next, is counted as opened, not as open."""
    t = Tally()
    t.records([record(7, 500)])
    t.opens([opening(7, 400)])
    rows = rows_of(t)
    assert rows["10 curl"]["opened"] == 1 and rows["10 curl"]["ended"] == 1 and rows["10 curl"]["active"] == 0
    # the same socket address reused later by a new connection: that one is open
    t.opens([opening(7, 900)])
    assert rows_of(t)["10 curl"]["active"] == 1


def test_groupings_roll_up_the_same_counts():
    t = Tally()
    t.opens([opening(1, 1), opening(2, 2, pid=11, comm=b"wget"),
             opening(3, 3, pid=30, comm=b"nginx", state=SYN_RECV, sport=443, saddr=LO, daddr=PEER, dport=51000)])
    t.records([record(1, 5, result=RESULT_TIMEOUT), record(4, 6, pid=30, comm=b"nginx", direction=DIR_IN,
                                                          sport=443, dport=51000, result=RESULT_RESET_SENT)])
    interval, active = t.take(0)
    names = Names(None)
    service = {r["label"]: r for r in rollup(interval, active, "service", names, 1.0)}
    assert service["10.0.0.9:443"]["opened"] == 2 and service["10.0.0.9:443"]["timeout"] == 1
    assert service["(incoming)"]["opened"] == 1 and service["(incoming)"]["resets_sent"] == 1
    listener = {r["label"]: r for r in rollup(interval, active, "listener", names, 1.0)}
    assert listener["127.0.0.1:443"]["active"] == 1 and listener["(outgoing)"]["opened"] == 2
    remote = rollup(interval, active, "remote", names, 1.0)
    assert [r["label"] for r in remote] == ["10.0.0.9"] and remote[0]["opened"] == 3
    for by in GROUPINGS:  # every grouping: the same host totals
        rows = rollup(interval, active, by, names, 1.0)
        assert totals(rows)["opened"] == 3 and totals(rows)["ended"] == 2 and totals(rows)["active"] == 2, by


def test_a_hostile_name_is_one_safe_token():
    t = Tally()
    t.opens([opening(1, 1, comm=b"\x1b[2Jevil name")])
    (label,) = rows_of(t)
    assert label == r"10 \x1b[2Jevil\x20name" and label.isprintable()


def test_percentiles_are_nearest_rank():
    values = list(range(1, 101))
    assert percentile(values, 0.5) == 50 and percentile(values, 0.99) == 99
    assert percentile([7], 0.99) == 7 and percentile([], 0.5) is None


def test_columns_fit_the_width_and_keep_the_sort_column():
    t = Tally()
    t.opens([opening(i, i) for i in range(1, 4)])
    t.records([record(1, 10, handshake_ns=10**6, rtt_us=500)])
    rows = sort_rows(list(rows_of(t).values()), "opened_per_s")
    for width in (80, 120, 200):
        lines = table_lines(rows, width, "rtt_p99_ms", "PID COMM")
        assert all(len(line) <= width for line in lines), (width, lines)
        assert "RTT-99ms*" in lines[0]
    _label_w, chosen = fit(rows, 80, "opened_per_s", "PID COMM")
    assert [c.name for c, _w in chosen][:3] == ["opened_per_s", "active", "refused"]


def test_state_and_event_filters_are_not_top_options():
    """top sets the kernel's state filter itself: -s is refused in one line, exit 2."""
    p = subprocess.run([sys.executable, "-m", "socketsnoop", "top", "-s", "ESTABLISHED"], capture_output=True,
                       text=True)
    assert p.returncode == 2 and len(p.stderr.splitlines()) == 1, p.stderr


def test_json_rows_are_plain_json():
    t = Tally()
    t.opens([opening(1, 1)])
    (row,) = rows_of(t).values()
    assert json.loads(json.dumps(row)) == row and row["key"] == {"pid": 10, "comm": "curl"}


def test_a_connection_whose_record_was_filtered_out_is_no_longer_open():
    t = Tally()
    t.opens([opening(1, 1), opening(2, 2)])
    t.forget({1})
    assert rows_of(t)["10 curl"]["active"] == 1


def test_a_warning_in_force_marks_its_rows_and_names_itself_under_the_header():
    """12 connects of one process refused by 10.0.0.9:443 (connect-failures: 10 in 60 s, the monitor's
    default), another process's healthy ones: the failing process's row, its remote host and its service are
    marked ("warnings", '!' before the label), the others not; the header's line names the warning; once the
    failures are older than the window, the marks and the line are gone."""
    t, health = Tally(), Health(RECORD_KINDS)
    rows = [record(i, S, result=RESULT_REFUSED, pid=10, comm=b"curl") for i in range(12)]
    rows += [record(100 + i, S, pid=11, comm=b"wget", daddr=LO, dport=80) for i in range(3)]
    t.records(rows)
    health.records(rows)
    health.tick(2 * S)
    interval, active = t.take(0)
    snap = Snapshot(interval, active, 2.0, 0.0, 0, 0, 0.0, tuple(health.active()))
    docs = {by: document(snap, 0, by, "opened", False, Names(None)) for by in ("process", "remote", "service")}
    marked = {by: {r["label"]: r["warnings"] for r in d["rows"]} for by, d in docs.items()}
    assert marked == {"process": {"10 curl": ["connect-failures"], "11 wget": []},
                      "remote": {"10.0.0.9": ["connect-failures"], "127.0.0.1": []},
                      "service": {"10.0.0.9:443": ["connect-failures"], "127.0.0.1:80": []}}
    doc = docs["process"]
    assert doc["warnings"][0]["kind"] == "connect-failures" and doc["warnings"][0]["refused"] == 12
    assert json.loads(json.dumps(doc)) == doc
    head = header_lines(doc)
    assert head[3] == "warnings: connect-failures 10.0.0.9:443 (10 curl)"
    text = table_lines(doc["rows"], 120, "opened", GROUPINGS["process"].title)
    assert sorted(line.split()[:3] for line in text[1:]) == [["!", "10", "curl"], ["11", "wget", "0.00"]]
    health.tick(70 * S)  # the window (60 s) past: cleared
    snap = snap._replace(warnings=tuple(health.active()))
    doc = document(snap, 0, "process", "opened", False, Names(None))
    assert all(r["warnings"] == [] for r in doc["rows"]) and len(header_lines(doc)) == 3
