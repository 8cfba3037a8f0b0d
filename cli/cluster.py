"""`hookcast status` (what runs, and where, on a cluster) and `hookcast submit` (a job handed
to a cluster's Jobs API)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.live import Live

from hookcast.cli import output
from hookcast.cli.options import (
    DEFAULT_STATE_DIR,
    AuthOpt,
    JobArg,
    JsonOpt,
    Outcome,
    StateDirOpt,
    connect,
    open_ledger,
)
from hookcast.cli.running import outcome_of
from hookcast.cluster.coordinator import RunSummary

if TYPE_CHECKING:
    from hookcast.cluster.status import StatusSnapshot


def status(
    json_out: JsonOpt = False,
    state_dir: StateDirOpt = DEFAULT_STATE_DIR,
    address: Annotated[
        str | None,
        typer.Option(
            "--address",
            envvar="RAY_ADDRESS",
            help="The Ray cluster whose hookcast actors to list (default: none).",
        ),
    ] = None,
    watch: Annotated[
        bool,
        typer.Option(
            "--watch",
            help="Refresh in place until Ctrl-C; with --json, one JSON object per line each time.",
        ),
    ] = False,
    interval_s: Annotated[
        float,
        typer.Option("--interval", min=0.1, help="Seconds between refreshes, with --watch."),
    ] = 2.0,
) -> None:
    """Running runs (with their progress) and the hookcast actors on the connected cluster:
    where each runs and, for senders, how far it has got."""
    from hookcast.cluster.status import connected, take_snapshot

    ledger = open_ledger(state_dir)
    with_actors = bool(address) or connected()
    if with_actors:
        connect(address)

    def read() -> StatusSnapshot:
        return take_snapshot(ledger, with_actors=with_actors)

    if not watch:
        if json_out:
            output.print_json(read().to_dict())
        else:
            output.console.print(output.status_view(read(), state_dir=state_dir, address=address))
        return
    try:
        _watch(read, interval_s, json_out, state_dir, address)
    except KeyboardInterrupt:  # how a watch ends: nothing went wrong
        return


def _watch(
    read: Callable[[], StatusSnapshot],
    interval_s: float,
    json_out: bool,
    state_dir: Path,
    address: str | None,
) -> None:
    """Show ``read()`` every ``interval_s`` until Ctrl-C: redrawn in place on a terminal,
    one view after another when the output goes to a file or a pipe."""
    if json_out:
        while True:
            snapshot = read()
            output.print_json_line({"at": snapshot.taken_at, **snapshot.to_dict()})
            time.sleep(interval_s)

    def view():
        return output.status_view(read(), state_dir=state_dir, address=address, every_s=interval_s)

    if not output.console.is_terminal:
        while True:
            output.console.print(view())
            time.sleep(interval_s)
    with Live(view(), console=output.console, auto_refresh=False) as live:
        while True:
            time.sleep(interval_s)
            live.update(view(), refresh=True)


def submit(
    job: JobArg,
    address: Annotated[
        str,
        typer.Option(
            "--address",
            envvar="RAY_DASHBOARD_ADDRESS",
            help="The cluster's dashboard / Jobs API, e.g. http://<head>:8265; on KubeRay "
            "http://<cluster>-head-svc:8265 in the cluster, or http://localhost:8265 after "
            "`kubectl port-forward svc/<cluster>-head-svc 8265`.",
        ),
    ],
    auth: AuthOpt = None,
    state_dir: Annotated[
        str | None, typer.Option("--state-dir", help="The ledger on the cluster's head node.")
    ] = None,
    follow_logs: Annotated[
        bool, typer.Option("--follow", help="Stream the run's output until it ends.")
    ] = False,
) -> Outcome | int | None:
    """Hand the job to a Ray cluster (Ray Jobs API); prints the submission id and returns.
    With --follow, shows the run's progress on the cluster and its summary, and exits as
    `hookcast run` would."""
    from hookcast.cluster.submit import follow
    from hookcast.cluster.submit import submit as hand_over

    submission = hand_over(job, address, auth_file=auth, state_dir=state_dir)
    output.console.print(f"submitted {submission.submission_id}", soft_wrap=True)
    output.console.print(f"dashboard: {submission.dashboard_url}", soft_wrap=True)
    if not follow_logs:
        return None
    watcher = _SubmissionWatcher(submission.submission_id)
    try:
        ended = follow(address, submission.submission_id, watcher.line)
    finally:
        watcher.close()
    # What the run on the cluster recorded decides: its summary, else the error it ended
    # with (each says its own exit code), else the exit code Ray recorded for it.
    if watcher.summary is not None:
        output.print_summary(watcher.summary)  # (its ledger is on the cluster, not here)
        return outcome_of(watcher.summary)
    if watcher.exit_code is not None:
        return watcher.exit_code
    output.errors.print(f"{submission.submission_id}: {ended.status.lower()} {ended.message}")
    return ended.exit_code if ended.exit_code else Outcome.FAILED


class _SubmissionWatcher:
    """Turns a submitted run's log lines into a progress bar, its summary or its error;
    other lines (the error's message, Ray's own) are shown as they come."""

    def __init__(self, label: str) -> None:
        self.bar = output.RunBar(label)
        self.started = False
        self.summary: RunSummary | None = None
        self.exit_code: int | None = None

    def line(self, text: str) -> None:
        from hookcast.cluster.coordinator import Progress
        from hookcast.cluster.report import RunError, parse_line

        parsed = parse_line(text)
        if isinstance(parsed, Progress):
            if not self.started:
                self.bar.start(parsed)
                self.started = True
            self.bar.update(parsed)
        elif isinstance(parsed, RunSummary):
            self.summary = parsed
        elif isinstance(parsed, RunError):
            self.exit_code = parsed.exit_code
        elif text.strip():
            output.errors.print(text, markup=False, highlight=False, soft_wrap=True)

    def close(self) -> None:
        self.bar.stop()
