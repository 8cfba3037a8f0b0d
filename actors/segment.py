"""The audience: DuckDB reads the parquet source, applies the segment, freezes, streams batches.

A run's audience is *frozen* once, at fire time, as the list of its contact ids in the order
a scan of the source reads them. Batch ``k`` is always the contacts at positions
``[k * batch_size, (k + 1) * batch_size)`` of that list, so a resume or a replay sends the
same people in the same batches with the same keys, whatever happened to the source or the
segment's result since.

Streaming renders every element inside DuckDB (see ``render``) in one scan that meets the
contacts in frozen order while the source is unchanged; where it has changed, rows are put in
frozen order through spill files (``batch_stream``): memory stays flat as the audience grows.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from hookcast.actors.batch_stream import in_batch_order, in_chunks
from hookcast.actors.errors import AudienceError
from hookcast.actors.frozen import FrozenIds
from hookcast.actors.render import (
    ELEMENT_COLUMN,
    DuckType,
    NonFiniteCheck,
    PayloadConfig,
    element_sql,
    non_finite_checks,
    sql_string,
)
from hookcast.actors.sources import (
    find_files,
    is_remote,
    open_dataset,
    remote_schemas,
    type_disagreement,
)
from hookcast.actors.spill_dir import make_spill_dir
from hookcast.actors.urls import has_scheme

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
# Rows DuckDB renders per Arrow record batch: the first request waits for the first one
# (16k: ~0.2 s sooner than 64k, at the same speed).
RENDER_ROWS = 16 * 1024
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
    """What validation learned about the source.

    ``non_finite`` holds (column as sent, count) for every sent column with NaN or infinite
    values in the audience (the ``where`` segment, else the whole source), and ``warnings``
    one sentence each for them, saying what the renderer does instead: JSON has no NaN."""

    files: int
    columns: tuple[str, ...]
    non_finite: tuple[tuple[str, int], ...] = ()
    warnings: tuple[str, ...] = ()


def source_sql(source: str) -> str:
    """The DuckDB table function reading a local ``source`` (file, folder or glob).

    s3:// and gs:// sources are pyarrow datasets instead (see ``Segment._table``)."""
    if not has_scheme(source) and os.path.isdir(source):
        source = os.path.join(source, "**", "*.parquet")
    return f"read_parquet({sql_string(source)}, union_by_name = true)"


def count_source_files(source: str, key: str = "audience.source") -> int:
    """How many files ``source`` names; raises AudienceError naming ``key`` when it names
    none."""
    if is_remote(source):
        return len(find_files(key, source).files)
    if has_scheme(source):
        return 1
    return len(local_files(source, key))


def local_files(source: str, key: str = "audience.source") -> list[str]:
    """The parquet files a local ``source`` (file, folder or glob) names, sorted; raises
    AudienceError naming ``key`` when it names none."""
    if os.path.isdir(source):
        found = glob.glob(os.path.join(source, "**", "*.parquet"), recursive=True)
        if not found:
            raise AudienceError(
                f"{key} {source} is a folder with no .parquet files in it: "
                "point it at a parquet file, a folder of them, or a glob."
            )
        return sorted(found)
    if _GLOB.search(source):
        found = glob.glob(source, recursive=True)
        if not found:
            raise AudienceError(
                f"{key} {source} matches no file: check the pattern "
                "(paths are relative to the job file)."
            )
        return sorted(found)
    if not os.path.exists(source):
        raise AudienceError(
            f"{key} {source} does not exist: give a parquet file, a folder or a "
            "glob (paths are relative to the job file)."
        )
    return [source]


def file_schemas(source: str, key: str = "audience.source") -> list[tuple[str, pa.Schema]]:
    """(file name, parquet schema) of each file ``source`` names, local or remote: footers
    only. Names are relative to the files' common folder."""
    if is_remote(source):
        return remote_schemas(key, source)
    files = local_files(source, key)
    base = os.path.commonpath(files) if len(files) > 1 else os.path.dirname(files[0])
    try:
        return [(os.path.relpath(f, base), pq.read_schema(f)) for f in files]
    except (OSError, pa.ArrowException) as exc:
        raise AudienceError(f"{key} {source} cannot be read as parquet: {exc}") from exc


