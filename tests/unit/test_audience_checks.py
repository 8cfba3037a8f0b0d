"""What validation finds in the data itself, on real parquet (actors/segment.py, render.py):
NaN and infinite values JSON cannot carry, and folders whose files disagree on `id`."""

from __future__ import annotations

import math

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hookcast.actors.errors import AudienceError
from hookcast.actors.render import PayloadConfig, assemble_body, non_finite_checks

NAN, INF = math.nan, math.inf


def _elements(seg) -> list[dict]:
    frozen = seg.freeze()
    bodies = [assemble_body(t.column("element"), 1) for t in seg.stream(frozen)]
    return [element for body in bodies for element in orjson.loads(body)]  # strict JSON


def _by_id(seg) -> dict[int, dict]:
    return {e["contact"]["id"]: e["contact"] for e in _elements(seg)}


@pytest.fixture
def floats(tmp_path):
    """Top-level floats (one float32), a props struct with a double, a list of doubles."""
    path = tmp_path / "floats.parquet"
    table = pa.table(
        {
            "id": pa.array([1, 2, 3, 4, 5], pa.int64()),
            "score": pa.array([NAN, 1.5, INF, -INF, None], pa.float64()),
            "ratio": pa.array([0.5, INF, 0.25, 1.0, 2.0], pa.float32()),
            "props": pa.array(
                [{"ltv": NAN, "n": 1}, {"ltv": 2.0, "n": 2}, {"ltv": NAN, "n": 3}, None, None],
                pa.struct([("ltv", pa.float64()), ("n", pa.int64())]),
            ),
            "weights": pa.array([[1.0, NAN], [], None, [INF], [0.5]], pa.list_(pa.float64())),
        }
    )
    pq.write_table(table, path)
    return path


def test_nan_and_infinite_values_are_counted_per_column_as_sent(segment, floats) -> None:
    info = segment(floats).validate()

    assert dict(info.non_finite) == {
        "props.score": 3,
        "props.ratio": 1,
        "props.ltv": 2,
        "props.weights": 2,
    }
    cannot = "NaN or infinite, which JSON cannot carry"
    assert f"props.score: 3 values are {cannot}; they are left out like nulls." in info.warnings
    assert f"props.ratio: 1 value is {cannot}; it is left out like nulls." in info.warnings
    assert f"props.weights: 2 values are {cannot}; they are sent as null." in info.warnings


def test_the_renderer_does_what_the_warnings_say(segment, floats) -> None:
    contacts = _by_id(segment(floats))

    assert "score" not in contacts[1]["props"] and contacts[2]["props"]["score"] == 1.5
    assert "ratio" not in contacts[2]["props"]
    assert "ltv" not in contacts[1]["props"] and contacts[1]["props"]["n"] == 1
    assert contacts[1]["props"]["weights"] == [1.0, None]
    assert contacts[4]["props"]["weights"] == [None]


def test_counts_cover_only_the_where_segment(segment, floats) -> None:
    info = segment(floats, where="id >= 4").validate()

    assert dict(info.non_finite) == {"props.score": 1, "props.weights": 1}


def test_a_props_map_of_doubles_counts_and_drops_its_nan_values(segment, tmp_path) -> None:
    path = tmp_path / "map.parquet"
    props = pa.array(
        [[("a", NAN), ("b", 1.0)], [("a", INF)], [("a", 2.0)]], pa.map_(pa.string(), pa.float64())
    )
    pq.write_table(pa.table({"id": pa.array([1, 2, 3], pa.int64()), "props": props}), path)
    seg = segment(path)

    info = seg.validate()
    contacts = _by_id(seg)

    assert info.non_finite == (("props", 2),)
    assert contacts[1]["props"] == {"b": 1.0}
    assert contacts[2]["props"] == {}
    assert contacts[3]["props"] == {"a": 2.0}


