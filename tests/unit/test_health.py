"""The health warnings' stage (pipeline/health) on decoded rows: a warning said when its condition starts,
again at most once per interval with its count, one line when it clears; its state bounded under a flood of
distinct keys; nothing from rows that do not concern it."""

import os
import re
import socket
import time

import pytest
from socketsnoop.settings.monitor import monitor_options
from socketsnoop.settings.warnings import parse_warn, thresholds_from
from socketsnoop.errors import SnoopError
from socketsnoop.kernel.abi import EV_RESET_SENT, EV_STATE, OWNER_NONE, RESULT_REFUSED
from socketsnoop.pipeline.decode import make_record_row, make_row
from socketsnoop.pipeline.health import ACTIVE, CLEARED, Health, Thresholds
from socketsnoop.pipeline import health
from socketsnoop.pipeline.health import traffic
from socketsnoop.pipeline.health.alerts import MAX_KEYS
from socketsnoop.pipeline.rings import Rows

S = 1_000_000_000
LOCAL = bytes([127, 0, 0, 1]) + bytes(12)


def close_wait(ts, sk, old=1, new=8, pid=os.getpid()):
    return make_row(ts_ns=ts, skaddr=sk, type=EV_STATE, oldstate=old, newstate=new, pid=pid, comm=b"leaker",
                    sport=80, dport=5000 + sk, saddr=LOCAL, daddr=LOCAL)


def held_close_wait(n):
    """n sockets of this process in CLOSE_WAIT (their peer closed), for /proc to confirm; and the listener."""
    srv = socket.create_server(("127.0.0.1", 0))
    held = []
    for _ in range(n):
        c = socket.create_connection(srv.getsockname())
        held.append(srv.accept()[0])
        c.close()
    time.sleep(0.05)
    return srv, held


def test_said_once_then_once_per_interval_with_its_count_then_cleared():
    """Two sockets the events show entering CLOSE_WAIT, which this process really holds (the /proc check)."""
    srv, held = held_close_wait(2)
    h = Health(Thresholds(close_wait_leak=1, interval=5))
    h.events([close_wait(0, 1), close_wait(0, 2)])
    said = [h.tick(t * S) for t in range(0, 12)]
    active = [(t, dict(w.fields)) for t, ws in enumerate(said) for w in ws]
    assert [t for t, _f in active] == [1, 6, 11]  # at 1 s, then every 5 s, not every tick
    assert [f["seen"] for _t, f in active] == [1, 6, 11] and all(f["sockets"] == 2 for _t, f in active)
    assert said[1][0].owner.pid == os.getpid() and said[1][0].owner.comm == b"leaker"
    for sock in (srv, *held):
        sock.close()
    h.events([close_wait(12 * S, 1, old=8, new=9)])  # one closed: LAST_ACK
    h.records([make_record_row(ts_ns=12 * S, skaddr=2)])  # the other ended
    ws = h.tick(12 * S)
    assert [(w.kind, w.status, dict(w.fields)["seen"]) for w in ws] == [("close-wait-leak", CLEARED, 11)]
    assert h.tick(13 * S) == [] and h.said["close-wait-leak"] == 3


def test_sockets_not_held_in_proc_are_not_a_leak():
    """Entries whose exits were missed (lost events): /proc shows no socket of the process in CLOSE_WAIT, so
    no warning, and they are forgotten."""
    h = Health(Thresholds(close_wait_leak=1))
    h.events([close_wait(0, 1), close_wait(0, 2)])
    assert h.tick(2 * S) == [] and h.kinds[0].open == {}


def test_healthy_rows_say_nothing():
    h = Health(Thresholds(close_wait_leak=1))
    rows = [make_row(ts_ns=i, skaddr=i, type=EV_STATE, oldstate=2, newstate=1) for i in range(1000)]
    h.events(rows)
    h.records([make_record_row(ts_ns=i, skaddr=i, bytes_sent=10**6) for i in range(1000)])
    assert [h.tick(t * S) for t in range(3)] == [[], [], []]


def test_a_flood_of_sources_is_bounded_and_counted():
    h = Health(Thresholds(port_scan=2, connect_failures=1))
    resets = [make_row(ts_ns=S, type=EV_RESET_SENT, owner=OWNER_NONE, sport=p, dport=1,
                       daddr=i.to_bytes(4, "big") + bytes(12)) for i in range(MAX_KEYS + 500) for p in (1, 2)]
    fails = [make_record_row(ts_ns=S, result=RESULT_REFUSED, dport=i % 65536, daddr=i.to_bytes(4, "big") + bytes(12))
             for i in range(MAX_KEYS + 300)]
    h.events(resets)
    h.records(fails)
    ws = h.tick(S)
    kinds = [w.kind for w in ws if w.status == ACTIVE]
    assert kinds.count("port-scan") == MAX_KEYS and kinds.count("connect-failures") == MAX_KEYS
    overflow = h.overflow()
    assert overflow["port-scan"] == 2 * 500 and overflow["connect-failures"] == 300
    assert all(len(k.alerts.active) <= MAX_KEYS for k in h.kinds)


