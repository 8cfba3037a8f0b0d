"""`hookcast init NAME`: a commented starter job file that validates as written.

The keys, defaults and descriptions come from the job model (``JobSpec``), so a key added to
the model shows up here by itself. Every key but the three a job needs (``name``,
``webhook.url``, ``audience.source``) is written commented out, holding its default, so
uncommenting one changes nothing until its value is edited.
"""

from __future__ import annotations

import re
import textwrap
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from hookcast.cli import output
from hookcast.cli.options import JsonOpt, Outcome

if TYPE_CHECKING:
    from pydantic import BaseModel

SCHEMA_FILE = "hookcast-job.schema.json"  # the name `hookcast schema`'s help and README use
SINK_URL = "http://127.0.0.1:8080/hook"  # where `hookcast sink` listens by default
SAMPLE_CONTACTS = 1000
COMMENT_COLUMN = 40
LINE_WIDTH = 100

# Keys with one allowed value: nothing to choose, so not shown.
SKIPPED = frozenset({"webhook.method", "webhook.format"})
# Shown values that say more than a default would; `*` stands for an authorization id. Each
# is a YAML value, and still valid when uncommented (tests/unit/test_init.py checks both).
EXAMPLES = {
    "webhook.headers": '{X-Api-Key: "${%(env)s_API_KEY}"}',
    "webhook.signing.secret": '"${HOOKCAST_SIGNING_SECRET}"',
    "authorizations.*.url": "https://auth.example.com/oauth/token",
}
AUTH_ID = "crm"


def name_problem(name: str) -> str | None:
    """What is wrong with ``name`` as a job name, in the model's own words; None if fine."""
    from hookcast.cluster.job_model import JobSpec

    rule = JobSpec.model_json_schema()["properties"]["name"]
    if re.fullmatch(rule["pattern"], name):
        return None
    return f"{name!r} cannot be a job name: {rule['allowed']}."


def env_prefix(name: str) -> str:
    """``shop-eu`` -> ``SHOP_EU``: the stem of the environment variables the starter names."""
    prefix = re.sub(r"[^A-Z0-9]", "_", name.upper())
    return prefix if prefix[0].isalpha() else f"JOB_{prefix}"


def starter_job(name: str, source: str, *, file_name: str, source_note: str) -> str:
    """The starter job file's text for job ``name`` reading ``source``."""
    env = env_prefix(name)
    given = {
        "name": (name, None),
        "webhook.url": (SINK_URL, f'`hookcast sink` listens here; yours: "${{{env}_WEBHOOK_URL}}"'),
        "audience.source": (source, source_note),
    }
    examples = {key: value % {"env": env} for key, value in EXAMPLES.items()}
    header = [
        f"# yaml-language-server: $schema={SCHEMA_FILE}",
        f"# The hookcast job {name}. Check it: hookcast validate {file_name}",
        f"# Its first request, unsent: hookcast preview {file_name}; send it: hookcast run "
        f"{file_name}",
        "# The commented keys hold their defaults: uncomment one to change it. Every key with",
        f"# its bounds: hookcast schema (--out {SCHEMA_FILE} writes the file the first line",
        '# points editors at). "${NAME}" is read from the environment when the job is loaded:',
        "# keep secrets there, as the job's text is stored with each run.",
    ]
    from hookcast.cluster.job_model import JobSpec

    lines = [_aligned(line, note) for line, note in _lines(JobSpec, "", 0, None, given, examples)]
    return "\n".join([*header, *lines]) + "\n"


def _lines(
    model: type[BaseModel],
    path: str,
    indent: int,
    hash_at: int | None,
    given: dict[str, tuple[str, str | None]],
    examples: dict[str, str],
) -> Iterator[tuple[str, str | None]]:
    """(line, comment) for every key of ``model``; ``hash_at`` is the column of the ``#`` of
    a commented block (None: not commented yet)."""
    for name, field in model.model_fields.items():
        key = field.alias or name
        dotted = f"{path}.{key}" if path else key
        if dotted in SKIPPED:
            continue
        needed = dotted in given or any(g.startswith(f"{dotted}.") for g in given)
        at = hash_at if hash_at is not None or needed else indent
        lead = " " * indent if at is None else " " * at + "# " + " " * (indent - at)
        nested, by_id = _nested(field.annotation)
        if dotted in given:
            value, note = given[dotted]
            yield f"{lead}{key}: {_flow(value)}", note or field.description
        elif nested is not None:
            yield f"{lead}{key}:", field.description
            inner = f"{dotted}.*" if by_id else dotted
            if by_id:
                note = f"an id of yours: #{{auth.{AUTH_ID}.<key>}} names its token"
                yield f"{lead}  {AUTH_ID}:", note
            depth = indent + (4 if by_id else 2)
            yield from _lines(nested, inner, depth, at, given, examples)
        else:
            shown = examples.get(dotted)
            if shown is None:
                shown = _flow(field.get_default(call_default_factory=True))
            yield f"{lead}{key}: {shown}".rstrip(), field.description


