"""What ``HookcastOperator`` does, without Airflow: send a job here or on a Ray cluster, and
judge how its run ended. The operator (``operators.py``) is a thin shell around this.

Here, the run goes through the Python API (``hookcast.run``: embedded Ray started and shut
down for the call, or the cluster at a Ray address joined as a driver). On a cluster's Jobs
API (an ``http(s)://`` address) it is handed over with ``hookcast submit``'s functions and
followed through its logs until it ends; its summary is read from the log's summary line.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from hookcast.actors.urls import has_scheme
from hookcast.cluster.compile import check_url_override
from hookcast.cluster.coordinator import Progress, RunSummary
from hookcast.cluster.job_yaml import safe_load
from hookcast.cluster.report import RunError, parse_line
from hookcast.cluster.submit import Ended, Submission, follow, prepare, submit

# Where a job file names files, relative to itself; made absolute when the file moves.
_PATH_KEYS = (
    ("audience", "source"),
    ("audience", "ids"),
    ("webhook", "tls", "ca_bundle"),
    ("webhook", "tls", "client_cert"),
    ("webhook", "tls", "client_key"),
)


def jobs_api(address: str | None) -> bool:
    """Whether ``address`` is a Jobs API (the dashboard, ``http://head:8265``) rather than a
    Ray address to join (``host:6379``, ``ray://host:10001``, ``auto``)."""
    return address is not None and address.lower().startswith(("http://", "https://"))


def check_url(url: str) -> None:
    """Raise a JobError naming ``url`` when it cannot be a webhook URL (the job's egress
    rules are checked again when the rewritten job is loaded)."""
    check_url_override(url, key="url")


def with_url(raw_text: str, url: str, base_dir: Path, source_name: str = "job.yaml") -> str:
    """The job file's text sending to ``url`` instead, its file paths made absolute against
    ``base_dir`` so that the text may be kept or sent anywhere. ``${NAME}`` references stay
    references (nothing is expanded here)."""
    data = safe_load(raw_text, source_name)
    data.setdefault("webhook", {})["url"] = url
    for keys in _PATH_KEYS:
        parent = data
        for key in keys[:-1]:
            parent = parent.get(key) if isinstance(parent, dict) else None
        value = parent.get(keys[-1]) if isinstance(parent, dict) else None
        if isinstance(value, str) and not has_scheme(value) and "${" not in value:
            parent[keys[-1]] = str(base_dir / Path(value).expanduser())
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def run_here(
    job_file: str | Path,
    *,
    url: str | None,
    address: str | None,
    auth_file: str | Path | None,
    state_dir: str | Path,
    senders: int | None,
    on_progress: Callable[[Progress], None] | None,
) -> RunSummary:
    """Send the job from this process (Ray embedded, or joined at ``address``)."""
    import hookcast

    if url is not None:
        check_url(url)
    job = hookcast.load_job(job_file, auth_file=auth_file)
    if url is not None:
        job = hookcast.load_job_text(with_url(job.raw_text, url, job.path.parent), job.path)
    return hookcast.run(
        job, state_dir=state_dir, address=address, on_progress=on_progress, senders=senders
    )


@dataclass(frozen=True, slots=True)
class ClusterRun:
    """How a submitted run ended: its summary, else the error it reported, else Ray's word."""

    submission: Submission
    ended: Ended
    summary: RunSummary | None
    error: RunError | None


def submit_job(
    job_file: str | Path,
    address: str,
    *,
    url: str | None,
    auth_file: str | Path | None,
    state_dir: str | None,
) -> Submission:
    """Hand ``hookcast run`` of the job to the Jobs API at ``address``; ``url`` replaces the
    webhook URL. The job is checked here first (``${NAME}`` is resolved on the cluster)."""
    job_path = Path(job_file).expanduser()
    auth = None if auth_file is None else Path(auth_file).expanduser()
    if url is None:
        return submit(job_path, address, auth_file=auth, state_dir=state_dir)
    check_url(url)
    with tempfile.TemporaryDirectory(prefix="hookcast-airflow-") as work:
        # prepare: checked, authorizations merged, audience paths absolute.
        _, prepared = prepare(job_path, auth, Path(work))
        base_dir = job_path.resolve().parent
        prepared.write_text(with_url(prepared.read_text(), url, base_dir, str(job_path)))
        return submit(prepared, address, state_dir=state_dir)


def wait_for(
    submission: Submission,
    address: str,
    *,
    on_progress: Callable[[Progress], None] | None = None,
    on_line: Callable[[str], None] | None = None,
    poll_s: float = 2.0,
) -> ClusterRun:
    """Follow the submitted run's logs until it ends: progress lines go to ``on_progress``,
    any other line to ``on_line``."""
    summary: list[RunSummary] = []
    error: list[RunError] = []

    def line(text: str) -> None:
        parsed = parse_line(text)
        if isinstance(parsed, Progress):
            if on_progress:
                on_progress(parsed)
        elif isinstance(parsed, RunSummary):
            summary.append(parsed)
        elif isinstance(parsed, RunError):
            error.append(parsed)
        elif text.strip() and on_line:
            on_line(text)

    ended = follow(address, submission.submission_id, line, poll_s=poll_s)
    return ClusterRun(
        submission, ended, summary[-1] if summary else None, error[-1] if error else None
    )


def failure(summary: RunSummary, *, allow_dead_letters: bool = False) -> str | None:
    """Why a task that ran ``summary``'s run fails, or None when it succeeds.

    Dead letters fail it unless ``allow_dead_letters``; a run that stopped before the end
    (interrupted, aborted by the canary) or skipped batches after a 410 always does: the
    audience was not sent (``hookcast resume`` sends the rest, with the same keys)."""
    run, status = summary.run_id, summary.status
    if status == "succeeded":
        return None
    why = f": {summary.note}" if summary.note else ""
    if status in ("interrupted", "aborted"):
        return f"run {run} {status}{why}. Send the rest with: hookcast resume {run}"
    if status != "failed":
        return f"run {run} ended {status}{why}"
    if summary.skipped_batches:
        return (
            f"run {run}: {summary.skipped_batches:,} batches were never sent{why}. Once the "
            f"endpoint is back, send them (same keys) with: hookcast resume {run}"
        )
    if summary.failed_batches and not allow_dead_letters:
        undelivered = summary.contacts - summary.delivered_contacts
        return (
            f"run {run} dead-lettered {summary.failed_batches:,} of {summary.batches:,} "
            f"batches ({undelivered:,} contacts not delivered). See them with: hookcast runs "
            f"show {run}; resend them with: hookcast replay {run}; or let the task pass "
            "with allow_dead_letters=True"
        )
    return None
