"""The Python API: load, check and send a job from code (an orchestrator, a notebook).

    import hookcast
    job = hookcast.load_job("job.yaml")            # raises hookcast.JobError, problems listed
    job = hookcast.Job(name="x", webhook={"url": url}, audience={"source": "a.parquet"})
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
import datetime as dt
import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path, PurePath
from typing import Any

import yaml

from hookcast.actors.errors import HookcastError, JobError, JobFileError
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


def Job(
    keys: Mapping[str, Any] | None = None,
    /,
    *,
    base_dir: str | Path = ".",
    env: Mapping[str, str] | None = None,
    **more: Any,
) -> LoadedJob:
    """A job built in code, no file needed: the keys of a job file (``hookcast schema``),
    as a mapping, as keyword arguments, or both (the keyword arguments win).

        hookcast.Job(name="x", webhook={"url": url}, audience={"source": "a.parquet"},
                     batch_size=250, base_dir="/data")

    It takes the loader's one route: the keys are written out as YAML (``Path`` as text,
    tuples as lists) and read back by ``load_job_text``, so the checks, the ``${NAME}``
    expansion from ``env`` (default: the environment) and the ``JobError`` with one
    ``(key, message)`` per problem are a job file's. That YAML is the job's ``raw_text``,
    stored with each run and read again, from the environment then, by ``resume`` and
    ``replay``: give secrets as ``"${NAME}"`` references, never their values (a signing
    secret written as a value is refused). Relative paths (``audience.source``,
    ``audience.ids``, ``webhook.tls``) are relative to ``base_dir``; the job's ``path`` is
    ``base_dir/<name>.yaml``, which names it in messages and is never read or written."""
    data = {**(keys or {}), **more}
    text = _CODE_HEADER + yaml.safe_dump(
        _plain(data, ""), sort_keys=False, allow_unicode=True, width=10**6
    )
    name = data.get("name")
    named = isinstance(name, str) and _FILE_STEM.fullmatch(name)
    return _load_job_text(text, Path(base_dir) / f"{name if named else 'job'}.yaml", env=env)


_CODE_HEADER = "# built in code: hookcast.Job(...)\n"
_FILE_STEM = re.compile(r"[\w-]{1,63}")  # a name safe in a path; the model decides what is valid
_SCALARS = (str, bool, int, float, type(None))


def _plain(value: Any, key: str) -> Any:
    """``value`` as the plain data YAML writes: mappings, lists, text, numbers, booleans;
    a path or a date as text (ISO), a subclass (an enum member) as its base value.
    JobError for anything else."""
    if isinstance(value, Mapping):
        named = ((_plain(k, key), f"{key}.{k}" if key else str(k)) for k in value)
        return {k: _plain(v, at) for (k, at), v in zip(named, value.values(), strict=True)}
    if isinstance(value, list | tuple):
        return [_plain(v, f"{key}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, dt.date):  # a datetime too; the model keeps them as ISO text
        return value.isoformat()
    for kind in _SCALARS:
        if isinstance(value, kind):
            return value if type(value) is kind else kind(value)
    message = (
        f"{key or 'the job'}: a {type(value).__name__} cannot be written in a job: give "
        "text, a number, true/false, a list or a mapping."
    )
    raise JobFileError(message, ((key, message),))


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

    with _ledger(state_dir) as ledger, _ray(address, senders) as ray_aside:
        return start_run(job, ledger, senders=senders, on_progress=on_progress, ray_aside=ray_aside)


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
        with _ray(address) as ray_aside:
            return resume_run(ledger, run_id, on_progress=on_progress, ray_aside=ray_aside)


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
        with _ray(address) as ray_aside:
            return replay_run(ledger, run_id, url=url, on_progress=on_progress, ray_aside=ray_aside)


@contextlib.contextmanager
def _ledger(state_dir: str | Path) -> Iterator:
    from hookcast.cluster.ledger import Ledger

    ledger = Ledger(Path(state_dir).expanduser())
    try:
        yield ledger
    finally:
        ledger.close()


@contextlib.contextmanager
def _ray(address: str | None, senders: int | None = None) -> Iterator[bool]:
    """Ray for one call, yielding the run's ``ray_aside``: a cluster (``address``), or the
    embedded Ray when Ray senders are asked for, is joined (or started) here and left after;
    else the run sends from this process and, when it lasts, records its metrics in an
    embedded Ray of their own. A Ray the caller connected is theirs to end."""
    from hookcast.cluster.metrics import ray_connected

    if ray_connected():
        yield False
        return
    if address is None and senders is None:
        yield True
        return
    from hookcast.cluster.connect import connect, disconnect

    connect(address)
    try:
        yield False
    finally:
        disconnect()


__all__ = [
    "AudienceSize",
    "HookcastError",
    "Job",
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
