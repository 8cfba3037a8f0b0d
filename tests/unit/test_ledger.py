"""The ledger (cluster/ledger.py): runs, batches and frozen audiences under the state dir."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import time

import pyarrow as pa
import pytest

from hookcast.actors.errors import LedgerError, RunNotFoundError
from hookcast.cluster.ledger import (
    BatchRecord,
    BatchStatus,
    BatchUpdate,
    Ledger,
    RunRecord,
    RunStatus,
)

RUN = "double11-coupons-20261111T000000-ab12"


@pytest.fixture
def ledger(tmp_path):
    opened = Ledger(tmp_path / "state")
    yield opened
    opened.close()


def _run(run_id: str = RUN, **fields) -> RunRecord:
    fields.setdefault("job", run_id.rsplit("-", 2)[0])
    fields.setdefault("status", RunStatus.RUNNING)
    fields.setdefault("created_at", time.time())
    return RunRecord(run_id=run_id, **fields)


def _plan(ledger: Ledger, run_id: str, sizes: list[int]) -> None:
    ledger.plan_batches(
        run_id,
        [
            BatchRecord(
                seq=seq,
                first_id=seq * 1000,
                last_id=seq * 1000 + size - 1,
                contacts=size,
                idem_key=f"{run_id}-{seq:06d}",
                status=BatchStatus.PLANNED,
            )
            for seq, size in enumerate(sizes)
        ],
    )


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


# -- runs and batches ----------------------------------------------------------------------------


def test_create_plan_update_finish_round_trip(ledger):
    ledger.create_run(
        _run(contacts=1_150, batches=3, batch_size=500, endpoint="https://h.example/x")
    )
    _plan(ledger, RUN, [500, 500, 150])
    ledger.update_batches(
        RUN,
        [
            BatchUpdate(seq=0, status=BatchStatus.DELIVERED, attempts=1, http_status=200),
            BatchUpdate(
                seq=1,
                status=BatchStatus.DEAD_LETTERED,
                attempts=6,
                http_status=503,
                latency_ms=12.5,
                reason="503 Service Unavailable",
            ),
            BatchUpdate(seq=2, status=BatchStatus.DELIVERED, attempts=2, http_status=204),
        ],
    )

    finished = ledger.finish_run(RUN, RunStatus.FAILED, duration_s=1.5, retries=6)

    assert finished.status == RunStatus.FAILED
    assert (finished.contacts, finished.batches, finished.batch_size) == (1_150, 3, 500)
    assert (finished.delivered_batches, finished.failed_batches, finished.skipped_batches) == (
        2,
        1,
        0,
    )
    assert finished.delivered_contacts == 650
    assert finished.retries == 6
    assert finished.duration_s == 1.5
    assert finished.finished_at is not None and finished.finished_at >= finished.created_at
    assert finished.endpoint == "https://h.example/x"
    assert ledger.get_run(RUN) == finished

    assert ledger.batches(RUN) == [
        BatchRecord(0, 0, 499, 500, f"{RUN}-000000", "delivered", 1, 200, None, None),
        BatchRecord(
            1,
            1000,
            1499,
            500,
            f"{RUN}-000001",
            "dead_lettered",
            6,
            503,
            12.5,
            "503 Service Unavailable",
        ),
        BatchRecord(2, 2000, 2149, 150, f"{RUN}-000002", "delivered", 2, 204, None, None),
    ]


def test_planned_batches_start_unsent(ledger):
    ledger.create_run(_run())
    _plan(ledger, RUN, [2, 1])

    batches = ledger.batches(RUN)

    assert [(b.seq, b.status, b.attempts, b.http_status) for b in batches] == [
        (0, "planned", 0, None),
        (1, "planned", 0, None),
    ]


def test_batches_filter_by_status(ledger):
    ledger.create_run(_run())
    _plan(ledger, RUN, [5, 5, 5, 5])
    ledger.update_batches(
        RUN,
        [
            BatchUpdate(seq=1, status=BatchStatus.DEAD_LETTERED, attempts=6),
            BatchUpdate(seq=3, status=BatchStatus.SKIPPED, attempts=0),
        ],
    )

    failed = ledger.batches(RUN, [BatchStatus.DEAD_LETTERED, BatchStatus.SKIPPED])

    assert [b.seq for b in failed] == [1, 3]
    assert [b.seq for b in ledger.batches(RUN, [BatchStatus.PLANNED])] == [0, 2]


def test_batch_counts_are_batches_and_contacts_per_status(ledger):
    ledger.create_run(_run())
    ledger.create_run(_run("other-20261111T000000-0000"))
    _plan(ledger, RUN, [500, 500, 500, 42])
    _plan(ledger, "other-20261111T000000-0000", [7])
    ledger.update_batches(
        RUN,
        [
            BatchUpdate(seq=0, status=BatchStatus.DELIVERED, attempts=1),
            BatchUpdate(seq=3, status=BatchStatus.DELIVERED, attempts=1),
            BatchUpdate(seq=2, status=BatchStatus.SKIPPED, attempts=0),
        ],
    )

    assert ledger.batch_counts(RUN) == {
        "delivered": (2, 542),
        "planned": (1, 500),
        "skipped": (1, 500),
    }


def test_running_run_shows_live_counts(ledger):
    ledger.create_run(_run())
    _plan(ledger, RUN, [10, 10, 3])
    ledger.update_batches(RUN, [BatchUpdate(seq=2, status=BatchStatus.DELIVERED, attempts=1)])

    run = ledger.get_run(RUN)

    assert run.status == RunStatus.RUNNING
    assert (run.delivered_batches, run.delivered_contacts, run.failed_batches) == (1, 3, 0)


def test_create_run_records_this_process_and_host(ledger):
    ledger.create_run(_run())

    run = ledger.get_run(RUN)

    assert (run.pid, run.host) == (os.getpid(), socket.gethostname())


def test_claim_run_makes_an_interrupted_run_running_again(ledger):
    ledger.create_run(_run())
    ledger.finish_run(RUN, RunStatus.INTERRUPTED, duration_s=1.0, retries=0)

    ledger.claim_run(RUN)

    run = ledger.get_run(RUN)
    assert run.status == RunStatus.RUNNING
    assert run.finished_at is None
    assert run.pid == os.getpid()


def test_list_runs_newest_first_with_job_filter_and_limit(ledger):
    for i, job in enumerate(["a", "b", "a", "a"]):
        ledger.create_run(
            _run(f"{job}-2026010{i}T000000-000{i}", status=RunStatus.SUCCEEDED, created_at=i)
        )

    assert [r.run_id for r in ledger.list_runs()] == [
        "a-20260103T000000-0003",
        "a-20260102T000000-0002",
        "b-20260101T000000-0001",
        "a-20260100T000000-0000",
    ]
    assert [r.run_id for r in ledger.list_runs(job="a", limit=2)] == [
        "a-20260103T000000-0003",
        "a-20260102T000000-0002",
    ]


# -- looking runs up -----------------------------------------------------------------------------


def test_unique_prefix_finds_the_run(ledger):
    ledger.create_run(_run(status=RunStatus.SUCCEEDED))  # one run of a job sends at a time
    ledger.create_run(_run("double11-coupons-20261112T000000-cd34"))

    assert ledger.get_run("double11-coupons-20261111").run_id == RUN


def test_exact_id_wins_over_longer_ids_sharing_it(ledger):
    ledger.create_run(_run("nightly-20260101T000000-aaaa"))
    ledger.create_run(_run("nightly-20260101T000000-aaaa-2"))

    assert ledger.get_run("nightly-20260101T000000-aaaa").run_id == "nightly-20260101T000000-aaaa"


def test_prefix_of_a_job_name_with_underscores_finds_the_run(ledger):
    run_id = "double11_coupons-20261111T000000-ab12"  # `_` is allowed in job names (SPEC §1)
    ledger.create_run(_run(run_id))

    assert ledger.get_run("double11_coupons-20261111").run_id == run_id


def test_ambiguous_prefix_is_an_error_naming_the_candidates(ledger):
    ledger.create_run(_run(status=RunStatus.SUCCEEDED))  # one run of a job sends at a time
    ledger.create_run(_run("double11-coupons-20261112T000000-cd34"))

    with pytest.raises(LedgerError) as caught:
        ledger.get_run("double11-coupons-2026")

    message = str(caught.value)
    assert message.startswith("run id double11-coupons-2026 is ambiguous")
    assert RUN in message
    assert "double11-coupons-20261112T000000-cd34" in message


def test_unknown_run_is_an_error_naming_the_state_dir(ledger, tmp_path):
    ledger.create_run(_run())

    with pytest.raises(RunNotFoundError) as caught:
        ledger.get_run("weekly-2026")

    message = str(caught.value)
    assert "no run weekly-2026 in" in message
    assert str(tmp_path / "state") in message
    assert "`hookcast runs`" in message


# -- liveness ------------------------------------------------------------------------------------


def test_running_run_whose_process_died_shows_as_interrupted(ledger):
    ledger.create_run(_run(pid=_dead_pid()))

    assert ledger.get_run(RUN).status == RunStatus.INTERRUPTED
    assert [r.status for r in ledger.list_runs()] == [RunStatus.INTERRUPTED]


def test_running_run_whose_process_lives_stays_running(ledger):
    ledger.create_run(_run(pid=os.getpid()))

    assert ledger.get_run(RUN).status == RunStatus.RUNNING


def test_running_run_on_another_host_stays_running(ledger):
    ledger.create_run(_run(pid=_dead_pid(), host="not-" + socket.gethostname()))

    assert ledger.get_run(RUN).status == RunStatus.RUNNING


def test_finished_run_keeps_its_status_whatever_its_pid(ledger):
    ledger.create_run(_run(pid=_dead_pid()))
    ledger.finish_run(RUN, RunStatus.SUCCEEDED, duration_s=0.1, retries=0)

    assert ledger.get_run(RUN).status == RunStatus.SUCCEEDED


# -- concurrency ---------------------------------------------------------------------------------


def test_readers_work_while_a_writer_holds_a_transaction(ledger):
    ledger.create_run(_run())
    writer = sqlite3.connect(ledger.path, isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")
        writer.execute(
            "INSERT INTO runs (run_id, job, status, created_at) "
            "VALUES ('uncommitted-x', 'uncommitted', 'running', 0)"
        )
        started = time.monotonic()

        reader = Ledger(ledger.state_dir)
        try:
            listed = [r.run_id for r in reader.list_runs()]
            shown = reader.get_run(RUN)
        finally:
            reader.close()
        same_process = [r.run_id for r in ledger.list_runs()]

        assert time.monotonic() - started < 2.0  # no waiting on the writer's lock
        assert listed == same_process == [RUN]
        assert shown.run_id == RUN
    finally:
        writer.execute("ROLLBACK")
        writer.close()


def test_a_second_ledger_sees_committed_writes(ledger):
    reader = Ledger(ledger.state_dir)
    try:
        ledger.create_run(_run())
        _plan(ledger, RUN, [3])

        assert [r.run_id for r in reader.list_runs()] == [RUN]
        assert reader.batch_counts(RUN) == {"planned": (1, 3)}
    finally:
        reader.close()


# -- frozen audiences and records ----------------------------------------------------------------


def test_frozen_audience_round_trips(ledger):
    ids = pa.array([3, 5, 706_330_500_415_491], pa.int64())

    path = ledger.freeze_audience(RUN, ids)

    assert path == ledger.state_dir / "runs" / RUN / "audience.parquet"
    frozen = ledger.frozen_audience(RUN)
    assert frozen.type == pa.int64()
    assert frozen.equals(ids)


def test_missing_frozen_audience_is_an_error_naming_its_path(ledger):
    with pytest.raises(LedgerError) as caught:
        ledger.frozen_audience(RUN)

    assert str(ledger.audience_path(RUN)) in str(caught.value)


def test_to_dict_leaves_out_the_job_text(ledger):
    job_text = "name: x\nheaders: {Authorization: 'Bearer ${CRM_SECRET}'}\n"
    ledger.create_run(_run(job_text=job_text, job_path="/jobs/x.yaml"))

    run = ledger.get_run(RUN)
    data = run.to_dict()

    assert run.job_text == job_text
    assert "job_text" not in data
    assert data["job_path"] == "/jobs/x.yaml"
    assert data["run_id"] == RUN
    assert set(data) == {f for f in RunRecord.__slots__ if f != "job_text"}
