"""Audience shapes (cluster/testbed/shapes.py): the same contacts in each physical form,
checked in the files themselves and through hookcast's own reader and renderer (DuckDB)."""

from __future__ import annotations

import hashlib
import itertools
import re
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from hookcast.actors.render import ELEMENT_COLUMN, SEND_TIME_PLACEHOLDER, PayloadConfig
from hookcast.actors.segment import Segment, SegmentConfig
from hookcast.cluster.testbed import shapes
from hookcast.cluster.testbed.synth import (
    CDP_SCHEMA,
    SCHEMA,
    SHAPES,
    audience_blocks,
    shape_names,
    write_audience,
)

N = 20_000
CHUNK = 5_000
SEED = 11
CDP_SHAPES = [name for name in SHAPES if name != "seed"]
STRING_PROPS = ("tier", "channel", "note")
PAYLOAD = PayloadConfig(
    contact=True,
    identities=("wechat.openId", "wechat.unionId"),
    custom_json='{"a1":"1","a2":"2"}',
)


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory):
    """Each shape's audience of N contacts, written on first use."""
    root = tmp_path_factory.mktemp("shapes")
    paths: dict[str, Path] = {}

    def get(shape: str) -> Path:
        if shape not in paths:
            target = root / f"{shape}.parquet"
            paths[shape] = write_audience(target, N, seed=SEED, chunk_rows=CHUNK, shape=shape)
        return paths[shape]

    return get


@pytest.fixture(scope="module")
def cdp_table(written) -> pa.Table:
    return pq.read_table(written("cdp"))


def _files(path: Path) -> list[Path]:
    return sorted(path.glob("*.parquet")) if path.is_dir() else [path]


def _rendered_batch(source: Path, where: str | None = None) -> dict[int, dict]:
    """Batch 0 of the audience as hookcast renders it: contact id -> element."""
    config = SegmentConfig(source=str(source), batch_size=500, payload=PAYLOAD, where=where)
    segment = Segment(config)
    try:
        segment.validate()
        (batch,) = segment.stream(segment.freeze(), [0])
    finally:
        segment.close()
    elements = [
        orjson.loads(text.replace(SEND_TIME_PLACEHOLDER, "0"))
        for text in batch.column(ELEMENT_COLUMN).to_pylist()
    ]
    return {element["contact"]["id"]: element for element in elements}


