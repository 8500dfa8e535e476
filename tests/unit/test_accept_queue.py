"""accept-queue-overflow from the kernel's per-listener counts (Probe.listen_drops' table): said when a
listener's new drops within 10 s reach the threshold, with its backlog and owner; cleared when they stop or the
listener closes; a count that goes down (another listener on the same address) starts again."""

from socketsnoop.pipeline.health import ACTIVE, CLEARED, Health, Thresholds

S = 1_000_000_000
KEY = (4026531840, 4, bytes([127, 0, 0, 1]) + bytes(12), 8080)


def ticks(health, tables):
    """[(second, [(status, fields dict)])] feeding one table a second."""
    out = []
    for sec, table in enumerate(tables, 1):
        health.listen_drops(table, sec * S)
        found = [w for w in health.tick(sec * S) if w.kind == "accept-queue-overflow"]
        out.append([(w.status, dict(w.fields), w.owner) for w in found])
    return out


def test_said_with_backlog_and_owner_then_cleared():
    h = Health(Thresholds(accept_queue_overflow=3, interval=60))
    row = lambda n: {KEY: (n, 1, 4242, 1000, b"stuckd")}  # noqa: E731
    seen = ticks(h, [row(0), row(2), row(5), row(5)] + [row(5)] * 10)
    assert seen[0] == [] and seen[1] == []  # 2 new drops: under 3
    (status, fields, owner), = seen[2]
    assert status == ACTIVE and (fields["port"], fields["listener"], fields["backlog"], fields["drops"]) == (
        8080, "127.0.0.1", 1, 5)
    assert (owner.pid, owner.comm, owner.uid) == (4242, b"stuckd", 1000)
    cleared = [w for tick in seen[3:] for w in tick]
    assert [w[0] for w in cleared] == [CLEARED]  # once the window holds no more drops past the threshold


def test_a_closed_listener_clears_and_a_new_one_counts_from_zero():
    h = Health(Thresholds(accept_queue_overflow=1))
    seen = ticks(h, [{KEY: (4, 8, 1, 0, b"a")}, {}, {KEY: (1, 8, 2, 0, b"b")}])
    assert [w[0] for w in seen[0]] == [ACTIVE] and [w[0] for w in seen[1]] == [CLEARED]
    (status, fields, owner), = seen[2]
    assert status == ACTIVE and fields["drops_total"] == 1 and owner.pid == 2


def test_off():
    assert not any(k.kind == "accept-queue-overflow" for k in Health(Thresholds(accept_queue_overflow=None)).kinds)
