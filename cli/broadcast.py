"""`hookcast validate`, `preview`, `run`, `resume` and `replay`: a job, checked, shown or sent."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import orjson
import typer

from hookcast.cli import output
from hookcast.cli.options import (
    DEFAULT_STATE_DIR,
    AddressOpt,
    AuthOpt,
    JobArg,
    JsonOpt,
    Outcome,
    SendersOpt,
    StateDirOpt,
    connect_if_first,
    open_ledger,
    prepared_run,
    ray_first,
    settings,
)
from hookcast.cli.running import (
    StopSignals,
    outcome_of,
    run_with_progress,
    run_with_progress_lines,
    show_summary,
    stop_on_signals,
)
from hookcast.cluster.coordinator import RunSummary

RunIdArg = Annotated[str, typer.Argument(help="The run (a unique prefix will do).")]


def validate(job: JobArg, auth: AuthOpt = None) -> None:
    """Check the job file and its audience without sending anything."""
    from hookcast.cluster.job import load_job
    from hookcast.cluster.preview import audience_size

    size = audience_size(load_job(job, auth_file=auth))
    output.console.print(
        f"[green]✓[/] {job} is valid: {size.contacts:,} contacts in {size.batches:,} "
        f"batches of up to {size.batch_size} "
        f"({size.files} source file{'s' if size.files != 1 else ''})."
    )
    for warning in size.warnings:
        output.warning(warning)


def preview(
    job: JobArg,
    batches: Annotated[int, typer.Option("--batches", "-n", min=0, help="Bodies to print.")] = 1,
    pretty: Annotated[bool, typer.Option("--pretty", help="Indent the JSON bodies.")] = False,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print one JSON object per request, one per line.")
    ] = False,
    auth: AuthOpt = None,
) -> None:
    """Print the first requests exactly as they would be sent (secrets redacted).

    Each request: its method and URL (the query included), every header, then the body."""
    from hookcast.cluster.job import load_job
    from hookcast.cluster.preview import PLACEHOLDER_RUN, preview_job

    shown = preview_job(load_job(job, auth_file=auth), batches)
    for request in shown.requests:
        if json_out:
            typer.echo(orjson.dumps(request.to_dict()).decode())
            continue
        # Plain text, byte for byte what the endpoint would receive (redacted).
        typer.echo(f"{request.method} {request.url}")
        for name, value in request.headers:
            typer.echo(f"{name}: {value}")
        typer.echo("")
        body = request.body
        if pretty:
            body = orjson.dumps(orjson.loads(body), option=orjson.OPT_INDENT_2)
        typer.echo(body.decode())
        typer.echo("")
    size = shown.audience
    lines = [
        f"audience: {size.contacts:,} contacts in {size.batches:,} batches of up to "
        f"{size.batch_size}",
    ]
    if shown.requests:
        lines.append(
            f"{PLACEHOLDER_RUN} in each Idempotency-Key stands for the run id a real run gets"
        )
        first = shown.requests[0]
        if first.wire_bytes != first.body_bytes:
            lines.append(
                f"the first body: {first.body_bytes:,} bytes of JSON (what is signed), sent "
                f"gzipped as {first.wire_bytes:,} bytes "
                f"({first.body_bytes / max(first.wire_bytes, 1):.1f}x smaller)"
            )
        if any(name == "webhook-signature" for name, _ in first.headers):
            lines.append(
                "webhook-signature is made per attempt over the JSON body at its "
                "webhook-timestamp; it is shown as v1,<redacted>"
            )
    for line in lines:
        typer.echo(line, err=json_out)
    for warning in size.warnings:
        output.warning(warning)


ProgressLinesOpt = Annotated[
    bool,
    typer.Option(
        "--progress-lines",
        hidden=True,
        help="Print progress as `hookcast-progress {json}` lines and the summary as one "
        "`hookcast-summary {json}` line (what `submit --follow` reads from job logs).",
    ),
]


def run(
    job: JobArg,
    json_out: JsonOpt = False,
    state_dir: StateDirOpt = DEFAULT_STATE_DIR,
    address: AddressOpt = None,
    senders: SendersOpt = None,
    auth: AuthOpt = None,
    progress_lines: ProgressLinesOpt = False,
) -> Outcome:
    """Run the broadcast now, in the foreground, with a progress bar."""
    from hookcast.cluster.job import load_job
    from hookcast.cluster.runs import start_run

    settings.error_lines = progress_lines
    loaded = load_job(job, auth_file=auth)
    ledger = open_ledger(state_dir)
    # The job is validated and its audience frozen before anything is sent; a Ray started
    # here comes before the handlers (ray.init installs its own).
    prepared = prepared_run(loaded, ledger, address, senders)
    with stop_on_signals() as signals:
        summary = _broadcast(
            start_run,
            signals,
            loaded.spec.name,
            json_out,
            progress_lines,
            job=prepared,
            ledger=ledger,
            senders=senders,
            ray_aside=not ray_first(address, senders),
        )
    return outcome_of(summary)


def resume(
    run_id: Annotated[str, typer.Argument(help="The run to finish (a unique prefix will do).")],
    json_out: JsonOpt = False,
    state_dir: StateDirOpt = DEFAULT_STATE_DIR,
    address: AddressOpt = None,
    senders: SendersOpt = None,
) -> Outcome:
    """Finish a run: send only the batches never acknowledged, same keys.

    Those are the batches not sent yet or in flight when it stopped, and those skipped
    after a 410 or held back by the canary or the daily quota; dead letters are replay's."""
    from hookcast.cluster.runs import resume_run

    ledger = _known_run(state_dir, run_id)
    ray_aside = connect_if_first(address, senders)  # before the handlers: ray.init has its own
    with stop_on_signals() as signals:
        summary = _broadcast(
            resume_run,
            signals,
            run_id,
            json_out,
            ledger=ledger,
            run_id=run_id,
            senders=senders,
            ray_aside=ray_aside,
        )
    return outcome_of(summary)