def test_json_text_props_count_and_drop_nan_and_infinity(segment, tmp_path) -> None:
    path = tmp_path / "json.parquet"
    props = ['{"a": NaN, "b": 1}', '{"a": -Infinity, "c": "x"}', '{"a": 2}', None]
    ids = pa.array([1, 2, 3, 4], pa.int64())
    pq.write_table(pa.table({"id": ids, "props": pa.array(props, pa.string())}), path)
    seg = segment(path)

    info = seg.validate()
    contacts = _by_id(seg)

    assert info.non_finite == (("props", 2),)
    assert "props: 2 values are NaN or infinite" in info.warnings[0]
    assert contacts[1]["props"] == {"b": 1}
    assert contacts[2]["props"] == {"c": "x"}
    assert contacts[3]["props"] == {"a": 2}


def test_finite_floats_give_no_warning(segment, tmp_path) -> None:
    path = tmp_path / "fine.parquet"
    table = pa.table({"id": pa.array([1, 2], pa.int64()), "score": [1.0, None]})
    pq.write_table(table, path)

    info = segment(path).validate()

    assert info.non_finite == () and info.warnings == ()


def test_nothing_is_scanned_when_no_sent_column_can_be_non_finite(segment, tmp_path) -> None:
    path = tmp_path / "ints.parquet"
    pq.write_table(pa.table({"id": pa.array([1], pa.int64()), "n": [3]}), path)
    columns = segment(path).columns()

    assert non_finite_checks(columns, PayloadConfig()) == []


def test_an_id_only_payload_sends_no_float_and_warns_of_none(segment, floats) -> None:
    seg = segment(floats, payload=PayloadConfig(contact=False))

    assert non_finite_checks(seg.columns(), seg.config.payload) == []
    assert seg.validate().warnings == ()


# -- `id` types across a folder ----------------------------------------------------------------


def _write_ids(path, values, arrow_type) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"id": pa.array(values, arrow_type)}), path)


def test_a_folder_whose_files_disagree_on_id_names_the_odd_file_and_both_types(
    segment, tmp_path
) -> None:
    folder = tmp_path / "contacts"
    for n in range(3):
        _write_ids(folder / f"part-{n}.parquet", [n * 10 + 1, n * 10 + 2], pa.int64())
    _write_ids(folder / "late" / "part-7.parquet", ["71", "72"], pa.string())

    with pytest.raises(AudienceError) as caught:
        segment(folder).validate()

    message = str(caught.value)
    assert message.startswith(
        f"audience.source {folder}: id is int64 in part-0.parquet (3 files) "
        "but string in late/part-7.parquet (1 file): "
    )
    assert "integers (int64) in every file" in message


def test_a_glob_whose_files_widen_id_to_double_names_them(segment, tmp_path) -> None:
    _write_ids(tmp_path / "a.parquet", [1, 2], pa.int64())
    _write_ids(tmp_path / "b.parquet", [3.0, 4.0], pa.float64())

    with pytest.raises(AudienceError) as caught:
        segment(str(tmp_path / "*.parquet")).validate()

    assert "id is int64 in a.parquet (1 file) but double in b.parquet (1 file)" in str(caught.value)


def test_ids_that_are_text_in_every_file_keep_the_plain_message(segment, tmp_path) -> None:
    _write_ids(tmp_path / "only.parquet", ["1", "2"], pa.string())

    with pytest.raises(AudienceError) as caught:
        segment(tmp_path / "only.parquet").validate()

    assert "column `id` is VARCHAR, but contact ids must be integers (int64)" in str(caught.value)


def test_validate_prints_each_warning_and_still_passes(floats, write_job) -> None:
    from typer.testing import CliRunner

    from hookcast.cli.app import app

    job = write_job("http://127.0.0.1:9/hook", floats, batch_size=2)
    result = CliRunner().invoke(app, ["validate", str(job)])

    assert result.exit_code == 0, result.output
    assert "5 contacts in 3 batches" in result.output
    assert "warning: props.score: 3 values are NaN or infinite" in result.output
    assert "props.weights: 2 values are NaN or infinite" in result.output
