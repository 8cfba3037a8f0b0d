"""The audience (actors/segment.py): validation, freezing and batch streaming on real DuckDB."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from hookcast.actors.batch_stream import in_chunks
from hookcast.actors.errors import AudienceError
from hookcast.actors.render import ELEMENT_COLUMN, SEND_TIME_PLACEHOLDER, PayloadConfig
from hookcast.actors.segment import first_duplicate
from hookcast.cluster.testbed.synth import write_audience, write_ids
from tests.unit.conftest import SEGMENT_BATCH

N = 1_050

BATCH = SEGMENT_BATCH


@pytest.fixture(scope="module")
def audience(tmp_path_factory):
    """A synthetic audience of N contacts (shared: tests that change it take a copy)."""
    return write_audience(tmp_path_factory.mktemp("audience") / "contacts.parquet", N)


@pytest.fixture(scope="module")
def source_ids(audience):
    """The source's ids in file order."""
    return pq.read_table(audience, columns=["id"]).column("id").to_pylist()


@pytest.fixture
def own_audience(audience, tmp_path):
    """A private copy of the audience that a test may rewrite."""
    path = tmp_path / "contacts.parquet"
    shutil.copy(audience, path)
    return path


def _ids(table: pa.Table) -> list[int]:
    return table.column("id").to_pylist()


def _delete(path, ids) -> None:
    """Rewrite the parquet at ``path`` without the contacts ``ids``."""
    table = pq.read_table(path)
    kept = table.filter(pc.invert(pc.is_in(table.column("id"), value_set=pa.array(ids))))
    pq.write_table(kept, path)


# -- freezing ------------------------------------------------------------------------------------


def test_freeze_returns_every_id_once_in_the_order_the_source_holds_them(
    segment, audience, source_ids
):
    frozen = segment(audience).freeze()

    assert frozen.type == pa.int64()
    assert frozen.to_pylist() == source_ids
    assert len(set(source_ids)) == N
    assert source_ids != sorted(source_ids)  # the synthetic ids are not in id order


def test_where_segment_freezes_only_matching_contacts(segment, audience):
    where = "gender = 'male' AND props.testNum > 100"
    table = pq.read_table(audience)
    match = pc.and_(
        pc.equal(table.column("gender"), "male"),
        pc.greater(pc.struct_field(table.column("props"), "testNum"), 100),
    ).fill_null(False)
    expected = table.filter(match).column("id").to_pylist()

    frozen = segment(audience, where=where).freeze()

    assert 0 < len(expected) < N
    assert frozen.to_pylist() == expected


def test_ids_segment_freezes_the_listed_contacts_present_in_the_source(
    segment, audience, source_ids, tmp_path
):
    listed = [source_ids[900], source_ids[5], source_ids[77], 1]  # 1 is not in the source
    ids_path = write_ids(tmp_path / "vip.parquet", listed)

    seg = segment(audience, ids_path=str(ids_path))

    assert seg.freeze().to_pylist() == [i for i in source_ids if i in listed]
    assert seg.validate().columns[0] == "id"


def test_ids_segment_streams_only_the_listed_contacts(segment, audience, source_ids, tmp_path):
    listed = source_ids[10:15]
    ids_path = write_ids(tmp_path / "vip.parquet", listed[::-1])
    seg = segment(audience, ids_path=str(ids_path), batch_size=2)

    batches = list(seg.stream(seg.freeze()))

    assert [_ids(b) for b in batches] == [listed[0:2], listed[2:4], listed[4:5]]


# -- streaming -----------------------------------------------------------------------------------


def test_stream_yields_every_batch_in_frozen_order(segment, audience):
    seg = segment(audience)
    frozen = seg.freeze().to_pylist()

    batches = list(seg.stream(pa.array(frozen, pa.int64())))

    assert len(batches) == math.ceil(N / BATCH) == 11
    assert [b.num_rows for b in batches] == [BATCH] * 10 + [N - 10 * BATCH]
    for k, batch in enumerate(batches):
        assert batch.column_names == ["seq", "id", ELEMENT_COLUMN]
        assert set(batch.column("seq").to_pylist()) == {k}
        assert _ids(batch) == frozen[k * BATCH : (k + 1) * BATCH]
    assert [i for b in batches for i in _ids(b)] == frozen


def test_stream_elements_render_the_contact_of_their_row(segment, audience):
    seg = segment(audience, payload=PayloadConfig(custom_json='{"a1":"1"}'))

    batch = next(seg.stream(seg.freeze()))

    rendered = batch.column(ELEMENT_COLUMN).to_pylist()
    for contact_id, text in zip(_ids(batch), rendered, strict=True):
        element = json.loads(text.replace(SEND_TIME_PLACEHOLDER, "0"))
        assert element["contact"]["id"] == contact_id
        assert element["_custom"] == {"a1": "1"}
        assert isinstance(element["contact"]["props"], dict)


