"""``HookcastOperator``: a hookcast broadcast as an Airflow 3 task.

    from hookcast.airflow.operators import HookcastOperator

    HookcastOperator(
        task_id="coupons",
        job_file="/opt/jobs/{{ params.job }}.yaml",
        url="{{ var.value.coupons_url }}",        # optional: send here instead
        address=None,                              # or "http://ray-head:8265" (Jobs API)
    )

The task pushes the run's summary (``RunSummary.to_dict()``, the object of ``hookcast run
--json``) to XCom as its return value, and fails when the run did not deliver the whole
audience (dead letters are allowed with ``allow_dead_letters=True``); a failed task's summary
is in XCom too, for a downstream task that reports or replays.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator

try:
    from airflow.sdk.exceptions import AirflowException, AirflowFailException
except ImportError:  # Airflow 3 before its exceptions moved to the task SDK
    from airflow.exceptions import AirflowException, AirflowFailException

from hookcast.actors.errors import HookcastError, JobError
from hookcast.airflow import broadcast
from hookcast.cluster.coordinator import Progress, RunSummary

DEFAULT_STATE_DIR = "~/.hookcast"
PROGRESS_EVERY_S = 10.0


class HookcastOperator(BaseOperator):
    """Send a hookcast job and wait for its run to end.

    :param job_file: the job file (templated). Relative audience paths are relative to it.
    :param url: send to this webhook URL instead of the job's (templated; checked as the
        job's own URL is).
    :param address: where to run (templated). None: an embedded Ray on this worker, started
        and shut down by the task. ``http(s)://head:8265``: the cluster's Jobs API — the job
        is submitted as ``hookcast run`` and the task waits for it, following its logs (the
        audience path must be one the cluster can read). Any other Ray address
        (``ray://head:10001``, ``head:6379``): the task joins that cluster as its driver.
    :param state_dir: the ledger (templated): on this worker, or with a Jobs API address on
        the cluster's head (default there: the head's ``~/.hookcast``).
    :param auth_file: shared authorizations to merge into the job (templated).
    :param allow_dead_letters: succeed even when some batches were dead-lettered.
    :param senders: sender actors (default: one per CPU but one); not for a Jobs API address.

    A run that ended (with dead letters, interrupted, aborted) fails the task without a retry:
    a retry would be a new run with new Idempotency-Keys, sending everything again. The
    message says which ``hookcast resume`` / ``replay`` sends the rest with the same keys.
    """

    template_fields: Sequence[str] = ("job_file", "url", "address", "state_dir", "auth_file")
    ui_color = "#d7ecf9"

    def __init__(
        self,
        *,
        job_file: str,
        url: str | None = None,
        address: str | None = None,
        state_dir: str | None = None,
        auth_file: str | None = None,
        allow_dead_letters: bool = False,
        senders: int | None = None,
        poll_s: float = 2.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.job_file = job_file
        self.url = url
        self.address = address
        self.state_dir = state_dir
        self.auth_file = auth_file
        self.allow_dead_letters = allow_dead_letters
        self.senders = senders
        self.poll_s = poll_s
        self._submitted: tuple[str, str] | None = None  # (address, submission id)

    def execute(self, context: Any) -> dict:
        url, address = self.url or None, self.address or None  # an empty render: not given
        report = _ProgressLog(self.log)
        try:
            if broadcast.jobs_api(address):
                summary = self._on_cluster(context, address, url, report)
            else:
                summary = broadcast.run_here(
                    self.job_file,
                    url=url,
                    address=address,
                    auth_file=self.auth_file or None,
                    state_dir=self.state_dir or DEFAULT_STATE_DIR,
                    senders=self.senders,
                    on_progress=report,
                )
        except JobError as exc:  # bad input: nothing was sent, and a retry cannot fix it
            raise AirflowFailException(str(exc)) from exc
        except HookcastError as exc:
            raise AirflowException(str(exc)) from exc
        result = summary.to_dict()
        self.log.info("hookcast summary: %s", result)
        problem = broadcast.failure(summary, allow_dead_letters=self.allow_dead_letters)
        if problem is not None:
            context["ti"].xcom_push(key="return_value", value=result)
            raise AirflowFailException(problem)
        if summary.failed_batches:
            self.log.warning(
                "run %s: %d dead-lettered batches, allowed (allow_dead_letters=True)",
                summary.run_id,
                summary.failed_batches,
            )
        return result

    def _on_cluster(
        self, context: Any, address: str, url: str | None, report: _ProgressLog
    ) -> RunSummary:
        if self.senders is not None:
            self.log.warning("senders=%d is not used on a Jobs API address", self.senders)
        submission = broadcast.submit_job(
            self.job_file,
            address,
            url=url,
            auth_file=self.auth_file or None,
            state_dir=self.state_dir or None,
        )
        self._submitted = (address, submission.submission_id)
        context["ti"].xcom_push(key="submission_id", value=submission.submission_id)
        self.log.info("submitted %s: %s", submission.submission_id, submission.dashboard_url)
        ran = broadcast.wait_for(
            submission,
            address,
            on_progress=report,
            on_line=lambda line: self.log.info("%s", line),
            poll_s=self.poll_s,
        )
        self._submitted = None
        if ran.summary is not None:
            return ran.summary
        # No summary: the run ended in an error it reported, or Ray ended the job.
        if ran.error is not None:
            message = f"{submission.submission_id}: {ran.error.message}"
            if ran.error.exit_code == 2:  # rejected before anything was sent
                raise AirflowFailException(message)
            raise AirflowException(message)
        raise AirflowFailException(
            f"{submission.submission_id} ended {ran.ended.status.lower()} without a summary: "
            f"{ran.ended.message or 'no message'}; its logs: {submission.dashboard_url}"
        )

    def on_kill(self) -> None:
        """A submitted run is stopped on the cluster: it ends interrupted, resumable. (An
        embedded Ray ends with this process.)"""
        if self._submitted is None:
            return
        from ray.job_submission import JobSubmissionClient

        address, submission_id = self._submitted
        self.log.info("stopping %s on %s", submission_id, address)
        JobSubmissionClient(address).stop_job(submission_id)


class _ProgressLog:
    """An ``on_progress`` callback writing one task-log line at most every 10 s."""

    def __init__(self, log: Any) -> None:
        self.log = log
        self.last: float | None = None

    def __call__(self, progress: Progress) -> None:
        now = time.monotonic()
        if self.last is not None and now - self.last < PROGRESS_EVERY_S:
            return
        self.last = now
        self.log.info(
            "delivered %d of %d contacts (%d of %d batches; %d dead-lettered, %d retries)",
            progress.delivered_contacts,
            progress.contacts,
            progress.delivered_batches,
            progress.batches,
            progress.failed_batches,
            progress.retries,
        )
