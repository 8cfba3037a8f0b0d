"""Firing a run, resuming it, replaying its dead letters; validating and previewing a job.

A run is: validate (nothing sent on bad input) -> freeze the audience -> plan every batch in
the ledger with its key -> deliver -> record the end. Resume and replay reuse the frozen
audience and the planned keys, so a batch always carries the same contacts and key.

A job is sent by one process at a time: a run, resume or replay of a job whose other run a
live process is sending is refused before anything is sent (the ledger checks it). With
``rate_limit.daily_contacts`` a run sends only what is left of the endpoint's quota today
(counted over every run in the ledger) and ends interrupted, resumable, once it is used up.
"""

from __future__ import annotations

import logging
import secrets as token_source
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import pyarrow as pa

from hookcast.actors.errors import LedgerError, RunAbortedError
from hookcast.actors.frozen import FrozenIds
from hookcast.actors.quota import DailyQuota, contacts_left, day_window, quota_note
from hookcast.actors.redact import redact
from hookcast.actors.segment import AudienceInfo, Segment
from hookcast.cluster.compile import RunPlan, compile_job, insecure_warning
from hookcast.cluster.coordinator import Coordinator, DeliverySettings, Progress, RunSummary
from hookcast.cluster.job import LoadedJob, load_job_text
from hookcast.cluster.ledger import (
    RESUMABLE,
    BatchRecord,
    BatchStatus,
    Ledger,
    RunRecord,
    RunStatus,
)
from hookcast.cluster.local_pool import LocalSenderPool
from hookcast.cluster.metrics import ray_connected
from hookcast.cluster.metrics_relay import RelayedMetrics
from hookcast.cluster.pool import RunPool

if TYPE_CHECKING:
    from hookcast.cluster.metrics import RunMetrics

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[Progress], None]


def new_run_id(job: str, when: datetime | None = None) -> str:
    when = when or datetime.now(UTC)
    return f"{job}-{when:%Y%m%dT%H%M%S}-{token_source.token_hex(2)}"


def batch_key(run_id: str, seq: int) -> str:
    """The Idempotency-Key of batch ``seq``: the same on every retry, resume and replay."""
    return f"{run_id}-{seq:06d}"


def plan_batches(run_id: str, ids: pa.Array, batch_size: int) -> list[BatchRecord]:
    plans = []
    for seq, start in enumerate(range(0, len(ids), batch_size)):
        chunk = ids.slice(start, batch_size)
        plans.append(
            BatchRecord(
                seq=seq,
                first_id=chunk[0].as_py(),
                last_id=chunk[-1].as_py(),
                contacts=len(chunk),
                idem_key=batch_key(run_id, seq),
                status=BatchStatus.PLANNED,
            )
        )
    return plans


def daily_quota(job: LoadedJob) -> DailyQuota | None:
    """The job's daily quota of contacts for its endpoint, or None: the day starts at
    midnight in ``rate_limit.timezone``, else the trigger's time zone (UTC by default)."""
    limits = job.spec.rate_limit
    if limits.daily_contacts is None:
        return None
    return DailyQuota(limits.daily_contacts, limits.timezone or job.spec.trigger.timezone)


# -- checks that need no Ray --------------------------------------------------------------------


def validate(job: LoadedJob) -> AudienceInfo:
    """Everything that can be checked without sending: raises a JobError on bad input."""
    plan = compile_job(job)
    info = _validate_audience(plan)
    warning = insecure_warning(plan)
    return info if warning is None else replace(info, warnings=(*info.warnings, warning))


# -- runs ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StagedRun:
    """A run's frozen audience already written to the ledger's folder for ``run_id`` and its
    batches planned (``prepare_while`` does it while Ray starts); no ledger row yet."""

    run_id: str
    batches: list[BatchRecord]


@dataclass(frozen=True, slots=True)
class PreparedRun:
    """A job checked and its audience frozen, before Ray is needed (see ``prepare_while``):
    the frozen ids in memory, or, once staged, in the run's file (read as the run goes)."""

    job: LoadedJob
    plan: RunPlan
    frozen: FrozenIds
    staged: StagedRun | None = None