def test_a_kind_turned_off():
    h = Health(Thresholds(port_scan=None))
    assert "port-scan" not in [k.kind for k in h.kinds]


def test_warn_option_values():
    """--warn KIND=VALUE: each kind's value in its unit, KIND=off, and a bad one is one line, status 2."""
    assert parse_warn("close-wait-leak=0.5") == ("close_wait_leak", 0.5)
    assert parse_warn("connect-failures=3") == ("connect_failures", 3)
    assert parse_warn("syn-flood=off") == ("syn_flood", None)
    for bad in ("nope=1", "port-scan", "port-scan=x", "retransmits=101", "interval=off", "close-wait-leak=-1",
                "connect-failures=2.5"):
        with pytest.raises(SnoopError) as e:
            parse_warn(bad)
        assert e.value.args[0].count("\n") == 0 and "--warn" in e.value.args[0]
    opts = type("Opts", (), {"warn": [("port_scan", None), ("interval", 5.0)], "no_warnings": False,
                             "summary_only": False, "no_summary": False, "no_report": False, "metrics": None})
    assert thresholds_from(opts) == Thresholds(port_scan=None, interval=5.0)


def test_warnings_are_on_by_default_and_off_with_no_warnings():
    """No option: every kind at its default threshold; --no-warnings: none; --summary-only (the kernel sends no
    events): only the kinds the connection records make."""
    assert thresholds_from(monitor_options([])) == Thresholds()
    assert thresholds_from(monitor_options(["--no-warnings"])) is None
    assert thresholds_from(monitor_options(["--no-warnings", "--warn", "port-scan=3"])) is None
    only = thresholds_from(monitor_options(["--summary-only", "--warn", "connect-failures=3"]))
    assert only == Thresholds(connect_failures=3, close_wait_leak=None, port_scan=None, syn_flood=None)
    assert [k.kind for k in Health(only).kinds] == ["connect-failures", "retransmits", "port-exhaustion",
                                                    "accept-queue-overflow"]  # (the kernel's counts, no events)
    assert thresholds_from(monitor_options(["--failed"])).close_wait_leak is None


def test_without_records_the_record_kinds_are_off():
    """--no-summary with --no-report (and no --metrics): nothing else wants the connection records, the kernel
    writes none, and the kinds they make are off (the events' kinds and the kernel's counts stay on); either
    option alone, or --metrics, keeps the records and every kind."""
    from socketsnoop.commands.run.parts import MonitorParts
    from socketsnoop.settings.monitor import filters_from
    lean = monitor_options(["--no-summary", "--no-report"])
    assert thresholds_from(lean) == Thresholds(connect_failures=None, retransmits=None, port_exhaustion=None)
    assert not MonitorParts(lean, filters_from(lean)).make_probe().records
    for argv in (["--no-summary"], ["--no-report"], ["--no-summary", "--no-report", "--metrics", "9100"]):
        opts = monitor_options(argv)
        assert thresholds_from(opts) == Thresholds(), argv
        assert MonitorParts(opts, filters_from(opts)).make_probe().records, argv


def test_resets_from_the_ephemeral_range_are_no_scan():
    """A peer still sending to client sockets that are gone (a mass close, a killed client) draws resets from
    closed ports of the local ephemeral range: not a port scan. The same count of service ports is one."""
    h = Health(Thresholds(port_scan=20))
    eph = h.kinds[[k.kind for k in h.kinds].index("port-scan")].ephemeral
    gone = [make_row(ts_ns=S, type=EV_RESET_SENT, owner=OWNER_NONE, sport=p, dport=80, saddr=LOCAL, daddr=LOCAL)
            for p in range(eph.start, eph.start + 100)]
    h.events(gone)
    assert not [w for w in h.tick(S) if w.kind == "port-scan"]
    probes = [make_row(ts_ns=S, type=EV_RESET_SENT, owner=OWNER_NONE, sport=p, dport=40000, saddr=LOCAL,
                       daddr=LOCAL) for p in range(1000, 1100)]
    h.events(probes)
    assert [w.kind for w in h.tick(S + 1) if w.status == ACTIVE] == ["port-scan"]


