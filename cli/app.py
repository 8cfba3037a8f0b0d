"""The `hookcast` command line: parsing, progress, tables, exit codes. No business logic.

Exit codes (SPEC §5): 0 every contact delivered; 1 the run finished but some batches were
dead-lettered or skipped; 2 the job was rejected before sending; 3 interrupted, resumable.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated

import orjson
import typer

from hookcast.actors.errors import HookcastError
from hookcast.cli import output
from hookcast.cluster.coordinator import RunSummary

app = typer.Typer(
    name="hookcast",
    help="Broadcast an audience to a webhook, up to 500 contacts per request, on Ray.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)
runs_app = typer.Typer(help="Past runs, from the ledger.", invoke_without_command=True)
app.add_typer(runs_app, name="runs")
schedule_app = typer.Typer(
    help="One-time and recurring jobs kept in the state dir.", no_args_is_help=True
)
app.add_typer(schedule_app, name="schedule")
scheduler_app = typer.Typer(help="The scheduler that fires scheduled jobs.", no_args_is_help=True)
app.add_typer(scheduler_app, name="scheduler")
auth_app = typer.Typer(
    help="Authorizations: the token endpoints wildcards draw on.", no_args_is_help=True
)
app.add_typer(auth_app, name="auth")

EXIT_OK, EXIT_FAILED, EXIT_REJECTED, EXIT_INTERRUPTED = 0, 1, 2, 3
_EXIT_BY_STATUS = {"succeeded": EXIT_OK, "failed": EXIT_FAILED, "interrupted": EXIT_INTERRUPTED}

JobArg = Annotated[Path, typer.Argument(help="The job file (YAML).", show_default=False)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object, nothing else.")]
StateDirOpt = Annotated[
    Path,
    typer.Option(
        "--state-dir",
        envvar="HOOKCAST_HOME",
        help="Where the ledger and schedules live.",
        show_default="~/.hookcast",
    ),
]
AddressOpt = Annotated[
    str | None,
    typer.Option(
        "--address",
        envvar="RAY_ADDRESS",
        help="An existing Ray cluster (ray://host:10001, host:6379, auto). "
        "Default: an embedded local Ray on 127.0.0.1.",
    ),
]
AuthOpt = Annotated[
    Path | None,
    typer.Option("--auth", help="A file of shared authorizations (token endpoints)."),
]
SendersOpt = Annotated[
    int | None,
    typer.Option("--senders", min=1, max=256, help="Sender actors. Default: one per CPU but one."),
]
DEFAULT_STATE_DIR = Path("~/.hookcast")


@app.callback()
def main_options(
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Log each phase, and show Ray's own output.")
    ] = False,
    dashboard: Annotated[
        bool,
        typer.Option(
            "--dashboard",
            help="Start the embedded Ray with its dashboard on 127.0.0.1 (about 1 s more "
            "start-up) and print its address. A cluster has its own.",
        ),
    ] = False,
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    _options.update(verbose=verbose, dashboard=dashboard)


_options: dict[str, bool] = {"verbose": False, "dashboard": False}


@contextlib.contextmanager
def _user_errors() -> Iterator[None]:
    """Our own errors become one readable line and exit code 2; no traceback."""
    try:
        yield
    except HookcastError as exc:
        output.error(str(exc))
        raise typer.Exit(EXIT_REJECTED) from None


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[threading.Event]:
    """Ctrl-C or SIGTERM stops fetching new batches; a second Ctrl-C exits at once."""
    stop = threading.Event()

    def handle(signum: int, frame: object) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        output.errors.print(
            "[yellow]stopping: letting requests in flight finish (Ctrl-C again to quit now)"
        )

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _ledger(state_dir: Path):
    from hookcast.cluster.ledger import Ledger

    return Ledger(state_dir.expanduser())


def _known_run(state_dir: Path, run_id: str, address: str | None):
    """The ledger, once ``run_id`` is known to be in it (before Ray is started for it)."""
    ledger = _ledger(state_dir)
    ledger.get_run(run_id)
    _connect(address)
    return ledger


def _connect(address: str | None) -> None:
    from hookcast.cluster.connect import connect

    with output.errors.status("starting Ray" if not address else f"connecting to {address}"):
        where = connect(address, verbose=_options["verbose"], dashboard=_options["dashboard"])
    if _options["dashboard"]:
        output.errors.print(where, soft_wrap=True)


def _with_progress(start: Callable[..., object], label: str, quiet: bool):
    """Call ``start(on_planned=, on_progress=, stop=)`` under a progress bar (none when
    ``quiet``), with Ctrl-C / SIGTERM setting ``stop``; return what it returns."""
    bar = None if quiet else output.RunBar(label)
    with _stop_on_signals() as stop:
        try:
            return start(
                on_planned=bar.start if bar else None,
                on_progress=bar.update if bar else None,
                stop=stop,
            )
        finally:
            if bar:
                bar.stop()


def _broadcast(
    start: Callable[..., RunSummary], label: str, json_out: bool, progress_lines: bool = False
) -> None:
    """Run a broadcast with a progress bar (or silently with --json, or as progress lines
    for a reader of the output); exit by its status."""
    if progress_lines:
        from hookcast.cluster.report import summary_line

        summary = _with_progress_lines(start)
        print(summary_line(summary), flush=True)
    else:
        summary = _with_progress(start, label, json_out)
        if json_out:
            output.print_json(summary.to_dict())
        else:
            _show_summary(summary)
    raise typer.Exit(_EXIT_BY_STATUS.get(summary.status, EXIT_FAILED))


def _show_summary(summary: RunSummary) -> None:
    output.print_summary(summary)
    if summary.status == "interrupted":
        output.errors.print(f"resume it with: hookcast resume {summary.run_id}")
    elif summary.failed_batches:
        output.errors.print(
            f"see the dead letters with: hookcast runs show {summary.run_id}; "
            f"resend them with: hookcast replay {summary.run_id}"
        )


def _with_progress_lines(start: Callable[..., RunSummary]) -> RunSummary:
    from hookcast.cluster.report import progress_line, throttled

    def emit(line: str) -> None:
        print(line, flush=True)

    with _stop_on_signals() as stop:
        return start(
            on_planned=lambda progress: emit(progress_line(progress)),
            on_progress=throttled(emit),
            stop=stop,
        )


# -- commands -----------------------------------------------------------------------------------


@app.command()
def validate(job: JobArg, auth: AuthOpt = None) -> None:
    """Check the job file and its audience without sending anything."""
    from hookcast.cluster.job import load_job
    from hookcast.cluster.runs import preview

    with _user_errors():
        loaded = load_job(job, auth_file=auth)
        result = preview(loaded, 0)
    output.console.print(
        f"[green]✓[/] {job} is valid: {result.contacts:,} contacts in {result.batches:,} "
        f"batches of up to {loaded.spec.batch_size} "
        f"({result.info.files} source file{'s' if result.info.files != 1 else ''})."
    )


@app.command()
def preview(
    job: JobArg,
    batches: Annotated[int, typer.Option("--batches", "-n", min=0, help="Bodies to print.")] = 1,
    pretty: Annotated[bool, typer.Option("--pretty", help="Indent the JSON bodies.")] = False,
    auth: AuthOpt = None,
) -> None:
    """Print the first request bodies exactly as they would be sent (secrets redacted)."""
    from hookcast.actors.redact import redact
    from hookcast.cluster.job import load_job
    from hookcast.cluster.runs import batch_key
    from hookcast.cluster.runs import preview as make_preview
    from hookcast.cluster.tokens import preview_headers

    with _user_errors():
        loaded = load_job(job, auth_file=auth)
        result = make_preview(loaded, batches)
        shown_headers = preview_headers(loaded) if result.bodies else {}
    webhook = loaded.spec.webhook
    # Plain text, byte for byte: this is what the endpoint would receive.
    for seq, body in enumerate(result.bodies):
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": batch_key(f"{loaded.spec.name}-<run>", seq),
            **shown_headers,
        }
        typer.echo(f"POST {redact(webhook.url, loaded.secrets)}")
        for name, value in headers.items():
            typer.echo(f"{name}: {redact(value, loaded.secrets)}")
        typer.echo("")
        text = orjson.dumps(orjson.loads(body), option=orjson.OPT_INDENT_2) if pretty else body
        typer.echo(text.decode())
        typer.echo("")
    typer.echo(
        f"audience: {result.contacts:,} contacts in {result.batches:,} batches of up to "
        f"{loaded.spec.batch_size}"
    )


@app.command()
def run(
    job: JobArg,
    json_out: JsonOpt = False,
    state_dir: StateDirOpt = DEFAULT_STATE_DIR,
    address: AddressOpt = None,
    senders: SendersOpt = None,
    auth: AuthOpt = None,
    progress_lines: Annotated[
        bool,
        typer.Option(
            "--progress-lines",
            hidden=True,
            help="Print progress as `hookcast-progress {json}` lines and the summary as one "
            "`hookcast-summary {json}` line (what `submit --follow` reads from job logs).",
        ),
    ] = False,
) -> None:
    """Run the broadcast now, in the foreground, with a progress bar."""
    from hookcast.cluster.job import load_job
    from hookcast.cluster.runs import start_run
    from hookcast.cluster.runs import validate as check

    with _user_errors():
        loaded = load_job(job, auth_file=auth)
        check(loaded)
        ledger = _ledger(state_dir)
        _connect(address)
        _broadcast(
            lambda **kw: start_run(loaded, ledger, senders=senders, **kw),
            loaded.spec.name,
            json_out,
            progress_lines,
        )


@app.command()
def resume(
    run_id: Annotated[str, typer.Argument(help="The run to finish (a unique prefix will do).")],
    json_out: JsonOpt = False,
    state_dir: StateDirOpt = DEFAULT_STATE_DIR,
    address: AddressOpt = None,
    senders: SendersOpt = None,
) -> None:
    """Finish an interrupted run: send only the batches never acknowledged, same keys."""
    from hookcast.cluster.runs import resume_run

    with _user_errors():
        ledger = _known_run(state_dir, run_id, address)
        _broadcast(lambda **kw: resume_run(ledger, run_id, senders=senders, **kw), run_id, json_out)


@app.command()
def replay(
    run_id: Annotated[str, typer.Argument(help="The run whose dead letters to resend.")],
    url: Annotated[
        str | None, typer.Option("--url", help="Send to this URL instead (a staging endpoint).")
    ] = None,
    json_out: JsonOpt = False,
    state_dir: StateDirOpt = DEFAULT_STATE_DIR,
    address: AddressOpt = None,
    senders: SendersOpt = None,
) -> None:
    """Resend only the dead-lettered batches of a run, with their original keys."""
    from hookcast.cluster.runs import replay_run

    with _user_errors():
        ledger = _known_run(state_dir, run_id, address)
        _broadcast(
            lambda **kw: replay_run(ledger, run_id, url=url, senders=senders, **kw),
            run_id,
            json_out,
        )


@runs_app.callback()
def runs(
    ctx: typer.Context,
    json_out: JsonOpt = False,
    state_dir: StateDirOpt = DEFAULT_STATE_DIR,
    job: Annotated[str | None, typer.Option("--job", help="Only this job's runs.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most this many.")] = 50,
) -> None:
    """List past runs (newest first); `hookcast runs show RUN` for one."""
    if ctx.invoked_subcommand is not None:
        return
    with _user_errors():
        records = _ledger(state_dir).list_runs(limit=limit, job=job)
    if json_out:
        output.print_json([r.to_dict() for r in records])
    elif not records:
        output.console.print(f"no runs yet in {state_dir}")
    else:
        output.print_runs(records)


@runs_app.command("show")
def runs_show(
    run_id: Annotated[str, typer.Argument(help="The run (a unique prefix will do).")],
    json_out: JsonOpt = False,
    state_dir: StateDirOpt = DEFAULT_STATE_DIR,
) -> None:
    """One run with its failed batches (dead-lettered, skipped, unfinished)."""
    from hookcast.cluster.ledger import BatchStatus

    with _user_errors():
        ledger = _ledger(state_dir)
        record = ledger.get_run(run_id)
        not_delivered = [s for s in BatchStatus if s != BatchStatus.DELIVERED]
        failed = ledger.batches(record.run_id, not_delivered)
    if json_out:
        output.print_json({**record.to_dict(), "failed": [_batch_dict(b) for b in failed]})
    else:
        output.print_run(record, failed)


def _batch_dict(batch) -> dict:
    from dataclasses import asdict

    return asdict(batch)


# -- schedules ----------------------------------------------------------------------------------

NameArg = Annotated[str, typer.Argument(help="The job's name (its `name:` key).")]


def _store(state_dir: Path):
    from hookcast.cluster.schedule_store import ScheduleStore

    return ScheduleStore(state_dir.expanduser())


@schedule_app.command("add")
def schedule_add(
    job: JobArg, state_dir: StateDirOpt = DEFAULT_STATE_DIR, auth: AuthOpt = None
) -> None:
    """Validate a job (audience and trigger included) and keep it for the scheduler."""
    from datetime import UTC, datetime

    from hookcast.actors.errors import JobFileError
    from hookcast.cluster.job import load_job
    from hookcast.cluster.runs import validate as check
    from hookcast.cluster.scheduler_hooks import job_schedule

    with _user_errors():
        loaded = load_job(job, auth_file=auth)
        now = datetime.now(UTC)
        schedule = job_schedule(loaded, now=now)
        if schedule.kind == "immediate":
            raise JobFileError(
                f"{job}: trigger.type is immediate, so there is nothing to schedule: give "
                "trigger.type once (with at) or recurring (with cron or every), or send it "
                "now with `hookcast run`."
            )
        check(loaded)
        new = _store(state_dir).add(loaded.spec.name, str(loaded.path), loaded.raw_text)
    from hookcast.actors.trigger import next_fires

    fires = ", ".join(f.isoformat() for f in next_fires(schedule, now, 3))
    verb = "scheduled" if new else "rescheduled"
    output.console.print(f"[green]✓[/] {verb} {loaded.spec.name}; next: {fires}", soft_wrap=True)


@schedule_app.command("list")
def schedule_list(json_out: JsonOpt = False, state_dir: StateDirOpt = DEFAULT_STATE_DIR) -> None:
    """Every scheduled job: its trigger, status and next 3 fire times (job's timezone)."""
    from datetime import UTC, datetime

    from hookcast.cluster.job import load_job_text
    from hookcast.cluster.scheduler_hooks import job_schedule

    with _user_errors():
        store = _store(state_dir)
        entries = store.list()
        last_fires = {e.name: store.fires(e.name, limit=1) for e in entries}
    now = datetime.now(UTC)
    rows = []
    for entry in entries:
        row = {"name": entry.name, "status": entry.status, "job_path": entry.job_path}
        try:
            schedule = job_schedule(load_job_text(entry.job_text, entry.job_path), now=None)
            from hookcast.actors.trigger import next_fires

            row["trigger"] = (
                schedule.every
                or schedule.cron
                or (schedule.at.isoformat() if schedule.at else schedule.kind)
            )
            row["timezone"] = schedule.timezone
            row["next"] = (
                [f.isoformat() for f in next_fires(schedule, now, 3)]
                if entry.status == "active"
                else []
            )
        except HookcastError as exc:
            row["trigger"], row["timezone"], row["next"] = "?", "?", []
            row["error"] = str(exc)
        last = last_fires.get(entry.name)
        row["last_fire"] = (
            None
            if not last
            else {"outcome": last[0].outcome, "run_id": last[0].run_id, "due": last[0].due}
        )
        rows.append(row)
    if json_out:
        output.print_json(rows)
    elif not rows:
        output.console.print(f"no scheduled jobs in {state_dir}")
    else:
        output.print_schedules(rows)


def _set_status(name: str, state_dir: Path, status: str, done: str) -> None:
    from hookcast.cluster.schedule_store import ScheduleStatus

    with _user_errors():
        _store(state_dir).set_status(name, ScheduleStatus(status))
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
    with _user_errors():
        _store(state_dir).remove(name)
    output.console.print(f"{name} removed")


GraceOpt = Annotated[
    float, typer.Option("--grace-s", min=0, help="How late a missed fire may still run.")
]


def _scheduler_config(grace_s: float, time_scale: float):
    import time as clock

    from hookcast.actors.scheduler import SchedulerConfig

    if time_scale == 1.0:
        return SchedulerConfig(grace_s=grace_s)
    now = clock.time()
    return SchedulerConfig(
        grace_s=grace_s, time_scale=time_scale, origin_epoch_s=now, real_origin_epoch_s=now
    )


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
    import ray

    from hookcast.cluster.scheduler_hooks import start_scheduler

    with _user_errors():
        state = state_dir.expanduser()
        _store(state)  # creates the state dir and tables, or says why not
        _connect(address)
        actor = start_scheduler(
            str(state.resolve()), _scheduler_config(grace_s, time_scale), detached=False
        )
        output.console.print(f"scheduler running on {state} (Ctrl-C to stop)")
        seen = 0
        with _stop_on_signals() as stop:
            while not stop.is_set():
                events, seen = ray.get(actor.events_since.remote(seen))
                for event in events:
                    output.print_event(event)
                if until_idle and _idle(state):
                    break
                stop.wait(0.5)
            ray.get(actor.shutdown.remote())
            events, seen = ray.get(actor.events_since.remote(seen))
            for event in events:
                output.print_event(event)
            ray.kill(actor)


def _idle(state_dir: Path) -> bool:
    entries = _store(state_dir).list()
    return all(e.status != "active" for e in entries)


@scheduler_app.command("start")
def scheduler_start(
    address: Annotated[
        str, typer.Option("--address", envvar="RAY_ADDRESS", help="The Ray cluster (required).")
    ],
    state_dir: StateDirOpt = DEFAULT_STATE_DIR,
    grace_s: GraceOpt = 600.0,
) -> None:
    """Start the scheduler as a detached actor on a Ray cluster; it outlives this command."""
    import ray

    from hookcast.cluster.scheduler_hooks import start_scheduler

    with _user_errors():
        _connect(address)
        actor = start_scheduler(
            str(state_dir.expanduser()), _scheduler_config(grace_s, 1.0), detached=True
        )
        ray.get(actor.now.remote())
    output.console.print(f"scheduler started on {address} (state dir {state_dir} on the head)")


@scheduler_app.command("stop")
def scheduler_stop(
    address: Annotated[
        str, typer.Option("--address", envvar="RAY_ADDRESS", help="The Ray cluster (required).")
    ],
) -> None:
    """Stop the detached scheduler; running broadcasts end as interrupted (resumable)."""
    import ray

    from hookcast.cluster.scheduler_hooks import find_scheduler

    with _user_errors():
        _connect(address)
    actor = find_scheduler()
    if actor is None:
        output.console.print(f"no scheduler is running on {address}")
        return
    ray.get(actor.shutdown.remote())
    ray.kill(actor, no_restart=True)
    output.console.print("scheduler stopped")


@auth_app.command("test")
def auth_test(
    job: JobArg,
    auth: AuthOpt = None,
    only: Annotated[str | None, typer.Option("--id", help="Only this authorization.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Fetch each authorization's token once and show what came back (tokens redacted)."""
    from dataclasses import asdict

    from hookcast.cluster.job import load_job
    from hookcast.cluster.tokens import test_authorizations

    with _user_errors():
        reports = test_authorizations(load_job(job, auth_file=auth), only)
    if json_out:
        output.print_json([asdict(r) for r in reports])
    elif not reports:
        output.console.print(f"{job} defines no authorizations")
    else:
        for report in reports:
            output.print_auth_report(report)
    if not all(r.ok for r in reports):
        raise typer.Exit(EXIT_REJECTED)


@app.command()
def loadtest(
    contacts: Annotated[
        int, typer.Option("--contacts", min=1, help="Synthetic audience size.")
    ] = 200_000,
    url: Annotated[
        str | None, typer.Option("--url", help="Your endpoint (default: the built-in receiver).")
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, max=500)] = 500,
    rps: Annotated[
        float | None, typer.Option("--rps", min=0.1, help="Requests per second.")
    ] = None,
    fail_rate: Annotated[
        float, typer.Option("--fail-rate", min=0.0, max=0.99, help="Built-in receiver: 500s.")
    ] = 0.0,
    latency_ms: Annotated[
        float, typer.Option("--latency-ms", min=0.0, help="Built-in receiver: delay.")
    ] = 0.0,
    report: Annotated[
        Path | None, typer.Option("--report", help="Where to write the HTML report.")
    ] = None,
    json_out: JsonOpt = False,
    state_dir: StateDirOpt = DEFAULT_STATE_DIR,
    address: AddressOpt = None,
    senders: SendersOpt = None,
) -> None:
    """A load test: a synthetic audience broadcast, throughput, latency, retries and losses."""
    from hookcast.cluster.testbed.loadtest import LoadtestOptions, run_loadtest, write_report

    options = LoadtestOptions(
        contacts=contacts,
        url=url,
        batch_size=batch_size,
        requests_per_second=rps,
        fail_rate=fail_rate,
        latency_ms=latency_ms,
        senders=senders,
    )
    with _user_errors():
        ledger = _ledger(state_dir)
        _connect(address)
        result = _with_progress(
            lambda **kw: run_loadtest(options, ledger, **kw), "loadtest", json_out
        )
    path = write_report(
        result, report or state_dir.expanduser() / "reports" / f"{result.summary.run_id}.html"
    )
    if json_out:
        output.print_json({**result.to_dict(), "report": str(path)})
    else:
        output.print_loadtest(result, path)
    raise typer.Exit(EXIT_OK if result.verified else EXIT_FAILED)


@app.command()
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
) -> None:
    """Running runs (with their progress) and the hookcast actors on the connected cluster:
    where each runs and, for senders, how far it has got."""
    import ray

    with _user_errors():
        running = [r for r in _ledger(state_dir).list_runs(limit=200) if r.status == "running"]
        actors = []
        if address or ray.is_initialized():
            from hookcast.cluster.status import hookcast_actors

            _connect(address)
            actors = hookcast_actors()
    if json_out:
        output.print_json(
            {"runs": [r.to_dict() for r in running], "actors": [a.to_dict() for a in actors]}
        )
        return
    if running:
        output.print_runs(running)
    else:
        output.console.print(f"no run is running in {state_dir}")
    if actors:
        output.print_actors(actors)
    elif address:
        output.console.print(f"no hookcast actors on {address}")


@app.command()
def submit(
    job: JobArg,
    address: Annotated[
        str,
        typer.Option(
            "--address",
            envvar="RAY_DASHBOARD_ADDRESS",
            help="The cluster's dashboard / Jobs API, e.g. http://<head>:8265.",
        ),
    ],
    auth: AuthOpt = None,
    state_dir: Annotated[
        str | None, typer.Option("--state-dir", help="The ledger on the cluster's head node.")
    ] = None,
    follow_logs: Annotated[
        bool, typer.Option("--follow", help="Stream the run's output until it ends.")
    ] = False,
) -> None:
    """Hand the job to a Ray cluster (Ray Jobs API); prints the submission id and returns.
    With --follow, shows the run's progress on the cluster and its summary, and exits as
    `hookcast run` would."""
    from hookcast.cluster.submit import follow
    from hookcast.cluster.submit import submit as hand_over

    with _user_errors():
        submission = hand_over(job, address, auth_file=auth, state_dir=state_dir)
    output.console.print(f"submitted {submission.submission_id}", soft_wrap=True)
    output.console.print(f"dashboard: {submission.dashboard_url}", soft_wrap=True)
    if not follow_logs:
        return
    watcher = _SubmissionWatcher(submission.submission_id)
    try:
        ended = follow(address, submission.submission_id, watcher.line)
    finally:
        watcher.close()
    if watcher.summary is not None:
        output.print_summary(watcher.summary)  # (its ledger is on the cluster, not here)
        raise typer.Exit(_EXIT_BY_STATUS.get(watcher.summary.status, EXIT_FAILED))
    output.errors.print(f"{submission.submission_id}: {ended.status.lower()} {ended.message}")
    rejected = "exit code 2" in ended.message
    raise typer.Exit(EXIT_REJECTED if rejected else EXIT_FAILED)


class _SubmissionWatcher:
    """Turns a submitted run's log lines into a progress bar and its summary; other lines
    (errors, Ray's own) are shown as they come."""

    def __init__(self, label: str) -> None:
        self.bar = output.RunBar(label)
        self.started = False
        self.summary: RunSummary | None = None

    def line(self, text: str) -> None:
        from hookcast.cluster.coordinator import Progress
        from hookcast.cluster.report import parse_line

        parsed = parse_line(text)
        if isinstance(parsed, Progress):
            if not self.started:
                self.bar.start(parsed)
                self.started = True
            self.bar.update(parsed)
        elif isinstance(parsed, RunSummary):
            self.summary = parsed
        elif text.strip():
            output.errors.print(text, markup=False, highlight=False, soft_wrap=True)

    def close(self) -> None:
        self.bar.stop()


@app.command()
def sink(
    port: Annotated[int, typer.Option("--port", "-p", help="0 picks a free port.")] = 8080,
    host: Annotated[str, typer.Option("--host", help="Loopback unless you mean it.")] = "127.0.0.1",
    fail_rate: Annotated[
        float, typer.Option("--fail-rate", min=0.0, max=1.0, help="Fraction answered 500.")
    ] = 0.0,
    latency_ms: Annotated[float, typer.Option("--latency-ms", min=0.0)] = 0.0,
    rps: Annotated[
        float | None, typer.Option("--rps", min=0.1, help="Answer 429 above this rate.")
    ] = None,
) -> None:
    """A local receiver to test against: counts requests and contacts, checks duplicates."""
    from hookcast.cluster.testbed.sink import Recorder, make_behaviour, serve

    recorder = Recorder(keep_arrivals=False)
    try:
        serve(
            host,
            port,
            behaviour=make_behaviour(failure_rate=fail_rate, latency_ms=latency_ms, rps=rps),
            recorder=recorder,
            on_started=lambda url: output.console.print(
                f"listening on {url}  (counts: GET {url.rsplit('/', 1)[0]}/_stats; Ctrl-C to stop)"
            ),
        )
    except OSError as exc:
        output.error(f"cannot listen on {host}:{port}: {exc.strerror}; try another --port.")
        raise typer.Exit(EXIT_REJECTED) from None
    stats = recorder.snapshot()
    output.console.print(
        f"received {stats['requests']:,} requests, {stats['contacts']:,} contacts "
        f"({stats['unique_ids']:,} unique, {stats['duplicate_ids']:,} duplicates)"
    )


@app.command()
def demo(
    contacts: Annotated[int, typer.Option("--contacts", min=1, help="Audience size.")] = 5000,
    directory: Annotated[
        Path | None, typer.Option("--dir", help="Keep the sample files here (default: temp).")
    ] = None,
    state_dir: StateDirOpt = DEFAULT_STATE_DIR,
) -> None:
    """The quick start: a sample audience, a local receiver, a broadcast on embedded Ray."""
    from hookcast.cluster.job import load_job
    from hookcast.cluster.runs import start_run
    from hookcast.cluster.testbed.demo import write_demo
    from hookcast.cluster.testbed.sink import OK, Sink

    sample: list[bytes] = []

    def keep_first(request) -> object:
        if not sample:
            sample.append(request.body)
        return OK

    with contextlib.ExitStack() as stack:
        folder = directory or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        receiver = stack.enter_context(Sink(behaviour=keep_first, keep_arrivals=False))
        job_path = write_demo(folder, receiver.url, contacts=contacts)
        output.console.print(
            f"[bold]demo[/]: {contacts:,} sample contacts in {folder / 'contacts.parquet'}, "
            f"job {job_path}, receiver at {receiver.url}"
        )
        with _user_errors():
            loaded = load_job(job_path)
            ledger = _ledger(state_dir)
            _connect(None)
            summary = _with_progress(lambda **kw: start_run(loaded, ledger, **kw), "demo", False)
        stats = receiver.recorder.snapshot()
    output.print_summary(summary)
    output.console.print(
        f"[bold]the receiver got[/] {stats['requests']:,} requests carrying "
        f"{stats['contacts']:,} contacts ({stats['unique_ids']:,} unique, "
        f"{stats['duplicate_ids']:,} duplicates)"
    )
    if sample:
        first = orjson.loads(sample[0])
        output.console.print(f"[bold]one element of the first request[/] (of {len(first)}):")
        output.console.print_json(orjson.dumps(first[0]).decode())
    raise typer.Exit(_EXIT_BY_STATUS.get(summary.status, EXIT_FAILED))


def main() -> None:
    try:
        app()
    finally:
        # Ray's own exit hook would sleep 0.5 s first, to let stray error messages through.
        if "ray" in sys.modules:
            from hookcast.cluster.connect import disconnect

            disconnect()


if __name__ == "__main__":
    main()
