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


def test_overflow_counter_alone_and_max_not_sum_with_the_reason():
    """The namespace counter's drops (queue_drops) warn alone, source=overflow-counter; a tick where both
    sources saw drops counts the larger (one refused packet is in both counts), source the one that gave it."""
    h = Health(Thresholds(accept_queue_overflow=1))
    h.queue_drops({KEY: (48, 1, 2, 4242, 0, b"stuckd", False)}, 0, 1 * S)
    (w,), = [[w for w in h.tick(1 * S) if w.kind == "accept-queue-overflow"]]
    fields = dict(w.fields)
    assert (fields["drops"], fields["backlog"], fields["source"], w.owner.pid, w.owner.comm) == (
        48, 1, "overflow-counter", 4242, b"stuckd")
    h.listen_drops({KEY: (5, 1, 4242, 0, b"stuckd")}, 2 * S)
    h.queue_drops({KEY: (3, 1, 2, 4242, 0, b"stuckd", False)}, 0, 2 * S)
    h.tick(2 * S)
    h.listen_drops({KEY: (9, 1, 4242, 0, b"stuckd")}, 3 * S)  # 4 more by reason, 4 by the counter: the same ones
    h.queue_drops({KEY: (4, 1, 2, 4242, 0, b"stuckd", False)}, 0, 3 * S)
    h.tick(3 * S)
    state = h.active()[0][2]
    assert dict(state)["source"] == "drop-reason"
    lst = next(k for k in h.kinds if k.kind == "accept-queue-overflow").listeners[KEY]
    assert lst.total == 48 + 5 + 4


def test_shared_drops_say_so_and_skipped_are_counted():
    h = Health(Thresholds(accept_queue_overflow=1))
    other = (KEY[0], 4, bytes(16), 9090)
    h.queue_drops({KEY: (10, 1, 2, 1, 0, b"a", True), other: (10, 4, 5, 2, 0, b"b", True)}, 3, 1 * S)
    said = [w for w in h.tick(1 * S) if w.kind == "accept-queue-overflow"]
    assert len(said) == 2 and all("each is given them all" in w.words for w in said)
    assert h.overflow()["accept-queue-overflow"] == 3