def _nested(annotation: Any) -> tuple[type[BaseModel] | None, bool]:
    """The model a key holds (``X``, ``X | None``), or holds by id (``dict[str, X]``)."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is dict and _is_model(args[-1]):
        return args[-1], True
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        models = [a for a in args if _is_model(a)]
        return (models[0] if len(models) == 1 else None), False
    return (annotation if _is_model(annotation) else None), False


def _is_model(kind: Any) -> bool:
    from pydantic import BaseModel  # here: the command line does not pay for it at start

    return isinstance(kind, type) and issubclass(kind, BaseModel)


def _flow(value: Any) -> str:
    """``value`` as a YAML flow value on one line; None as nothing (the key is null)."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    import yaml

    if isinstance(value, tuple):
        value = list(value)
    text = yaml.safe_dump(value, default_flow_style=True, allow_unicode=True, width=10**6)
    return text.removesuffix("\n...\n").strip()


def _aligned(line: str, note: str | None) -> str:
    """``line`` with ``note`` as a comment beside it, or above it when that is too long."""
    if not note:
        return line
    beside = f"{line.ljust(COMMENT_COLUMN - 2)}  # {note}"
    if len(beside) <= LINE_WIDTH:
        return beside
    # Above a commented key, one more "# ": uncommenting its block leaves the note a comment.
    lead = re.match(r"\s*(?:# )?\s*", line).group()
    lead = lead if lead.endswith("# ") else f"{lead}# "
    above = textwrap.wrap(note, LINE_WIDTH - len(lead))
    return "\n".join([*(f"{lead}{part}" for part in above), line])


def init(
    name: Annotated[str, typer.Argument(help="The job's name (its file is NAME.yaml).")],
    sample: Annotated[
        bool,
        typer.Option(
            "--sample",
            help=f"Also write {SAMPLE_CONTACTS:,} sample contacts to data/NAME-sample.parquet "
            "(beside the job file) and send the job to them.",
        ),
    ] = False,
    out: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="The job file to write (default: ./NAME.yaml)."),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Overwrite the job file and sample if they exist.")
    ] = False,
    json_out: JsonOpt = False,
) -> Outcome:
    """Write a commented starter job file that validates as written."""
    problem = name_problem(name)
    if problem is not None:
        output.error(problem)
        return Outcome.REJECTED
    job_path = out or Path(f"{name}.yaml")
    if job_path.is_dir():
        job_path = job_path / f"{name}.yaml"
    source = f"data/{name}-sample.parquet" if sample else "data/contacts.parquet"
    sample_path = job_path.parent / source if sample else None
    for path in (job_path, sample_path):
        if path is not None and path.exists() and not force:
            output.error(f"{path} exists: give --force to overwrite it, or another --output.")
            return Outcome.REJECTED
    note = (
        f"{SAMPLE_CONTACTS:,} sample contacts, from hookcast init --sample"
        if sample
        else "your contacts: a parquet file, folder or glob, relative to this file"
    )
    text = starter_job(name, source, file_name=str(job_path), source_note=note)
    _check(text, job_path)
    try:
        if sample_path is not None:
            from hookcast.cluster.testbed.synth import write_audience

            sample_path.parent.mkdir(parents=True, exist_ok=True)
            write_audience(sample_path, SAMPLE_CONTACTS)
        job_path.parent.mkdir(parents=True, exist_ok=True)
        with job_path.open("w" if force else "x", encoding="utf-8") as file:
            file.write(text)
    except FileExistsError:
        output.error(f"{job_path} exists: give --force to overwrite it, or another --output.")
        return Outcome.REJECTED
    except OSError as exc:
        output.error(f"cannot write {exc.filename or job_path}: {exc.strerror}.")
        return Outcome.REJECTED
    _report(name, job_path, source, sample_path, json_out)
    return Outcome.SUCCEEDED


def _check(text: str, job_path: Path) -> None:
    """The starter goes through the loader before it is written (no environment: every
    ``${NAME}`` in it is commented): a JobError here is a bug in the starter."""
    from hookcast.cluster.job import load_job_text

    load_job_text(text, job_path, env={})


def _report(name: str, job: Path, source: str, sample: Path | None, json_out: bool) -> None:
    if json_out:
        output.print_json(
            {
                "name": name,
                "job": str(job.resolve()),
                "source": source,
                "sample": None if sample is None else str(sample.resolve()),
                "sample_contacts": None if sample is None else SAMPLE_CONTACTS,
            }
        )
        return
    from rich.markup import escape

    shown = escape(str(job))
    output.console.print(f"[green]✓[/] wrote {shown}: the job {name}, reading {escape(source)}")
    if sample is not None:
        output.console.print(
            f"[green]✓[/] wrote {escape(str(sample))}: {SAMPLE_CONTACTS:,} sample contacts"
        )
    output.console.print(
        f"next: hookcast validate {shown}  ·  hookcast preview {shown}  ·  "
        f"hookcast sink, then hookcast run {shown}",
        soft_wrap=True,
    )
