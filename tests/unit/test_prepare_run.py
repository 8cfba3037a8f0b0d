"""`prepare_while`: the job is checked and its audience frozen with DuckDB on a thread while
Ray starts; what goes wrong on either side is raised, the connection's error first."""

from __future__ import annotations

import threading
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hookcast.actors.errors import JobError
from hookcast.cluster.job import load_job
from hookcast.cluster.runs import prepare_while
from hookcast.cluster.testbed.synth import write_audience


@pytest.fixture(scope="module")
def audience(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_audience(tmp_path_factory.mktemp("prepare") / "contacts.parquet", 1500)


def test_the_audience_is_frozen_in_source_order_while_connect_runs_on_this_thread(
    write_job, audience: Path
) -> None:
    job = load_job(write_job("http://127.0.0.1:9/hook", audience))
    connected_on: list[threading.Thread] = []

    prepared = prepare_while(job, lambda: connected_on.append(threading.current_thread()))

    assert connected_on == [threading.main_thread()]  # ray.init needs the main thread
    assert prepared.job is job
    assert prepared.ids.to_pylist() == pq.read_table(audience, columns=["id"])["id"].to_pylist()


def test_a_failed_connection_is_the_error_even_when_the_audience_is_bad(
    write_job, tmp_path: Path
) -> None:
    missing = tmp_path / "nowhere.parquet"
    job = load_job(write_job("http://127.0.0.1:9/hook", missing))

    def refuse() -> None:
        raise ConnectionError("no Ray at ray://nowhere:10001")

    with pytest.raises(ConnectionError, match="no Ray"):
        prepare_while(job, refuse)


def test_duplicate_ids_raise_the_job_error_naming_the_source(write_job, tmp_path: Path) -> None:
    source = tmp_path / "twice.parquet"
    pq.write_table(pa.table({"id": [1, 2, 2, 3], "name": ["a", "b", "b", "c"]}), source)
    job = load_job(write_job("http://127.0.0.1:9/hook", source, payload={"contact": True}))

    with pytest.raises(JobError, match=r"twice\.parquet has duplicate ids \(e\.g\. 2\)"):
        prepare_while(job, lambda: None)
