"""`hookcast schema`: the job file's JSON Schema, for editors that complete and check YAML."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from hookcast.cli import output
from hookcast.cli.options import Outcome

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def job_schema() -> dict[str, Any]:
    """The JSON Schema of a job file, from the model every job is validated by: every key
    with its description, default and bounds (``allowed`` says it in words)."""
    from hookcast.cluster.job_model import JobSpec

    schema = JobSpec.model_json_schema()
    return {"$schema": SCHEMA_DIALECT, **schema, "title": "hookcast job"}


def schema(
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write it to this file (default: stdout).")
    ] = None,
) -> Outcome:
    """Print the job file's JSON Schema. Save it and point your editor at it with a first
    line `# yaml-language-server: $schema=hookcast-job.schema.json` in the job file."""
    text = json.dumps(job_schema(), indent=2, ensure_ascii=False) + "\n"
    if out is None:
        sys.stdout.write(text)
        return Outcome.SUCCEEDED
    try:
        out.write_text(text, encoding="utf-8")
    except OSError as exc:
        output.error(f"cannot write the schema to {out}: {exc.strerror}; give another --out.")
        return Outcome.REJECTED
    output.console.print(f"wrote the job file's JSON Schema to {out}")
    return Outcome.SUCCEEDED
