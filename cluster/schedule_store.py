"""Scheduled jobs and their fires, kept beside the ledger (same SQLite file, WAL mode).

A job is stored as its file's text (``${ENV}`` unexpanded), so editing the file after
`schedule add` changes nothing until it is added again. Every fire is a row keyed by
(job, due time): claiming that row is what makes a double fire (two ticks, a clock stepping
back, a restarted scheduler) send nothing twice.
"""

from __future__ import annotations

import contextlib
import enum
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from hookcast.actors.errors import LedgerError
from hookcast.cluster.ledger_sqlite import open_database, unavailable

SCHEMA = """
CREATE TABLE IF NOT EXISTS schedules (
    name TEXT PRIMARY KEY,
    job_path TEXT NOT NULL,
    job_text TEXT NOT NULL,
    status TEXT NOT NULL,
    added_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    last_due REAL
);
CREATE TABLE IF NOT EXISTS fires (
    name TEXT NOT NULL,
    due REAL NOT NULL,
    outcome TEXT NOT NULL,
    run_id TEXT,
    note TEXT,
    recorded_at REAL NOT NULL,
    PRIMARY KEY (name, due)
) WITHOUT ROWID;
"""


class ScheduleStatus(enum.StrEnum):
    ACTIVE = "active"  # fires when due
    PAUSED = "paused"  # kept, does not fire until resumed
    FINISHED = "finished"  # no fire time left (a once job that fired, a window that ended)


class FireOutcome(enum.StrEnum):
    FIRED = "fired"  # a run was started
    OVERLAP = "skipped_overlap"  # the job's previous run was still going
    MISSED = "missed"  # due while the scheduler was down, later than the grace period
    FAILED = "failed"  # the run could not start (bad input at fire time)


@dataclass(frozen=True, slots=True)
class StoredSchedule:
    name: str
    job_path: str
    job_text: str
    status: str
    added_at: float
    updated_at: float
    last_due: float | None


@dataclass(frozen=True, slots=True)
class Fire:
    name: str
    due: float
    outcome: str
    run_id: str | None
    note: str | None
    recorded_at: float


class ScheduleStore:
    """Schedules and fires in ``<state_dir>/ledger.db``.

    Every sqlite error is raised as LedgerUnavailableError naming the file and the fix."""

    def __init__(self, state_dir: str | Path) -> None:
        self.state_dir = Path(state_dir).expanduser()
        self.path = self.state_dir / "ledger.db"
        self._db = open_database(self.state_dir, self.path, SCHEMA)

    def close(self) -> None:
        with self._translated("closing it"):
            self._db.close()

    @contextlib.contextmanager
    def _translated(self, doing: str, *, writing: bool = False) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise unavailable(self.path, doing, exc, writing=writing) from exc

    def add(self, name: str, job_path: str, job_text: str) -> bool:
        """Store (or replace) a job's schedule as active; True when it is new."""
        now = time.time()
        existed = self._find(name) is not None
        with self._translated(f"adding the schedule of {name}", writing=True):
            self._db.execute(
                "INSERT INTO schedules (name, job_path, job_text, status, added_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET "
                "job_path = excluded.job_path, job_text = excluded.job_text, "
                "status = excluded.status, updated_at = excluded.updated_at, "
                "added_at = excluded.added_at, last_due = NULL",
                (name, job_path, job_text, ScheduleStatus.ACTIVE, now, now),
            )
        return not existed

    def _find(self, name: str) -> StoredSchedule | None:
        with self._translated(f"looking up the schedule of {name}"):
            row = self._db.execute(
                "SELECT name, job_path, job_text, status, added_at, updated_at, last_due "
                "FROM schedules WHERE name = ?",
                (name,),
            ).fetchone()
        return None if row is None else StoredSchedule(*row)

    def get(self, name: str) -> StoredSchedule:
        found = self._find(name)
        if found is None:
            known = ", ".join(s.name for s in self.list()) or "none"
            raise LedgerError(
                f"no scheduled job {name} in {self.path} (scheduled: {known}): "
                "add it with `hookcast schedule add JOB`."
            )
        return found

    def list(self) -> list[StoredSchedule]:
        with self._translated("listing schedules"):
            rows = self._db.execute(
                "SELECT name, job_path, job_text, status, added_at, updated_at, last_due "
                "FROM schedules ORDER BY name"
            ).fetchall()
        return [StoredSchedule(*row) for row in rows]

    def set_status(self, name: str, status: ScheduleStatus) -> None:
        self.get(name)
        with self._translated(f"setting the schedule of {name} {status}", writing=True):
            self._db.execute(
                "UPDATE schedules SET status = ?, updated_at = ? WHERE name = ?",
                (status, time.time(), name),
            )

    def remove(self, name: str) -> None:
        self.get(name)
        with self._translated(f"removing the schedule of {name}", writing=True):
            self._db.execute("DELETE FROM schedules WHERE name = ?", (name,))

    def claim_fire(
        self,
        name: str,
        due: float,
        outcome: FireOutcome,
        *,
        run_id: str | None,
        note: str | None = None,
    ) -> bool:
        """Record the fire of ``name`` due at ``due``; False if it was already recorded."""
        with self._translated(f"recording the fire of {name}", writing=True):
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(
                    "INSERT INTO fires (name, due, outcome, run_id, note, recorded_at) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (name, due, outcome, run_id, note, time.time()),
                )
                self._db.execute(
                    "UPDATE schedules SET last_due = max(coalesce(last_due, 0), ?) WHERE name = ?",
                    (due, name),
                )
            except sqlite3.IntegrityError:
                self._db.execute("ROLLBACK")
                return False
            except sqlite3.Error:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        return True

    def update_fire(self, name: str, due: float, outcome: FireOutcome, note: str | None) -> None:
        with self._translated(f"recording the outcome of {name}'s fire", writing=True):
            self._db.execute(
                "UPDATE fires SET outcome = ?, note = ? WHERE name = ? AND due = ?",
                (outcome, note, name, due),
            )

    def fires(self, name: str | None = None, limit: int = 100) -> list[Fire]:
        where, args = ("WHERE name = ?", [name]) if name else ("", [])
        with self._translated("listing fires"):
            rows = self._db.execute(
                "SELECT name, due, outcome, run_id, note, recorded_at FROM fires "
                f"{where} ORDER BY due DESC LIMIT ?",
                [*args, limit],
            ).fetchall()
        return [Fire(*row) for row in rows]
