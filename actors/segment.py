"""The audience: DuckDB reads the parquet source, applies the segment, freezes, streams batches.

A run's audience is *frozen* once, at fire time, as the sorted list of its contact ids. Batch
``k`` is always the contacts at positions ``[k * batch_size, (k + 1) * batch_size)`` of that
list, so a resume or a replay sends the same people in the same batches with the same keys,
whatever happened to the source or the segment's result since.

Streaming renders every element inside DuckDB (see ``render``) and sorts by frozen position
under a memory limit, spilling to a temp folder: memory stays flat as the audience grows.
"""

from __future__ import annotations

import glob
import itertools
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from hookcast.actors.errors import AudienceError
from hookcast.actors.render import ELEMENT_COLUMN, DuckType, PayloadConfig, element_sql, sql_string
from hookcast.actors.sources import find_files, is_remote, open_dataset

_REMOTE = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)
_GLOB = re.compile(r"[*?\[]")
_INTEGER_TYPES = {
    "bigint",
    "integer",
    "smallint",
    "tinyint",
    "ubigint",
    "uinteger",
    "usmallint",
    "utinyint",
    "hugeint",
}
# The names remote sources are registered under, by the job key they come from.
_REMOTE_TABLES = {"audience.source": "hookcast_source", "audience.ids": "hookcast_ids"}


@dataclass(frozen=True, slots=True)
class SegmentConfig:
    """Where the audience comes from and how it is cut into batches."""

    source: str  # a parquet file, a folder of them, a glob, or an s3:// / gs:// URL
    batch_size: int
    payload: PayloadConfig = field(default_factory=PayloadConfig)
    where: str | None = None  # dynamic segment, evaluated at freeze time
    ids_path: str | None = None  # static segment: a parquet with an `id` column
    memory_limit_mb: int = 256  # DuckDB's own memory
    threads: int = 2
    bucket_rows: int = 50_000  # contacts ordered in memory at once while streaming


@dataclass(frozen=True, slots=True)
class AudienceInfo:
    """What validation learned about the source."""

    files: int
    columns: tuple[str, ...]


def source_sql(source: str) -> str:
    """The DuckDB table function reading a local ``source`` (file, folder or glob).

    s3:// and gs:// sources are pyarrow datasets instead (see ``Segment._table``)."""
    if not _REMOTE.match(source) and os.path.isdir(source):
        source = os.path.join(source, "**", "*.parquet")
    return f"read_parquet({sql_string(source)}, union_by_name = true)"


def count_source_files(source: str, key: str = "audience.source") -> int:
    """How many files ``source`` names; raises AudienceError naming ``key`` when it names
    none."""
    if is_remote(source):
        return len(find_files(key, source).files)
    if _REMOTE.match(source):
        return 1
    if os.path.isdir(source):
        found = glob.glob(os.path.join(source, "**", "*.parquet"), recursive=True)
        if not found:
            raise AudienceError(
                f"{key} {source} is a folder with no .parquet files in it: "
                "point it at a parquet file, a folder of them, or a glob."
            )
        return len(found)
    if _GLOB.search(source):
        found = glob.glob(source, recursive=True)
        if not found:
            raise AudienceError(
                f"{key} {source} matches no file: check the pattern "
                "(paths are relative to the job file)."
            )
        return len(found)
    if not os.path.exists(source):
        raise AudienceError(
            f"{key} {source} does not exist: give a parquet file, a folder or a "
            "glob (paths are relative to the job file)."
        )
    return 1


_MISSING_COLUMN = re.compile(r'Referenced column "([^"]+)" not found')


def _first_line(exc: Exception) -> str:
    """DuckDB's message, short: its first line, without the error class prefix."""
    text = str(exc).strip()
    missing = _MISSING_COLUMN.search(text)
    if missing:
        return f'column "{missing.group(1)}" not found'
    first = text.splitlines()[0] if text else type(exc).__name__
    return re.sub(r"^[A-Za-z ]+Error: ", "", first)


