"""`hookcast runs` and `hookcast runs show`: past runs, read from the ledger."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

import typer

from hookcast.cli import output
from hookcast.cli.options import DEFAULT_STATE_DIR, JsonOpt, StateDirOpt, open_ledger

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
) -> None:
    """One run with its failed batches (dead-lettered, skipped, unfinished)."""
    from hookcast.cluster.ledger import BatchStatus

    ledger = open_ledger(state_dir)
    record = ledger.get_run(run_id)
    not_delivered = [s for s in BatchStatus if s != BatchStatus.DELIVERED]
    failed = ledger.batches(record.run_id, not_delivered)
    if json_out:
        output.print_json({**record.to_dict(), "failed": [asdict(b) for b in failed]})
    else:
        output.print_run(record, failed)
