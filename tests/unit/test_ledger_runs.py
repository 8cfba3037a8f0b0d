"""One run of a job at a time, and what the daily quota counts (cluster/ledger.py), with the
scheduler's hooks that use both (cluster/scheduler_hooks.py, runs faked).

A RUNNING run blocks another run, resume or replay of its job while its process lives (a
dead one's is stale), checked inside the write transaction that records the new run: of
processes starting at once, one wins. Every delivered batch has its delivery time, and
``delivered_contacts`` sums them per endpoint over every run; a ledger from before the
column gets it (and its delivered batches their time) when it is opened."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from hookcast.actors.errors import LedgerError
from hookcast.cluster.ledger import (
    RESUMABLE,
    UNFINISHED,
    BatchRecord,
    BatchStatus,
    BatchUpdate,
    Ledger,
    RunRecord,
    RunStatus,
)

JOB = "nightly"
ENDPOINT = "https://hooks.example/in"


@pytest.fixture
def ledger(tmp_path: Path):
    opened = Ledger(tmp_path / "state")
    yield opened
    opened.close()


def _run(run_id: str, job: str = JOB, **fields) -> RunRecord:
    fields.setdefault("status", RunStatus.RUNNING)
    fields.setdefault("created_at", time.time())
    fields.setdefault("endpoint", ENDPOINT)
    return RunRecord(run_id=run_id, job=job, **fields)


def _batches(run_id: str, sizes: list[int]) -> list[BatchRecord]:
    return [
        BatchRecord(seq, seq * 1000, seq * 1000 + n - 1, n, f"{run_id}-{seq:06d}", "planned")
        for seq, n in enumerate(sizes)
    ]


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


# -- one run of a job at a time ------------------------------------------------------------------


def test_a_running_run_of_this_live_process_blocks_another_run_of_its_job(ledger) -> None:
    ledger.create_run(_run("nightly-1"), _batches("nightly-1", [10]))

    with pytest.raises(LedgerError) as caught:
        ledger.create_run(_run("nightly-2"), _batches("nightly-2", [10]))

    message = str(caught.value)
    assert message.startswith("job nightly is already running: run nightly-1 ")
    assert f"pid {os.getpid()} on {socket.gethostname()}" in message
    assert "Nothing was sent" in message and "`hookcast status`" in message
    assert "`hookcast resume nightly-1`" in message
    assert ledger.find_run("nightly-2") is None
    assert ledger.batches("nightly-2") == []  # refused in the transaction: nothing written


def test_a_running_run_whose_process_died_is_stale_and_blocks_nothing(ledger) -> None:
    ledger.create_run(_run("nightly-1", pid=_dead_pid()))

    assert ledger.running_run(JOB) is None
    ledger.create_run(_run("nightly-2"))
    assert ledger.get_run("nightly-1").status == RunStatus.INTERRUPTED
    assert ledger.running_run(JOB).run_id == "nightly-2"


def test_a_run_this_process_let_go_of_after_an_error_is_stale(ledger) -> None:
    # A fire that raised in the scheduler's actor: its process lives on, the run does not.
    ledger.create_run(_run("nightly-1"))
    ledger.release("nightly-1")

    assert ledger.get_run("nightly-1").status == RunStatus.INTERRUPTED
    ledger.create_run(_run("nightly-2"))


def test_a_running_run_on_another_host_blocks_it_cannot_be_seen_from_here(ledger) -> None:
    ledger.create_run(_run("nightly-1", pid=_dead_pid(), host="not-" + socket.gethostname()))

    with pytest.raises(LedgerError, match="on not-"):
        ledger.create_run(_run("nightly-2"))


def test_runs_of_other_jobs_and_finished_runs_block_nothing(ledger) -> None:
    ledger.create_run(_run("weekly-1", job="weekly"))
    for status in (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.INTERRUPTED):
        ledger.create_run(_run(f"nightly-{status}", status=status))

    ledger.create_run(_run("nightly-now"))
    assert ledger.running_run(JOB).run_id == "nightly-now"
    assert ledger.running_run("weekly").run_id == "weekly-1"


def test_a_finished_run_no_longer_blocks(ledger) -> None:
    ledger.create_run(_run("nightly-1"))
    ledger.finish_run("nightly-1", RunStatus.SUCCEEDED, duration_s=1.0, retries=0)

    ledger.create_run(_run("nightly-2"))


def test_resuming_another_run_of_a_running_job_is_refused(ledger) -> None:
    ledger.create_run(_run("nightly-1", status=RunStatus.INTERRUPTED))
    ledger.create_run(_run("nightly-2"))

    with pytest.raises(LedgerError) as caught:
        ledger.claim_run("nightly-1", "replay")

    message = str(caught.value)
    assert "job nightly is already running: run nightly-2 " in message
    assert "`hookcast replay nightly-1` can go once it has ended" in message
    assert ledger.get_run("nightly-1").status == RunStatus.INTERRUPTED  # not claimed


def test_claiming_a_run_a_live_process_sends_is_refused(ledger) -> None:
    ledger.create_run(_run("nightly-1"))

    with pytest.raises(LedgerError, match=r"run nightly-1 is still running .* before you resume"):
        ledger.claim_run("nightly-1")


def test_claiming_a_stale_run_takes_it_over(ledger) -> None:
    ledger.create_run(_run("nightly-1", pid=_dead_pid()))

    ledger.claim_run("nightly-1")

    run = ledger.get_run("nightly-1")
    assert (run.status, run.pid) == (RunStatus.RUNNING, os.getpid())
    with pytest.raises(LedgerError, match="already running: run nightly-1 "):
        ledger.create_run(_run("nightly-2"))


_RACER = """
import sys, time
from hookcast.actors.errors import LedgerError
from hookcast.cluster.ledger import Ledger, RunRecord
ledger = Ledger(sys.argv[1])
print("ready", flush=True)
sys.stdin.readline()
run = RunRecord(run_id=sys.argv[2], job="nightly", status="running", created_at=time.time())
try:
    ledger.create_run(run)
    print("created", flush=True)
