"""Scheduled jobs as `hookcast schedule` shows and adds them: each job's trigger, status,
next fire times (in the job's timezone) and last fire."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from hookcast.actors.errors import HookcastError, JobFileError
from hookcast.actors.trigger import next_fires
from hookcast.cluster.compile import job_schedule
from hookcast.cluster.job import LoadedJob, load_job_text
from hookcast.cluster.schedule_store import ScheduleStatus, ScheduleStore

SHOWN_FIRES = 3


@dataclass(frozen=True, slots=True)
class Scheduled:
    """A job just kept for the scheduler."""

    name: str
    new: bool  # False: it replaced a job of the same name
    next_fires: tuple[datetime, ...]


def schedule_job(job: LoadedJob, state_dir: Path, now: datetime) -> Scheduled:
    """Validate ``job`` (trigger, webhook and audience: a JobError names what is wrong) and
    keep it in the state dir's schedule store, replacing one of the same name."""
    from hookcast.cluster.runs import validate

    schedule = job_schedule(job, now=now)
    if schedule.kind == "immediate":
        raise JobFileError(
            f"{job.path}: trigger.type is immediate, so there is nothing to schedule: give "
            "trigger.type once (with at) or recurring (with cron or every), or send it "
            "now with `hookcast run`."
        )
    validate(job)
    store = ScheduleStore(state_dir)
    try:
        new = store.add(job.spec.name, str(job.path), job.raw_text)
    finally:
        store.close()
    return Scheduled(job.spec.name, new, tuple(next_fires(schedule, now, SHOWN_FIRES)))


def schedule_rows(state_dir: Path, now: datetime) -> list[dict]:
    """One row per scheduled job (by name): ``name, status, job_path, trigger, timezone,
    next`` (ISO times; empty unless active), ``last_fire`` (or None), and ``error`` when the
    stored job no longer loads here (a ``${VAR}`` this process lacks, say)."""
    store = ScheduleStore(state_dir)
    try:
        entries = store.list()
        last_fires = {e.name: store.fires(e.name, limit=1) for e in entries}
    finally:
        store.close()
    rows = []
    for entry in entries:
        row: dict = {"name": entry.name, "status": entry.status, "job_path": entry.job_path}
        try:
            schedule = job_schedule(load_job_text(entry.job_text, entry.job_path), now=None)
        except HookcastError as exc:
            row.update(trigger="?", timezone="?", next=[], error=str(exc))
        else:
            row["trigger"] = (
                schedule.every
                or schedule.cron
                or (schedule.at.isoformat() if schedule.at else schedule.kind)
            )
            row["timezone"] = schedule.timezone
            active = entry.status == ScheduleStatus.ACTIVE
            fires = next_fires(schedule, now, SHOWN_FIRES) if active else []
            row["next"] = [f.isoformat() for f in fires]
        last = last_fires.get(entry.name)
        row["last_fire"] = (
            None
            if not last
            else {"outcome": last[0].outcome, "run_id": last[0].run_id, "due": last[0].due}
        )
        rows.append(row)
    return rows


def set_schedule_status(state_dir: Path, name: str, status: ScheduleStatus) -> None:
    store = ScheduleStore(state_dir)
    try:
        store.set_status(name, status)
    finally:
        store.close()


def remove_schedule(state_dir: Path, name: str) -> None:
    store = ScheduleStore(state_dir)
    try:
        store.remove(name)
    finally:
        store.close()


def ensure_store(state_dir: Path) -> None:
    """Create the state dir and its schedule tables, or say why not."""
    ScheduleStore(state_dir).close()


def nothing_can_fire(state_dir: Path) -> bool:
    """True once no scheduled job is active (each paused or finished)."""
    store = ScheduleStore(state_dir)
    try:
        return all(e.status != ScheduleStatus.ACTIVE for e in store.list())
    finally:
        store.close()