_MISSING_COLUMN = re.compile(r'Referenced column "([^"]+)" not found')


def first_duplicate(ids: np.ndarray) -> int | None:
    """The smallest id that occurs more than once, or None.

    One sort on the calling thread (10M ids: 0.6-0.9 s of one core; ids already ascending,
    as from a source sorted by id, cost one comparison pass). DuckDB's parallel
    count(DISTINCT) took 0.4-0.9 s of wall but 1.1-2.2 CPU-s on both cores, and the freeze
    runs while Ray starts (``prepare_while``): it slowed ray.init by ~0.9 s at 10M."""
    if len(ids) < 2 or bool(np.all(ids[1:] > ids[:-1])):
        return None
    ordered = np.sort(ids)
    repeated = np.flatnonzero(ordered[1:] == ordered[:-1])
    return int(ordered[repeated[0]]) if len(repeated) else None


def _non_finite_warning(check: NonFiniteCheck, count: int) -> str:
    values, they = ("1 value is", "it is") if count == 1 else (f"{count} values are", "they are")
    like = " like nulls" if check.fate == "left out" else ""
    return (
        f"{check.label}: {values} NaN or infinite, which JSON cannot carry; "
        f"{they} {check.fate}{like}."
    )


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
        self._temp_dir = make_spill_dir()
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
            # Only now are the footers read one by one: the good path costs nothing.
            disagreement = type_disagreement("id", file_schemas(self.config.source))
            if disagreement:
                raise AudienceError(
                    f"audience.source {self.config.source}: {disagreement}: contact ids must "
                    "be integers (int64) in every file; rewrite the odd files, or leave them "
                    "out with a glob."
                )
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
            "(the README lists the column types hookcast understands)",
        )
        counted = self._count_non_finite(non_finite_checks(columns, self.config.payload))
        return AudienceInfo(
            files=files,
            columns=tuple(columns),
            non_finite=tuple((check.label, n) for check, n in counted),
            warnings=tuple(_non_finite_warning(check, n) for check, n in counted),
        )

    def _count_non_finite(self, checks: list[NonFiniteCheck]) -> list[tuple[NonFiniteCheck, int]]:
        """The checks that found values, with their counts: one scan of the float columns
        only (parquet reads no other column), none at all when no sent column is a float."""
        if not checks:
            return []
        where = f" WHERE ({self.config.where})" if self.config.where is not None else ""
        counts = ", ".join(f"coalesce({check.count_sql}, 0)" for check in checks)
        try:
            (row,) = self._con.sql(f"SELECT {counts} FROM {self._source}{where}").fetchall()
        except duckdb.Error as exc:
            raise AudienceError(
                f"audience.source {self.config.source} cannot be scanned for NaN and infinite "
                f"values: {_first_line(exc)}"
            ) from exc
        return [(check, int(n)) for check, n in zip(checks, row, strict=True) if n]

    def _check(self, sql: str, what: str, hint: str) -> None:
        try:
            self._con.sql(sql)
        except duckdb.Error as exc:
            raise AudienceError(f"{what}: {_first_line(exc)} {hint}") from exc

    # -- freezing --------------------------------------------------------------------------

    def freeze(self, *, check_unique: bool = True) -> pa.Array:
        """The audience now: its contact ids (int64, unique) in the order a scan of the
        source reads them, which is the order ``stream`` meets them in while the source
        stays as it is: one pass renders and sends, with no sort in between.

        ``check_unique=False`` leaves the duplicate check to the caller (``check_unique``),
        which may do other work meanwhile: at 10M ids it takes ~0.7 s."""
        sql = f"SELECT s.id::BIGINT AS id FROM {self._source} s{self._segment_filter()}"
        try:
            ids = self._con.sql(sql).to_arrow_table().column("id").combine_chunks()
        except duckdb.Error as exc:
            raise AudienceError(f"reading the audience failed: {_first_line(exc)}") from exc
        if ids.null_count:
            raise AudienceError(
                f"audience.source {self.config.source} has {ids.null_count} contacts with a "
                "null `id`: every contact needs a unique integer id."
            )
        if check_unique:
            self.check_unique(ids)
        return ids

    def check_unique(self, ids: pa.Array) -> None:
        """Raise AudienceError naming the source and one repeated id if ``ids`` has any."""
        if (example := first_duplicate(ids.to_numpy())) is not None:
            raise AudienceError(
                f"audience.source {self.config.source} has duplicate ids (e.g. {example}): "
                "ids must be unique, or a contact would be sent twice."
            )

    def _segment_filter(self, *extra: str) -> str:
        """The WHERE clause of the segment (and ``extra`` conditions): the same in the freeze
        and in the stream, so both scans read the contacts in the same order."""
        filters = list(extra)
        if self.config.where is not None:
            filters.append(f"({self.config.where})")
        if self.config.ids_path is not None:
            filters.append(f"s.id IN (SELECT id FROM {self._ids_source})")
        return f" WHERE {' AND '.join(filters)}" if filters else ""

    # -- streaming -------------------------------------------------------------------------

    def stream(
        self,
        frozen: FrozenIds | pa.Array,
        seqs: Sequence[int] | None = None,
        chunk_batches: int = 1,
    ) -> Iterator[pa.Table]:
        """The wanted batches (all by default) in batch order, ``chunk_batches`` at a time.

        Each table has ``seq``, ``id`` and ``element`` columns and holds the next
        ``chunk_batches`` wanted seqs; a batch whose contacts have all left the source simply
        has no rows. One streaming scan renders the candidates; ``in_batch_order`` passes
        them on in frozen order, through spill files only where the source has changed
        since the freeze, so memory stays flat whatever the audience size (a frozen list in
        its file is read a row group at a time)."""
        if not isinstance(frozen, FrozenIds):
            frozen = FrozenIds.in_memory(frozen)
        size = self.config.batch_size
        total = -(-len(frozen) // size)
        wanted = list(range(total)) if seqs is None else sorted(s for s in set(seqs) if s < total)
        if not wanted:
            return
        cut = self._wanted_range(frozen, wanted)
        ordered = in_batch_order(
            self._candidates(cut and cut[1:]),
            frozen,
            wanted,
            size,
            (self._temp_dir, self.config.bucket_rows),
            start=cut[0] if cut else 0,
        )
        yield from in_chunks(ordered, wanted, chunk_batches)

    def open_stream(
        self, frozen: FrozenIds | pa.Array, seqs: Sequence[int], chunk_batches: int
    ) -> None:
        """Start ``stream`` for callers that pull its chunks one call at a time (``next_chunk``)
        instead of through a streaming generator, which Ray Client cannot carry."""
        self._pulled = self.stream(frozen, seqs, chunk_batches)

    def next_chunk(self) -> pa.Table:
        """The next chunk of the stream opened by ``open_stream``."""
        return next(self._pulled)

    def _wanted_range(self, frozen: FrozenIds, wanted: list[int]) -> tuple[int, int, int] | None:
        """(first position, lowest id, highest id) of the wanted batches when the frozen ids
        ascend (a source sorted by id): a scan cut to that id range reads from that position
        on, and parquet skips the row groups outside it. None otherwise."""
        if len(frozen) < 2 or not frozen.ascending():
            return None
        size = self.config.batch_size
        first, last = wanted[0] * size, min((wanted[-1] + 1) * size, len(frozen)) - 1
        return first, frozen.at(first), frozen.at(last)

    def _candidates(self, id_range: tuple[int, int] | None) -> Iterator[pa.RecordBatch]:
        """Rendered rows that may belong to the wanted batches, in source order."""
        extra = []
        if id_range:
            extra.append(f"s.id BETWEEN {id_range[0]} AND {id_range[1]}")
        tail = element_sql(self.columns(), self.config.payload)
        source = self._source
        con = self._cursor()
        try:
            yield from con.sql(
                f"SELECT s.id::BIGINT AS id, {tail} AS {ELEMENT_COLUMN} FROM {source} s"
                f"{self._segment_filter(*extra)}"
            ).to_arrow_reader(RENDER_ROWS)
        finally:
            con.close()
