"""`hookcast keys new`: a fresh signing secret for a job's ``webhook.signing``."""

from __future__ import annotations

import sys

import typer

from hookcast.cli import output
from hookcast.cli.options import JsonOpt, Outcome

keys_app = typer.Typer(
    help="Signing secrets: the whsec_ keys requests are signed with (Standard Webhooks).",
    no_args_is_help=True,
)


@keys_app.command("new")
def keys_new(json_out: JsonOpt = False) -> Outcome:
    """Print a fresh signing secret (whsec_ and 32 random bytes) on stdout, one line.

    Keep it out of the job file: put it in an environment variable, say
    HOOKCAST_SIGNING_SECRET, and write webhook.signing.secret: "${HOOKCAST_SIGNING_SECRET}".
    The receiver verifies with the same secret (`hookcast sink --secret`, or its
    HOOKCAST_SINK_SECRET).
    """
    from hookcast.actors.signing import new_secret

    secret = new_secret()
    if json_out:
        output.print_json({"secret": secret})
    else:
        # Plain stdout, not the rich console: nothing may wrap or style what is copied.
        sys.stdout.write(secret + "\n")
        sys.stdout.flush()
    return Outcome.SUCCEEDED
