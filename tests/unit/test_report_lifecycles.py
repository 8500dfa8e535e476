"""`socket-snoop report`'s lifecycles (commands/report/lifecycles.py): parsed log entries followed by socket,
bounded by count, steps and bytes."""

import ipaddress

from socketsnoop.commands.report.bounds import CONN_BYTES, STEP_BYTES, Budget
from socketsnoop.commands.report.lifecycles import Lifecycles
from socketsnoop.commands.report.parse import Record
from socketsnoop.kernel import abi

SRC, DST = ipaddress.ip_address("10.100.10.150"), ipaddress.ip_address("10.100.10.202")


def entry(ts, typ=abi.EV_STATE, new=1, sport=1, pid=5):
    return Record(ts, typ, 4, SRC, sport, DST, 8000, pid, b"c", new, None)


def life(max_conns=1000, max_steps=32, budget=1 << 30):
    return Lifecycles(Budget(budget), max_conns=max_conns, max_steps=max_steps)


def test_lifecycle_and_bound():
    t = life(max_conns=2)
    for key in (2, 1, 3):  # the third open connection is over the bound: the oldest (2) is closed early
        t.add(key, entry(0, sport=key), "c")
    assert t.left_out == 0 and len(t) == 3 and list(t.open) == [1, 3]
    t.open[2] = t.closed.pop()  # put it back, to follow it on
    t.add(2, entry(10**9, typ=abi.EV_RETRANSMIT), "c")
    t.add(2, entry(2 * 10**9, sport=2, new=7), "c")
    # the socket address may be reused by a new connection: a new entry
    t.add(2, entry(3 * 10**9, sport=0, new=2, pid=6), "d")
    lines = list(t.lines(t.connections(), lambda ns: str(ns // 10**9)))
    assert ("Connection: 10.100.10.150:2 -> 10.100.10.202:8000  (PID=5 COMM=c duration=2.000s retransmits=1)"
            in lines)
    assert "  1: Retransmission" in lines and "  2: Connection Closed" in lines
    assert "Connection: 10.100.10.150:0 -> 10.100.10.202:8000  (PID=6 COMM=d duration=0.000s retransmits=0)" in lines
    assert len(t.closed) == 2 and t.left_out == 0


def test_closed_connections_bounded():
    t = life(max_conns=3)
    for key in range(10):
        t.add(key + 1, entry(key, new=7), "c")
    assert len(t) == 3 and t.left_out == 7
    assert [c.first_ns for c in t.connections()] == [7, 8, 9]


def test_bound_on_steps():
    t = life(max_steps=3)
    for i in range(10):
        t.add(1, entry(i, typ=abi.EV_RETRANSMIT), "c")
    c = t.open[1]
    assert len(c.step_list()) == 3 and c.steps_not_kept == 7 and c.retransmits == 10
    assert c.first_ns == 0 and c.last_ns == 9 and [s[0] for s in c.step_list()] == [0, 1, 2]


def test_one_shot_events_do_not_stay_open():
    t = life(max_conns=5)
    t.add(0, entry(1, typ=abi.EV_RESET_SENT, new=0), "c")  # a closed port: no socket
    t.add(9, entry(2, typ=abi.EV_RESET_SENT, new=6), "c")  # a timewait socket
    assert not t.open and len(t.closed) == 2
    lines = list(t.lines(t.connections(), str))
    assert "  1: Reset Sent" in lines and "  2: Reset Sent" in lines


def test_keeps_local_port_once_known():
    t = life()
    t.add(1, entry(0, new=2, sport=0), "c")
    t.add(1, entry(1, new=1, sport=5555), "c")
    t.add(1, entry(2, typ=abi.EV_RESET_SENT, sport=0), "c")
    assert t.open[1].describe()["src"] == "10.100.10.150:5555"
    assert t.open[1].side == "client"


def test_byte_budget_lets_the_oldest_go():
    """The budget, not the count, bounds them: the oldest closed ones go first, then the oldest open ones; the
    steps of one connection take no more once the others are gone."""
    budget = 3 * (CONN_BYTES + 1) + 2 * STEP_BYTES
    t = life(budget=budget, max_steps=100)
    for key in range(1, 6):
        t.add(key, entry(key, new=7), "c")  # closed at once
    assert len(t) == 3 and t.left_out == 2 and t.budget.used == 3 * (CONN_BYTES + 1)
    t.add(10, entry(10, new=2), "c")  # open: the oldest closed goes
    assert [c.first_ns for c in t.connections()] == [4, 5, 10] and t.left_out == 3
    for i in range(60):
        t.add(10, entry(11 + i, new=1), "c")
    c = t.open[10]
    # 2 steps in the room left, then the closed ones gave theirs, then no more
    kept = 2 + 2 * (CONN_BYTES + 1) // STEP_BYTES
    assert kept < 60 and len(c.step_list()) == 1 + kept and c.steps_not_kept == 60 - kept and not t.closed
    assert t.budget.used <= budget
    assert t.add(11, entry(20, new=2), "c") is not None and 10 not in t.open  # the oldest open one went
    assert t.budget.used <= budget


def test_recent():
    t = life()
    for key in range(1, 5):
        t.add(key, entry(key, new=7), "c")
    for key in range(5, 8):
        t.add(key, entry(key, new=2), "c")
    assert [c.first_ns for c in t.recent(2)] == [6, 7]
    assert [c.first_ns for c in t.recent(5)] == [3, 4, 5, 6, 7]
    assert [c.first_ns for c in t.recent(100)] == [1, 2, 3, 4, 5, 6, 7] and t.recent(0) == []