def prepare_run(job: LoadedJob, ledger: Ledger | None = None) -> PreparedRun:
    """Compile ``job``, validate its audience and freeze it, here, with DuckDB and no Ray:
    raises the JobError ``start_run`` would, having sent nothing. Given ``ledger``, also
    write the frozen audience for a new run id and plan its batches (``StagedRun``): only
    files, no SQLite, so this may run on another thread than the ledger's."""
    plan = compile_job(job)
    segment = Segment(plan.segment)
    staged = None
    try:
        segment.validate()
        ids = segment.freeze(check_unique=False)
        # The duplicate check (a sort) runs while the audience is written and planned.
        with ThreadPoolExecutor(1, thread_name_prefix="hookcast-unique") as checking:
            unique = checking.submit(segment.check_unique, ids)
            try:
                if ledger is not None:
                    staged = stage(ledger, new_run_id(job.spec.name), job, ids)
            finally:
                wait([unique])
        unique.result()
    except BaseException:
        if staged is not None:
            discard_unrecorded(ledger, staged.run_id)
        raise
    finally:
        segment.close()
    if staged is None:
        return PreparedRun(job, plan, FrozenIds.in_memory(ids), None)
    return PreparedRun(job, plan, ledger.frozen_ids(staged.run_id), staged)


def stage(ledger: Ledger, run_id: str, job: LoadedJob, ids: pa.Array) -> StagedRun:
    """Write the frozen ``ids`` for ``run_id`` and plan its batches; no ledger row."""
    ledger.freeze_audience(run_id, ids)
    return StagedRun(run_id, plan_batches(run_id, ids, job.spec.batch_size))


def prepare_while(
    job: LoadedJob, connect: Callable[[], object], ledger: Ledger | None = None
) -> PreparedRun:
    """``prepare_run(job, ledger)`` on a thread while ``connect()`` starts Ray on this one
    (ray.init belongs on the main thread): the freeze reads the source and the audience is
    written while Ray's processes boot, instead of after (at 10M contacts both take ~2 s
    here). ``connect``'s error wins, and removes what was staged; else the job's."""
    with ThreadPoolExecutor(1, thread_name_prefix="hookcast-prepare") as pool:
        prepared = pool.submit(prepare_run, job, ledger)
        try:
            connect()
        except BaseException:
            if prepared.exception() is None and (staged := prepared.result().staged):
                discard_unrecorded(ledger, staged.run_id)
            raise
        return prepared.result()


def discard_unrecorded(ledger: Ledger, run_id: str) -> None:
    """Remove the frozen audience of ``run_id`` if the ledger has no such run: it belongs to
    no run (nothing was sent)."""
    if ledger.find_run(run_id) is None:
        shutil.rmtree(ledger.audience_path(run_id).parent, ignore_errors=True)


