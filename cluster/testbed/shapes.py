"""Physical forms of one synthetic audience: how a customer's CDP export might lay it out.

Every shape holds the same contacts with the same ids and values; only types, row order,
row groups, the form of ``props`` and the number of files change (``SHAPES``). The functions
here know nothing of how contacts are generated: they take the CDP-typed tables that
``synth.audience_blocks`` yields and write them, each one atomically (a temp file or folder
next to the target, then a rename).

Layouts: ``cdp``, ``cdp-map`` and ``cdp-json`` are one file with a row group per
``chunk_rows`` rows in generation order (ids scattered); ``cdp-sorted`` the same in id order;
``cdp-one-group`` one file, one row group; ``cdp-files`` a folder of ``part-00000.parquet``…
(``file_rows``), each with a row group per ``chunk_rows`` rows (so usually one).

Memory stays at about one chunk whatever the size (40 MB of Arrow per 100,000 rows), except:

- ``cdp-sorted`` sorts in two passes: each chunk's rows go to the lz4 Arrow spill file of
  their id range (at most ``MAX_BUCKETS`` ranges of ``max(chunk_rows, contacts /
  MAX_BUCKETS)`` contacts, ~22 MB on disk per 100,000 beside the target, each deleted once
  read back), then one range at a time is read and sorted a column at a time. Memory is one
  chunk plus one range, the same for 10,000,000 contacts as for 1,000,000 (measured at 1M:
  366 MB peak RSS against 250 MB for ``cdp``, 5.5 s against 3.6 s).
- ``cdp-one-group`` must hand pyarrow all rows in one call (each ``write_table`` ends its row
  groups; the buffered row groups of Arrow's C++ writer are not exposed), so they are spooled
  to an uncompressed Arrow file beside the target and memory-mapped: those pages are
  file-backed and reclaimable (~0.4 MB per 1,000 contacts). Anonymous memory still grows
  ~0.13 MB per 1,000 contacts (the writer holds a column chunk's encoded pages until it
  closes; measured 18 -> 31 MB of Arrow from 100k to 200k): keep it to a few million.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

__all__ = [
    "FILES",
    "FILE_ROWS",
    "MAX_BUCKETS",
    "SHAPES",
    "atomic_file",
    "atomic_folder",
    "file_rows",
    "props_as_json",
    "props_as_map",
    "regroup",
    "shape_names",
    "shaped_schema",
    "write_shape",
]

FILES = 20
FILE_ROWS = 50_000
SHAPES: dict[str, str] = {
    "seed": "the seed's types: dates as text, props a struct of ints; ids scattered",
    "cdp": "a CDP export: timestamp[us], date32, props a struct of ints and strings",
    "cdp-sorted": "cdp with the rows in id order (tight id ranges per row group)",
    "cdp-one-group": "cdp in a single row group",
    "cdp-map": "cdp with props a map<string, string> (values as text, no nulls)",
    "cdp-json": "cdp with props a JSON text column (no null members)",
    "cdp-files": f"cdp as a folder of parquet files ({FILES}, or one per {FILE_ROWS:,} "
    "contacts when that makes more)",
}
MAX_BUCKETS = 256  # cdp-sorted's spill files, all open at once during the first pass
_SPILL = pa.ipc.IpcWriteOptions(compression="lz4")
# orjson's escapes for the control characters the generator's text holds (a test checks).
_JSON_ESCAPES = (("\\", "\\\\"), ('"', '\\"'), ("\n", "\\n"), ("\r", "\\r"), ("\t", "\\t"))


def shape_names() -> tuple[str, ...]:
    return tuple(SHAPES)


def regroup(tables: Iterable[pa.Table], sizes: Iterable[int]) -> Iterator[pa.Table]:
    """The rows of ``tables`` in order, cut into tables of ``sizes[0]``, ``sizes[1]``, …
    rows; rows left when ``tables`` ends (fewer than the next size) form one last table."""
    wanted = iter(sizes)
    want = next(wanted, sys.maxsize)
    pending: list[pa.Table] = []
    buffered = 0
    for table in tables:
        pending.append(table)
        buffered += table.num_rows
        while buffered >= want:
            joined = pa.concat_tables(pending)
            yield joined.slice(0, want)
            rest = joined.slice(want)
            pending, buffered = [rest], rest.num_rows
            want = next(wanted, sys.maxsize)
    if buffered:
        yield pa.concat_tables(pending)


@contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """A temp path beside ``path`` to write; it takes the place of ``path`` on success."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        _swap(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_folder(path: str | Path) -> Iterator[Path]:
    """A temp folder beside ``path`` to fill; it takes the place of ``path`` on success."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    _remove(tmp)
    tmp.mkdir()
    try:
        yield tmp
        _swap(tmp, target)
    finally:
        _remove(tmp)


def _swap(new: Path, target: Path) -> None:
    """Rename ``new`` to ``target``: in one step over a file; over a folder (which POSIX
    cannot rename onto) or by a folder, the old one is moved aside first, then deleted."""
    if not new.is_dir() and not (target.is_dir() and not target.is_symlink()):
        os.replace(new, target)
        return
    old = target.with_name(f".{target.name}.{os.getpid()}.old")
    _remove(old)
    if target.exists() or target.is_symlink():
        os.replace(target, old)
    os.replace(new, target)
    _remove(old)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


# -- props ---------------------------------------------------------------------------------------


def _json_text(strings: pa.Array) -> pa.Array:
    for raw, escaped in _JSON_ESCAPES:
        strings = pc.replace_substring(strings, raw, escaped)
    return pc.binary_join_element_wise('"', strings, '"', "")


def props_as_json(props: pa.StructArray) -> pa.Array:
    """Each struct as the JSON text ``orjson.dumps`` gives for its dict without the null
    members (``{}`` when all are null); a null struct stays null. Integer and string fields."""
    members = []
    for i, field in enumerate(props.type):
        child = props.field(i)
        if pa.types.is_integer(field.type):
            text = pc.cast(child, pa.string())
        elif pa.types.is_string(field.type):
            text = _json_text(child)
        else:
            raise TypeError(f"props.{field.name} is {field.type}: only ints and strings")
        member = pc.binary_join_element_wise("," + json.dumps(field.name) + ":", text, "")
        members.append(pc.fill_null(member, ""))
    # Each present member brings its comma, the first one's is cut: null_handling="skip"
    # would be simpler, but pyarrow 26 drops the rows whose members are all null.
    body = pc.utf8_slice_codeunits(pc.binary_join_element_wise(*members, ""), start=1)
    objects = pc.binary_join_element_wise("{", body, "}", "")
    return pc.if_else(pc.is_valid(props), objects, pa.scalar(None, pa.string()))


def props_as_map(props: pa.StructArray) -> pa.MapArray:
    """Each struct as a ``map<string, string>`` of its non-null members in field order
    (values as text: ``3`` becomes ``"3"``); a null struct stays null."""
    n, names = len(props), [field.name for field in props.type]
    kept = [pc.and_(pc.is_valid(props.field(i)), pc.is_valid(props)) for i in range(len(names))]
    # Members field by field, then reordered row by row: entry r is row r // F, field r % F.
    keys = pa.concat_arrays([pa.repeat(pa.scalar(name), n) for name in names])
    values = pa.concat_arrays([pc.cast(props.field(i), pa.string()) for i in range(len(names))])
    keep = pa.concat_arrays(kept)
    entry = pa.array(range(n * len(names)), pa.int64())
    row = pc.divide(entry, len(names))
    field_no = pc.subtract(entry, pc.multiply(row, len(names)))
    order = pc.add(pc.multiply(field_no, n), row)
    keep = keep.take(order)
    counts = [pc.cast(k, pa.int32()) for k in kept]
    per_row = counts[0] if len(counts) == 1 else pc.add(counts[0], counts[1])
    for more in counts[2:]:
        per_row = pc.add(per_row, more)
    offsets = pa.concat_arrays([pa.array([0], pa.int32()), pc.cumulative_sum(per_row)])
    return pa.MapArray.from_arrays(
        offsets,
        keys.take(order).filter(keep),
        values.take(order).filter(keep),
        type=pa.map_(pa.string(), pa.string()),
        mask=pc.is_null(props),
    )


_PROPS_FORMS = {"cdp-map": props_as_map, "cdp-json": props_as_json}
_PROPS_TYPES = {"cdp-map": pa.map_(pa.string(), pa.string()), "cdp-json": pa.string()}


def shaped_schema(shape: str, cdp_schema: pa.Schema) -> pa.Schema:
    """The schema a cdp shape writes, given the CDP-typed one."""
    props_type = _PROPS_TYPES.get(shape)
    if props_type is None:
        return cdp_schema
    index = cdp_schema.get_field_index("props")
    return cdp_schema.set(index, pa.field("props", props_type))


def _shaped(shape: str, tables: Iterable[pa.Table], schema: pa.Schema) -> Iterator[pa.Table]:
    form = _PROPS_FORMS.get(shape)
    for table in tables:
        if form is None:
            yield table
            continue
        props = form(table.column("props").combine_chunks())
        yield table.set_column(table.schema.get_field_index("props"), schema.field("props"), props)


# -- writers -------------------------------------------------------------------------------------


def file_rows(contacts: int) -> list[int]:
    """The rows of each file of ``cdp-files``: ``FILES`` files, or one per ``FILE_ROWS``
    contacts when that makes more, as even as can be (never an empty file but for 0)."""
    files = max(1, min(contacts, max(FILES, -(-contacts // FILE_ROWS))))
    return [(k + 1) * contacts // files - k * contacts // files for k in range(files)]


def write_shape(
    path: str | Path,
    shape: str,
    blocks: Iterable[pa.Table],
    cdp_schema: pa.Schema,
    *,
    contacts: int,
    chunk_rows: int,
    id_from: int,
    ids_per_contact: int,
) -> Path:
    """Write the CDP-typed ``blocks`` (``contacts`` rows, ids in ``[id_from, id_from +
    contacts * ids_per_contact)``, each ``ids_per_contact`` wide range holding one) as
    ``shape``; return the file, or the folder for ``cdp-files``."""
    schema = shaped_schema(shape, cdp_schema)
    tables = _shaped(shape, blocks, schema)
    if shape == "cdp-files":
        with atomic_folder(path) as folder:
            _write_files(folder, schema, tables, contacts=contacts, chunk_rows=chunk_rows)
        return Path(path)
    with atomic_file(path) as tmp:
        if shape == "cdp-sorted":
            id_width = max(chunk_rows, -(-contacts // MAX_BUCKETS)) * ids_per_contact
            chunks = regroup(tables, itertools.repeat(chunk_rows))
            with _work_dir(tmp) as work:
                ordered = _sorted_by_id(work, schema, chunks, id_from, id_width)
                _write_groups(tmp, schema, regroup(ordered, itertools.repeat(chunk_rows)))
        elif shape == "cdp-one-group":
            with _work_dir(tmp) as work:
                _write_one_group(tmp, schema, tables, work / "rows.arrow")
        else:
            _write_groups(tmp, schema, regroup(tables, itertools.repeat(chunk_rows)))
    return Path(path)


@contextmanager
def _work_dir(beside: Path) -> Iterator[Path]:
    """A scratch folder on the target's disk (the system temp folder may be in memory)."""
    work = Path(tempfile.mkdtemp(prefix=f"{beside.name}.", dir=beside.parent))
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _write_groups(path: Path, schema: pa.Schema, tables: Iterable[pa.Table]) -> None:
    """One row group per table."""
    with pq.ParquetWriter(path, schema) as writer:
        for table in tables:
            writer.write_table(table, row_group_size=table.num_rows)


