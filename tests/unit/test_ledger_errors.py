"""A ledger that cannot be opened, read or written: LedgerUnavailableError naming the file,
what failed and the fix, never a raw sqlite3 error (cluster/ledger.py, schedule_store.py).

Tests run as root, which ignores file permissions, so the failures are real ones that
permissions cannot undo: a state dir under a regular file, a file that is not a database,
a connection opened read-only (``mode=ro``) and a closed connection."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pyarrow as pa
import pytest

from hookcast.actors.errors import LedgerError, LedgerUnavailableError, RunNotFoundError
from hookcast.cluster.ledger import (
    BatchRecord,
    BatchStatus,
    BatchUpdate,
    Ledger,
    RunRecord,
    RunStatus,
)
from hookcast.cluster.schedule_store import FireOutcome, ScheduleStore

RUN = "weekly-20261111T000000-ab12"


def _run() -> RunRecord:
    return RunRecord(run_id=RUN, job="weekly", status=RunStatus.RUNNING, created_at=time.time())


def _batch(seq: int) -> BatchRecord:
    return BatchRecord(seq, seq * 10, seq * 10 + 9, 10, f"key-{seq}", BatchStatus.PLANNED)


def _read_only(store: Ledger | ScheduleStore) -> None:
    """Swap the store's connection for a read-only one on the same file, as a ledger made
    immutable mid-run (`chattr +i`) behaves: reads work, every write fails."""
    store._db.close()
    store._db = sqlite3.connect(f"file:{store.path}?mode=ro", uri=True, isolation_level=None)


@pytest.fixture
def ledger(tmp_path: Path):
    opened = Ledger(tmp_path / "state")
    opened.create_run(_run(), [_batch(0), _batch(1)])
    yield opened
    opened._db.close()


@pytest.mark.parametrize("store", [Ledger, ScheduleStore])
def test_a_state_dir_that_cannot_be_created_names_it_and_the_fix(tmp_path: Path, store) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")

    with pytest.raises(LedgerUnavailableError) as caught:
        store(blocker / "state")

    message = str(caught.value)
    assert f"state dir {blocker / 'state'} cannot be created" in message
    assert "--state-dir" in message and "HOOKCAST_HOME" in message
    assert isinstance(caught.value.__cause__, OSError)


@pytest.mark.parametrize("store", [Ledger, ScheduleStore])
def test_a_ledger_file_that_is_not_a_database_cannot_be_opened(tmp_path: Path, store) -> None:
    (tmp_path / "ledger.db").write_bytes(b"this is not sqlite" * 100)

    with pytest.raises(LedgerUnavailableError) as caught:
        store(tmp_path)

    message = str(caught.value)
    assert f"the ledger {tmp_path / 'ledger.db'} cannot be opened" in message
    assert "not a database" in message
    assert "--state-dir" in message
    assert isinstance(caught.value.__cause__, sqlite3.DatabaseError)


def test_a_ledger_path_that_is_a_folder_cannot_be_opened(tmp_path: Path) -> None:
    (tmp_path / "ledger.db").mkdir()

    with pytest.raises(LedgerUnavailableError, match=r"ledger\.db cannot be opened"):
        Ledger(tmp_path)


def test_batch_outcomes_that_cannot_be_written_stop_the_run_and_say_resume(ledger) -> None:
    _read_only(ledger)

    with pytest.raises(LedgerUnavailableError) as caught:
        ledger.update_batches(RUN, [BatchUpdate(0, BatchStatus.DELIVERED, 1, 200, 5.0)])

    message = str(caught.value)
    assert f"the ledger {ledger.path} cannot be written" in message
    assert f"recording run {RUN}'s batch outcomes" in message
    assert "readonly database" in message  # sqlite's own reason
    assert "sending stopped" in message
    assert f"`hookcast resume {RUN}` sends the rest" in message
    assert isinstance(caught.value.__cause__, sqlite3.OperationalError)
    # Nothing half-written: the batch is still planned once the ledger is readable.
    assert [b.status for b in ledger.batches(RUN)] == [BatchStatus.PLANNED] * 2


def test_planning_batches_that_cannot_be_written_says_resume(ledger) -> None:
    _read_only(ledger)

    with pytest.raises(LedgerUnavailableError, match=f"hookcast resume {RUN}"):
        ledger.plan_batches(RUN, [_batch(2)])


def test_the_end_of_a_run_that_cannot_be_written_names_the_ledger_and_the_fix(ledger) -> None:
    _read_only(ledger)

    with pytest.raises(LedgerUnavailableError) as caught:
        ledger.finish_run(RUN, RunStatus.SUCCEEDED, duration_s=1.0, retries=0)

    message = str(caught.value)
    assert f"recording the end of run {RUN}" in message
    assert "writable again" in message and "--state-dir" in message
    assert "resume" not in message  # every batch was recorded: nothing is left to send


def test_a_run_that_cannot_be_recorded_names_the_ledger_and_the_fix(ledger) -> None:
    _read_only(ledger)
    other = RunRecord(run_id="monthly-2", job="monthly", status=RunStatus.RUNNING, created_at=1.0)

    with pytest.raises(LedgerUnavailableError) as caught:
        ledger.create_run(other, [_batch(0)])

    message = str(caught.value)
    assert f"the ledger {ledger.path} cannot be written" in message
    assert "recording run monthly-2" in message
    assert "writable" in message and "--state-dir" in message
    assert "sending stopped" not in message  # nothing was being sent


@pytest.mark.parametrize(
    "read",
    [
        lambda book: book.get_run(RUN),
        lambda book: book.find_run(RUN),
        lambda book: book.list_runs(),
        lambda book: book.batches(RUN),
        lambda book: book.batch_counts(RUN),
    ],
    ids=["get_run", "find_run", "list_runs", "batches", "batch_counts"],
)
def test_every_read_of_a_failed_connection_is_translated(ledger, read) -> None:
    ledger._db.close()

    with pytest.raises(LedgerUnavailableError) as caught:
        read(ledger)

    assert f"the ledger {ledger.path} cannot be read" in str(caught.value)
    assert isinstance(caught.value.__cause__, sqlite3.Error)


def test_claim_on_a_failed_connection_is_translated(ledger) -> None:
    ledger._db.close()

    with pytest.raises(LedgerUnavailableError, match=f"claiming run {RUN}"):
        ledger.claim_run(RUN)


def test_unknown_run_is_run_not_found_with_the_id_and_a_hint(ledger) -> None:
    with pytest.raises(RunNotFoundError) as caught:
        ledger.get_run("nope-123")

    assert isinstance(caught.value, LedgerError)
    assert "no run nope-123" in str(caught.value)
    assert "`hookcast runs`" in str(caught.value)


def test_a_frozen_audience_that_cannot_be_written_names_its_path(ledger) -> None:
    (ledger.state_dir / "runs").write_text("a file where the runs folder goes")

    with pytest.raises(LedgerUnavailableError) as caught:
        ledger.freeze_audience(RUN, pa.array([1, 2], pa.int64()))

    assert str(ledger.audience_path(RUN)) in str(caught.value)
    assert "nothing was sent" in str(caught.value)


@pytest.fixture
def store(tmp_path: Path):
    opened = ScheduleStore(tmp_path)
    opened.add("weekly", "weekly.yaml", "name: weekly")
    yield opened
    opened._db.close()


@pytest.mark.parametrize(
    "write",
    [
        lambda s: s.add("daily", "daily.yaml", "name: daily"),
        lambda s: s.set_status("weekly", "paused"),
        lambda s: s.remove("weekly"),
        lambda s: s.claim_fire("weekly", 1.0, FireOutcome.FIRED, run_id=None),
        lambda s: s.update_fire("weekly", 1.0, FireOutcome.FAILED, "boom"),
    ],
    ids=["add", "set_status", "remove", "claim_fire", "update_fire"],
)
def test_every_schedule_write_to_a_read_only_ledger_is_translated(store, write) -> None:
    _read_only(store)

    with pytest.raises(LedgerUnavailableError) as caught:
        write(store)

    message = str(caught.value)
    assert f"the ledger {store.path} cannot be written" in message
    assert "--state-dir" in message
    assert isinstance(caught.value.__cause__, sqlite3.Error)


def test_a_fire_claimed_twice_is_still_refused_quietly(store) -> None:
    assert store.claim_fire("weekly", 1.0, FireOutcome.FIRED, run_id=None)
    assert not store.claim_fire("weekly", 1.0, FireOutcome.FIRED, run_id=None)
    assert store.claim_fire("weekly", 2.0, FireOutcome.FIRED, run_id=None)  # no open txn left


@pytest.mark.parametrize(
    "read",
    [lambda s: s.list(), lambda s: s.get("weekly"), lambda s: s.fires("weekly")],
    ids=["list", "get", "fires"],
)
def test_every_schedule_read_of_a_failed_connection_is_translated(store, read) -> None:
    store._db.close()

    with pytest.raises(LedgerUnavailableError, match="cannot be read"):
        read(store)