def start_run(
    job: LoadedJob | PreparedRun,
    ledger: Ledger,
    *,
    run_id: str | None = None,
    senders: int | None = None,
    on_planned: ProgressCallback | None = None,
    on_progress: ProgressCallback | None = None,
    stop: threading.Event | None = None,
    stop_now: threading.Event | None = None,
    ray_aside: bool = False,
) -> RunSummary:
    """Fire one run of ``job`` now: through Ray's senders on a cluster or with ``senders``
    (Ray must be connected), else in this process (``sender_pool``). The job is compiled, its
    audience validated and frozen here, once (``prepare_run``), unless it comes prepared:
    bad input raises a JobError before any request is sent.

    ``ray_aside``: a run in this process without Ray records its metrics in an embedded Ray
    of their own, started once the run lasts long enough for them
    (``cluster/metrics_relay.py``); the CLI and the Python API ask for it.

    ``stop``: send nothing new, let the requests in flight finish, end INTERRUPTED.
    ``stop_now``: end INTERRUPTED at once; the batches in flight stay SENDING, and resume
    sends them again with their keys.

    Raises LedgerError, sending nothing, while a live process sends another run of the job
    (checked before anything starts, and again, race-free, as the run is recorded)."""
    prepared = job if isinstance(job, PreparedRun) else prepare_run(job)
    job, plan, staged = prepared.job, prepared.plan, prepared.staged
    if staged is not None and run_id not in (None, staged.run_id):
        raise ValueError(f"run id {run_id!r} given for a run staged as {staged.run_id!r}")
    run_id = staged.run_id if staged is not None else run_id or new_run_id(job.spec.name)
    try:
        ledger.refuse_if_running(job.spec.name)
        pool = sender_pool(plan, run_id, senders)  # Ray's senders boot meanwhile
    except BaseException:
        discard_unrecorded(ledger, run_id)
        raise
    try:
        frozen = prepared.frozen
        plans = (staged or stage(ledger, run_id, job, frozen.to_array())).batches
        try:
            ledger.create_run(
                RunRecord(
                    run_id=run_id,
                    job=job.spec.name,
                    status=RunStatus.RUNNING,
                    contacts=len(frozen),
                    batches=len(plans),
                    batch_size=job.spec.batch_size,
                    created_at=time.time(),
                    endpoint=plan.endpoint,
                    job_path=str(job.path),
                    job_text=job.raw_text,
                ),
                plans,
            )
        except LedgerError:
            # Another run of the job got there first, or the ledger cannot be written.
            discard_unrecorded(ledger, run_id)
            raise
        logger.info("run %s: %d contacts in %d batches", run_id, len(frozen), len(plans))
        try:
            pool.use_audience(frozen)
            return _deliver(
                plan,
                ledger,
                run_id,
                pool,
                {p.seq: p.idem_key for p in plans},
                {p.seq: p.contacts for p in plans},
                quota=daily_quota(job),
                on_planned=on_planned,
                on_progress=on_progress,
                stop=stop,
                stop_now=stop_now,
                ray_aside=ray_aside,
            )
        finally:
            ledger.release(run_id)
    finally:
        pool.close()


def _validate_audience(plan: RunPlan) -> AudienceInfo:
    segment = Segment(plan.segment)
    try:
        return segment.validate()
    finally:
        segment.close()


def resume_run(
    ledger: Ledger,
    run_id: str,
    *,
    senders: int | None = None,
    on_planned: ProgressCallback | None = None,
    on_progress: ProgressCallback | None = None,
    stop: threading.Event | None = None,
    stop_now: threading.Event | None = None,
    ray_aside: bool = False,
) -> RunSummary:
    """Send the batches of ``run_id`` that were never acknowledged, with their keys: those
    planned or in flight when it stopped, and those skipped after a 410 or left by the
    canary (the endpoint may be back). Dead letters are ``replay_run``'s. The options are
    ``start_run``'s."""
    return _continue(
        ledger,
        run_id,
        RESUMABLE,
        "resume",
        senders=senders,
        on_planned=on_planned,
        on_progress=on_progress,
        stop=stop,
        stop_now=stop_now,
        ray_aside=ray_aside,
    )


def replay_run(
    ledger: Ledger,
    run_id: str,
    *,
    url: str | None = None,
    senders: int | None = None,
    on_planned: ProgressCallback | None = None,
    on_progress: ProgressCallback | None = None,
    stop: threading.Event | None = None,
    stop_now: threading.Event | None = None,
    ray_aside: bool = False,
) -> RunSummary:
    """Resend only the dead-lettered batches of ``run_id`` (optionally to another URL).
    The options are ``start_run``'s."""
    return _continue(
        ledger,
        run_id,
        (BatchStatus.DEAD_LETTERED,),
        "replay",
        url=url,
        senders=senders,
        on_planned=on_planned,
        on_progress=on_progress,
        stop=stop,
        stop_now=stop_now,
        ray_aside=ray_aside,
    )


