"""Remote audiences (actors/sources.py) on real servers: moto's S3 and a GCS emulator on
127.0.0.1, read by the plain Segment class, compared with the same files read locally."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.request import Request, urlopen

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from moto.server import ThreadedMotoServer

from hookcast.actors.errors import AudienceError
from hookcast.actors.segment import Segment, SegmentConfig, count_source_files
from hookcast.actors.sources import (
    GCS_RETRY_LIMIT,
    filesystem,
    gcs_options,
    glob_matches,
    is_remote,
    parse_location,
    s3_options,
    short_reason,
)
from hookcast.cluster.testbed.synth import write_audience, write_ids
from tests.ports import free_port
from tests.unit.conftest import SEGMENT_BATCH

N = 1_050

BATCH = SEGMENT_BATCH
BUCKET = "hookcast-audiences"
KEY_ID = "hookcast-test-key"
SECRET = "hookcast-test-secret-value"


# -- the stores ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The files uploaded to the stores, laid out locally as the stores hold them."""
    root = tmp_path_factory.mktemp("store")
    audience = write_audience(root / "contacts" / "contacts.parquet", N)
    table = pq.read_table(audience)
    ids = sorted(table.column("id").to_pylist())
    # A folder prefix: two parts at two depths, and what a folder read must skip.
    (root / "parts" / "day=2").mkdir(parents=True)
    (root / "parts" / "_temporary").mkdir()
    pq.write_table(table.slice(0, 400), root / "parts" / "a.parquet")
    pq.write_table(table.slice(400), root / "parts" / "day=2" / "b.parquet")
    (root / "parts" / "_SUCCESS").write_bytes(b"")
    (root / "parts" / "notes.txt").write_text("not an audience")
    (root / "parts" / "_temporary" / "c.parquet").write_text("half written")
    # A glob: part-*.parquet matches two; other.parquet repeats ids, so matching it would fail.
    (root / "flat").mkdir()
    pq.write_table(table.slice(0, 500), root / "flat" / "part-0.parquet")
    pq.write_table(table.slice(500), root / "flat" / "part-1.parquet")
    pq.write_table(table.slice(0, 10), root / "flat" / "other.parquet")
    # Files whose columns differ: `ver` widens from int32 to int64, `vipLevel` is missing.
    (root / "mixed").mkdir()
    pq.write_table(table.slice(0, 600), root / "mixed" / "a.parquet")
    rest = table.slice(600).drop_columns(["vipLevel"])
    rest = rest.set_column(
        rest.schema.get_field_index("ver"), "ver", rest.column("ver").cast(pa.int64())
    )
    pq.write_table(rest, root / "mixed" / "b.parquet")
    # Files that cannot be one audience: `id` is a number in one and text in the other.
    (root / "conflict").mkdir()
    pq.write_table(pa.table({"id": pa.array([1, 2], pa.int64())}), root / "conflict" / "a.parquet")
    pq.write_table(pa.table({"id": ["3", "4"]}), root / "conflict" / "b.parquet")
    # Files that unify, but `id` widens to double: two files of int64 ids, one of doubles.
    (root / "widened").mkdir()
    for name, ids_type, first in (
        ("a", pa.int64(), 1),
        ("b", pa.int64(), 3),
        ("c", pa.float64(), 5),
    ):
        column = pa.array([first, first + 1], ids_type)
        pq.write_table(pa.table({"id": column}), root / "widened" / f"{name}.parquet")
    write_ids(root / "segments" / "vip.parquet", [ids[900], ids[5], ids[77], 1])
    (root / "notes").mkdir()
    (root / "notes" / "contacts.parquet").write_text("id,name\n1,a\n")
    (root / "empty" / "sub").mkdir(parents=True)
    (root / "empty" / "sub" / "readme.txt").write_text("nothing here")
    return root


def _upload(fs: pafs.FileSystem, root: Path) -> None:
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        with fs.open_output_stream(f"{BUCKET}/{path.relative_to(root).as_posix()}") as out:
            out.write(path.read_bytes())


