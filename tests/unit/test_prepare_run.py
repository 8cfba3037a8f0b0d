"""`prepare_while`: the job is checked and its audience frozen with DuckDB on a thread while
Ray starts; what goes wrong on either side is raised, the connection's error first."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hookcast.actors.errors import JobError, LedgerError
from hookcast.cluster.job import load_job
from hookcast.cluster.ledger import Ledger, RunRecord, RunStatus
from hookcast.cluster.runs import prepare_run, prepare_while, start_run
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
    frozen = prepared.frozen.to_array().to_pylist()
    assert frozen == pq.read_table(audience, columns=["id"])["id"].to_pylist()


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


# -- staged: the audience written and the batches planned while Ray starts ----------------------


@pytest.fixture
def ledger(tmp_path: Path):
    ledger = Ledger(tmp_path / "state")
    yield ledger
    ledger.close()


def test_given_a_ledger_the_audience_is_written_and_planned_but_no_run_recorded(
    write_job, audience: Path, ledger: Ledger
) -> None:
    job = load_job(write_job("http://127.0.0.1:9/hook", audience, batch_size=500))
    prepared = prepare_while(job, lambda: None, ledger)

    staged = prepared.staged
    assert staged is not None and staged.run_id.startswith(f"{job.spec.name}-")
    ids = ledger.frozen_audience(staged.run_id)
    assert prepared.frozen.to_array().equals(ids) and len(prepared.frozen) == 1500
    assert [(b.seq, b.contacts) for b in staged.batches] == [(0, 500), (1, 500), (2, 500)]
    assert staged.batches[1].first_id == ids[500].as_py() == prepared.frozen.at(500)
    assert ledger.find_run(staged.run_id) is None  # recorded by start_run, on its thread


def test_a_failed_connection_leaves_no_staged_audience(
    write_job, audience: Path, tmp_path: Path, ledger: Ledger
) -> None:
    job = load_job(write_job("http://127.0.0.1:9/hook", audience))

    def refuse() -> None:
        raise ConnectionError("no Ray at ray://nowhere:10001")

    with pytest.raises(ConnectionError):
        prepare_while(job, refuse, ledger)  # waits for the freeze, then removes its files
    assert list((tmp_path / "state" / "runs").glob("*/audience.parquet")) == []


def test_duplicate_ids_leave_no_staged_audience(write_job, tmp_path: Path, ledger: Ledger) -> None:
    """The duplicate check runs while the audience is written: a failed one removes it."""
    source = tmp_path / "twice.parquet"
    pq.write_table(pa.table({"id": [5, 1, 5], "name": ["a", "b", "c"]}), source)
    job = load_job(write_job("http://127.0.0.1:9/hook", source, payload={"contact": True}))

    with pytest.raises(JobError, match=r"duplicate ids \(e\.g\. 5\)"):
        prepare_run(job, ledger)
    assert list((tmp_path / "state" / "runs").glob("*/audience.parquet")) == []


def test_a_staged_run_refused_because_its_job_runs_leaves_no_files(
    write_job, audience: Path, ledger: Ledger
) -> None:
    job = load_job(write_job("http://127.0.0.1:9/hook", audience))
    live = RunRecord(
        run_id="live-1", job=job.spec.name, status=RunStatus.RUNNING, created_at=time.time()
    )
    ledger.create_run(live, [])
    prepared = prepare_while(job, lambda: None, ledger)
    assert ledger.audience_path(prepared.staged.run_id).exists()

    with pytest.raises(LedgerError, match="already running: run live-1"):
        start_run(prepared, ledger)  # refused before Ray is touched
    assert not ledger.audience_path(prepared.staged.run_id).parent.exists()
    assert ledger.find_run(prepared.staged.run_id) is None


def test_a_staged_run_keeps_its_own_run_id(write_job, audience: Path, ledger: Ledger) -> None:
    job = load_job(write_job("http://127.0.0.1:9/hook", audience))
    prepared = prepare_while(job, lambda: None, ledger)
    with pytest.raises(ValueError, match="staged as"):
        start_run(prepared, ledger, run_id="another-id")