def _continue(
    ledger: Ledger,
    run_id: str,
    statuses: Sequence[str],
    verb: str,
    *,
    url: str | None = None,
    senders: int | None = None,
    on_planned: ProgressCallback | None = None,
    on_progress: ProgressCallback | None = None,
    stop: threading.Event | None = None,
    stop_now: threading.Event | None = None,
    ray_aside: bool = False,
) -> RunSummary:
    run = ledger.get_run(run_id)
    if run.status == RunStatus.RUNNING:
        raise LedgerError(
            f"run {run.run_id} is still running (pid {run.pid} on {run.host}): "
            f"stop it first, or wait for it to end, before you {verb} it."
        )
    todo = ledger.batches(run.run_id, statuses)
    job = load_job_text(run.job_text or "", run.job_path or f"{run.job}.yaml")
    if not todo:
        raise LedgerError(_nothing_to(verb, run, statuses, ledger.batch_counts(run.run_id)))
    plan = compile_job(job, url=url)
    frozen = ledger.frozen_ids(run.run_id)
    ledger.claim_run(run.run_id, verb)  # refused while another run of the job is sent
    try:
        pool = sender_pool(plan, run.run_id, senders)
        logger.info("%s %s: %d batches", verb, run.run_id, len(todo))
        try:
            pool.use_audience(frozen)
            return _deliver(
                plan,
                ledger,
                run.run_id,
                pool,
                {b.seq: b.idem_key for b in todo},
                {b.seq: b.contacts for b in todo},
                # The quota is the job's endpoint's: a replay elsewhere (--url) is not held.
                quota=daily_quota(job) if url is None else None,
                attempts_before={b.seq: b.attempts for b in todo},
                parts={b.seq: b.part for b in todo if b.part is not None},
                on_planned=on_planned,
                on_progress=on_progress,
                stop=stop,
                stop_now=stop_now,
                ray_aside=ray_aside,
            )
        finally:
            pool.close()
    finally:
        ledger.release(run.run_id)


def _nothing_to(
    verb: str, run: RunRecord, statuses: Sequence[str], counts: dict[str, tuple[int, int]]
) -> str:
    """Why ``verb`` has nothing to send in ``run``, and what would send the rest if any."""
    message = (
        f"run {run.run_id} has no {', '.join(statuses)} batches: nothing to {verb} "
        f"(status {run.status})."
    )
    dead = counts.get(BatchStatus.DEAD_LETTERED, (0, 0))[0]
    unsent = sum(counts.get(status, (0, 0))[0] for status in RESUMABLE)
    if verb == "resume" and dead:
        message += f" Its {dead:,} dead-lettered batches: `hookcast replay {run.run_id}`."
    elif verb == "replay" and unsent:
        message += f" Its {unsent:,} unsent batches: `hookcast resume {run.run_id}`."
    return message


def on_ray_cluster() -> bool:
    """True when this process is connected to a Ray cluster it did not start itself: a run
    with ``--address``, a Ray job, a run the scheduler actor fires. A process without Ray
    does not import it to find out."""
    if not ray_connected():
        return False
    from hookcast.cluster.connect import embedded

    return not embedded()


def sender_pool(plan: RunPlan, run_id: str, senders: int | None = None) -> RunPool:
    """Where a run's batches are rendered and sent: Ray actors on a cluster, or when
    ``senders`` asks for them; else this process (``cluster/local_pool.py``), which on one
    machine is the fastest and need not wait for Ray."""
    if senders is None and not on_ray_cluster():
        return LocalSenderPool(plan)
    from hookcast.cluster.sender_pool import RaySenderPool

    return RaySenderPool(plan, run_id, senders=senders)