def test_stream_selected_seqs_yields_those_batches_in_seq_order(segment, audience):
    seg = segment(audience)
    frozen = seg.freeze()
    ids = frozen.to_pylist()

    batches = list(seg.stream(frozen, seqs=[3, 1]))

    assert [_ids(b) for b in batches] == [ids[100:200], ids[300:400]]


def test_stream_selected_last_seq_yields_the_short_batch(segment, audience):
    seg = segment(audience)
    frozen = seg.freeze()

    (batch,) = seg.stream(frozen, seqs=[10])

    assert _ids(batch) == frozen.to_pylist()[1000:]


def test_stream_of_an_empty_audience_yields_nothing(segment, audience):
    seg = segment(audience, where="id < 0")
    frozen = seg.freeze()

    assert len(frozen) == 0
    assert list(seg.stream(frozen)) == []


@pytest.mark.parametrize("bucket_rows", [1_000, 30])
def test_small_buckets_stream_the_same_batches(segment, audience, bucket_rows):
    default = segment(audience)
    frozen = default.freeze()
    expected = list(default.stream(frozen))

    got = list(segment(audience, bucket_rows=bucket_rows).stream(frozen))

    assert len(got) == len(expected)
    for got_batch, expected_batch in zip(got, expected, strict=True):
        assert got_batch.equals(expected_batch)


def test_contact_deleted_after_freeze_leaves_its_batch_one_shorter(segment, own_audience):
    seg = segment(own_audience)
    frozen = seg.freeze()
    ids = frozen.to_pylist()
    gone = ids[250]
    _delete(own_audience, [gone])

    batches = list(seg.stream(frozen))

    assert [b.num_rows for b in batches] == [100, 100, 99, *[100] * 7, 50]
    assert _ids(batches[2]) == [i for i in ids[200:300] if i != gone]
    assert all(gone not in _ids(b) for b in batches)


def test_batch_whose_contacts_all_left_is_an_empty_table_at_its_position(segment, own_audience):
    seg = segment(own_audience)
    frozen = seg.freeze()
    ids = frozen.to_pylist()
    _delete(own_audience, ids[200:300])

    batches = list(seg.stream(frozen))

    assert [b.num_rows for b in batches] == [100, 100, 0, *[100] * 7, 50]
    assert _ids(batches[3]) == ids[300:400]


def test_batch_whose_contacts_all_left_is_empty_when_its_bucket_is_empty(segment, own_audience):
    seg = segment(own_audience, bucket_rows=BATCH)
    frozen = seg.freeze()
    ids = frozen.to_pylist()
    _delete(own_audience, ids[200:300])

    batches = list(seg.stream(frozen))

    assert [b.num_rows for b in batches] == [100, 100, 0, *[100] * 7, 50]


def test_selected_batch_whose_contacts_all_left_is_an_empty_table(segment, own_audience):
    seg = segment(own_audience)
    frozen = seg.freeze()
    _delete(own_audience, frozen.to_pylist()[200:300])

    batches = list(seg.stream(frozen, seqs=[2]))

    assert [b.num_rows for b in batches] == [0]


# -- validation ----------------------------------------------------------------------------------


def test_valid_source_reports_its_files_and_columns(segment, audience):
    info = segment(audience, where="vipLevel > 1").validate()

    assert info.files == 1
    assert info.columns[0] == "id"
    assert "vipLevel" in info.columns


def test_missing_source_file_is_rejected_naming_the_path(segment, tmp_path):
    missing = tmp_path / "nope.parquet"

    with pytest.raises(AudienceError) as caught:
        segment(missing).validate()

    message = str(caught.value)
    assert f"audience.source {missing} does not exist" in message
    assert "a parquet file, a folder or a glob" in message


def test_glob_matching_nothing_is_rejected_naming_the_pattern(segment, tmp_path):
    pattern = tmp_path / "part-*.parquet"

    with pytest.raises(AudienceError) as caught:
        segment(pattern).validate()

    assert f"audience.source {pattern} matches no file" in str(caught.value)


def test_glob_matching_files_reads_all_of_them(segment, audience, source_ids, tmp_path):
    table = pq.read_table(audience)
    pq.write_table(table.slice(0, 500), tmp_path / "part-0.parquet")
    pq.write_table(table.slice(500), tmp_path / "part-1.parquet")
    seg = segment(tmp_path / "part-*.parquet")

    assert seg.validate().files == 2
    assert seg.freeze().to_pylist() == source_ids


