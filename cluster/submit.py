"""Handing a job to a Ray cluster through the Ray Jobs API (`hookcast submit`).

The job file travels in the submission's working dir with its audience paths made absolute
(the cluster must see the same path: shared storage, or an s3:// / gs:// URL) and any
``--auth`` file merged in. ``${ENV}`` references stay references: they are resolved by the
run on the cluster, never copied here in clear text.
"""

from __future__ import annotations

import os
import shlex
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import yaml

from hookcast.actors.errors import ClusterError
from hookcast.cluster.job import load_job
from hookcast.cluster.report import LineSplitter

TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}
AGENT_WAIT_S = 60.0


class _KeepReferences(Mapping[str, str]):
    """An environment in which every ``${NAME}`` stands for itself: nothing is expanded here."""

    def __getitem__(self, name: str) -> str:
        return "${" + name + "}"

    def get(self, name: str, default: str | None = None) -> str | None:
        # A setting read from the environment (HOOKCAST_EGRESS) is not known here: the
        # cluster's nodes apply their own.
        return default

    def __contains__(self, name: object) -> bool:
        return True

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


@dataclass(frozen=True, slots=True)
class Submission:
    submission_id: str
    dashboard_url: str


def prepare(job_path: Path, auth_file: Path | None, directory: Path) -> tuple[str, Path]:
    """Check the job and write the file that travels; return the job name and the file."""
    loaded = load_job(job_path, env=_KeepReferences(), auth_file=auth_file)
    data = yaml.safe_load(loaded.raw_text)
    data["audience"]["source"] = loaded.source
    if loaded.ids_path is not None:
        data["audience"]["ids"] = loaded.ids_path
    target = directory / "job.yaml"
    target.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    return loaded.spec.name, target


def submit(
    job_path: Path,
    address: str,
    *,
    auth_file: Path | None = None,
    state_dir: str | None = None,
) -> Submission:
    """Submit ``hookcast run`` of the job to the cluster's Jobs API at ``address``."""
    from ray.job_submission import JobSubmissionClient

    with tempfile.TemporaryDirectory(prefix="hookcast-submit-") as work:
        name, _ = prepare(job_path, auth_file, Path(work))
        command = ["hookcast", "run", "job.yaml", "--progress-lines"]
        if state_dir:
            command += ["--state-dir", state_dir]
        submission_id = f"hookcast-{name}-{datetime.now(UTC):%Y%m%dT%H%M%S}-{os.urandom(2).hex()}"
        try:
            client = JobSubmissionClient(address)
            deadline = time.monotonic() + AGENT_WAIT_S
            while True:
                try:
                    client.submit_job(
                        entrypoint=shlex.join(command),
                        submission_id=submission_id,
                        runtime_env={"working_dir": work},
                        metadata={"hookcast_job": name},
                    )
                    break
                except RuntimeError as exc:
                    # A head that has just started has no job agent yet: Ray says try later.
                    if "No available agent" not in str(exc) or time.monotonic() > deadline:
                        raise
                    time.sleep(1)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise ClusterError(
                f"cannot submit to {address}: {str(exc).splitlines()[0][:200]}. Give the "
                "dashboard address (http://<head>:8265); a cluster with token auth needs "
                "RAY_AUTH_MODE=token and its token (RAY_AUTH_TOKEN or ~/.ray/auth_token)."
            ) from exc
    return Submission(submission_id, f"{address.rstrip('/')}/#/jobs/{submission_id}")


@dataclass(frozen=True, slots=True)
class Ended:
    status: str  # SUCCEEDED, FAILED or STOPPED
    message: str  # Ray's word on it, for people
    exit_code: int | None  # the entrypoint's exit code as Ray recorded it; None: unknown


def follow(
    address: str, submission_id: str, on_line: Callable[[str], None], poll_s: float = 1.0
) -> Ended:
    """Hand each new line of the submission's logs to ``on_line`` until it ends."""
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(address)
    lines = LineSplitter()
    shown = 0
    while True:
        info = client.get_job_info(submission_id)
        logs = client.get_job_logs(submission_id)
        for line in lines.feed(logs[shown:]):
            on_line(line)
        shown = len(logs)
        status = str(info.status).rsplit(".", 1)[-1]
        if status in TERMINAL:
            for line in lines.rest():
                on_line(line)
            return Ended(status, info.message or "", getattr(info, "driver_exit_code", None))
        time.sleep(poll_s)
