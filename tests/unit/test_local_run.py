"""A run that delivers from the process it was started in (``cluster/local_pool.py``), with no
Ray at all (this folder refuses ``ray.init``): every contact once at a real receiver, a chunk
that cannot be rendered stopping the run resumably, and no thread left behind."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from hookcast.cluster.job import load_job
from hookcast.cluster.ledger import BatchStatus, Ledger, RunStatus
from hookcast.cluster.runs import prepare_run, start_run
from hookcast.cluster.testbed.sink import Sink
from hookcast.cluster.testbed.synth import write_audience

POOL_THREADS = ("hookcast-render", "hookcast-send")


@pytest.fixture
def audience(tmp_path: Path) -> Path:
    return write_audience(tmp_path / "contacts.parquet", 1500)


def _pool_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name in POOL_THREADS]


def test_a_run_without_ray_delivers_every_contact_once(
    write_job, audience: Path, ledger: Ledger
) -> None:
    with Sink() as receiver:
        job = load_job(write_job(receiver.url, audience, batch_size=100))
        summary = start_run(prepare_run(job, ledger), ledger)
        seen = receiver.recorder.snapshot()

    assert summary.status == RunStatus.SUCCEEDED
    assert summary.delivered_contacts == 1500 and summary.requests == 15
    assert (seen["unique_ids"], seen["duplicate_ids"]) == (1500, 0)
    assert ledger.batch_counts(summary.run_id) == {BatchStatus.DELIVERED: (15, 1500)}
    assert _pool_threads() == []


def test_a_chunk_that_cannot_be_rendered_stops_the_run_resumably(
    write_job, audience: Path, ledger: Ledger
) -> None:
    with Sink() as receiver:
        job = load_job(write_job(receiver.url, audience, batch_size=100))
        prepared = prepare_run(job, ledger)
        audience.unlink()  # gone between the freeze and the render
        summary = start_run(prepared, ledger)
        requests = receiver.recorder.snapshot()["requests"]

    assert summary.status == RunStatus.INTERRUPTED
    assert "could not be sent" in (summary.note or "") and "contacts.parquet" in summary.note
    assert requests == 0
    counts = ledger.batch_counts(summary.run_id)
    assert set(counts) <= {BatchStatus.PLANNED, BatchStatus.SENDING}  # resume sends them
    assert sum(n for n, _ in counts.values()) == 15
    assert _pool_threads() == []


def test_a_stopped_run_ends_interrupted_with_the_rest_planned(
    write_job, audience: Path, ledger: Ledger
) -> None:
    stop = threading.Event()
    with Sink() as receiver:
        job = load_job(write_job(receiver.url, audience, batch_size=100))
        summary = start_run(
            prepare_run(job, ledger),
            ledger,
            on_progress=lambda progress: progress.delivered_batches >= 3 and stop.set(),
            stop=stop,
        )
        seen = receiver.recorder.snapshot()

    assert summary.status == RunStatus.INTERRUPTED
    counts = ledger.batch_counts(summary.run_id)
    assert counts[BatchStatus.DELIVERED][1] == seen["unique_ids"] == seen["contacts"]
    assert counts[BatchStatus.PLANNED][0] > 0
    assert _pool_threads() == []
