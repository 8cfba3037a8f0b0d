"""`hookcast schedule ...` (jobs kept in the state dir) and `hookcast scheduler ...` (what
fires them)."""

from __future__ import annotations

from typing import Annotated

import typer

from hookcast.cli import output
from hookcast.cli.options import (
    DEFAULT_STATE_DIR,
    AddressOpt,
    AuthOpt,
    ClusterAddressOpt,
    JobArg,
    JsonOpt,
    StateDirOpt,
    connect,
)
from hookcast.cli.running import stop_on_signals

schedule_app = typer.Typer(
    help="One-time and recurring jobs kept in the state dir.", no_args_is_help=True
)
scheduler_app = typer.Typer(help="The scheduler that fires scheduled jobs.", no_args_is_help=True)

NameArg = Annotated[str, typer.Argument(help="The job's name (its `name:` key).")]
GraceOpt = Annotated[
    float, typer.Option("--grace-s", min=0, help="How late a missed fire may still run.")
]


@schedule_app.command("add")
def schedule_add(
    job: JobArg, state_dir: StateDirOpt = DEFAULT_STATE_DIR, auth: AuthOpt = None
) -> None:
    """Validate a job (audience and trigger included) and keep it for the scheduler."""
    from datetime import UTC, datetime

    from hookcast.cluster.job import load_job
    from hookcast.cluster.schedule_view import schedule_job

    kept = schedule_job(load_job(job, auth_file=auth), state_dir.expanduser(), datetime.now(UTC))
    fires = ", ".join(f.isoformat() for f in kept.next_fires)
    verb = "scheduled" if kept.new else "rescheduled"
    output.console.print(f"[green]✓[/] {verb} {kept.name}; next: {fires}", soft_wrap=True)


@schedule_app.command("list")
def schedule_list(json_out: JsonOpt = False, state_dir: StateDirOpt = DEFAULT_STATE_DIR) -> None:
    """Every scheduled job: its trigger, status and next 3 fire times (job's timezone)."""
    from datetime import UTC, datetime

    from hookcast.cluster.schedule_view import schedule_rows

    rows = schedule_rows(state_dir.expanduser(), datetime.now(UTC))
    if json_out:
        output.print_json(rows)
    elif not rows:
        output.console.print(f"no scheduled jobs in {state_dir}")
    else:
        output.print_schedules(rows)


def _set_status(name: str, state_dir, status: str, done: str) -> None:
    from hookcast.cluster.schedule_store import ScheduleStatus
    from hookcast.cluster.schedule_view import set_schedule_status

    set_schedule_status(state_dir.expanduser(), name, ScheduleStatus(status))
    output.console.print(f"{name} {done}")


@schedule_app.command("pause")
def schedule_pause(name: NameArg, state_dir: StateDirOpt = DEFAULT_STATE_DIR) -> None:
    """Stop firing a job until it is resumed (takes effect without restarting the scheduler)."""
    _set_status(name, state_dir, "paused", "paused")


@schedule_app.command("resume")
def schedule_resume(name: NameArg, state_dir: StateDirOpt = DEFAULT_STATE_DIR) -> None:
    """Fire a paused job again from its next due time."""
    _set_status(name, state_dir, "active", "resumed")


@schedule_app.command("remove")
def schedule_remove(name: NameArg, state_dir: StateDirOpt = DEFAULT_STATE_DIR) -> None:
    """Forget a scheduled job (its past runs stay in the ledger)."""
    from hookcast.cluster.schedule_view import remove_schedule

    remove_schedule(state_dir.expanduser(), name)
    output.console.print(f"{name} removed")


@scheduler_app.command("run")
def scheduler_run(
    state_dir: StateDirOpt = DEFAULT_STATE_DIR,
    address: AddressOpt = None,
    grace_s: GraceOpt = 600.0,
    time_scale: Annotated[float, typer.Option("--time-scale", hidden=True, min=0.001)] = 1.0,
    until_idle: Annotated[
        bool, typer.Option("--until-idle", help="Exit once no scheduled job can fire again.")
    ] = False,
) -> None:
    """Run the scheduler in the foreground: fire every scheduled job when due, until Ctrl-C."""
    from hookcast.cluster.schedule_view import ensure_store, nothing_can_fire
    from hookcast.cluster.scheduler_hooks import run_scheduler, scheduler_config

    state = state_dir.expanduser()
    ensure_store(state)
    connect(address)
    with stop_on_signals() as signals:
        run_scheduler(
            str(state.resolve()),
            scheduler_config(grace_s, time_scale),
            signals.stop,
            on_started=lambda: output.console.print(
                f"scheduler running on {state} (Ctrl-C to stop)"
            ),
            on_event=output.print_event,
            until_idle=(lambda: nothing_can_fire(state)) if until_idle else (lambda: False),
        )


@scheduler_app.command("start")
def scheduler_start(
    address: ClusterAddressOpt,
    state_dir: StateDirOpt = DEFAULT_STATE_DIR,
    grace_s: GraceOpt = 600.0,
) -> None:
    """Start the scheduler as a detached actor on a Ray cluster; it outlives this command."""
    from hookcast.cluster.scheduler_hooks import scheduler_config, start_detached_scheduler

    connect(address)
    start_detached_scheduler(str(state_dir.expanduser()), scheduler_config(grace_s))
    output.console.print(f"scheduler started on {address} (state dir {state_dir} on the head)")


@scheduler_app.command("stop")
def scheduler_stop(address: ClusterAddressOpt) -> None:
    """Stop the detached scheduler; running broadcasts end as interrupted (resumable)."""
    from hookcast.cluster.scheduler_hooks import stop_detached_scheduler

    connect(address)
    if stop_detached_scheduler():
        output.console.print("scheduler stopped")
    else:
        output.console.print(f"no scheduler is running on {address}")