def _write_files(
    folder: Path, schema: pa.Schema, tables: Iterable[pa.Table], *, contacts: int, chunk_rows: int
) -> None:
    sizes = file_rows(contacts)
    parts = regroup(tables, sizes)
    for k, rows in enumerate(sizes):
        with pq.ParquetWriter(folder / f"part-{k:05d}.parquet", schema) as writer:
            if rows:
                writer.write_table(next(parts), row_group_size=chunk_rows)


def _sorted_by_id(
    work: Path, schema: pa.Schema, chunks: Iterable[pa.Table], id_from: int, id_width: int
) -> Iterator[pa.Table]:
    """The rows of ``chunks`` in id order: spilled into files of ``id_width``-wide id
    ranges, then read back one range at a time and sorted, a column at a time."""
    id_column = schema.get_field_index("id")
    for spill in _spill_by_id(work, schema, chunks, id_from, id_width):
        with pa.OSFile(str(spill)) as source:
            columns = pa.ipc.open_stream(source).read_all().columns
        spill.unlink()
        order = pc.sort_indices(columns[id_column])
        for i, column in enumerate(columns):
            columns[i] = column.take(order)  # the unsorted column is freed here
        yield pa.Table.from_arrays(columns, schema=schema)


def _spill_by_id(
    work: Path, schema: pa.Schema, chunks: Iterable[pa.Table], id_from: int, id_width: int
) -> list[Path]:
    """Write each chunk's rows to the spill file of their id range; the files in id order.
    A chunk is gathered one spill file's piece at a time, never copied whole."""
    writers: dict[int, pa.ipc.RecordBatchStreamWriter] = {}
    try:
        for chunk in chunks:
            bucket = pc.divide(pc.subtract(chunk.column("id"), id_from), id_width)
            order = pc.sort_indices(bucket)
            runs = pc.run_end_encode(bucket.take(order)).combine_chunks()
            start = 0
            for end, k in zip(runs.run_ends.to_pylist(), runs.values.to_pylist(), strict=True):
                if k not in writers:
                    writers[k] = pa.ipc.new_stream(work / f"{k:06d}.arrows", schema, options=_SPILL)
                writers[k].write_table(chunk.take(order.slice(start, end - start)))
                start = end
    finally:
        for writer in writers.values():
            writer.close()
    return [work / f"{k:06d}.arrows" for k in sorted(writers)]


def _write_one_group(
    path: Path, schema: pa.Schema, tables: Iterable[pa.Table], spool: Path
) -> None:
    # Uncompressed, so that the memory map below reads it without copying.
    rows = 0
    with pa.ipc.new_file(str(spool), schema) as spooled:
        for table in tables:
            spooled.write_table(table)
            rows += table.num_rows
    with pq.ParquetWriter(path, schema) as writer, pa.memory_map(str(spool)) as source:
        if rows:
            writer.write_table(pa.ipc.open_file(source).read_all(), row_group_size=rows)