except LedgerError as exc:
    print("refused", exc, flush=True)
sys.stdin.readline()  # alive until every racer has answered: a live run blocks
"""


def test_of_processes_starting_a_job_at_once_exactly_one_runs_it(tmp_path: Path) -> None:
    state = tmp_path / "state"
    Ledger(state).close()
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", _RACER, str(state), f"nightly-{n}"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for n in range(3)
    ]
    try:
        assert [r.stdout.readline().strip() for r in racers] == ["ready"] * 3
        for racer in racers:  # all at once
            racer.stdin.write("go\n")
            racer.stdin.flush()
        answers = [r.stdout.readline().strip() for r in racers]
    finally:
        for racer in racers:
            racer.stdin.close()
            racer.wait(timeout=30)

    assert sorted(a.split()[0] for a in answers) == ["created", "refused", "refused"]
    winner = f"nightly-{[a.split()[0] for a in answers].index('created')}"
    assert all(f"run {winner} " in a for a in answers if a.startswith("refused"))
    ledger = Ledger(state)
    assert [r.run_id for r in ledger.list_runs()] == [winner]
    ledger.close()


# -- what resume sends ---------------------------------------------------------------------------


def test_resume_sends_skipped_batches_too_and_unfinished_keeps_its_meaning() -> None:
    assert set(RESUMABLE) == {BatchStatus.PLANNED, BatchStatus.SENDING, BatchStatus.SKIPPED}
    assert set(UNFINISHED) == {BatchStatus.PLANNED, BatchStatus.SENDING}
    assert RunStatus("aborted") is RunStatus.ABORTED


# -- delivery times and the daily count ----------------------------------------------------------


def _deliver(ledger: Ledger, run_id: str, seqs: list[int], at: float | None = None) -> None:
    ledger.update_batches(run_id, [BatchUpdate(s, BatchStatus.DELIVERED, 1, 200) for s in seqs])
    if at is not None:
        ledger._db.executemany(
            "UPDATE batches SET delivered_at = ? WHERE run_id = ? AND seq = ?",
            [(at, run_id, s) for s in seqs],
        )


def _delivered_at(ledger: Ledger, run_id: str) -> dict[int, float | None]:
    rows = ledger._db.execute(
        "SELECT seq, delivered_at FROM batches WHERE run_id = ?", (run_id,)
    ).fetchall()
    return dict(rows)


def test_a_batch_gets_its_delivery_time_when_it_is_delivered_and_only_then(ledger) -> None:
    ledger.create_run(_run("nightly-1"), _batches("nightly-1", [10, 10, 10, 10]))
    before = time.time()
    ledger.update_batches(
        "nightly-1",
        [
            BatchUpdate(0, BatchStatus.DELIVERED, 1, 200),
            BatchUpdate(1, BatchStatus.SENDING, 1),
            BatchUpdate(2, BatchStatus.DEAD_LETTERED, 3, 400),
            BatchUpdate(3, BatchStatus.SKIPPED, 0),
        ],
    )

    times = _delivered_at(ledger, "nightly-1")
    assert times[0] is not None and before <= times[0] <= time.time()
    assert times[1] is None and times[2] is None and times[3] is None


def test_delivered_contacts_counts_every_run_of_every_job_to_that_endpoint_since(ledger) -> None:
    day_start = time.time() - 3600
    # Two runs of one job, one of another job: the same endpoint.
    ledger.create_run(_run("nightly-1", status=RunStatus.FAILED), _batches("nightly-1", [500, 500]))
    ledger.create_run(_run("nightly-2"), _batches("nightly-2", [500, 500, 250]))
    ledger.create_run(
        _run("weekly-1", job="weekly", status=RunStatus.SUCCEEDED), _batches("weekly-1", [100])
    )
    # Another endpoint, and deliveries before the day started: not counted.
    ledger.create_run(
        _run("other-1", job="other", endpoint="https://hooks.example/other"),
        _batches("other-1", [700]),
    )
    _deliver(ledger, "nightly-1", [0])
    _deliver(ledger, "nightly-1", [1], at=day_start - 1)  # yesterday
    _deliver(ledger, "nightly-2", [0, 2])
    _deliver(ledger, "weekly-1", [0])
    _deliver(ledger, "other-1", [0])
    ledger.update_batches("nightly-2", [BatchUpdate(1, BatchStatus.DEAD_LETTERED, 4, 503)])

    assert ledger.delivered_contacts(ENDPOINT, day_start) == 500 + 500 + 250 + 100
    assert ledger.delivered_contacts(ENDPOINT, day_start - 10) == 500 + 500 + 500 + 250 + 100
    assert ledger.delivered_contacts("https://hooks.example/other", day_start) == 700
    assert ledger.delivered_contacts("https://hooks.example/nobody", day_start) == 0
    assert ledger.delivered_contacts(ENDPOINT, time.time() + 1) == 0


def test_the_quota_reset_time_round_trips_and_any_later_end_clears_it(ledger) -> None:
    ledger.create_run(_run("nightly-1"))
    stopped = ledger.finish_run(
        "nightly-1", RunStatus.INTERRUPTED, duration_s=1.0, retries=0, resume_after=1234.5
    )
    assert stopped.resume_after == 1234.5

    ledger.claim_run("nightly-1")
    done = ledger.finish_run("nightly-1", RunStatus.SUCCEEDED, duration_s=1.0, retries=0)
    assert done.resume_after is None


# The ledger as the first hookcast wrote it: no delivered_at, no resume_after.
_FIRST_SCHEMA = """
CREATE TABLE runs (
    run_id TEXT PRIMARY KEY, job TEXT NOT NULL, status TEXT NOT NULL,
    contacts INTEGER NOT NULL DEFAULT 0, batches INTEGER NOT NULL DEFAULT 0,
    batch_size INTEGER NOT NULL DEFAULT 0, delivered_batches INTEGER NOT NULL DEFAULT 0,
    failed_batches INTEGER NOT NULL DEFAULT 0, skipped_batches INTEGER NOT NULL DEFAULT 0,
    delivered_contacts INTEGER NOT NULL DEFAULT 0, retries INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL, finished_at REAL, duration_s REAL, endpoint TEXT,
    job_path TEXT, job_text TEXT, pid INTEGER, host TEXT, note TEXT
);
CREATE TABLE batches (
    run_id TEXT NOT NULL, seq INTEGER NOT NULL, first_id INTEGER, last_id INTEGER,
    contacts INTEGER NOT NULL, idem_key TEXT NOT NULL, status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0, http_status INTEGER, latency_ms REAL, reason TEXT,
    updated_at REAL, PRIMARY KEY (run_id, seq)
) WITHOUT ROWID;
INSERT INTO runs (run_id, job, status, created_at, endpoint)
    VALUES ('old-1', 'old', 'succeeded', 100.0, 'https://hooks.example/in');
