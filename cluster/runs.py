"""Firing a run, resuming it, replaying its dead letters; validating and previewing a job.

A run is: validate (nothing sent on bad input) -> freeze the audience -> plan every batch in
the ledger with its key -> deliver -> record the end. Resume and replay reuse the frozen
audience and the planned keys, so a batch always carries the same contacts and key.
"""

from __future__ import annotations

import logging
import secrets as token_source
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime

import pyarrow as pa

from hookcast.actors.errors import LedgerError, RunAbortedError
from hookcast.actors.redact import redact
from hookcast.actors.segment import AudienceInfo, Segment
from hookcast.cluster.compile import RunPlan, compile_job, insecure_warning
from hookcast.cluster.coordinator import Coordinator, Progress, RunSummary
from hookcast.cluster.job import LoadedJob, load_job_text
from hookcast.cluster.ledger import (
    UNFINISHED,
    BatchRecord,
    BatchStatus,
    Ledger,
    RunRecord,
    RunStatus,
)
from hookcast.cluster.metrics import RunMetrics
from hookcast.cluster.sender_pool import RaySenderPool

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


# -- checks that need no Ray --------------------------------------------------------------------


def validate(job: LoadedJob) -> AudienceInfo:
    """Everything that can be checked without sending: raises a JobError on bad input."""
    plan = compile_job(job)
    info = _validate_audience(plan)
    warning = insecure_warning(plan)
    return info if warning is None else replace(info, warnings=(*info.warnings, warning))


# -- runs ---------------------------------------------------------------------------------------


def start_run(
    job: LoadedJob,
    ledger: Ledger,
    *,
    run_id: str | None = None,
    senders: int | None = None,
    on_planned: ProgressCallback | None = None,
    on_progress: ProgressCallback | None = None,
    stop: threading.Event | None = None,
    stop_now: threading.Event | None = None,
) -> RunSummary:
    """Fire one run of ``job`` now (Ray must be connected). The job is compiled and its
    audience validated here, once: bad input raises a JobError before any request is sent.

    ``stop``: send nothing new, let the requests in flight finish, end INTERRUPTED.
    ``stop_now``: end INTERRUPTED at once; the batches in flight stay SENDING, and resume
    sends them again with their keys."""
    plan = compile_job(job)
    _validate_audience(plan)
    run_id = run_id or new_run_id(job.spec.name)
    pool = RaySenderPool(plan, run_id, senders=senders)
    try:
        ids = pool.freeze()
        ledger.freeze_audience(run_id, ids)
        plans = plan_batches(run_id, ids, job.spec.batch_size)
        ledger.create_run(
            RunRecord(
                run_id=run_id,
                job=job.spec.name,
                status=RunStatus.RUNNING,
                contacts=len(ids),
                batches=len(plans),
                batch_size=job.spec.batch_size,
                created_at=time.time(),
                endpoint=plan.endpoint,
                job_path=str(job.path),
                job_text=job.raw_text,
            ),
            plans,
        )
        logger.info("run %s: %d contacts in %d batches", run_id, len(ids), len(plans))
        pool.use_audience(ids)
        return _deliver(
            plan,
            ledger,
            run_id,
            pool,
            {p.seq: p.idem_key for p in plans},
            on_planned=on_planned,
            on_progress=on_progress,
            stop=stop,
            stop_now=stop_now,
        )
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
) -> RunSummary:
    """Send the batches of ``run_id`` that were never acknowledged, with their keys.
    The options are ``start_run``'s."""
    return _continue(
        ledger,
        run_id,
        UNFINISHED,
        "resume",
        senders=senders,
        on_planned=on_planned,
        on_progress=on_progress,
        stop=stop,
        stop_now=stop_now,
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
        raise LedgerError(
            f"run {run.run_id} has no {' or '.join(statuses)} batches: nothing to {verb} "
            f"(status {run.status})."
        )
    plan = compile_job(job, url=url)
    ids = ledger.frozen_audience(run.run_id)
    ledger.claim_run(run.run_id)
    pool = RaySenderPool(plan, run.run_id, senders=senders)
    logger.info("%s %s: %d batches", verb, run.run_id, len(todo))
    try:
        pool.use_audience(ids)
        return _deliver(
            plan,
            ledger,
            run.run_id,
            pool,
            {b.seq: b.idem_key for b in todo},
            attempts_before={b.seq: b.attempts for b in todo},
            on_planned=on_planned,
            on_progress=on_progress,
            stop=stop,
            stop_now=stop_now,
        )
    finally:
        pool.close()


def _deliver(
    plan: RunPlan,
    ledger: Ledger,
    run_id: str,
    pool: RaySenderPool,
    keys: dict[int, str],
    *,
    attempts_before: dict[int, int] | None = None,
    on_planned: ProgressCallback | None,
    on_progress: ProgressCallback | None,
    stop: threading.Event | None,
    stop_now: threading.Event | None,
) -> RunSummary:
    run = ledger.get_run(run_id)
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
    pool.wait_ready()  # before the clock starts
    started = time.monotonic()
    coordinator = Coordinator(
        run_id=run_id,
        ledger=ledger,
        pool=pool,
        seqs=list(keys),
        keys=keys,
        settings=plan.delivery,
        progress=progress,
        on_progress=on_progress,
        stop=stop,
        stop_now=stop_now,
        metrics=RunMetrics(run.job, run.endpoint or ""),
        attempts_before=attempts_before,
    )
    note = None
    try:
        status = coordinator.run()
    except RunAbortedError as exc:
        status, note = RunStatus.INTERRUPTED, redact(exc.reason, plan.secrets)
    if coordinator.gone:
        note = coordinator.gone
    duration = time.monotonic() - started
    record = ledger.finish_run(
        run_id, status, duration_s=round(duration, 3), retries=progress.retries, note=note
    )
    logger.info("run %s %s in %.1f s", run_id, status, duration)
    return summarise(record, progress, duration)


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
    )