@pytest.fixture(scope="module")
def s3_endpoint(local: Path) -> Iterator[str]:
    """moto's S3 server on a free loopback port, holding the ``local`` files."""
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    _reset_moto(port)
    try:
        uploader = pafs.S3FileSystem(
            access_key=KEY_ID,
            secret_key=SECRET,
            region="us-east-1",
            endpoint_override=f"127.0.0.1:{port}",
            scheme="http",
            allow_bucket_creation=True,
        )
        uploader.create_dir(BUCKET)
        _upload(uploader, local)
        yield f"http://127.0.0.1:{port}"
    finally:
        _reset_moto(port)
        server.stop()


def _reset_moto(port: int) -> None:
    """Empty moto's store: it is global to this process, shared by every moto server in it."""
    urlopen(Request(f"http://127.0.0.1:{port}/moto-api/reset", method="POST"), timeout=10)


@pytest.fixture
def s3(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """The standard AWS variables pointing at moto, and nothing from this machine's AWS
    setup (no profile files, no instance metadata lookups)."""
    for name in ("AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    return f"s3://{BUCKET}"


@pytest.fixture(scope="module")
def gcs_host(local: Path) -> Iterator[str]:
    """A GCS emulator on a free loopback port, holding the ``local`` files.

    It runs in its own process: pyarrow's GCS client fetches object metadata while DuckDB
    opens the scan, holding the GIL, so an emulator thread in this process could not answer.
    """
    port = free_port()
    command = ["start", "--host", "127.0.0.1", "--port", str(port), "--in-memory", "--quiet"]
    emulator = subprocess.Popen(
        [sys.executable, "-m", "gcp_storage_emulator", *command, "--default-bucket", BUCKET]
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert emulator.poll() is None, "the GCS emulator exited"
                assert time.monotonic() < deadline, "the GCS emulator did not start in 20 s"
                time.sleep(0.05)
        uploader = pafs.GcsFileSystem(
            endpoint_override=f"127.0.0.1:{port}", scheme="http", anonymous=True
        )
        _upload(uploader, local)
        yield f"http://127.0.0.1:{port}"
    finally:
        emulator.terminate()
        emulator.wait(timeout=10)


def _ids(table: pa.Table) -> list[int]:
    return table.column("id").to_pylist()


def _same_batches(got: list[pa.Table], expected: list[pa.Table]) -> None:
    assert len(got) == len(expected)
    for got_batch, expected_batch in zip(got, expected, strict=True):
        assert got_batch.equals(expected_batch)


def _audience_error(seg: Segment) -> str:
    with pytest.raises(AudienceError) as caught:
        seg.validate()
    message = str(caught.value)
    assert SECRET not in message and KEY_ID not in message
    return message


# -- S3: reading ---------------------------------------------------------------------------------


def test_s3_file_validates_freezes_and_streams_like_the_local_copy(segment, s3, local):
    local_file = local / "contacts" / "contacts.parquet"
    remote = segment(f"{s3}/contacts/contacts.parquet")
    here = segment(local_file)

    info = remote.validate()
    frozen = remote.freeze()

    assert info == here.validate()
    assert info.files == 1
    assert frozen.to_pylist() == pq.read_table(local_file).column("id").to_pylist()
    streamed = list(remote.stream(frozen))
    assert [i for b in streamed for i in _ids(b)] == frozen.to_pylist()
    _same_batches(streamed, list(here.stream(frozen)))


def test_s3_selected_seqs_stream_from_a_cursor_that_sees_the_dataset(segment, s3):
    seg = segment(f"{s3}/contacts/contacts.parquet")
    frozen = seg.freeze()  # no validate() first: the actor may start with freeze

    (batch,) = seg.stream(frozen, seqs=[10])

    assert _ids(batch) == frozen.to_pylist()[1000:]


def test_s3_where_segment_matches_the_local_one(segment, s3, local):
    where = "gender = 'male' AND props.testNum > 100"
    remote = segment(f"{s3}/contacts/contacts.parquet", where=where)
    here = segment(local / "contacts" / "contacts.parquet", where=where)

    remote.validate()
    frozen = remote.freeze()

    assert 0 < len(frozen) < N
    assert frozen.equals(here.freeze())
    _same_batches(list(remote.stream(frozen)), list(here.stream(frozen)))


def test_s3_static_ids_segment_reads_both_files_from_s3(segment, s3, local):
    ids = pq.read_table(local / "segments" / "vip.parquet").column("id").to_pylist()
    seg = segment(f"{s3}/contacts/contacts.parquet", ids_path=f"{s3}/segments/vip.parquet")

    seg.validate()
    frozen = seg.freeze()

    source = pq.read_table(local / "contacts" / "contacts.parquet").column("id").to_pylist()
    assert frozen.to_pylist() == [i for i in source if i in ids[:3]]  # the 4th is not there
    assert [i for b in seg.stream(frozen) for i in _ids(b)] == frozen.to_pylist()


def test_s3_folder_prefix_reads_every_parquet_under_it_and_skips_staging(segment, s3, local):
    expected = sorted(pq.read_table(local / "contacts" / "contacts.parquet")["id"].to_pylist())
    seg = segment(f"{s3}/parts/")

    assert seg.validate().files == 2  # not _temporary/c.parquet, _SUCCESS or notes.txt
    frozen = seg.freeze()
    assert sorted(frozen.to_pylist()) == expected
    assert sum(b.num_rows for b in seg.stream(frozen)) == N
    assert count_source_files(f"{s3}/parts") == 2


def test_s3_glob_reads_only_the_matching_files(segment, s3):
    seg = segment(f"{s3}/flat/part-*.parquet")

    assert seg.validate().files == 2
    assert len(seg.freeze()) == N  # other.parquet would have repeated ids


def test_s3_recursive_glob_from_the_bucket_spans_folders(segment, s3):
    seg = segment(f"{s3}/**/part-*.parquet")

    assert seg.validate().files == 2
    assert len(seg.freeze()) == N


def test_s3_files_with_differing_columns_read_like_the_local_union_by_name(segment, s3, local):
    remote = segment(f"{s3}/mixed")
    here = segment(local / "mixed")

    info = remote.validate()
    frozen = remote.freeze()

    assert info == here.validate()
    assert str(remote.columns()["ver"]) == "BIGINT"
    assert frozen.equals(here.freeze())
    _same_batches(list(remote.stream(frozen)), list(here.stream(frozen)))


# -- S3: errors, before anything is sent ---------------------------------------------------------


def test_s3_missing_key_matches_no_file(segment, s3):
    url = f"{s3}/contacts/nope.parquet"

    message = _audience_error(segment(url))

    assert message.startswith(f"audience.source {url} matches no file:")


def test_s3_glob_matching_nothing_matches_no_file(segment, s3):
    url = f"{s3}/flat/day-*.parquet"

    assert _audience_error(segment(url)).startswith(f"audience.source {url} matches no file:")


def test_s3_missing_bucket_cannot_be_read(segment, s3):
    url = "s3://no-such-bucket/contacts.parquet"

    message = _audience_error(segment(url))

    assert message.startswith(f"audience.source {url} cannot be read: bucket no-such-bucket")


def test_s3_object_that_is_not_parquet_cannot_be_read_naming_it(segment, s3):
    url = f"{s3}/notes/contacts.parquet"

    message = _audience_error(segment(url))

    assert message.startswith(f"audience.source {url} cannot be read: Parquet magic bytes")


def test_s3_folder_with_a_file_that_is_not_parquet_names_that_file(segment, s3):
    url = f"{s3}/parts/**/*.parquet"  # matches _temporary/c.parquet, which is half written

    message = _audience_error(segment(url))

    bad = f"{s3}/parts/_temporary/c.parquet"
    assert message.startswith(f"audience.source {url} cannot be read: {bad}: Parquet magic")


def test_s3_files_whose_columns_conflict_cannot_be_read(segment, s3):
    url = f"{s3}/conflict"

    message = _audience_error(segment(url))

    assert message.startswith(f"audience.source {url} cannot be read: its files' columns do not")
    assert "id is int64 in a.parquet (1 file) but string in b.parquet (1 file)" in message
    assert "rewrite the odd files" in message


def test_s3_files_whose_ids_widen_to_double_name_the_odd_file_and_both_types(segment, s3):
    url = f"{s3}/widened"

    message = _audience_error(segment(url))

    assert message.startswith(f"audience.source {url}: id is int64 in a.parquet (2 files) but ")
    assert "double in c.parquet (1 file)" in message
    assert "integers (int64) in every file" in message


def test_s3_folder_without_parquet_files_is_rejected(segment, s3):
    url = f"{s3}/empty"

    message = _audience_error(segment(url))

    assert message.startswith(f"audience.source {url} is a folder with no .parquet files")


def test_s3_missing_ids_file_names_audience_ids(segment, s3):
    url = f"{s3}/segments/nope.parquet"
    seg = segment(f"{s3}/contacts/contacts.parquet", ids_path=url)

    assert _audience_error(seg).startswith(f"audience.ids {url} matches no file:")


def test_s3_ids_object_that_is_not_parquet_names_audience_ids(segment, s3):
    url = f"{s3}/notes/contacts.parquet"
    seg = segment(f"{s3}/contacts/contacts.parquet", ids_path=url)

    assert _audience_error(seg).startswith(f"audience.ids {url} cannot be read: ")


def test_s3_unreachable_endpoint_cannot_be_read(segment, s3, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    url = f"{s3}/contacts/contacts.parquet"

    message = _audience_error(segment(url))

    assert message.startswith(f"audience.source {url} cannot be read: ")
    assert "check the endpoint" in message


def test_credentials_in_the_url_are_refused_without_echoing_them(segment):
    message = _audience_error(segment(f"s3://{KEY_ID}:{SECRET}@{BUCKET}/contacts.parquet"))

    assert message.startswith("audience.source s3://***@.../contacts.parquet: credentials")


# -- GCS -----------------------------------------------------------------------------------------


def test_gcs_emulator_round_trip(segment, gcs_host, local, monkeypatch):
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_host)
    here = segment(local / "flat" / "part-*.parquet")
    remote = segment(f"gs://{BUCKET}/flat/part-*.parquet")

    assert remote.validate().files == 2
    frozen = remote.freeze()
    assert frozen.equals(here.freeze())
    _same_batches(list(remote.stream(frozen, seqs=[0, 10])), list(here.stream(frozen, [0, 10])))
    missing = _audience_error(segment(f"gs://{BUCKET}/nope.parquet"))
    assert missing.startswith(f"audience.source gs://{BUCKET}/nope.parquet matches no file")


# -- pure parts ----------------------------------------------------------------------------------


def test_only_object_store_urls_are_remote():
    assert is_remote("s3://b/k") and is_remote("gs://b/k") and is_remote("GCS://b/k")
    assert not is_remote("/data/contacts.parquet")
    assert not is_remote("https://example.com/contacts.parquet")  # still DuckDB's


def test_parse_location_splits_bucket_and_key():
    assert parse_location("audience.source", "s3://b/a/b.parquet").path == "b/a/b.parquet"
    assert parse_location("audience.source", "gcs://b/").scheme == "gs"
    assert parse_location("audience.source", "s3://b").path == "b"
    with pytest.raises(AudienceError, match=r"audience\.ids s3:// names no bucket"):
        parse_location("audience.ids", "s3://")


def test_s3_options_follow_the_standard_variables():
    assert s3_options({}) == {}
    assert s3_options(
        {"AWS_ENDPOINT_URL": "http://127.0.0.1:9000", "AWS_DEFAULT_REGION": "eu-west-1"}
    ) == {"endpoint_override": "127.0.0.1:9000", "scheme": "http", "region": "eu-west-1"}
    assert s3_options(
        {
            "AWS_ENDPOINT_URL": "http://ignored:1",
            "AWS_ENDPOINT_URL_S3": "https://minio.internal",
            "AWS_REGION": "eu-central-1",
            "AWS_DEFAULT_REGION": "eu-west-1",
        }
    ) == {"endpoint_override": "minio.internal", "scheme": "https", "region": "eu-central-1"}


def test_gcs_options_use_the_emulator_over_http_without_credentials():
    assert gcs_options({}) == {"retry_time_limit": GCS_RETRY_LIMIT}
    assert gcs_options({"STORAGE_EMULATOR_HOST": "localhost:9023"}) == {
        "retry_time_limit": GCS_RETRY_LIMIT,
        "endpoint_override": "localhost:9023",
        "scheme": "http",
        "anonymous": True,
    }


def test_filesystems_are_built_from_the_environment():
    env = {"STORAGE_EMULATOR_HOST": "http://127.0.0.1:9023", "AWS_REGION": "eu-west-1"}
    gcs = filesystem(parse_location("audience.source", "gs://b/k"), env)
    s3 = filesystem(parse_location("audience.source", "s3://b/k"), {**env, **_MINIO})
    assert isinstance(gcs, pafs.GcsFileSystem) and isinstance(s3, pafs.S3FileSystem)
    gcs_args, s3_args = gcs.__reduce__()[1][0], s3.__reduce__()[1][0]  # their pickled options
    assert (gcs_args["endpoint_override"], gcs_args["scheme"]) == ("127.0.0.1:9023", "http")
    assert gcs_args["anonymous"] is True
    assert (s3_args["endpoint_override"], s3_args["scheme"]) == ("127.0.0.1:9000", "http")
    assert s3.region == "eu-west-1" and s3_args["access_key"] is None  # the SDK's chain


_MINIO = {"AWS_ENDPOINT_URL": "http://127.0.0.1:9000"}


@pytest.mark.parametrize(
    ("pattern", "path", "matches"),
    [
        ("*.parquet", "a.parquet", True),
        ("*.parquet", "sub/a.parquet", False),
        ("*.parquet", ".hidden.parquet", False),
        ("**/*.parquet", "a.parquet", True),
        ("**/*.parquet", "x/y/a.parquet", True),
        ("**/*.parquet", ".git/a.parquet", False),
        ("day=*/part-?.parquet", "day=2/part-1.parquet", True),
        ("day=*/part-?.parquet", "day=2/part-10.parquet", False),
        ("part-[01].parquet", "part-1.parquet", True),
    ],
)
def test_glob_matches_like_recursive_glob(pattern, path, matches):
    assert glob_matches(pattern.split("/"), path.split("/")) is matches


def test_short_reason_is_one_line_hints_at_credentials_and_hides_them():
    env = {"AWS_SECRET_ACCESS_KEY": SECRET}
    exc = OSError(
        f"When reading 'b/k': AWS Error ACCESS_DENIED during GetObject: {SECRET}\nmore detail"
    )

    reason = short_reason(exc, env)

    assert SECRET not in reason and "more detail" not in reason
    assert "ACCESS_DENIED" in reason and "check the credentials" in reason


def test_local_count_names_the_key_it_checks(tmp_path):
    missing = tmp_path / "vip.parquet"

    with pytest.raises(AudienceError, match=f"audience.ids {missing} does not exist"):
        count_source_files(str(missing), "audience.ids")


def test_local_sources_still_use_read_parquet(tmp_path):
    path = write_audience(tmp_path / "c.parquet", 10)
    shutil.copy(path, tmp_path / "d.parquet")
    seg = Segment(SegmentConfig(source=str(tmp_path / "*.parquet"), batch_size=5))
    try:
        assert seg._source.startswith("read_parquet(")
        assert seg.validate().files == 2
    finally:
        seg.close()