INSERT INTO batches (run_id, seq, contacts, idem_key, status, updated_at) VALUES
    ('old-1', 0, 500, 'old-1-000000', 'delivered', 200.0),
    ('old-1', 1, 300, 'old-1-000001', 'dead_lettered', 250.0);
"""


def test_a_ledger_from_before_delivery_times_is_migrated_when_opened(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    old = sqlite3.connect(state / "ledger.db")
    old.executescript(_FIRST_SCHEMA)
    old.close()

    ledger = Ledger(state)
    # Delivered batches get the time they were last updated: when they were delivered.
    assert _delivered_at(ledger, "old-1") == {0: 200.0, 1: None}
    assert ledger.delivered_contacts(ENDPOINT, 150.0) == 500
    assert ledger.get_run("old-1").resume_after is None
    ledger.create_run(_run("new-1"), _batches("new-1", [10]))
    _deliver(ledger, "new-1", [0])
    assert ledger.delivered_contacts(ENDPOINT, 150.0) == 510
    ledger.close()

    again = Ledger(state)  # opened again: nothing added twice, nothing lost
    columns = [row[1] for row in again._db.execute("PRAGMA table_info(batches)")]
    assert columns.count("delivered_at") == 1
    assert again.delivered_contacts(ENDPOINT, 150.0) == 510
    again.close()


def test_a_migrated_ledger_opens_read_only(tmp_path: Path) -> None:
    state = tmp_path / "state"
    Ledger(state).close()
    from hookcast.cluster.ledger import ADDED_COLUMNS, INDEXES, SCHEMA
    from hookcast.cluster.ledger_sqlite import _add_columns

    read_only = sqlite3.connect(f"file:{state / 'ledger.db'}?mode=ro", uri=True)
    read_only.isolation_level = None
    read_only.executescript(SCHEMA)
    _add_columns(read_only, ADDED_COLUMNS)  # nothing to add: no write is tried
    read_only.executescript(INDEXES)
    read_only.close()


# -- the scheduler's fires -----------------------------------------------------------------------


@pytest.fixture
def scheduled(tmp_path: Path):
    """A stored schedule of job ``nightly`` and its hooks; runs are faked by each test."""
    from hookcast.cluster.schedule_store import ScheduleStore
    from hookcast.cluster.scheduler_hooks import StoreHooks

    job = {
        "name": JOB,
        "webhook": {"url": ENDPOINT},
        "audience": {"source": "contacts.parquet"},
        "trigger": {"type": "recurring", "cron": "0 1 * * *"},
    }
    state = tmp_path / "state"
    store = ScheduleStore(state)
    store.add(JOB, str(tmp_path / "nightly.yaml"), yaml.safe_dump(job))
    store.close()
    return StoreHooks(str(state))


def _fires(hooks) -> list:
    from hookcast.cluster.schedule_store import ScheduleStore

    store = ScheduleStore(hooks.state_dir)
    try:
        return store.fires(JOB)
    finally:
        store.close()


DUE = datetime(2026, 12, 3, 1, 0, tzinfo=UTC)


def test_a_fire_refused_because_its_job_is_running_is_recorded_as_skipped(
    scheduled, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hookcast.cluster.runs as runs

    def start_run(job, ledger, *, run_id, stop):
        ledger.refuse_if_running(job.spec.name)
        raise AssertionError("the fire was not refused")

    monkeypatch.setattr(runs, "start_run", start_run)
    cli_ledger = Ledger(scheduled.state_dir)
    cli_ledger.create_run(_run("nightly-cli"))  # `hookcast run` of the job, going on
    assert scheduled.claim(JOB, DUE, "fired", "nightly-fire")

    status = scheduled.fire(JOB, DUE, "nightly-fire", threading.Event())

    assert status.startswith("skipped: run nightly-cli (pid ")
    [fire] = _fires(scheduled)
    assert fire.outcome == "skipped_overlap"
    assert "run nightly-cli" in (fire.note or "") and "was still going" in (fire.note or "")
    assert scheduled.unfinished() == []  # nothing for a restarted scheduler to finish
    cli_ledger.close()


def test_a_run_the_quota_stopped_is_resumed_by_its_fire_once_the_quota_resets(
    scheduled, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hookcast.cluster.runs as runs

    resumed_at: list[float] = []
    reset = time.time() + 0.6

    def start_run(job, ledger, *, run_id, stop):
        ledger.create_run(_run(run_id))
        return ledger.finish_run(
            run_id, RunStatus.INTERRUPTED, duration_s=0.1, retries=0, resume_after=reset
        )

    def resume_run(ledger, run_id, *, stop):
        resumed_at.append(time.time())
        ledger.claim_run(run_id)
        return ledger.finish_run(run_id, RunStatus.SUCCEEDED, duration_s=0.1, retries=0)

    monkeypatch.setattr(runs, "start_run", start_run)
    monkeypatch.setattr(runs, "resume_run", resume_run)
    assert scheduled.claim(JOB, DUE, "fired", "nightly-fire")

    status = scheduled.fire(JOB, DUE, "nightly-fire", threading.Event())

    assert status == RunStatus.SUCCEEDED
    assert len(resumed_at) == 1 and resumed_at[0] >= reset
    [fire] = _fires(scheduled)
    assert fire.outcome == "fired" and "daily quota" in (fire.note or "")


def test_a_scheduler_stopped_while_a_fire_waits_for_the_quota_resumes_it_when_back(
    scheduled, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hookcast.cluster.runs as runs

    resumed: list[str] = []
    reset = time.time() + 0.8

    def start_run(job, ledger, *, run_id, stop):
        ledger.create_run(_run(run_id))
        return ledger.finish_run(
            run_id, RunStatus.INTERRUPTED, duration_s=0.1, retries=0, resume_after=reset
        )

    def resume_run(ledger, run_id, *, stop):
        resumed.append(run_id)
        ledger.claim_run(run_id)
        return ledger.finish_run(run_id, RunStatus.SUCCEEDED, duration_s=0.1, retries=0)

    monkeypatch.setattr(runs, "start_run", start_run)
    monkeypatch.setattr(runs, "resume_run", resume_run)
    assert scheduled.claim(JOB, DUE, "fired", "nightly-fire")
    stop = threading.Event()
    threading.Timer(0.2, stop.set).start()

    assert scheduled.fire(JOB, DUE, "nightly-fire", stop) == RunStatus.INTERRUPTED
    assert resumed == []
    assert time.time() < reset

    # The next scheduler finishes it, once the quota has reset.
    [(job, due, run_id)] = scheduled.unfinished()
    assert (job, due, run_id) == (JOB, DUE, "nightly-fire")
    assert scheduled.fire(job, due, run_id, threading.Event()) == RunStatus.SUCCEEDED
    assert resumed == ["nightly-fire"] and time.time() >= reset


def test_a_run_finished_by_hand_while_its_fire_waits_for_the_quota_is_left_alone(
    scheduled, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hookcast.cluster.runs as runs

    resumed: list[str] = []
    reset = time.time() + 0.6

    def start_run(job, ledger, *, run_id, stop):
        ledger.create_run(_run(run_id))
        return ledger.finish_run(
            run_id, RunStatus.INTERRUPTED, duration_s=0.1, retries=0, resume_after=reset
        )

    def by_hand() -> None:  # `hookcast resume` after the reset, before the scheduler woke
        book = Ledger(scheduled.state_dir)
        book.claim_run("nightly-fire")
        book.finish_run("nightly-fire", RunStatus.SUCCEEDED, duration_s=0.1, retries=0)
        book.close()

    monkeypatch.setattr(runs, "start_run", start_run)
    monkeypatch.setattr(runs, "resume_run", lambda ledger, run_id, *, stop: resumed.append(run_id))
    assert scheduled.claim(JOB, DUE, "fired", "nightly-fire")
    threading.Timer(0.3, by_hand).start()

    assert scheduled.fire(JOB, DUE, "nightly-fire", threading.Event()) == RunStatus.SUCCEEDED
    assert resumed == []
