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
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import ray
from ray.exceptions import RayTaskError

from hookcast.actors.errors import LedgerError, RunAbortedError, unwrap
from hookcast.actors.redact import redact
from hookcast.actors.remote import start_segment, start_senders, stop_actors
from hookcast.actors.render import ELEMENT_COLUMN, assemble_body
from hookcast.actors.segment import AudienceInfo, Segment
from hookcast.cluster.compile import (
    delivery_settings,
    segment_config,
    sender_config,
    shown_endpoint,
)
from hookcast.cluster.connect import default_senders
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


@dataclass(frozen=True, slots=True)
class Preview:
    contacts: int
    batches: int
    bodies: list[bytes]
    info: AudienceInfo


def validate(job: LoadedJob) -> AudienceInfo:
    """Everything that can be checked without sending: raises a JobError on bad input."""
    sender_config(job)
    segment = Segment(segment_config(job))
    try:
        return segment.validate()
    finally:
        segment.close()


def preview(job: LoadedJob, batches: int) -> Preview:
    """The audience size and the first ``batches`` bodies exactly as they would be sent,
    with secrets redacted."""
    sender_config(job)
    segment = Segment(segment_config(job))
    try:
        info = segment.validate()
        ids = segment.freeze()
        size = job.spec.batch_size
        total = -(-len(ids) // size)
        wanted = list(range(min(batches, total)))
        now_ms = int(time.time() * 1000)
        bodies = [
            redact(assemble_body(t.column(ELEMENT_COLUMN), now_ms).decode(), job.secrets).encode()
            for t in segment.stream(ids, wanted)
        ]
    finally:
        segment.close()
    return Preview(contacts=len(ids), batches=total, bodies=bodies, info=info)


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
) -> RunSummary:
    """Fire one run of ``job`` now (Ray must be connected). Bad input raises a JobError
    before any request is sent."""
    validate(job)
    run_id = run_id or new_run_id(job.spec.name)
    segment, pool = _start_actors(job, run_id, senders=senders)
    try:
        try:
            ids: pa.Array = ray.get(segment.freeze.remote())
        except RayTaskError as exc:
            raise unwrap(exc) from None
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
                endpoint=shown_endpoint(job.spec.webhook.url, job.secrets),
                job_path=str(job.path),
                job_text=job.raw_text,
            ),
            plans,
        )
        logger.info("run %s: %d contacts in %d batches", run_id, len(ids), len(plans))
        return _deliver(
            job,
            ledger,
            run_id,
            segment,
            pool,
            ray.put(ids),
            [p.seq for p in plans],
            {p.seq: p.idem_key for p in plans},
            on_planned=on_planned,
            on_progress=on_progress,
            stop=stop,
        )
    finally:
        stop_actors([segment, *pool])


def _start_actors(
    job: LoadedJob, run_id: str, *, url: str | None = None, senders: int | None = None
) -> tuple[ray.actor.ActorHandle, list[ray.actor.ActorHandle]]:
    """The run's segment actor and sender pool, started together: their worker processes
    come up in parallel, while the segment freezes the audience."""
    segment = start_segment(segment_config(job), name=f"hookcast/{run_id}/segment")
    pool = start_senders(
        sender_config(job, url=url),
        count=senders or default_senders(),
        name_prefix=f"hookcast/{run_id}",
    )
    return segment, pool


def resume_run(ledger: Ledger, run_id: str, **options) -> RunSummary:
    """Send the batches of ``run_id`` that were never acknowledged, with their keys."""
    return _continue(ledger, run_id, UNFINISHED, "resume", **options)


def replay_run(ledger: Ledger, run_id: str, *, url: str | None = None, **options) -> RunSummary:
    """Resend only the dead-lettered batches of ``run_id`` (optionally to another URL)."""
    return _continue(ledger, run_id, (BatchStatus.DEAD_LETTERED,), "replay", url=url, **options)


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
    ids = ledger.frozen_audience(run.run_id)
    ledger.claim_run(run.run_id)
    segment, pool = _start_actors(job, run.run_id, url=url, senders=senders)
    logger.info("%s %s: %d batches", verb, run.run_id, len(todo))
    try:
        return _deliver(
            job,
            ledger,
            run.run_id,
            segment,
            pool,
            ray.put(ids),
            [b.seq for b in todo],
            {b.seq: b.idem_key for b in todo},
            attempts_before={b.seq: b.attempts for b in todo},
            on_planned=on_planned,
            on_progress=on_progress,
            stop=stop,
        )
    finally:
        stop_actors([segment, *pool])


def _deliver(
    job: LoadedJob,
    ledger: Ledger,
    run_id: str,
    segment: ray.actor.ActorHandle,
    pool: list[ray.actor.ActorHandle],
    frozen: ray.ObjectRef,
    seqs: list[int],
    keys: dict[int, str],
    *,
    attempts_before: dict[int, int] | None = None,
    on_planned: ProgressCallback | None,
    on_progress: ProgressCallback | None,
    stop: threading.Event | None,
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
    # Senders must be up before the clock starts: calls queued while they start would all
    # leave at once and break the endpoint's rate limit.
    ray.get([sender.__ray_ready__.remote() for sender in pool])
    started = time.monotonic()
    coordinator = Coordinator(
        run_id=run_id,
        ledger=ledger,
        segment=segment,
        senders=pool,
        frozen=frozen,
        seqs=seqs,
        keys=keys,
        settings=delivery_settings(job),
        progress=progress,
        on_progress=on_progress,
        stop=stop,
        metrics=RunMetrics(run.job, run.endpoint or ""),
        attempts_before=attempts_before,
    )
    note = None
    try:
        status = coordinator.run()
    except RunAbortedError as exc:
        status, note = RunStatus.INTERRUPTED, redact(exc.reason, job.secrets)
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


def default_state_dir() -> Path:
    return Path("~/.hookcast").expanduser()