def _deliver(
    plan: RunPlan,
    ledger: Ledger,
    run_id: str,
    pool: RunPool,
    keys: dict[int, str],
    sizes: dict[int, int],
    *,
    quota: DailyQuota | None,
    attempts_before: dict[int, int] | None = None,
    parts: dict[int, tuple[int, int, int]] | None = None,
    on_planned: ProgressCallback | None,
    on_progress: ProgressCallback | None,
    stop: threading.Event | None,
    stop_now: threading.Event | None,
    ray_aside: bool = False,
) -> RunSummary:
    """Send the batches in ``keys`` (seq -> key; ``sizes``: seq -> contacts) and record
    the end of the run. With a ``quota``, only what is left of it today is sent: when it is
    used up the run ends INTERRUPTED with a note saying when it resets (``resume_after``)."""
    run = ledger.get_run(run_id)
    endpoint = run.endpoint or plan.endpoint
    day = budget = None
    if quota is not None:
        day = day_window(time.time(), quota.timezone)
        budget = contacts_left(quota.contacts, ledger.delivered_contacts(endpoint, day[0]))
    counts = ledger.batch_counts(run_id)
    delivered = counts.get(BatchStatus.DELIVERED, (0, 0))
    progress = Progress(
        contacts=run.contacts,
        batches=run.batches,
        delivered_batches=delivered[0],
        delivered_contacts=delivered[1],
    )
    if on_planned:
        on_planned(progress)
    if (warning := insecure_warning(plan)) is not None:
        logger.warning("run %s: %s", run_id, warning)
    note = None
    metrics = _metrics_for(run, sizes, ray_aside=ray_aside)
    coordinator = Coordinator(
        run_id=run_id,
        ledger=ledger,
        pool=pool,
        seqs=list(keys),
        keys=keys,
        settings=_settings_for(plan, pool),
        progress=progress,
        on_progress=on_progress,
        stop=stop,
        stop_now=stop_now,
        metrics=metrics,
        attempts_before=attempts_before,
        sizes=sizes,
        parts=parts,
        contacts_budget=budget,  # 0: the day's quota is used up, nothing is sent
        endpoint=plan.endpoint,  # where the requests go: its runs share its limits
        share=_shared_endpoints(ledger),
    )
    coordinator.open_stream()  # the segment renders while the senders boot
    pool.wait_ready()  # before the clock starts
    started = time.monotonic()
    try:
        status = coordinator.run()
    except RunAbortedError as exc:
        status, note = RunStatus.INTERRUPTED, redact(exc.reason, plan.secrets)
    finally:
        if metrics is not None:
            metrics.close()
    if coordinator.gone:
        note = coordinator.gone
    if status == RunStatus.ABORTED and coordinator.canary_failed:
        note = redact(coordinator.canary_failed, plan.secrets)
    resume_after = None
    if day is not None and coordinator.quota_reached and status == RunStatus.INTERRUPTED:
        resume_after = day[1]
        note = quota_note(
            quota=quota,
            endpoint=endpoint,
            delivered_today=ledger.delivered_contacts(endpoint, day[0]),
            resets_at=resume_after,
            run_id=run_id,
            now=time.time(),
        )
    duration = time.monotonic() - started
    record = ledger.finish_run(
        run_id,
        status,
        duration_s=round(duration, 3),
        retries=progress.retries,
        note=note,
        resume_after=resume_after,
    )
    logger.info("run %s %s in %.1f s", run_id, status, duration)
    return summarise(record, progress, duration)


def _metrics_for(
    run: RunRecord, sizes: dict[int, int], *, ray_aside: bool
) -> RunMetrics | RelayedMetrics | None:
    """Ray's metrics here when this process has Ray; else, if asked for, an embedded Ray
    of their own once the run is worth it; else none."""
    endpoint = run.endpoint or ""
    if ray_connected():
        from hookcast.cluster.metrics import RunMetrics

        return RunMetrics(run.job, endpoint)
    if ray_aside:
        return RelayedMetrics(run.job, endpoint, contacts=sum(sizes.values()))
    return None


def _settings_for(plan: RunPlan, pool: RunPool) -> DeliverySettings:
    """The job's delivery settings, with the pool's batches per call when it has its own."""
    per_call = pool.batches_per_call
    return plan.delivery if per_call is None else replace(plan.delivery, chunk_batches=per_call)


def _shared_endpoints(ledger: Ledger):
    """The ledger's live runs and, on a cluster (not the embedded Ray), the cluster's."""
    if not on_ray_cluster():
        return ledger
    from hookcast.cluster.live_registry import SharedEndpoints, cluster_registry

    return SharedEndpoints(ledger, cluster_registry())


def summarise(record: RunRecord, progress: Progress, duration_s: float) -> RunSummary:
    sent_contacts = progress.delivered_contacts
    return RunSummary(
        run_id=record.run_id,
        job=record.job,
        status=record.status,
        contacts=record.contacts,
        batches=record.batches,
        delivered_batches=record.delivered_batches,
        failed_batches=record.failed_batches,
        skipped_batches=record.skipped_batches,
        delivered_contacts=record.delivered_contacts,
        retries=progress.retries,
        requests=progress.requests,
        duration_s=round(duration_s, 3),
        contacts_per_s=round(sent_contacts / duration_s, 1) if duration_s > 0 else 0.0,
        requests_per_s=round(progress.requests / duration_s, 1) if duration_s > 0 else 0.0,
        note=record.note,
        split_batches=progress.split_batches,
    )