class Segment:
    """The audience of one job: validation, freezing and batch streaming. No Ray in here."""

    def __init__(self, config: SegmentConfig) -> None:
        self.config = config
        self._temp_dir = tempfile.mkdtemp(prefix="hookcast-segment-")
        self._con = duckdb.connect(
            config={
                "memory_limit": f"{config.memory_limit_mb}MB",
                "threads": config.threads,
                "temp_directory": self._temp_dir,
            }
        )
        # Remote sources, opened on first use (listing and footers are I/O, and errors must
        # surface from validate(), not from the constructor), by their registered name.
        self._datasets: dict[str, ds.Dataset] = {}

    def close(self) -> None:
        self._con.close()
        shutil.rmtree(self._temp_dir, ignore_errors=True)

    def _table(self, key: str, location: str) -> str:
        """The SQL naming ``location``'s rows: ``read_parquet`` for a local path, else the
        pyarrow dataset of its remote files, registered on the connection."""
        if not is_remote(location):
            return source_sql(location)
        name = _REMOTE_TABLES[key]
        if name not in self._datasets:
            dataset = open_dataset(key, location)
            self._con.register(name, dataset)
            self._datasets[name] = dataset
        return name

    @property
    def _source(self) -> str:
        return self._table("audience.source", self.config.source)

    @property
    def _ids_source(self) -> str:
        assert self.config.ids_path is not None
        return self._table("audience.ids", self.config.ids_path)

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        """A cursor that sees the remote sources: registrations are per connection."""
        cursor = self._con.cursor()
        for name, dataset in self._datasets.items():
            cursor.register(name, dataset)
        return cursor

    # -- validation ------------------------------------------------------------------------

    def columns(self) -> dict[str, DuckType]:
        try:
            rel = self._con.sql(f"SELECT * FROM {self._source} LIMIT 0")
        except duckdb.Error as exc:
            raise AudienceError(
                f"audience.source {self.config.source} cannot be read as parquet: "
                f"{_first_line(exc)}"
            ) from exc
        return dict(zip(rel.columns, rel.types, strict=True))

    def validate(self) -> AudienceInfo:
        """Check the source, the segment and the payload SQL without reading the audience.

        Raises AudienceError naming the key and what is allowed."""
        files = count_source_files(self.config.source)
        columns = self.columns()
        names = ", ".join(columns)
        if "id" not in columns:
            raise AudienceError(
                f"audience.source {self.config.source} has no `id` column "
                f"(columns: {names}): every contact needs a unique integer id."
            )
        if columns["id"].id not in _INTEGER_TYPES:
            raise AudienceError(
                f"audience.source {self.config.source}: column `id` is {columns['id']}, "
                "but contact ids must be integers (int64)."
            )
        if self.config.where is not None:
            self._check(
                f"SELECT id FROM {self._source} WHERE ({self.config.where}) LIMIT 0",
                f"audience.where does not compile against {self.config.source}",
                f"(columns: {names})",
            )
        if self.config.ids_path is not None:
            count_source_files(self.config.ids_path, "audience.ids")
            try:
                id_columns = self._con.sql(f"SELECT * FROM {self._ids_source} LIMIT 0").columns
            except duckdb.Error as exc:
                raise AudienceError(
                    f"audience.ids {self.config.ids_path} cannot be read as parquet: "
                    f"{_first_line(exc)}"
                ) from exc
            if "id" not in id_columns:
                raise AudienceError(
                    f"audience.ids {self.config.ids_path} has no `id` column "
                    f"(columns: {', '.join(id_columns)}): a static segment lists contact ids."
                )
        self._check(
            f"SELECT {element_sql(columns, self.config.payload)} FROM {self._source} LIMIT 0",
            f"the payload cannot be built from {self.config.source}",
            "(see SPEC §2 for the column types hookcast understands)",
        )
        return AudienceInfo(files=files, columns=tuple(columns))

    def _check(self, sql: str, what: str, hint: str) -> None:
        try:
            self._con.sql(sql)
        except duckdb.Error as exc:
            raise AudienceError(f"{what}: {_first_line(exc)} {hint}") from exc

    # -- freezing --------------------------------------------------------------------------

    def freeze(self) -> pa.Array:
        """The audience now: its contact ids, sorted and unique (int64)."""
        if self.config.where is not None:
            sql = f"SELECT id FROM {self._source} WHERE ({self.config.where})"
        elif self.config.ids_path is not None:
            sql = f"SELECT s.id FROM {self._source} s SEMI JOIN {self._ids_source} i ON s.id = i.id"
        else:
            sql = f"SELECT id FROM {self._source}"
        try:
            ordered = self._con.sql(f"SELECT id::BIGINT AS id FROM ({sql}) ORDER BY id")
            table = ordered.to_arrow_table()
        except duckdb.Error as exc:
            raise AudienceError(f"reading the audience failed: {_first_line(exc)}") from exc
        ids = table.column("id").combine_chunks()
        if ids.null_count:
            raise AudienceError(
                f"audience.source {self.config.source} has {ids.null_count} contacts with a "
                "null `id`: every contact needs a unique integer id."
            )
        if len(ids) > 1:
            same = pc.equal(ids.slice(1), ids.slice(0, len(ids) - 1))
            if pc.any(same).as_py():
                example = ids[pc.index(same, True).as_py()].as_py()
                raise AudienceError(
                    f"audience.source {self.config.source} has duplicate ids (e.g. {example}): "
                    "ids must be unique, or a contact would be sent twice."
                )
        return ids

    # -- streaming -------------------------------------------------------------------------

    def stream(
        self, frozen: pa.Array, seqs: Sequence[int] | None = None, chunk_batches: int = 1
    ) -> Iterator[pa.Table]:
        """The wanted batches (all by default) in batch order, ``chunk_batches`` at a time.

        Each table has ``seq``, ``id`` and ``element`` columns and holds the next
        ``chunk_batches`` wanted seqs; a batch whose contacts have all left the source simply
        has no rows. Two passes keep memory flat whatever the audience size: the first
        renders every candidate row in one streaming scan (no sort) and spills it into
        buckets of consecutive frozen positions; the second reads one bucket at a time,
        keeps only the frozen contacts and orders them."""
        size = self.config.batch_size
        total = -(-len(frozen) // size)
        wanted = list(range(total)) if seqs is None else sorted(s for s in set(seqs) if s < total)
        if not wanted:
            return
        positions = np.concatenate(
            [np.arange(s * size, min((s + 1) * size, len(frozen))) for s in wanted]
        )
        wanted_ids = frozen.to_numpy(zero_copy_only=False)[positions]
        with _Buckets(self._temp_dir, wanted_ids, self.config.bucket_rows) as buckets:
            for chunk in self._candidates(wanted_ids):
                buckets.add(chunk)
            ordered = (
                _in_frozen_order(table, wanted_ids[lo:hi], positions[lo:hi], size)
                for table, lo, hi in buckets.drain()
            )
            yield from pack_chunks(group_batches(ordered, wanted), wanted, chunk_batches)

    def open_stream(self, frozen: pa.Array, seqs: Sequence[int], chunk_batches: int) -> None:
        """Start ``stream`` for callers that pull its chunks one call at a time (``next_chunk``)
        instead of through a streaming generator, which Ray Client cannot carry."""
        self._pulled = self.stream(frozen, seqs, chunk_batches)

    def next_chunk(self) -> pa.Table:
        """The next chunk of the stream opened by ``open_stream``."""
        return next(self._pulled)

    def _candidates(self, wanted_ids: np.ndarray) -> Iterator[pa.RecordBatch]:
        """Rendered rows that may belong to the wanted batches, in source order."""
        filters = [f"s.id BETWEEN {int(wanted_ids[0])} AND {int(wanted_ids[-1])}"]
        if self.config.where is not None:
            filters.append(f"({self.config.where})")
        if self.config.ids_path is not None:
            filters.append(f"s.id IN (SELECT id FROM {self._ids_source})")
        tail = element_sql(self.columns(), self.config.payload)
        source = self._source
        con = self._cursor()
        try:
            yield from con.sql(
                f"SELECT s.id::BIGINT AS id, {tail} AS {ELEMENT_COLUMN} FROM {source} s "
                f"WHERE {' AND '.join(filters)}"
            ).to_arrow_reader(64 * 1024)
        finally:
            con.close()


def _in_frozen_order(
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


class _Buckets:
    """Spill files, one per run of ``bucket_rows`` consecutive wanted contacts."""

    def __init__(self, temp_dir: str, wanted_ids: np.ndarray, bucket_rows: int) -> None:
        self._dir = tempfile.mkdtemp(prefix="stream-", dir=temp_dir)
        self._ids = wanted_ids
        self._bucket_rows = bucket_rows
        self._edges = wanted_ids[::bucket_rows]  # first id of each bucket
        self._writers: dict[int, pa.ipc.RecordBatchStreamWriter] = {}

    def __enter__(self) -> _Buckets:
        return self

    def __exit__(self, *exc_info: object) -> None:
        for writer in self._writers.values():
            writer.close()
        shutil.rmtree(self._dir, ignore_errors=True)

    def _path(self, bucket: int) -> str:
        return os.path.join(self._dir, f"{bucket:06d}.arrow")

    def add(self, chunk: pa.RecordBatch) -> None:
        ids = chunk.column("id").to_numpy(zero_copy_only=False)
        bucket = np.searchsorted(self._edges, ids, side="right") - 1
        bucket[ids > self._ids[-1]] = -1
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
        for b in range(len(self._edges)):
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


def group_batches(chunks: Iterable[pa.RecordBatch], wanted: Sequence[int]) -> Iterator[pa.Table]:
    """Regroup a ``seq``-ordered stream of chunks into one table per wanted seq, in order.

    Every chunk row's seq must be in ``wanted`` (sorted); a seq with no rows yields an empty
    table."""
    remaining = iter(wanted)
    current = next(remaining, None)
    pending: list[pa.RecordBatch] = []
    for chunk in chunks:
        seqs = chunk.column("seq")
        n = len(seqs)
        if n == 0:
            continue
        changes = pc.indices_nonzero(pc.not_equal(seqs.slice(1), seqs.slice(0, n - 1)))
        cuts = [0, *(i + 1 for i in changes.to_pylist()), n]
        rows = chunk.select(["id", ELEMENT_COLUMN])
        for start, end in itertools.pairwise(cuts):
            seq = seqs[start].as_py()
            while current is not None and current < seq:
                yield pa.Table.from_batches(pending, _BATCH_SCHEMA)
                pending, current = [], next(remaining, None)
            pending.append(rows.slice(start, end - start))
    while current is not None:
        yield pa.Table.from_batches(pending, _BATCH_SCHEMA)
        pending, current = [], next(remaining, None)


def pack_chunks(
    batches: Iterable[pa.Table], wanted: Sequence[int], per_chunk: int
) -> Iterator[pa.Table]:
    """Concatenate ``per_chunk`` consecutive batches (with their ``seq``) into one table:
    fewer, larger objects through Ray, whose per-object cost dwarfs a batch's own."""
    group: list[pa.Table] = []
    for seq, batch in zip(wanted, batches, strict=True):
        seq_column = pa.array(np.full(batch.num_rows, seq, dtype=np.int64))
        group.append(batch.add_column(0, "seq", seq_column))
        if len(group) == per_chunk:
            # Zero-copy: Ray's serializer sends only the sliced part of each buffer.
            yield pa.concat_tables(group)
            group = []
    if group:
        yield pa.concat_tables(group)
