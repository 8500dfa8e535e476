"""The merge of the spare ring's rows into the main ring's by time (pipeline/decode.py: merge_by_time), on
rows decoded from records the kernel wrote (captured.py)."""

import pytest
from socketsnoop.kernel.abi import RECORD
from socketsnoop.pipeline.decode import MERGE_SORT_LIMIT, TS, merge_by_time

from support.captured import RING_RECORDS

DECODED = [RECORD.unpack(raw) for raw in RING_RECORDS]


def rows_at(*times, base=0):
    """Rows decoded from the captured records, with these timestamps (and each a distinct object)."""
    return [(t,) + DECODED[(base + i) % len(DECODED)][1:] for i, t in enumerate(times)]


def ids(rows):
    return [id(r) for r in rows]


def test_captured_rows_keep_their_kernel_times():
    times = [r[TS] for r in DECODED]
    assert times[:3] == sorted(times[:3]) and times[3:] == sorted(times[3:])  # each connection in time order
    merged = merge_by_time(list(DECODED[:3]), list(DECODED[3:]))
    assert [r[TS] for r in merged] == sorted(times)


def test_extra_rows_go_in_their_places():
    rows, extra = rows_at(10, 20, 30, 40), rows_at(25, 5, 45, base=4)
    merged = merge_by_time(list(rows), list(extra))
    assert [r[TS] for r in merged] == [5, 10, 20, 25, 30, 40, 45]
    assert set(ids(merged)) == set(ids(rows + extra))


def test_equal_times_extra_after_main_and_in_its_own_order():
    rows, extra = rows_at(10, 20, 20, 30), rows_at(20, 20, 10, base=3)
    merged = merge_by_time(list(rows), list(extra))
    assert ids(merged) == ids([rows[0], extra[2], rows[1], rows[2], extra[0], extra[1], rows[3]])


def test_one_buffer_empty():
    rows = rows_at(1, 2, 3)
    assert ids(merge_by_time(list(rows), [])) == ids(rows)
    extra = rows_at(3, 1, 2)
    assert [r[TS] for r in merge_by_time([], list(extra))] == [1, 2, 3]
    assert merge_by_time([], []) == []


def test_main_rows_out_of_order_keep_their_order():
    """The main ring is in time order only near enough (rows from CPUs a few ns apart): its own order is
    kept, and no row is lost or doubled."""
    rows, extra = rows_at(10, 30, 20, 40, 35), rows_at(25, 33, base=2)
    merged = merge_by_time(list(rows), list(extra))
    assert len(merged) == 7 and set(ids(merged)) == set(ids(rows + extra))
    main_order = [i for i in ids(merged) if i in set(ids(rows))]
    assert main_order == ids(rows)
    assert [r[TS] for r in merged if id(r) in set(ids(extra))] == [25, 33]


@pytest.mark.parametrize("n", [MERGE_SORT_LIMIT, MERGE_SORT_LIMIT + 1, 5 * MERGE_SORT_LIMIT])
def test_many_extra_rows_follow_unsorted(n):
    """More than MERGE_SORT_LIMIT rows in the spare ring: it is rescuing a full main ring; they follow the
    main ring's rows as they came (each ring is in time order), not sorted in. Up to the limit, sorted in."""
    rows = rows_at(*range(100, 200, 10))
    extra = rows_at(*range(n, 0, -1), base=1)  # descending: sorting them would reverse them
    merged = merge_by_time(list(rows), list(extra))
    assert len(merged) == len(rows) + n
    if n > MERGE_SORT_LIMIT:
        assert ids(merged) == ids(rows + extra)
    else:
        assert [r[TS] for r in merged] == sorted(r[TS] for r in rows + extra)