def test_folder_of_parquet_files_is_one_audience(segment, audience, source_ids, tmp_path):
    folder = tmp_path / "contacts"
    (folder / "day=2").mkdir(parents=True)
    table = pq.read_table(audience)
    pq.write_table(table.slice(0, 400), folder / "a.parquet")
    pq.write_table(table.slice(400), folder / "day=2" / "b.parquet")
    seg = segment(folder)

    assert seg.validate().files == 2
    frozen = seg.freeze()
    assert frozen.to_pylist() == source_ids
    assert sum(b.num_rows for b in seg.stream(frozen)) == N


def test_folder_without_parquet_files_is_rejected(segment, tmp_path):
    (tmp_path / "notes.txt").write_text("hello")

    with pytest.raises(AudienceError) as caught:
        segment(tmp_path).validate()

    assert f"audience.source {tmp_path} is a folder with no .parquet files" in str(caught.value)


def test_text_file_named_parquet_is_rejected_as_not_parquet(segment, tmp_path):
    fake = tmp_path / "contacts.parquet"
    fake.write_text("id,name\n1,a\n")

    with pytest.raises(AudienceError) as caught:
        segment(fake).validate()

    assert f"audience.source {fake} cannot be read as parquet" in str(caught.value)


def test_source_without_id_column_is_rejected_listing_its_columns(segment, tmp_path):
    path = tmp_path / "contacts.parquet"
    pq.write_table(pa.table({"user_id": [1, 2], "name": ["a", "b"]}), path)

    with pytest.raises(AudienceError) as caught:
        segment(path).validate()

    message = str(caught.value)
    assert f"audience.source {path} has no `id` column" in message
    assert "(columns: user_id, name)" in message


def test_source_with_text_ids_is_rejected(segment, tmp_path):
    path = tmp_path / "contacts.parquet"
    pq.write_table(pa.table({"id": ["a", "b"]}), path)

    with pytest.raises(AudienceError) as caught:
        segment(path).validate()

    assert "column `id` is VARCHAR, but contact ids must be integers" in str(caught.value)


def test_where_naming_a_missing_column_is_rejected_listing_the_columns(segment, audience):
    with pytest.raises(AudienceError) as caught:
        segment(audience, where="loyalty_tier = 'gold'").validate()

    message = str(caught.value)
    assert message.startswith(f"audience.where does not compile against {audience}")
    assert "loyalty_tier" in message
    assert "(columns: id, dateCreated, lastUpdated," in message
    assert "vipLevel)" in message


def test_ids_file_without_id_column_is_rejected(segment, audience, tmp_path):
    ids_path = tmp_path / "vip.parquet"
    pq.write_table(pa.table({"contact": [1, 2]}), ids_path)

    with pytest.raises(AudienceError) as caught:
        segment(audience, ids_path=str(ids_path)).validate()

    assert f"audience.ids {ids_path} has no `id` column (columns: contact)" in str(caught.value)


@pytest.mark.parametrize(
    ("ids", "expected"),
    [
        ([], None),
        ([7], None),
        ([1, 2, 3], None),  # ascending: the one-pass path
        ([3, 1, 2], None),
        ([1, 2, 2, 3], 2),  # ascending but for a repeat: not "already unique"
        ([9, 4, 9, 4], 4),  # the smallest repeated id
        ([2**62, -5, 2**62], 2**62),
    ],
)
def test_first_duplicate(ids, expected):
    assert first_duplicate(np.array(ids, dtype=np.int64)) == expected


def test_duplicate_ids_are_rejected_naming_one(segment, tmp_path):
    path = tmp_path / "contacts.parquet"
    pq.write_table(pa.table({"id": pa.array([5, 3, 9, 3], pa.int64())}), path)

    with pytest.raises(AudienceError) as caught:
        segment(path).freeze()

    message = str(caught.value)
    assert f"audience.source {path} has duplicate ids (e.g. 3)" in message
    assert "ids must be unique" in message


def test_null_ids_are_rejected_with_their_count(segment, tmp_path):
    path = tmp_path / "contacts.parquet"
    pq.write_table(pa.table({"id": pa.array([5, None, 9, None], pa.int64())}), path)

    with pytest.raises(AudienceError) as caught:
        segment(path).freeze()

    assert f"audience.source {path} has 2 contacts with a null `id`" in str(caught.value)


# -- in_chunks -----------------------------------------------------------------------------------


