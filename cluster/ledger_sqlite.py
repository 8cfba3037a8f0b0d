"""The SQLite file under the state dir that the ledger and the schedule store share.

This is the boundary where sqlite errors become LedgerUnavailableError: each names the
file, what was being done, sqlite's reason, then the fix. Nothing above it sees sqlite3.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from hookcast.actors.errors import LedgerUnavailableError


class Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on error), sqlite errors translated."""

    def __init__(self, db: sqlite3.Connection, path: Path, doing: str, run_id: str | None) -> None:
        self._db = db
        self._path = path
        self._doing = doing
        self._run_id = run_id

    def __enter__(self) -> None:
        with translated(self._path, self._doing, self._run_id, writing=True):
            self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            # The original error says what went wrong; a failed rollback adds nothing.
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise unavailable(self._path, self._doing, exc, self._run_id, writing=True) from exc
            return
        with translated(self._path, self._doing, self._run_id, writing=True):
            self._db.execute("COMMIT")


def unavailable(
    path: Path,
    doing: str,
    exc: sqlite3.Error,
    run_id: str | None = None,
    *,
    writing: bool = False,
) -> LedgerUnavailableError:
    """The LedgerUnavailableError for ``exc``, raised while ``doing`` something with the
    ledger at ``path``: what failed, then the fix. While a run's batches were being written
    (``run_id``), sending has stopped, and resuming the run sends the rest."""
    reason = (str(exc) or type(exc).__name__).rstrip(".")
    what = "written" if writing else "read"
    head = f"the ledger {path} cannot be {what} ({doing}: {reason})"
    causes = "(a read-only file or folder, `chattr +i`, a full disk?)"
    if run_id is not None:
        return LedgerUnavailableError(
            f"{head}: sending stopped. Once {path.parent} and the ledger in it are writable "
            f"again {causes}, `hookcast resume {run_id}` sends the rest."
        )
    if writing:
        return LedgerUnavailableError(
            f"{head}: make {path} and {path.parent} writable again {causes}, or pass "
            "--state-dir or set HOOKCAST_HOME to a writable folder."
        )
    return LedgerUnavailableError(
        f"{head}: check that it is a readable hookcast ledger, or pass --state-dir or set "
        "HOOKCAST_HOME to another folder."
    )


@contextlib.contextmanager
def translated(
    path: Path, doing: str, run_id: str | None = None, *, writing: bool = False
) -> Iterator[None]:
    try:
        yield
    except sqlite3.Error as exc:
        raise unavailable(path, doing, exc, run_id, writing=writing) from exc


@dataclass(frozen=True, slots=True)
class AddedColumn:
    """A column a later version added to a table: a ledger.db made before it gets it when
    opened (``ALTER TABLE ... ADD COLUMN``), then ``backfill`` (SQL, once) fills it in for
    the rows already there."""

    table: str
    column: str
    declaration: str  # e.g. "REAL": what ADD COLUMN allows (nullable, or with a default)
    backfill: str = ""


def open_database(
    state_dir: Path,
    path: Path,
    schema: str,
    *,
    added: Sequence[AddedColumn] = (),
    indexes: str = "",
) -> sqlite3.Connection:
    """The ledger's SQLite database at ``path`` (WAL mode, ``schema`` applied, the ``added``
    columns a ledger.db from before them lacks added, then ``indexes`` created), creating
    ``state_dir`` if need be; LedgerUnavailableError naming the path and the fix if not.

    The schema has no version number: the ledger and the schedule store share the file,
    each with its own tables, so a table's own columns say what it has."""
    fix = "pass --state-dir or set HOOKCAST_HOME to a writable folder"
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LedgerUnavailableError(
            f"state dir {state_dir} cannot be created ({exc.strerror or exc}): {fix}."
        ) from exc
    db = None
    try:
        db = sqlite3.connect(path, timeout=30, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(schema)
        _add_columns(db, added)
        if indexes:
            db.executescript(indexes)
    except sqlite3.Error as exc:
        if db is not None:
            db.close()
        raise LedgerUnavailableError(
            f"the ledger {path} cannot be opened ({exc}): hookcast keeps its runs there. "
            f"Make {state_dir} writable and {path} a hookcast ledger (or remove it), or {fix}."
        ) from exc
    return db


def _columns(db: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in db.execute(f"PRAGMA table_info({table})")}


def _add_columns(db: sqlite3.Connection, added: Sequence[AddedColumn]) -> None:
    """Add the columns a table lacks, in one write transaction; nothing is written when it
    has them all (a read-only ledger of this version still opens). Two processes opening
    an old ledger at once: the second finds the columns added under its lock."""
    if all(c.column in _columns(db, c.table) for c in added):
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        for column in added:
            if column.column in _columns(db, column.table):
                continue
            db.execute(
                f"ALTER TABLE {column.table} ADD COLUMN {column.column} {column.declaration}"
            )
            if column.backfill:
                db.execute(column.backfill)
    except sqlite3.Error:
        with contextlib.suppress(sqlite3.Error):
            db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