def test_close_wait_followed_by_the_order_of_moves_within_a_batch():
    """Only a socket whose last move in a batch was into CLOSE_WAIT is followed, from that entry: in and out
    (LAST_ACK) within a batch is no leak; an address reused within the batch (in, out, in again) is followed
    from its last entry; one followed that leaves and comes back is followed anew."""
    h = Health(Thresholds(close_wait_leak=1))
    kind = h.kinds[0]
    h.events([close_wait(1, 1), close_wait(2, 2), close_wait(3, 1, old=8, new=9)])  # 1 in and out, 2 stays
    assert list(kind.open) == [2] and kind.open[2][0] == 2
    h.events([close_wait(4, 3), close_wait(5, 3, old=8, new=9), close_wait(6, 3)])  # 3: in, out, in again
    assert sorted(kind.open) == [2, 3] and kind.open[3][0] == 6
    h.events([close_wait(7, 2, old=8, new=9), close_wait(8, 2)])  # 2 followed: out, and in again
    assert sorted(kind.open) == [2, 3] and kind.open[2][0] == 8
    h.events([close_wait(9, 2, old=8, new=9), close_wait(9, 3, old=8, new=9)])  # both closed
    assert kind.open == {}


def test_new_states_given_with_the_rows_are_used_and_checked():
    """Rows read from a ring carry their new states (pipeline/rings.py's Rows): the stage takes them as they are
    (states that say otherwise than the rows are believed: they are the ring's bytes); rows whose count differs
    (some dropped since) get theirs made again."""
    def fed(news):
        h = Health(Thresholds(close_wait_leak=1))
        rows = Rows([close_wait(0, 1)])
        rows.news = news
        h.events(rows)
        return list(h.kinds[0].open)
    assert fed(bytes([8])) == [1] and fed(bytes([1])) == [] and fed(bytes([1, 1])) == [1]


@pytest.mark.parametrize("few", [16, 0])
def test_retransmits_count_the_healthy_connections_to_a_host_followed(monkeypatch, few):
    """A host whose connections retransmit is followed, and its healthy connections count in its share: 20
    retransmissions over 100 healthy connections of 10 segments are no warning; the same over one connection of
    about 100 segments are one (per host, summed at C speed; with many hosts, record by record: the same)."""
    monkeypatch.setattr(traffic, "FEW_HOSTS", few)
    a, b = bytes([10, 0, 0, 1]) + bytes(12), bytes([10, 0, 0, 2]) + bytes(12)
    h = Health(Thresholds(retransmits=5))
    h.records([make_record_row(ts_ns=S, skaddr=1, retransmits=20, bytes_sent=1448 * 10, daddr=a, comm=b"lossy"),
               make_record_row(ts_ns=S, skaddr=2, retransmits=20, bytes_sent=1448 * 80, daddr=b, comm=b"lossy")])
    h.records([make_record_row(ts_ns=S, skaddr=10 + i, bytes_sent=1448 * 10, daddr=a) for i in range(100)]
              + [make_record_row(ts_ns=S, skaddr=200, bytes_sent=1448 * 10, daddr=LOCAL)])
    ws = [w for w in h.tick(2 * S) if w.kind == "retransmits"]
    assert [dict(w.fields)["dst"] for w in ws] == ["10.0.0.2"]
    kind = next(k for k in h.kinds if k.kind == "retransmits")
    sums = {key[2][:4]: w.sums(2 * S) for key, (w, _p) in kind.hosts.items()}
    assert sums == {a[:4]: [20, 20 + 12 + 100 * 12, 101], b[:4]: [20, 20 + 82, 1]}


def test_docs_name_the_kinds_summary_only_turns_off():
    """README.md and docs/warnings.md say which kinds --summary-only turns off and which stay on: exactly those
    thresholds_from() turns off (the kinds made from events), and no other."""
    t = thresholds_from(monitor_options(["--summary-only"]))
    off = {k.kind for k in health.KINDS if getattr(t, k.setting) is None}
    root = os.path.join(os.path.dirname(__file__), "..", "..")
    readme = " ".join(open(os.path.join(root, "README.md")).read().split())
    said = re.search(r"With `--summary-only` the kinds made from events \(([^)]*)\) are off", readme)
    assert said and set(said.group(1).split(", ")) == off, said and said.group(1)
    doc = " ".join(open(os.path.join(root, "docs", "warnings.md")).read().split())
    said = re.search(r"the kinds made from events are off \(([^)]*)\); (those made from records .*?) stay on", doc)
    assert said and set(said.group(1).split(", ")) == off, said and said.group(1)
    assert {k.kind for k in health.KINDS if k.kind in said.group(2)} == {k.kind for k in health.KINDS} - off
