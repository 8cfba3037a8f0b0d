"""`hookcast runs` and `hookcast runs show`: past runs, read from the ledger."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer

from hookcast.cli import output
from hookcast.cli.options import DEFAULT_STATE_DIR, JsonOpt, Outcome, StateDirOpt, open_ledger

runs_app = typer.Typer(help="Past runs, from the ledger.", invoke_without_command=True)


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
    records = open_ledger(state_dir).list_runs(limit=limit, job=job)
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
    html: Annotated[
        bool,
        typer.Option(
            "--html",
            help="Write a one-page report instead: the summary, outcomes over time as a "
            "chart, the dead letters.",
        ),
    ] = False,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Where --html writes (default: ./<run id>.html)."),
    ] = None,
) -> Outcome | None:
    """One run with its failed batches (dead-lettered, skipped, unfinished)."""
    from hookcast.cluster.ledger import BatchStatus

    ledger = open_ledger(state_dir)
    record = ledger.get_run(run_id)
    if html:
        return _write_report(ledger, record.run_id, out or Path(f"{record.run_id}.html"), json_out)
    if out is not None:
        output.error("--out is where --html writes the report: give --html too.")
        return Outcome.REJECTED
    # A split batch is its parts, each listed under its own outcome.
    not_delivered = [s for s in BatchStatus if s not in (BatchStatus.DELIVERED, BatchStatus.SPLIT)]
    failed = ledger.batches(record.run_id, not_delivered)
    if json_out:
        output.print_json({**record.to_dict(), "failed": [asdict(b) for b in failed]})
    else:
        output.print_run(record, failed)
    return None


def _write_report(ledger, run_id: str, path: Path, json_out: bool) -> Outcome | None:
    from hookcast.cluster.html_report import write_run_report

    try:
        path = write_run_report(ledger, run_id, path).resolve()
    except OSError as exc:
        output.error(
            f"cannot write run {run_id}'s report to {path}: {exc.strerror or exc}; "
            "give another --out."
        )
        return Outcome.REJECTED
    if json_out:
        output.print_json({"html": str(path)})
    else:
        output.console.print(f"wrote run {run_id}'s report to {path}", soft_wrap=True)
    return None