def _chunk(seqs: list[int], ids: list[int]) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays(
        [
            pa.array(seqs, pa.int64()),
            pa.array(ids, pa.int64()),
            pa.array([f"t{i}" for i in ids], pa.string()),
        ],
        names=["seq", "id", ELEMENT_COLUMN],
    )


def test_in_chunks_joins_a_seq_split_across_record_batches():
    chunks = [_chunk([0, 0, 1], [1, 2, 3]), _chunk([1], [4]), _chunk([1, 2], [5, 6])]

    tables = list(in_chunks(chunks, [0, 1, 2], 1))

    assert [_ids(t) for t in tables] == [[1, 2], [3, 4, 5], [6]]
    assert tables[1].column(ELEMENT_COLUMN).to_pylist() == ["t3", "t4", "t5"]
    assert all(t.schema.names == ["seq", "id", ELEMENT_COLUMN] for t in tables)


def test_in_chunks_cuts_where_a_chunk_of_batches_ends():
    chunks = [_chunk([0, 1, 1, 2], [1, 2, 3, 4]), _chunk([3, 4], [5, 6])]

    tables = list(in_chunks(chunks, [0, 1, 2, 3, 4], 2))

    assert [_ids(t) for t in tables] == [[1, 2, 3], [4, 5], [6]]
    assert tables[1].column("seq").to_pylist() == [2, 3]


def test_in_chunks_yields_empty_tables_for_chunks_without_rows():
    chunks = [_chunk([3, 3], [30, 31]), _chunk([7], [70])]

    tables = list(in_chunks(chunks, [1, 3, 5, 7, 9], 1))

    assert [_ids(t) for t in tables] == [[], [30, 31], [], [70], []]
    assert all(t.schema.field("id").type == pa.int64() for t in tables)
    assert [_ids(t) for t in in_chunks(iter(chunks), [1, 3, 5, 7, 9], 2)] == [[30, 31], [70], []]


def test_in_chunks_without_rows_yields_one_empty_table_per_chunk():
    tables = list(in_chunks(iter(()), [0, 4], 1))

    assert [t.num_rows for t in tables] == [0, 0]


def test_in_chunks_skips_an_empty_record_batch():
    chunks = [_chunk([0], [1]), _chunk([], []), _chunk([2], [3])]

    tables = list(in_chunks(chunks, [0, 1, 2], 1))

    assert [_ids(t) for t in tables] == [[1], [], [3]]


# -- the source after the freeze -----------------------------------------------------------------


def test_a_source_rewritten_in_another_order_streams_the_same_batches(segment, own_audience):
    seg = segment(own_audience)
    frozen = seg.freeze()
    before = list(seg.stream(frozen))
    table = pq.read_table(own_audience)
    pq.write_table(table.take(pa.array(range(N - 1, -1, -1))), own_audience, row_group_size=200)

    after = list(seg.stream(frozen))
    selected = list(seg.stream(frozen, seqs=[7, 2]))

    assert [b.to_pydict() for b in after] == [b.to_pydict() for b in before]
    assert [b.to_pydict() for b in selected] == [before[2].to_pydict(), before[7].to_pydict()]


def test_a_contact_added_after_the_freeze_is_not_sent(segment, own_audience):
    seg = segment(own_audience)
    frozen = seg.freeze()
    table = pq.read_table(own_audience)
    newcomer = table.slice(0, 1).set_column(0, "id", pa.array([1], pa.int64()))
    grown = pa.concat_tables([table.slice(0, 500), newcomer, table.slice(500)])
    pq.write_table(grown, own_audience)

    batches = list(seg.stream(frozen))

    assert [i for b in batches for i in _ids(b)] == frozen.to_pylist()


def test_a_source_sorted_by_id_streams_selected_batches_from_the_wanted_range(
    segment, own_audience
):
    table = pq.read_table(own_audience)
    pq.write_table(table.sort_by("id"), own_audience, row_group_size=100)
    seg = segment(own_audience)
    frozen = seg.freeze()
    ids = frozen.to_pylist()

    batches = list(seg.stream(frozen, seqs=[9, 4, 5]))

    assert ids == sorted(ids)
    assert [_ids(b) for b in batches] == [ids[400:500], ids[500:600], ids[900:1000]]


def test_a_where_with_a_long_in_list_streams_every_frozen_contact(segment, audience, source_ids):
    # DuckDB may answer such a filter with a join, which need not keep the freeze's order.
    listed = source_ids[::3]
    seg = segment(audience, where=f"id IN ({', '.join(map(str, listed))})")
    frozen = seg.freeze()

    for _ in range(5):
        streamed = [i for b in seg.stream(frozen) for i in _ids(b)]
        assert streamed == frozen.to_pylist()
        assert sorted(streamed) == sorted(listed)
