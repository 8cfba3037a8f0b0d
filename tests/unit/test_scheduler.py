"""The scheduler's decisions (actors/scheduler.py) on a fake clock, with in-memory hooks."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from hookcast.actors.scheduler import ScheduledJob, Scheduler, SchedulerConfig
from hookcast.actors.trigger import compile_trigger, fire_id

T0 = datetime(2026, 3, 2, 8, 59, 30, tzinfo=UTC)


class FakeHooks:
    """Schedules and fires in memory; `fire` blocks until released, like a long broadcast."""

    def __init__(self, *jobs: ScheduledJob) -> None:
        self.jobs = {job.name: job for job in jobs}
        self.fires: dict[tuple[str, datetime], tuple[str, str | None]] = {}
        self.started: list[str] = []
        self.release = threading.Event()
        self.finished: list[str] = []

    def load(self) -> list[ScheduledJob]:
        out = []
        for job in self.jobs.values():
            dues = [due for (name, due) in self.fires if name == job.name]
            since = max([job.since, *dues])
            out.append(ScheduledJob(job.name, job.schedule, since, job.active))
        return out

    def claim(self, job, due, kind, run_id, note=None) -> bool:
        if (job, due) in self.fires:
            return False
        self.fires[(job, due)] = (kind, run_id)
        return True

    def fire(self, job, due, run_id, stop) -> str:
        self.started.append(run_id)
        self.release.wait(5)
        return "succeeded"

    def unfinished(self):
        return []

    def finish(self, job) -> None:
        self.finished.append(job)
        self.jobs[job] = ScheduledJob(job, self.jobs[job].schedule, self.jobs[job].since, False)


def _daily_at_nine(since: datetime = T0, active: bool = True) -> ScheduledJob:
    schedule = compile_trigger("recurring", None, "0 9 * * *", None, "UTC", None, None, now=None)
    return ScheduledJob("daily", schedule, since, active)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def _scheduler(hooks: FakeHooks, clock: Clock, grace_s: float = 600) -> Scheduler:
    return Scheduler(SchedulerConfig(grace_s=grace_s), hooks, clock=clock)


def test_fires_once_when_due_and_not_again_on_the_next_tick() -> None:
    hooks, clock = FakeHooks(_daily_at_nine()), Clock(T0)
    scheduler = _scheduler(hooks, clock)
    assert scheduler.tick() == []
    clock.now = T0 + timedelta(seconds=31)
    [event] = scheduler.tick()
    assert (event.kind, event.run_id) == ("fired", fire_id("daily", T0 + timedelta(seconds=30)))
    assert [e.kind for e in scheduler.tick()] == []
    hooks.release.set()


def test_a_fire_due_while_the_previous_run_is_going_is_skipped_and_recorded() -> None:
    schedule = compile_trigger("recurring", None, "* * * * *", None, "UTC", None, None, now=None)
    hooks, clock = FakeHooks(ScheduledJob("minutely", schedule, T0, True)), Clock(T0)
    scheduler = _scheduler(hooks, clock)
    clock.now = T0 + timedelta(seconds=31)
    assert [e.kind for e in scheduler.tick()] == ["fired"]
    clock.now += timedelta(minutes=1)
    assert [e.kind for e in scheduler.tick()] == ["skipped_overlap"]
    assert len(hooks.started) == 1
    kinds = sorted(kind for kind, _ in hooks.fires.values())
    assert kinds == ["fired", "skipped_overlap"]
    hooks.release.set()


def test_paused_job_does_not_fire_and_resumed_job_fires_from_the_next_due_time() -> None:
    hooks, clock = FakeHooks(_daily_at_nine(active=False)), Clock(T0 + timedelta(seconds=31))
    scheduler = _scheduler(hooks, clock)
    assert scheduler.tick() == []
    hooks.jobs["daily"] = _daily_at_nine(since=T0 + timedelta(minutes=5))  # resumed later
    clock.now = T0 + timedelta(minutes=5)
    assert scheduler.tick() == []
    clock.now = T0 + timedelta(days=1, seconds=31)
    assert [e.kind for e in scheduler.tick()] == ["fired"]
    hooks.release.set()


def test_after_an_outage_the_latest_fire_within_grace_runs_and_older_ones_are_missed() -> None:
    hooks = FakeHooks(_daily_at_nine(since=T0 - timedelta(days=3)))
    clock = Clock(T0 + timedelta(minutes=5))  # today's 09:00 is 4.5 min late
    events = _scheduler(hooks, clock).tick()
    assert sorted(e.kind for e in events) == ["fired", "missed", "missed", "missed"]
    hooks.release.set()


def test_a_fire_later_than_the_grace_period_is_only_recorded_as_missed() -> None:
    hooks = FakeHooks(_daily_at_nine())
    clock = Clock(T0 + timedelta(minutes=30))
    events = _scheduler(hooks, clock, grace_s=600).tick()
    assert [e.kind for e in events] == ["missed"]
    assert hooks.started == []


def test_a_once_job_is_finished_after_its_fire() -> None:
    at = T0 + timedelta(seconds=10)
    schedule = compile_trigger("once", at, None, None, "UTC", None, None, now=None)
    hooks, clock = FakeHooks(ScheduledJob("once", schedule, T0, True)), Clock(at)
    scheduler = _scheduler(hooks, clock)
    assert [e.kind for e in scheduler.tick()] == ["fired"]
    hooks.release.set()
    scheduler.shutdown(5)
    clock.now = at + timedelta(seconds=5)
    scheduler.stop.clear()
    assert [e.kind for e in scheduler.tick()] == ["finished"]
    assert hooks.finished == ["once"]
