"""The scheduler: fires every scheduled job when due, once, without blocking the others.

What it decides is plain logic (``Scheduler.tick``); what it touches — the stored schedules,
the record of fires, starting a broadcast — comes through ``SchedulerHooks``, which the
cluster layer provides. A fire is claimed in the store under (job, due time) before its run
starts, so a double fire (two ticks, a clock step back, a restarted actor) sends nothing
twice. A fire due while the job's previous run is still going is skipped and recorded, not
queued. Fires missed while the scheduler was down run once on start if they are at most
``grace_s`` late; older ones are recorded as missed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from hookcast.actors.trigger import Schedule, due_fires, fire_id, next_fires

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ScheduledJob:
    """One stored job as the scheduler sees it."""

    name: str
    schedule: Schedule
    since: datetime  # fires after this count: its last handled due time, or when it was added
    active: bool


@dataclass(frozen=True, slots=True)
class Event:
    """Something the scheduler did, for the console and the tests."""

    at: datetime  # scheduler time
    job: str
    kind: str  # fired | recovered | skipped_overlap | missed | finished | failed | done
    due: datetime | None = None
    run_id: str | None = None
    note: str | None = None


@dataclass(frozen=True, slots=True)
class SchedulerConfig:
    grace_s: float = 600.0  # how late a missed fire may still run
    tick_s: float = 1.0
    # An accelerated clock (tests, demos): scheduler time = origin + (real - real_origin) * scale.
    time_scale: float = 1.0
    origin_epoch_s: float | None = None
    real_origin_epoch_s: float | None = None

    def now(self) -> datetime:
        real = time.time()
        if self.time_scale == 1.0 or self.origin_epoch_s is None:
            return datetime.fromtimestamp(real, UTC)
        elapsed = real - (self.real_origin_epoch_s or real)
        return datetime.fromtimestamp(self.origin_epoch_s + elapsed * self.time_scale, UTC)


class SchedulerHooks(Protocol):
    def load(self) -> list[ScheduledJob]: ...

    def claim(
        self, job: str, due: datetime, kind: str, run_id: str | None, note: str | None = None
    ) -> bool: ...

    def fire(self, job: str, due: datetime, run_id: str, stop: threading.Event) -> str: ...

    def unfinished(self) -> list[tuple[str, datetime, str]]: ...

    def finish(self, job: str) -> None: ...


class Scheduler:
    """Decides, at each tick, what to fire; runs each fire in its own thread."""

    def __init__(
        self,
        config: SchedulerConfig,
        hooks: SchedulerHooks,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.config = config
        self.hooks = hooks
        self.clock = clock or config.now
        self.stop = threading.Event()
        self.running: dict[str, threading.Thread] = {}
        self.events: list[Event] = []
        self._lock = threading.Lock()
        self._recovered = False

    def tick(self) -> list[Event]:
        """Fire what is due now; return what was done (fires started, skipped, missed)."""
        now = self.clock()
        new: list[Event] = []
        if not self._recovered:
            # A restarted scheduler first finishes the fires its predecessor died in.
            self._recovered = True
            for name, due, run_id in self.hooks.unfinished():
                self._start(name, due, run_id)
                new.append(Event(now, name, "recovered", due, run_id))
        for job in self.hooks.load():
            if not job.active:
                continue
            due, missed = due_fires(job.schedule, job.since, now, self.config.grace_s)
            for when in missed:
                if self.hooks.claim(job.name, when, "missed", None, "scheduler was down"):
                    new.append(Event(now, job.name, "missed", when))
            for when in due:
                new.extend(self._fire(job.name, when, now))
            if not next_fires(job.schedule, now, 1) and job.name not in self.running:
                self.hooks.finish(job.name)
                new.append(Event(now, job.name, "finished"))
        self._remember(new)
        return new

    def _fire(self, name: str, due: datetime, now: datetime) -> list[Event]:
        run_id = fire_id(name, due)
        with self._lock:
            busy = name in self.running
        if busy:
            note = f"run {self._running_id(name)} was still going"
            if self.hooks.claim(name, due, "skipped_overlap", None, note):
                return [Event(now, name, "skipped_overlap", due, None, note)]
            return []
        if not self.hooks.claim(name, due, "fired", run_id):
            return []  # already fired: a double tick, or a restarted scheduler
        self._start(name, due, run_id)
        return [Event(now, name, "fired", due, run_id)]

    def _start(self, name: str, due: datetime, run_id: str) -> None:
        thread = threading.Thread(
            target=self._run, args=(name, due, run_id), name=f"fire-{run_id}", daemon=True
        )
        with self._lock:
            self.running[name] = thread
        thread.start()

    def _running_id(self, name: str) -> str:
        thread = self.running.get(name)
        return thread.name.removeprefix("fire-") if thread else "?"

    def _run(self, name: str, due: datetime, run_id: str) -> None:
        try:
            status = self.hooks.fire(name, due, run_id, self.stop)
            event = Event(self.clock(), name, "done", due, run_id, status)
        except Exception as exc:  # a fire must never take the scheduler down
            logger.warning("fire %s failed: %s", run_id, exc)
            event = Event(self.clock(), name, "failed", due, run_id, str(exc)[:300])
        finally:
            with self._lock:
                self.running.pop(name, None)
        self._remember([event])

    def _remember(self, events: list[Event]) -> None:
        with self._lock:
            self.events.extend(events)

    def events_since(self, index: int) -> tuple[list[Event], int]:
        with self._lock:
            return self.events[index:], len(self.events)

    def shutdown(self, timeout_s: float = 30.0) -> None:
        """Stop firing; running broadcasts stop fetching batches and end as interrupted."""
        self.stop.set()
        deadline = time.monotonic() + timeout_s
        for thread in list(self.running.values()):
            thread.join(max(0.0, deadline - time.monotonic()))


class SchedulerActor:
    """The actor shell: a loop thread ticking the scheduler; calls answer meanwhile."""

    def __init__(self, config: SchedulerConfig, hooks: SchedulerHooks) -> None:
        self.scheduler = Scheduler(config, hooks)
        self._loop = threading.Thread(target=self._tick_forever, name="scheduler", daemon=True)
        self._loop.start()

    def _tick_forever(self) -> None:
        while not self.scheduler.stop.is_set():
            try:
                self.scheduler.tick()
            except Exception:
                logger.exception("scheduler tick failed; trying again next tick")
            self.scheduler.stop.wait(self.scheduler.config.tick_s)

    def events_since(self, index: int) -> tuple[list[Event], int]:
        return self.scheduler.events_since(index)

    def now(self) -> datetime:
        return self.scheduler.clock()

    def shutdown(self) -> None:
        self.scheduler.shutdown()

    def __repr__(self) -> str:
        return "hookcast/scheduler"
