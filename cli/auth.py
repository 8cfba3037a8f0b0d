"""`hookcast auth test`: each authorization's token endpoint asked once, tokens redacted."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

import typer

from hookcast.cli import output
from hookcast.cli.options import AuthOpt, JobArg, JsonOpt, Outcome

auth_app = typer.Typer(
    help="Authorizations: the token endpoints wildcards draw on.", no_args_is_help=True
)


@auth_app.command("test")
def auth_test(
    job: JobArg,
    auth: AuthOpt = None,
    only: Annotated[str | None, typer.Option("--id", help="Only this authorization.")] = None,
    json_out: JsonOpt = False,
) -> Outcome:
    """Fetch each authorization's token once and show what came back (tokens redacted)."""
    from hookcast.cluster.job import load_job
    from hookcast.cluster.tokens import test_authorizations

    reports = test_authorizations(load_job(job, auth_file=auth), only)
    if json_out:
        output.print_json([asdict(r) for r in reports])
    elif not reports:
        output.console.print(f"{job} defines no authorizations")
    else:
        for report in reports:
            output.print_auth_report(report)
    # A token endpoint that refuses or answers without a usable token: the job's
    # authorization is wrong, as a run would find before sending anything.
    return Outcome.SUCCEEDED if all(r.ok for r in reports) else Outcome.REJECTED
