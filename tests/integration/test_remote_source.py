"""A broadcast whose audience is on S3 (moto on 127.0.0.1), end to end.

``hookcast run`` runs in its own process with the standard AWS variables, as a user runs it:
its embedded Ray starts from that process, so the segment actor's worker inherits them. The
session's Ray cannot serve here: its workers took their environment when it started, before
this test chose moto's port, and hookcast sends no credentials to actors (each node reads
its own, as it would on a cluster).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.request import Request, urlopen

import orjson
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from moto.server import ThreadedMotoServer

from hookcast.actors.sources import location_env
from hookcast.cluster.job import load_job
from hookcast.cluster.runs import start_run
from hookcast.cluster.testbed.sink import Sink

HOOKCAST = [sys.executable, "-m", "hookcast.cli.app"]
BUCKET = "hookcast-audiences"
KEY_ID, SECRET = "hookcast-test-key", "hookcast-test-secret-value"


@pytest.fixture
def s3_endpoint() -> Iterator[str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    reset = Request(f"http://127.0.0.1:{port}/moto-api/reset", method="POST")
    urlopen(reset, timeout=10)  # moto's store is global to this process: start empty
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        urlopen(reset, timeout=10)
        server.stop()


def _upload(s3_endpoint: str, table) -> None:
    store = pafs.S3FileSystem(
        access_key=KEY_ID,
        secret_key=SECRET,
        region="us-east-1",
        endpoint_override=s3_endpoint.removeprefix("http://"),
        scheme="http",
        allow_bucket_creation=True,
    )
    store.create_dir(BUCKET)
    pq.write_table(table.slice(0, 2000), f"{BUCKET}/contacts/part-0.parquet", filesystem=store)
    pq.write_table(table.slice(2000), f"{BUCKET}/contacts/day=2/part-1.parquet", filesystem=store)


def test_broadcast_from_an_s3_folder_reaches_every_contact_once(
    s3_endpoint: str, write_job, audience_5k: Path, tmp_path: Path
) -> None:
    table = pq.read_table(audience_5k)
    _upload(s3_endpoint, table)
    env = {
        **os.environ,
        "AWS_ENDPOINT_URL": s3_endpoint,
        "AWS_ACCESS_KEY_ID": KEY_ID,
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
    }
    env.pop("RAY_ADDRESS", None)  # an embedded Ray, started from this environment
    with Sink() as receiver:
        job = write_job(receiver.url, f"s3://{BUCKET}/contacts/")
        run = subprocess.run(
            [*HOOKCAST, "run", str(job), "--json", "--state-dir", str(tmp_path / "state")],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        delivered, duplicates = receiver.recorder.delivered_ids, receiver.recorder.duplicate_ids

    assert run.returncode == 0, run.stderr[-3000:]
    summary = orjson.loads(run.stdout)
    assert summary["status"] == "succeeded"
    assert (summary["contacts"], summary["delivered_batches"]) == (5000, 10)
    assert delivered == set(table.column("id").to_pylist())
    assert duplicates == 0
    assert SECRET not in run.stdout + run.stderr


def test_segment_actor_on_a_running_cluster_uses_the_drivers_endpoint_not_its_keys(
    s3_endpoint: str,
    write_job,
    audience_5k: Path,
    ledger,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The session's Ray was started without any AWS settings, like a cluster's nodes that
    were not told about a MinIO: the driver's endpoint and region (and where to find
    credentials) reach the segment actor; the keys themselves are in a file, never in the
    actor's environment."""
    table = pq.read_table(audience_5k)
    _upload(s3_endpoint, table)
    credentials = tmp_path / "aws-credentials"
    credentials.write_text(
        f"[default]\naws_access_key_id = {KEY_ID}\naws_secret_access_key = {SECRET}\n"
    )
    for name, value in {
        "AWS_ENDPOINT_URL": s3_endpoint,
        "AWS_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(credentials),
    }.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    with Sink() as receiver:
        job = load_job(write_job(receiver.url, f"s3://{BUCKET}/contacts/"))
        summary = start_run(job, ledger)
        delivered = receiver.recorder.delivered_ids
    assert summary.status == "succeeded" and summary.delivered_contacts == 5000
    assert delivered == set(table.column("id").to_pylist())
    assert location_env(os.environ)["AWS_ENDPOINT_URL"] == s3_endpoint
    assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} & set(location_env(os.environ))
