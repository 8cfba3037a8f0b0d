"""The Python API: load, check and send a job from code (an orchestrator, a notebook).

    import hookcast
    job = hookcast.load_job("job.yaml")            # raises hookcast.JobError, problems listed
    size = hookcast.validate(job)                  # contacts, batches; sends nothing
    summary = hookcast.run(job, state_dir="~/.hookcast")
    summary.to_dict()                              # the object `hookcast run --json` prints

``run``, ``resume`` and ``replay`` start the embedded Ray when no ``address`` is given and
Ray is not already connected, and shut it down before they return, whatever happens; with an
``address`` they join that cluster and leave it. They raise hookcast's own errors
(``hookcast.HookcastError`` and its kinds), never Ray's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from hookcast.actors.errors import HookcastError, JobError
from hookcast.cluster.coordinator import Progress, RunSummary
from hookcast.cluster.job import LoadedJob
from hookcast.cluster.job import load_job as _load_job
from hookcast.cluster.job import load_job_text as _load_job_text
from hookcast.cluster.preview import AudienceSize

DEFAULT_STATE_DIR = "~/.hookcast"
ProgressCallback = Callable[[Progress], None]


def load_job(
    path: str | Path,
    *,
    auth_file: str | Path | None = None,
    env: Mapping[str, str] | None = None,
) -> LoadedJob:
    """Read and validate a job file (``${NAME}`` from ``env``, default the environment);
    ``auth_file`` adds shared authorizations. Raises ``JobError`` naming each problem."""
    return _load_job(path, env=env, auth_file=auth_file)


def load_job_text(
    text: str, path: str | Path = "job.yaml", *, env: Mapping[str, str] | None = None
) -> LoadedJob:
    """A job from YAML text (no file needed); ``path`` anchors relative audience paths."""
    return _load_job_text(text, path, env=env)


def validate(job: LoadedJob) -> AudienceSize:
    """Check the job and its audience as a run would, and count it (``contacts``,
    ``batches``, ``batch_size``, ``files``, ``warnings``). Sends nothing; no Ray."""
    from hookcast.cluster.preview import audience_size

    return audience_size(job)


def run(
    job: LoadedJob,
    *,
    state_dir: str | Path = DEFAULT_STATE_DIR,
    address: str | None = None,
    on_progress: ProgressCallback | None = None,
    senders: int | None = None,
) -> RunSummary:
    """Send ``job`` now and wait for the end; the summary says how it ended."""
    from hookcast.cluster.runs import start_run

    with _ledger(state_dir) as ledger, _ray(address):
        return start_run(job, ledger, senders=senders, on_progress=on_progress)


def resume(
    run_id: str,
    *,
    state_dir: str | Path = DEFAULT_STATE_DIR,
    address: str | None = None,
    on_progress: ProgressCallback | None = None,
) -> RunSummary:
    """Send the batches of ``run_id`` that were never acknowledged, with their keys."""
    from hookcast.cluster.runs import resume_run

    with _ledger(state_dir) as ledger:
        ledger.get_run(run_id)  # an unknown run: RunNotFoundError before Ray starts
        with _ray(address):
            return resume_run(ledger, run_id, on_progress=on_progress)


def replay(
    run_id: str,
    *,
    url: str | None = None,
    state_dir: str | Path = DEFAULT_STATE_DIR,
    address: str | None = None,
    on_progress: ProgressCallback | None = None,
) -> RunSummary:
    """Resend the dead-lettered batches of ``run_id`` (to ``url`` instead, if given)."""
    from hookcast.cluster.runs import replay_run

    with _ledger(state_dir) as ledger:
        ledger.get_run(run_id)
        with _ray(address):
            return replay_run(ledger, run_id, url=url, on_progress=on_progress)


@contextlib.contextmanager
def _ledger(state_dir: str | Path) -> Iterator:
    from hookcast.cluster.ledger import Ledger

    ledger = Ledger(Path(state_dir).expanduser())
    try:
        yield ledger
    finally:
        ledger.close()


@contextlib.contextmanager
def _ray(address: str | None) -> Iterator[None]:
    """Ray for one call: joined (or started) here and left after, unless the caller had
    connected already (then it is theirs to end)."""
    import ray

    from hookcast.cluster.connect import connect, disconnect

    if ray.is_initialized():
        yield
        return
    connect(address)
    try:
        yield
    finally:
        disconnect()


__all__ = [
    "AudienceSize",
    "HookcastError",
    "JobError",
    "LoadedJob",
    "Progress",
    "RunSummary",
    "load_job",
    "load_job_text",
    "replay",
    "resume",
    "run",
    "validate",
]
