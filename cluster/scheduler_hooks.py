"""The scheduler's hooks into the state dir, and starting, watching and stopping the
scheduler actor (`hookcast scheduler run / start / stop`).

A fire's run is refused while another run of its job is being sent (from the CLI, say):
the fire is then recorded as skipped, as one due while the job's previous fire still runs.
A fire's run that the daily quota stopped is resumed by its fire once the quota resets
(the run's ``resume_after`` in the ledger); a scheduler stopped meanwhile resumes it when
it is back, as it finishes any fire cut short.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import ray

from hookcast.actors.errors import LedgerError
from hookcast.actors.remote import start_scheduler_actor
from hookcast.actors.scheduler import ScheduledJob, SchedulerConfig
from hookcast.cluster.compile import job_schedule
from hookcast.cluster.job import load_job_text
from hookcast.cluster.ledger import Ledger, RunRecord, RunStatus
from hookcast.cluster.schedule_store import (
    FireOutcome,
    ScheduleStatus,
    ScheduleStore,
)

logger = logging.getLogger(__name__)

SCHEDULER_NAME = "hookcast/scheduler"


@dataclass(frozen=True, slots=True)
class StoreHooks:
    """What the scheduler actor may touch: the state dir it was given, nothing else."""

    state_dir: str

    def load(self) -> list[ScheduledJob]:
        store = ScheduleStore(self.state_dir)
        try:
            stored = store.list()
        finally:
            store.close()
        jobs = []
        for entry in stored:
            try:
                job = load_job_text(entry.job_text, entry.job_path)
                schedule = job_schedule(job, now=None)
            except Exception as exc:  # e.g. a ${VAR} this process lacks: skip, say why
                logger.warning("scheduled job %s cannot be loaded: %s", entry.name, exc)
                continue
            since = entry.last_due if entry.last_due is not None else entry.added_at
            jobs.append(
                ScheduledJob(
                    entry.name,
                    schedule,
                    datetime.fromtimestamp(since, UTC),
                    entry.status == ScheduleStatus.ACTIVE,
                )
            )
        return jobs

    def claim(
        self, job: str, due: datetime, kind: str, run_id: str | None, note: str | None = None
    ) -> bool:
        store = ScheduleStore(self.state_dir)
        try:
            return store.claim_fire(
                job, due.timestamp(), FireOutcome(kind), run_id=run_id, note=note
            )
        finally:
            store.close()

    def fire(self, job: str, due: datetime, run_id: str, stop: threading.Event) -> str:
        """Make run ``run_id`` complete: start it, or resume it if it was cut short; resume
        it again each time the daily quota that stopped it resets, until ``stop``.

        Refused because another run of the job is being sent: recorded as skipped (a fire
        that never started; one that was resuming stays fired, for the next start)."""
        store = ScheduleStore(self.state_dir)
        try:
            entry = store.get(job)
        finally:
            store.close()
        ledger = Ledger(self.state_dir)
        started = False
        try:
            started = ledger.find_run(run_id) is None
            return self._complete(ledger, entry.job_text, entry.job_path, job, due, run_id, stop)
        except LedgerError as exc:
            busy = self._busy(ledger, job, run_id)
            if busy is None:
                self._record(job, due, FireOutcome.FAILED, str(exc)[:500])
                raise
            note = f"run {busy.run_id} (pid {busy.pid} on {busy.host}) was still going"
            self._record(job, due, FireOutcome.OVERLAP if started else FireOutcome.FIRED, note)
            logger.warning("fire %s skipped: %s", run_id, note)
            return f"skipped: {note}"
        except Exception as exc:
            self._record(job, due, FireOutcome.FAILED, str(exc)[:500])
            raise
        finally:
            ledger.close()

    def _complete(
        self,
        ledger: Ledger,
        job_text: str,
        job_path: str,
        job: str,
        due: datetime,
        run_id: str,
        stop: threading.Event,
    ) -> str:
        from hookcast.cluster.runs import start_run  # the runs module needs Ray

        run = ledger.find_run(run_id)
        status: str = RunStatus.INTERRUPTED
        if run is None:
            job_spec = load_job_text(job_text, job_path)
            status = start_run(job_spec, ledger, run_id=run_id, stop=stop).status
        else:
            if run.status == RunStatus.RUNNING:
                # Cut short by a scheduler that is still dying: wait for its process to go.
                deadline = time.monotonic() + 30
                while run.status == RunStatus.RUNNING and time.monotonic() < deadline:
                    time.sleep(0.5)
                    run = ledger.find_run(run_id) or run
            if run.status != RunStatus.INTERRUPTED:
                return run.status
            # Cut short by a scheduler that died, or held by the quota when it stopped.
            if not self._resume_when_due(ledger, job, due, run, stop):
                return run.status
        # A run the daily quota stopped goes on when the quota resets, as often as it takes.
        while not stop.is_set():
            run = ledger.find_run(run_id)
            if run is None or run.status != RunStatus.INTERRUPTED or run.resume_after is None:
                break  # done, or stopped for another reason (the scheduler's stop, an error)
            if not self._resume_when_due(ledger, job, due, run, stop):
                break
        run = ledger.find_run(run_id)
        return run.status if run is not None else status

    def _resume_when_due(
        self, ledger: Ledger, job: str, due: datetime, run: RunRecord, stop: threading.Event
    ) -> bool:
        """Resume ``run`` once its quota has reset (at once if it has none); False when the
        scheduler stops first or the run was finished meanwhile (`hookcast resume`)."""
        from hookcast.cluster.runs import resume_run  # the runs module needs Ray

        if not self._wait_for_quota(job, due, run, stop):
            return False
        now = ledger.find_run(run.run_id)
        if now is None or now.status != RunStatus.INTERRUPTED:
            return False
        resume_run(ledger, run.run_id, stop=stop)
        return True

    def _wait_for_quota(
        self, job: str, due: datetime, run: RunRecord, stop: threading.Event
    ) -> bool:
        """Wait until the run's ``resume_after`` (None: no wait), when the daily quota that
        stopped it resets; False when the scheduler stops first."""
        wait_s = 0.0 if run.resume_after is None else run.resume_after - time.time()
        if wait_s <= 0:
            return not stop.is_set()
        when = datetime.fromtimestamp(run.resume_after or 0.0, UTC).isoformat()
        note = f"run {run.run_id} stopped at the daily quota; the scheduler resumes it at {when}"
        self._record(job, due, FireOutcome.FIRED, note)
        logger.info("scheduled job %s: %s", job, note)
        return not stop.wait(wait_s)

    def _busy(self, ledger: Ledger, job: str, run_id: str) -> RunRecord | None:
        """The other run of ``job`` (a schedule is named as its job) that a live process is
        sending: why a fire was refused, if it was."""
        try:
            return ledger.running_run(job, besides=run_id)
        except LedgerError:
            return None

    def _record(self, job: str, due: datetime, outcome: FireOutcome, note: str | None) -> None:
        store = ScheduleStore(self.state_dir)
        try:
            store.update_fire(job, due.timestamp(), outcome, note)
        finally:
            store.close()

    def unfinished(self) -> list[tuple[str, datetime, str]]:
        """Each job's latest fire whose run never started or was cut short (the scheduler
        died under it): the scheduler finishes these when it starts."""
        store = ScheduleStore(self.state_dir)
        ledger = Ledger(self.state_dir)
        try:
            todo = []
            for entry in store.list():
                latest = [f for f in store.fires(entry.name, limit=5) if f.outcome == "fired"]
                if not latest or latest[0].run_id is None:
                    continue
                fire = latest[0]
                run = ledger.find_run(fire.run_id)
                if run is None or run.status == RunStatus.INTERRUPTED:
                    todo.append((entry.name, datetime.fromtimestamp(fire.due, UTC), fire.run_id))
            return todo
        finally:
            store.close()
            ledger.close()

    def finish(self, job: str) -> None:
        store = ScheduleStore(self.state_dir)
        try:
            store.set_status(job, ScheduleStatus.FINISHED)
        finally:
            store.close()


def start_scheduler(state_dir: str, config: SchedulerConfig, *, detached: bool):
    """The scheduler actor on the head node, created once (get_if_exists)."""
    return start_scheduler_actor(
        config, StoreHooks(state_dir), name=SCHEDULER_NAME, detached=detached
    )


def find_scheduler():
    try:
        return ray.get_actor(SCHEDULER_NAME)
    except ValueError:
        return None


def scheduler_config(grace_s: float, time_scale: float = 1.0) -> SchedulerConfig:
    """The scheduler's settings; a ``time_scale`` other than 1 runs its clock faster from
    now (for tests of recurring jobs)."""
    if time_scale == 1.0:
        return SchedulerConfig(grace_s=grace_s)
    now = time.time()
    return SchedulerConfig(
        grace_s=grace_s, time_scale=time_scale, origin_epoch_s=now, real_origin_epoch_s=now
    )


def run_scheduler(
    state_dir: str,
    config: SchedulerConfig,
    stop: threading.Event,
    *,
    on_started: Callable[[], None],
    on_event: Callable[[object], None],
    until_idle: Callable[[], bool] = lambda: False,
    poll_s: float = 0.5,
) -> None:
    """The scheduler as an actor of this driver, until ``stop`` is set (or ``until_idle()``
    is true): each thing it does goes to ``on_event``, the last ones after it has shut down
    (its running broadcasts end as interrupted, resumable)."""
    actor = start_scheduler(state_dir, config, detached=False)
    on_started()
    seen = 0
    try:
        while not stop.is_set():
            events, seen = ray.get(actor.events_since.remote(seen))
            for event in events:
                on_event(event)
            if until_idle():
                break
            stop.wait(poll_s)
        ray.get(actor.shutdown.remote())
        events, seen = ray.get(actor.events_since.remote(seen))
        for event in events:
            on_event(event)
    finally:
        ray.kill(actor)


def start_detached_scheduler(state_dir: str, config: SchedulerConfig) -> None:
    """The scheduler as a detached actor: it outlives this driver. Returns once it answers."""
    actor = start_scheduler(state_dir, config, detached=True)
    ray.get(actor.now.remote())


def stop_detached_scheduler() -> bool:
    """Shut the detached scheduler down and remove it; False when none is running."""
    actor = find_scheduler()
    if actor is None:
        return False
    ray.get(actor.shutdown.remote())
    ray.kill(actor, no_restart=True)
    return True