def replay(
    run_id: Annotated[str, typer.Argument(help="The run whose dead letters to resend.")],
    url: Annotated[
        str | None, typer.Option("--url", help="Send to this URL instead (a staging endpoint).")
    ] = None,
    json_out: JsonOpt = False,
    state_dir: StateDirOpt = DEFAULT_STATE_DIR,
    address: AddressOpt = None,
    senders: SendersOpt = None,
) -> Outcome:
    """Resend only the dead-lettered batches of a run, with their original keys."""
    from hookcast.cluster.runs import replay_run

    ledger = _known_run(state_dir, run_id)
    ray_aside = connect_if_first(address, senders)  # before the handlers: ray.init has its own
    with stop_on_signals() as signals:
        summary = _broadcast(
            replay_run,
            signals,
            run_id,
            json_out,
            ledger=ledger,
            run_id=run_id,
            url=url,
            senders=senders,
            ray_aside=ray_aside,
        )
    return outcome_of(summary)


def _known_run(state_dir: Path, run_id: str):
    """The ledger, once ``run_id`` is known to be in it (before Ray is started for it)."""
    ledger = open_ledger(state_dir)
    ledger.get_run(run_id)
    return ledger


def _broadcast(
    start: Callable[..., RunSummary],
    signals: StopSignals,
    label: str,
    json_out: bool,
    progress_lines: bool = False,
    **arguments: object,
) -> RunSummary:
    """Run a broadcast with a progress bar and its summary (or only the summary object with
    --json, or progress lines for a reader of the output)."""

    stop_options = signals.options()
    if progress_lines:
        from hookcast.cluster.report import summary_line

        summary = run_with_progress_lines(start, stop_options, **arguments)
        print(summary_line(summary), flush=True)
        return summary
    summary = run_with_progress(start, stop_options, label, json_out, **arguments)
    if json_out:
        output.print_json(summary.to_dict())
    else:
        show_summary(summary)
    return summary