def _has_null(value: object) -> bool:
    if isinstance(value, dict):
        return any(_has_null(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_null(v) for v in value)
    return value is None


# -- names ---------------------------------------------------------------------------------------


def test_every_shape_has_a_one_line_description() -> None:
    assert (
        shape_names()
        == tuple(SHAPES)
        == (
            "seed",
            "cdp",
            "cdp-sorted",
            "cdp-one-group",
            "cdp-map",
            "cdp-json",
            "cdp-files",
        )
    )
    for description in SHAPES.values():
        assert description and "\n" not in description and len(description) < 100


def test_an_unknown_shape_is_refused_with_the_shapes_listed(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"shape 'cdp-csv' is unknown: use one of seed, cdp, "):
        write_audience(tmp_path / "a.parquet", 10, shape="cdp-csv")
    assert list(tmp_path.iterdir()) == []


# -- types and layout ----------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
def test_each_shape_has_its_documented_types(written, shape: str) -> None:
    expected = SCHEMA if shape == "seed" else CDP_SCHEMA
    for file in _files(written(shape)):
        schema = pq.read_schema(file)
        props = schema.field("props").type
        if shape == "cdp-map":
            assert pa.types.is_map(props)
            assert (props.key_type, props.item_type) == (pa.string(), pa.string())
        elif shape == "cdp-json":
            assert props == pa.string()
        else:
            assert props == expected.field("props").type
        others = [name for name in expected.names if name != "props"]
        assert [schema.field(n) for n in others] == [expected.field(n) for n in others]
    assert CDP_SCHEMA.field("dateCreated").type == pa.timestamp("us")
    assert CDP_SCHEMA.field("lastUpdated").type == pa.timestamp("us")
    assert CDP_SCHEMA.field("dateOfBirthday").type == pa.date32()
    assert [f.name for f in CDP_SCHEMA.field("props").type] == [
        "haha",
        "testNum",
        "bgtest",
        *STRING_PROPS,
    ]


@pytest.mark.parametrize("shape", ["seed", "cdp", "cdp-map", "cdp-json"])
def test_unsorted_shapes_have_a_row_group_per_chunk_and_scattered_ids(written, shape) -> None:
    file = pq.ParquetFile(written(shape))
    groups = [file.metadata.row_group(k).num_rows for k in range(file.metadata.num_row_groups)]
    assert groups == [CHUNK] * (N // CHUNK)
    ids = file.read_row_group(0, columns=["id"]).column("id").to_pylist()
    assert ids != sorted(ids)


def test_cdp_sorted_is_in_id_order_with_disjoint_row_group_ranges(written) -> None:
    file = pq.ParquetFile(written("cdp-sorted"))
    ids = file.read(columns=["id"]).column("id").to_pylist()
    assert ids == sorted(ids)
    stats = [file.metadata.row_group(k).column(0).statistics for k in range(4)]
    assert [file.metadata.row_group(k).num_rows for k in range(4)] == [CHUNK] * 4
    assert file.metadata.num_row_groups == 4
    for before, after in itertools.pairwise(stats):
        assert before.min < before.max < after.min < after.max


def test_cdp_one_group_is_a_single_row_group(written) -> None:
    metadata = pq.ParquetFile(written("cdp-one-group")).metadata
    assert (metadata.num_row_groups, metadata.num_rows) == (1, N)


def test_cdp_files_is_a_folder_of_twenty_even_files(written) -> None:
    folder = written("cdp-files")
    assert folder.is_dir()
    files = _files(folder)
    assert [f.name for f in files] == [f"part-{k:05d}.parquet" for k in range(20)]
    assert [pq.ParquetFile(f).metadata.num_rows for f in files] == [N // 20] * 20
    assert sorted(p.name for p in folder.parent.iterdir() if p.name.startswith(".")) == []


@pytest.mark.parametrize(
    ("contacts", "files"),
    [(0, 1), (7, 7), (20_000, 20), (20_001, 20), (999_999, 20), (2_000_000, 40), (2_000_001, 41)],
)
def test_cdp_files_has_twenty_files_or_one_per_fifty_thousand(contacts, files) -> None:
    rows = shapes.file_rows(contacts)
    assert (len(rows), sum(rows)) == (files, contacts)
    assert max(rows) - min(rows) <= 1
    assert max(rows) <= 50_000


# -- the same contacts ---------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
def test_duckdb_freezes_the_same_ids_from_every_shape(written, shape: str) -> None:
    segment = Segment(SegmentConfig(source=str(written(shape)), batch_size=500))
    try:
        ids = segment.freeze()
    finally:
        segment.close()
    seed_ids = pq.read_table(written("seed"), columns=["id"]).column("id")
    assert sorted(ids.to_pylist()) == sorted(seed_ids.to_pylist())
    assert len(ids) == N


def test_cdp_values_are_the_seed_values_typed(written, cdp_table: pa.Table) -> None:
    seed = pq.read_table(written("seed")).sort_by("id")
    cdp = cdp_table.sort_by("id")
    assert (
        cdp.column("dateCreated")
        .cast(pa.timestamp("s"))
        .cast(pa.string())
        .equals(seed.column("dateCreated"))
    )
    assert cdp.column("lastUpdated").cast(pa.timestamp("ms")).equals(seed.column("lastUpdated"))
    assert cdp.column("dateOfBirthday").cast(pa.string()).equals(seed.column("dateOfBirthday"))
    for name in ("haha", "testNum", "bgtest"):
        assert pc.struct_field(cdp.column("props"), name).equals(
            pc.struct_field(seed.column("props"), name)
        )
    assert cdp.column("props").is_null().equals(seed.column("props").is_null())
    same = [n for n in SCHEMA.names if n not in _cdp_typed()]
    assert cdp.select(same).equals(seed.select(same))


def _cdp_typed() -> set[str]:
    return {"dateCreated", "lastUpdated", "dateOfBirthday", "props"}


@pytest.mark.parametrize("shape", ["cdp-sorted", "cdp-one-group", "cdp-files"])
def test_layout_shapes_hold_exactly_the_cdp_rows(written, cdp_table, shape: str) -> None:
    table = pa.concat_tables(pq.read_table(f) for f in _files(written(shape)))
    assert table.sort_by("id").equals(cdp_table.sort_by("id"))


def test_cdp_json_props_are_orjson_dumps_without_nulls(written, cdp_table) -> None:
    got = pq.read_table(written("cdp-json")).column("props").to_pylist()
    expected = [
        None if p is None else orjson.dumps({k: v for k, v in p.items() if v is not None}).decode()
        for p in cdp_table.column("props").to_pylist()
    ]
    assert got == expected
    assert "{}" in got


def test_cdp_map_props_are_the_non_null_members_as_text(written, cdp_table) -> None:
    got = pq.read_table(written("cdp-map")).column("props").to_pylist()
    expected = [
        None if p is None else [(k, str(v)) for k, v in p.items() if v is not None]
        for p in cdp_table.column("props").to_pylist()
    ]
    assert got == expected
    assert [] in got and None in got


def test_cdp_text_has_quotes_backslashes_newlines_and_emoji(cdp_table) -> None:
    notes = set(pc.struct_field(cdp_table.column("props"), "note").drop_null().to_pylist())
    for needle in ('"', "\\", "\n", "\t", "🎉"):
        assert any(needle in note for note in notes), needle
    for name in STRING_PROPS:
        values = pc.struct_field(cdp_table.column("props"), name)
        assert 0 < values.null_count < N, name
    nicknames = set(cdp_table.column("nickname").drop_null().to_pylist())
    assert any("🐱" in n for n in nicknames)


# -- hookcast's renderer -------------------------------------------------------------------------


def _expected_props(row: dict, shape: str) -> dict:
    props = {k: v for k, v in (row["props"] or {}).items() if v is not None}
    if shape == "cdp-map":
        props = {k: str(v) for k, v in props.items()}
    if row["vipLevel"] is not None:
        props["vipLevel"] = row["vipLevel"]
    return props


@pytest.mark.parametrize("shape", CDP_SHAPES)
def test_hookcast_renders_each_shape_as_the_seed_contact(written, cdp_table, shape: str) -> None:
    elements = _rendered_batch(written(shape))
    in_batch = f"id IN ({', '.join(map(str, elements))})"
    seed_elements = _rendered_batch(written("seed"), where=in_batch)
    assert len(elements) == 500
    assert elements.keys() == seed_elements.keys()
    rows = cdp_table.filter(pc.is_in(cdp_table.column("id"), pa.array(list(elements))))
    for row in rows.to_pylist():
        element, seed = elements[row["id"]], seed_elements[row["id"]]
        assert element["_custom"] == {"a1": "1", "a2": "2"}
        assert not _has_null(element)
        contact = element["contact"]
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", contact["dateCreated"])
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", contact["lastUpdated"])
        if "dateOfBirthday" in contact:
            assert re.fullmatch(r"\d{4}-\d\d-\d\d", contact["dateOfBirthday"])
        assert contact["props"] == _expected_props(row, shape)
        assert {k: v for k, v in contact.items() if k != "props"} == {
            k: v for k, v in seed["contact"].items() if k != "props"
        }
    notes = {e["contact"]["props"].get("note") for e in elements.values()}
    assert {"第一行\n第二行", 'said "call me" twice'} <= notes


def test_hookcast_validates_a_folder_shape_as_its_files(written) -> None:
    segment = Segment(SegmentConfig(source=str(written("cdp-files")), batch_size=500))
    try:
        assert segment.validate().files == 20
    finally:
        segment.close()


# -- writing -------------------------------------------------------------------------------------


def _digest(path: Path) -> str:
    return hashlib.sha256(b"".join(f.read_bytes() for f in _files(path))).hexdigest()


def test_cdp_sorted_is_the_same_file_every_time_and_for_any_bucket_count(
    tmp_path: Path, written, monkeypatch: pytest.MonkeyPatch
) -> None:
    again = write_audience(
        tmp_path / "again.parquet", N, seed=SEED, chunk_rows=CHUNK, shape="cdp-sorted"
    )
    assert _digest(again) == _digest(written("cdp-sorted"))
    monkeypatch.setattr(shapes, "MAX_BUCKETS", 3)  # buckets of 6,667 rows: 2 row groups each
    few = write_audience(
        tmp_path / "few.parquet", N, seed=SEED, chunk_rows=CHUNK, shape="cdp-sorted"
    )
    assert _digest(few) == _digest(written("cdp-sorted"))


@pytest.mark.parametrize("shape", CDP_SHAPES)
def test_zero_contacts_write_an_empty_audience_with_the_shape_schema(tmp_path, shape) -> None:
    path = write_audience(tmp_path / "empty.parquet", 0, shape=shape)
    (file,) = _files(path)
    assert pq.read_metadata(file).num_rows == 0
    assert pq.read_schema(file).equals(shapes.shaped_schema(shape, CDP_SCHEMA))


@pytest.mark.parametrize("shape", ["cdp-sorted", "cdp-one-group", "cdp-files"])
def test_a_shape_replaces_what_was_there_and_leaves_no_scratch(tmp_path, shape) -> None:
    target = tmp_path / "contacts.parquet"
    write_audience(target, 50, shape="cdp-files")
    write_audience(target, 30, shape=shape)
    assert sum(pq.read_metadata(f).num_rows for f in _files(target)) == 30
    assert [p.name for p in tmp_path.iterdir()] == ["contacts.parquet"]


def test_a_failed_folder_write_keeps_the_old_folder_and_no_scratch(tmp_path, monkeypatch) -> None:
    target = write_audience(tmp_path / "contacts", 40, shape="cdp-files")

    def broken(*args, **kwargs):
        yield from audience_blocks(10, cdp=True)
        raise RuntimeError("disk full")

    monkeypatch.setattr("hookcast.cluster.testbed.synth.audience_blocks", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        write_audience(target, 40, shape="cdp-files")
    assert len(_files(target)) == 20
    assert [p.name for p in tmp_path.iterdir()] == ["contacts"]


def test_regroup_cuts_tables_into_the_given_sizes_and_keeps_the_rest() -> None:
    tables = [pa.table({"x": list(range(k, k + 4))}) for k in range(0, 12, 4)]
    cut = list(shapes.regroup(tables, [5, 1, 3]))
    assert [t.column("x").to_pylist() for t in cut] == [
        [0, 1, 2, 3, 4],
        [5],
        [6, 7, 8],
        [9, 10, 11],
    ]
