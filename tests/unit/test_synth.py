"""Synthetic audiences (cluster/synth.py) and the plain baseline (bench/baseline.py)."""

from __future__ import annotations

import json
import math
import re
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from bench import baseline
from hookcast.cluster.testbed.synth import ID_BASE, SCHEMA, write_audience, write_ids
from tests.unit import seed_contacts

N = 5_000
STRING_ATTRIBUTES = (
    "name",
    "nickname",
    "gender",
    "dateOfBirthday",
    "avatar",
    "mobilePhone",
    "state",
    "street",
    "city",
    "comments",
    "idCard",
)


@pytest.fixture(scope="module")
def audience(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_audience(tmp_path_factory.mktemp("synth") / "audience.parquet", N, seed=7)


@pytest.fixture(scope="module")
def table(audience: Path) -> pa.Table:
    return pq.read_table(audience)


def test_write_audience_writes_the_requested_number_of_unique_ids_near_the_seed_base(
    table: pa.Table,
) -> None:
    ids = table["id"]
    assert table.num_rows == N
    assert pc.count_distinct(ids).as_py() == N
    assert ids.null_count == 0
    assert ID_BASE <= pc.min(ids).as_py() < pc.max(ids).as_py() < ID_BASE + 10**9


def test_write_audience_writes_exactly_the_spec_schema_with_a_custom_column(
    audience: Path,
) -> None:
    schema = pq.read_schema(audience)
    assert schema.equals(SCHEMA)
    assert schema.names[-1] == "vipLevel"
    assert schema.field("lastUpdated").type == pa.timestamp("ms")
    assert schema.field("dateCreated").type == pa.string()


def test_ids_are_not_in_order_so_consumers_must_sort(audience: Path) -> None:
    first_group = pq.ParquetFile(audience).read_row_group(0)["id"].to_pylist()
    assert first_group != sorted(first_group)


def test_string_attributes_have_realistic_null_rates(table: pa.Table) -> None:
    for name in STRING_ATTRIBUTES:
        rate = table[name].null_count / N
        assert 0.05 <= rate <= 0.45, (name, rate)
    for name in ("id", "dateCreated", "lastUpdated", "ver", "isAnonymous", "identities"):
        assert table[name].null_count == 0, name


def test_values_look_like_the_seed_contacts(table: pa.Table) -> None:
    rows = table.to_pylist()
    assert {r["gender"] for r in rows} == {"male", "female", "unknown", None}
    assert any(r["nickname"] == "" for r in rows)
    assert "北京市" in {r["city"] for r in rows}
    assert "大通街道" in {r["street"] for r in rows}
    for r in rows:
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", r["dateCreated"])
        assert r["dateOfBirthday"] is None or re.fullmatch(r"\d{4}-\d\d-\d\d", r["dateOfBirthday"])
        assert r["avatar"] is None or r["avatar"].startswith("http://wx.qlogo.cn/mmhead/")
        assert r["mobilePhone"] is None or re.fullmatch(r"1\d{10}", r["mobilePhone"])
        assert 1 <= len(r["identities"]) <= 4
        for identity in r["identities"]:
            assert identity["type"] in {"wechat.openId", "wechat.unionId", "mobile"}
            if identity["type"] != "mobile":
                assert re.fullmatch(r"o[A-Za-z0-9_-]{27}", identity["id"])


def test_utm_and_props_have_null_fields_and_sometimes_are_null_entirely(table: pa.Table) -> None:
    utm = table["utm"].to_pylist()
    assert 0.1 < sum(u is None for u in utm) / N < 0.4
    present = [u for u in utm if u is not None]
    assert {"企业微信", "wechat"} <= {u["source"] for u in present}
    for key in ("source", "medium", "content", "campaign", "term"):
        assert any(u[key] is None for u in present), key
    props = table["props"].to_pylist()
    assert any(p is None for p in props)
    for key in ("haha", "testNum", "bgtest"):
        assert any(p is not None and p[key] is None for p in props), key
        assert any(p is not None and p[key] is not None for p in props), key
    identity_types = Counter(i["type"] for ids in table["identities"].to_pylist() for i in ids)
    assert identity_types["wechat.openId"] > identity_types["mobile"] > 0


def test_same_seed_writes_the_same_contacts_and_another_seed_does_not(
    tmp_path: Path, table: pa.Table
) -> None:
    again = pq.read_table(write_audience(tmp_path / "again.parquet", N, seed=7))
    other = pq.read_table(write_audience(tmp_path / "other.parquet", N, seed=8))
    assert again.equals(table)
    assert not other.equals(table)


def test_chunked_writing_gives_the_same_contacts_as_one_chunk(tmp_path: Path) -> None:
    one = write_audience(tmp_path / "one.parquet", N, seed=3, chunk_rows=N)
    many = write_audience(tmp_path / "many.parquet", N, seed=3, chunk_rows=777)
    assert pq.ParquetFile(many).metadata.num_row_groups == math.ceil(N / 777)
    by_id = [pq.read_table(p).sort_by("id") for p in (one, many)]
    assert by_id[0].equals(by_id[1])


def test_write_audience_of_zero_contacts_writes_an_empty_file_with_the_schema(
    tmp_path: Path,
) -> None:
    empty = pq.read_table(write_audience(tmp_path / "empty.parquet", 0))
    assert empty.num_rows == 0
    assert empty.schema.equals(SCHEMA)


def test_write_ids_writes_a_single_int64_id_column(tmp_path: Path) -> None:
    ids = [706330500000123, 706330500000456]
    written = pq.read_table(write_ids(tmp_path / "segment" / "ids.parquet", ids))
    assert written.schema == pa.schema([("id", pa.int64())])
    assert written["id"].to_pylist() == ids


class _Receiver:
    """A webhook endpoint on 127.0.0.1 that records every request it gets."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], list[dict]]] = []
        lock = threading.Lock()
        requests = self.requests

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the baseline's client expects

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with lock:
                    requests.append((dict(self.headers), json.loads(body)))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> _Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    @property
    def elements(self) -> list[dict]:
        return [element for _, body in self.requests for element in body]


@pytest.fixture(scope="module")
def delivered(audience: Path) -> tuple[_Receiver, dict]:
    with _Receiver() as receiver:
        summary = baseline.run(audience, receiver.url, batch_size=300, concurrency=4)
    return receiver, summary


def test_baseline_delivers_every_contact_once_in_ceil_n_over_batch_requests(
    delivered: tuple[_Receiver, dict], table: pa.Table
) -> None:
    receiver, summary = delivered
    ids = [element["contact"]["id"] for element in receiver.elements]
    assert sorted(ids) == sorted(table["id"].to_pylist())
    assert len(receiver.requests) == summary["requests"] == math.ceil(N / 300)
    assert sorted(len(body) for _, body in receiver.requests)[-2:] == [300, 300]
    assert summary["contacts"] == N
    assert summary["failed_requests"] == 0
    assert summary["contacts_per_s"] > 0


def test_baseline_sends_json_with_a_distinct_idempotency_key_per_batch(
    delivered: tuple[_Receiver, dict],
) -> None:
    receiver, _ = delivered
    keys = [headers["Idempotency-Key"] for headers, _ in receiver.requests]
    assert len(set(keys)) == len(keys)
    assert all(re.fullmatch(r"baseline-\d+", key) for key in keys)
    assert {headers["Content-Type"] for headers, _ in receiver.requests} == {"application/json"}


def _nulls(value: object) -> bool:
    if value is None:
        return True
    if isinstance(value, dict):
        return any(_nulls(v) for v in value.values())
    if isinstance(value, list):
        return any(_nulls(v) for v in value)
    return False


def test_baseline_elements_follow_the_payload_rules(
    delivered: tuple[_Receiver, dict], table: pa.Table
) -> None:
    receiver, _ = delivered
    rows = {row["id"]: row for row in table.to_pylist()}
    now_ms = time.time() * 1000
    for element in receiver.elements:
        assert set(element) == {"sendTime", "contact", "_custom"}
        assert element["_custom"] == {"a1": "1", "a2": "2"}
        assert now_ms - 600_000 < element["sendTime"] <= now_ms
        contact = element["contact"]
        row = rows[contact["id"]]
        assert not _nulls(contact)
        assert "vipLevel" not in contact
        assert isinstance(contact["props"], dict)
        if row["vipLevel"] is not None:
            assert contact["props"]["vipLevel"] == row["vipLevel"]
        expected_identities = [
            i for i in row["identities"] if i["type"] in ("wechat.openId", "wechat.unionId")
        ]
        assert contact["identities"] == expected_identities
        assert contact["lastUpdated"] == row["lastUpdated"].strftime("%Y-%m-%d %H:%M:%S")
        assert contact["dateCreated"] == row["dateCreated"]
        present = {k for k, v in row.items() if v is not None} - {"vipLevel"}
        assert set(contact) == present | {"props"}


def test_baseline_renders_the_seed_contacts_as_the_seed_example(tmp_path: Path) -> None:
    source = tmp_path / "seed.parquet"
    pq.write_table(seed_contacts.seed_table(), source)
    with _Receiver() as receiver:
        baseline.run(source, receiver.url)
    sent = [{k: v for k, v in e.items() if k != "sendTime"} for e in receiver.elements]
    assert sent == seed_contacts.ELEMENTS


def test_baseline_cli_prints_a_json_summary(
    audience: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with _Receiver() as receiver:
        code = baseline.main(["--source", str(audience), "--url", receiver.url, "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert code == 0
    assert summary["contacts"] == N
    assert summary["requests"] == math.ceil(N / 500)
    assert {"duration_s", "contacts_per_s", "requests_per_s"} <= set(summary)
