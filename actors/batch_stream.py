"""Rendered rows into batches in frozen order, with memory that stays flat (see
``Segment.stream``).

The frozen id list is in the order a scan of the source reads it, so while the source is
unchanged the scan that renders the elements meets the contacts in frozen order: ``in_batch_order``
checks each chunk against the frozen list and passes it on at once (one pass, the first
request after the first chunk). From the first chunk that differs (contacts that left,
joined or moved since the freeze), the rest goes through spill files by frozen position, one
bucket ordered at a time. The rows are then regrouped into one table per batch and packed a
few batches per Ray object."""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from hookcast.actors.frozen import FrozenIds
from hookcast.actors.render import ELEMENT_COLUMN


def _with_seq(chunk: pa.RecordBatch, seq: np.ndarray) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays(
        [pa.array(seq, pa.int64()), chunk.column("id"), chunk.column(ELEMENT_COLUMN)],
        names=["seq", "id", ELEMENT_COLUMN],
    )


def in_batch_order(
    chunks: Iterable[pa.RecordBatch],
    frozen: FrozenIds,
    wanted: Sequence[int],
    batch_size: int,
    spill: tuple[str, int],
    start: int = 0,
) -> Iterator[pa.RecordBatch]:
    """The chunks' rows that belong to the ``wanted`` batches (sorted seqs), with ``seq``,
    ordered by frozen position; ``spill`` is (temp folder, rows per bucket) for the slow path.

    Fast path: each chunk whose ids are the frozen list from the cursor on (from ``start``,
    where a scan cut to the wanted range begins) is in order already and passes straight
    on; the frozen ids are read as the cursor moves. From the first chunk that is not, the
    rest goes through buckets; rows before the cursor were passed on, so they are never sent
    twice."""
    wanted_seq = np.zeros(-(-len(frozen) // batch_size), dtype=bool)
    wanted_seq[list(wanted)] = True
    cursor = start
    chunks = iter(chunks)
    for chunk in chunks:
        ids = chunk.column("id").to_numpy(zero_copy_only=False)
        end = cursor + len(ids)
        if end > len(frozen) or not np.array_equal(ids, frozen.read(cursor, end)):
            rest = itertools.chain([chunk], chunks)
            left = frozen.read(cursor, len(frozen))  # the slow path holds what is left
            yield from _via_buckets(rest, left, cursor, wanted_seq, batch_size, spill)
            return
        seq = np.arange(cursor, end) // batch_size
        keep = wanted_seq[seq]
        cursor = end
        if keep.all():
            yield _with_seq(chunk, seq)
        elif keep.any():
            yield _with_seq(chunk.filter(pa.array(keep)), seq[keep])


def _via_buckets(
    chunks: Iterable[pa.RecordBatch],
    left: np.ndarray,
    start: int,
    wanted_seq: np.ndarray,
    batch_size: int,
    spill: tuple[str, int],
) -> Iterator[pa.RecordBatch]:
    """The slow path: every wanted position from ``start`` on (``left``: the frozen ids
    from there), through spill files."""
    positions = np.arange(start, start + len(left))
    keep = wanted_seq[positions // batch_size]
    positions = positions[keep]
    if positions.size == 0:
        return
    wanted_ids = left[keep]
    temp_dir, bucket_rows = spill
    with Buckets(temp_dir, wanted_ids, bucket_rows) as buckets:
        for chunk in chunks:
            buckets.add(chunk)
        for table, lo, hi in buckets.drain():
            yield in_frozen_order(table, wanted_ids[lo:hi], positions[lo:hi], batch_size)


def in_frozen_order(
    table: pa.Table, ids: np.ndarray, positions: np.ndarray, batch_size: int
) -> pa.RecordBatch:
    """The bucket's rows that are frozen contacts, ordered by frozen position, with ``seq``."""
    slot = pc.index_in(table.column("id"), value_set=pa.array(ids)).to_numpy(zero_copy_only=False)
    member = np.flatnonzero(~np.isnan(slot))  # rows not in the frozen slice: gone or new
    slots = slot[member].astype(np.int64)
    order = np.argsort(slots, kind="stable")
    rows = table.take(pa.array(member[order])).combine_chunks()
    seq = pa.array(positions[slots[order]] // batch_size, pa.int64())
    return pa.RecordBatch.from_arrays(
        [seq, rows.column("id").chunk(0), rows.column(ELEMENT_COLUMN).chunk(0)]
        if rows.num_rows
        else [seq, pa.array([], pa.int64()), pa.array([], pa.string())],
        names=["seq", "id", ELEMENT_COLUMN],
    )


class Buckets:
    """Spill files, one per run of ``bucket_rows`` consecutive wanted contacts (the wanted
    ids in frozen order, which need not be sorted)."""

    def __init__(self, temp_dir: str, wanted_ids: np.ndarray, bucket_rows: int) -> None:
        self._dir = tempfile.mkdtemp(prefix="stream-", dir=temp_dir)
        self._ids = wanted_ids
        self._bucket_rows = bucket_rows
        self._buckets = -(-len(wanted_ids) // bucket_rows)
        # id -> rank among the wanted ids, by binary search in a sorted copy.
        self._by_id = np.argsort(wanted_ids, kind="stable")
        self._sorted_ids = wanted_ids[self._by_id]
        self._writers: dict[int, pa.ipc.RecordBatchStreamWriter] = {}

    def _bucket_of(self, ids: np.ndarray) -> np.ndarray:
        """Each id's bucket, -1 for an id that is not wanted."""
        found = np.searchsorted(self._sorted_ids, ids).clip(0, len(self._sorted_ids) - 1)
        member = self._sorted_ids[found] == ids
        return np.where(member, self._by_id[found] // self._bucket_rows, -1)

    def __enter__(self) -> Buckets:
        return self

    def __exit__(self, *exc_info: object) -> None:
        for writer in self._writers.values():
            writer.close()
        shutil.rmtree(self._dir, ignore_errors=True)

    def _path(self, bucket: int) -> str:
        return os.path.join(self._dir, f"{bucket:06d}.arrow")

    def add(self, chunk: pa.RecordBatch) -> None:
        bucket = self._bucket_of(chunk.column("id").to_numpy(zero_copy_only=False))
        order = np.argsort(bucket, kind="stable")
        sorted_buckets = bucket[order]
        rows = chunk.take(pa.array(order))
        cuts = np.flatnonzero(np.diff(sorted_buckets)) + 1
        for start, end in itertools.pairwise([0, *cuts.tolist(), len(order)]):
            b = int(sorted_buckets[start])
            if b < 0:
                continue
            writer = self._writers.get(b)
            if writer is None:
                writer = pa.ipc.new_stream(self._path(b), chunk.schema)
                self._writers[b] = writer
            writer.write_batch(rows.slice(start, end - start))

    def drain(self) -> Iterator[tuple[pa.Table, int, int]]:
        """Each bucket's rows with the slice of wanted contacts it covers, in order."""
        for b in range(self._buckets):
            lo, hi = b * self._bucket_rows, min((b + 1) * self._bucket_rows, len(self._ids))
            writer = self._writers.pop(b, None)
            if writer is None:
                yield _BATCH_SCHEMA.empty_table(), lo, hi
                continue
            writer.close()
            with pa.memory_map(self._path(b)) as source:
                table = pa.ipc.open_stream(source).read_all()
            os.remove(self._path(b))
            yield table, lo, hi


_BATCH_SCHEMA = pa.schema([("id", pa.int64()), (ELEMENT_COLUMN, pa.string())])


def in_chunks(
    batches: Iterable[pa.RecordBatch], wanted: Sequence[int], per_chunk: int
) -> Iterator[pa.Table]:
    """A ``seq``-ordered stream of rows as one table per ``per_chunk`` consecutive wanted
    seqs (sorted), with their ``seq``: always ``ceil(len(wanted) / per_chunk)`` tables, one
    without rows where none of its batches has any (their contacts all left the source).

    Rows are cut where a chunk ends, never copied: a table is its pieces (fewer, larger
    objects through Ray, whose per-object cost dwarfs a batch's own)."""
    positions = np.asarray(wanted, dtype=np.int64)
    dense = len(positions) == 0 or positions[-1] - positions[0] + 1 == len(positions)
    chunks = -(-len(positions) // per_chunk)
    current, pending = 0, []
    for batch in batches:
        if batch.num_rows == 0:
            continue
        seqs = batch.column("seq").to_numpy()
        rank = seqs - positions[0] if dense else np.searchsorted(positions, seqs)
        chunk = rank // per_chunk
        cuts = np.flatnonzero(chunk[1:] != chunk[:-1]) + 1
        for start, end in itertools.pairwise([0, *cuts.tolist(), len(chunk)]):
            number = int(chunk[start])
            while current < number:
                yield pa.Table.from_batches(pending, _CHUNK_SCHEMA)
                current, pending = current + 1, []
            pending.append(batch.slice(start, end - start))
    while current < chunks:
        yield pa.Table.from_batches(pending, _CHUNK_SCHEMA)
        current, pending = current + 1, []


_CHUNK_SCHEMA = pa.schema([("seq", pa.int64()), ("id", pa.int64()), (ELEMENT_COLUMN, pa.string())])
