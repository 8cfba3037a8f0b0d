"""Rows into frozen order (actors/batch_stream.py): the one-pass fast path while the scan meets
the contacts in frozen order, spill files from the first chunk that differs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hookcast.actors.batch_stream import in_batch_order
from hookcast.actors.frozen import FrozenIds
from hookcast.actors.render import ELEMENT_COLUMN

FROZEN = np.array([50, 10, 40, 20, 30, 90, 70, 60, 80, 0], dtype=np.int64)
BATCH = 3  # seqs 0..3: [50 10 40] [20 30 90] [70 60 80] [0]


def chunk(*ids: int) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays(
        [pa.array(ids, pa.int64()), pa.array([f"e{i}" for i in ids], pa.string())],
        names=["id", ELEMENT_COLUMN],
    )


@pytest.fixture(params=["in memory", "in a file"])
def frozen(request: pytest.FixtureRequest, tmp_path: Path) -> FrozenIds:
    """The frozen ids in memory, or read back from their file a row group of 4 at a time
    (so reads cross row groups): every test runs with both."""
    if request.param == "in memory":
        return FrozenIds.in_memory(pa.array(FROZEN))
    path = tmp_path / "audience.parquet"
    pq.write_table(pa.table({"id": FROZEN}), path, row_group_size=4)
    return FrozenIds.in_file(path)


def ordered(
    frozen: FrozenIds, chunks, wanted, spill_dir: Path, bucket_rows: int = 2, start: int = 0
) -> list[tuple[int, int, str]]:
    spill = (str(spill_dir), bucket_rows)
    out = in_batch_order(chunks, frozen, wanted, BATCH, spill, start)
    return [
        (seq, i, element)
        for batch in out
        for seq, i, element in zip(
            *(batch.column(c).to_pylist() for c in batch.schema.names), strict=True
        )
    ]


def expected(wanted) -> list[tuple[int, int, str]]:
    return [(p // BATCH, int(i), f"e{i}") for p, i in enumerate(FROZEN) if p // BATCH in wanted]


def test_a_scan_in_frozen_order_passes_straight_through_without_spilling(
    frozen: FrozenIds, tmp_path: Path
):
    no_spill = tmp_path / "absent"  # the slow path would fail to create its files here
    chunks = [chunk(50, 10, 40, 20), chunk(30, 90, 70), chunk(60, 80, 0)]

    assert ordered(frozen, chunks, [0, 1, 2, 3], no_spill) == expected([0, 1, 2, 3])
    assert ordered(frozen, chunks, [1, 3], no_spill) == expected([1, 3])


def test_a_scan_cut_to_the_wanted_range_starts_where_that_range_starts(
    frozen: FrozenIds, tmp_path: Path
):
    chunks = [chunk(20, 30, 90, 70), chunk(60, 80)]  # positions 3..8 only

    assert ordered(frozen, chunks, [1, 2], tmp_path / "absent", start=3) == expected([1, 2])


def test_parts_of_the_scan_in_another_order_lose_nothing(frozen: FrozenIds, tmp_path: Path):
    # A join (a long IN list, a static segment) need not keep the order of the freeze.
    chunks = [chunk(90, 70, 60, 80, 0), chunk(50, 10, 40, 20, 30)]

    assert ordered(frozen, chunks, [0, 1, 2, 3], tmp_path) == expected([0, 1, 2, 3])


@pytest.mark.parametrize(
    "chunks",
    [
        [chunk(50, 10, 40), chunk(90, 20, 30, 70), chunk(60, 80, 0)],  # rows moved
        [chunk(0, 80, 60, 70, 90, 30, 20, 40, 10, 50)],  # the whole source reversed
        [chunk(50, 10, 40, 20), chunk(30, 99, 90, 70, 60, 80, 0)],  # 99 joined since
    ],
    ids=["moved", "reversed", "joined"],
)
@pytest.mark.parametrize("bucket_rows", [1, 2, 100])
def test_a_scan_that_left_the_frozen_order_gives_the_same_rows_through_buckets(
    frozen: FrozenIds, tmp_path: Path, chunks, bucket_rows
):
    for wanted in ([0, 1, 2, 3], [0, 2], [3]):
        assert ordered(frozen, chunks, wanted, tmp_path, bucket_rows) == expected(wanted)


def test_contacts_that_left_are_missing_from_their_batch_and_nothing_repeats(
    frozen: FrozenIds, tmp_path: Path
):
    chunks = [chunk(50, 10, 40), chunk(20, 90), chunk(70, 60, 80, 0)]  # 30 left

    got = ordered(frozen, chunks, [0, 1, 2, 3], tmp_path)

    assert got == [row for row in expected([0, 1, 2, 3]) if row[1] != 30]
    assert len({i for _, i, _ in got}) == len(got)
