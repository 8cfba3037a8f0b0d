"""The `hookcast` command line: the app, its app-wide options and the exit table.

Each command group lives in a module of its own (`broadcast`, `runs`, `schedules`, `auth`,
`cluster`, `testbed`); a command either returns how it ended (an `Outcome`, or a run's
status) or raises a `HookcastError`, and the table below alone turns either into the exit
code. A HookcastError is shown as its message, never a traceback; any other exception is a
bug and keeps its traceback (exit 1).
"""

from __future__ import annotations

import logging
import sys
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from hookcast.actors.errors import (
    ClusterError,
    HookcastError,
    JobError,
    LedgerError,
    LedgerUnavailableError,
    RunAbortedError,
    RunNotFoundError,
)
from hookcast.cli import (
    auth,
    broadcast,
    cluster,
    keys,
    output,
    runs,
    schedules,
    testbed,
)
from hookcast.cli import init as init_cli
from hookcast.cli import schema as schema_cli
from hookcast.cli.options import Outcome, settings

EXIT_OK = 0  # every contact delivered (or the command did what it was asked)
EXIT_FAILED = 1  # the run finished with dead-lettered or skipped batches; any other error
EXIT_REJECTED = 2  # bad job or input: nothing was sent
EXIT_INTERRUPTED = 3  # stopped part-way (Ctrl-C, SIGTERM, an aborted run): resumable
EXIT_NO_CLUSTER = 4  # no Ray cluster answers at --address
EXIT_LEDGER = 5  # the state dir's ledger cannot be opened or written: sending stopped

EXIT_BY_OUTCOME: dict[Outcome, int] = {
    Outcome.SUCCEEDED: EXIT_OK,
    Outcome.FAILED: EXIT_FAILED,
    Outcome.REJECTED: EXIT_REJECTED,
    Outcome.INTERRUPTED: EXIT_INTERRUPTED,
}
# The most specific class of an error decides (LedgerUnavailableError before LedgerError).
EXIT_BY_ERROR: dict[type[HookcastError], int] = {
    HookcastError: EXIT_FAILED,
    JobError: EXIT_REJECTED,
    LedgerError: EXIT_REJECTED,  # a run in the wrong state: still running, nothing to resume
    RunNotFoundError: EXIT_REJECTED,
    LedgerUnavailableError: EXIT_LEDGER,
    ClusterError: EXIT_NO_CLUSTER,
    RunAbortedError: EXIT_INTERRUPTED,
}


def exit_code_for(error: HookcastError) -> int:
    """The exit code of a command that raised ``error``."""
    return next(EXIT_BY_ERROR[cls] for cls in type(error).__mro__ if cls in EXIT_BY_ERROR)


def exit_code_of(result: Any) -> int:
    """The exit code of a command that returned ``result``: an `Outcome` or a run status,
    an exit code recorded elsewhere (a submitted run's), or None (done: 0)."""
    if result is None:
        return EXIT_OK
    if isinstance(result, bool) or not isinstance(result, int | str):
        raise TypeError(f"a command returned {result!r}, which has no exit code")
    if isinstance(result, str):
        return EXIT_BY_OUTCOME[Outcome(result)]
    return result


def error_text(error: HookcastError) -> str:
    """The message a user reads: the error's own, with one bullet per problem it lists that
    the message does not already say."""
    text = str(error)
    problems = getattr(error, "problems", ())
    if all(message in text for _, message in problems):
        return text
    bullets = [
        f"- {message}" if not key or message.startswith(key) else f"- {key}: {message}"
        for key, message in problems
    ]
    return "\n".join([text.splitlines()[0] if text else "the job was rejected:", *bullets])


class _ExitByTable(TyperGroup):
    """The app's group: every command's result and HookcastError go through the table."""

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            result = super().invoke(ctx)
        except HookcastError as exc:
            code = exit_code_for(exc)
            output.error(error_text(exc))
            if settings.error_lines:
                from hookcast.cluster.report import RunError, error_line

                print(error_line(RunError(type(exc).__name__, str(exc), code)), flush=True)
            raise typer.Exit(code) from None
        code = exit_code_of(result)
        if code != EXIT_OK:
            raise typer.Exit(code)
        return result


app = typer.Typer(
    name="hookcast",
    cls=_ExitByTable,
    help="Broadcast an audience to a webhook, up to 500 contacts per request, on Ray.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)


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
    settings.verbose, settings.dashboard, settings.error_lines = verbose, dashboard, False


for command in (
    broadcast.validate,
    broadcast.preview,
    broadcast.run,
    broadcast.resume,
    broadcast.replay,
):
    app.command()(command)
app.add_typer(runs.runs_app, name="runs")
app.add_typer(schedules.schedule_app, name="schedule")
app.add_typer(schedules.scheduler_app, name="scheduler")
app.add_typer(auth.auth_app, name="auth")
app.add_typer(keys.keys_app, name="keys")
for command in (
    testbed.loadtest,
    cluster.status,
    cluster.submit,
    testbed.sink,
    testbed.demo,
    schema_cli.schema,
    init_cli.init,
):
    app.command()(command)


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
