"""`hookcast schema`: the JSON Schema editors check job files with agrees with the validator."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml
from typer.testing import CliRunner

from hookcast.cli.app import app
from hookcast.cli.schema import job_schema
from hookcast.cluster.testbed.demo import DEMO_JOB

README = Path(__file__).resolve().parents[2] / "README.md"


def validator() -> jsonschema.Draft202012Validator:
    schema = job_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def readme_job() -> dict:
    text = README.read_text(encoding="utf-8")
    block = re.search(r"## A job\n\n```yaml\n(.*?)```", text, re.S)
    assert block is not None
    return yaml.safe_load(block.group(1))


def test_the_readme_job_and_the_demo_job_are_valid_under_the_schema() -> None:
    check = validator()
    check.validate(readme_job())
    demo = DEMO_JOB.format(contacts=10, batch_size=5, url="http://127.0.0.1:9/h", secret_env="SIGN")
    check.validate(yaml.safe_load(demo))


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"batch_size": 800}, "batch_size"),
        ({"nmae": "x"}, "nmae"),
        ({"rate_limit": {"max_in_flight": 0}}, "max_in_flight"),
        ({"webhook": {"url": "https://x.example/h", "compression": "br"}}, "compression"),
    ],
)
def test_what_the_validator_refuses_the_schema_flags(change: dict, key: str) -> None:
    job = {**readme_job(), **change}
    errors = list(validator().iter_errors(job))
    assert errors and any(key in json.dumps(list(e.path)) + e.message for e in errors)


def test_every_key_has_a_description() -> None:
    schema = job_schema()
    for name, model in schema["$defs"].items():
        for key, field in model.get("properties", {}).items():
            assert field.get("description"), f"{name}.{key} has no description"


def test_the_command_prints_it_and_writes_it(tmp_path: Path) -> None:
    runner = CliRunner()
    printed = runner.invoke(app, ["schema"])
    assert printed.exit_code == 0
    assert json.loads(printed.stdout)["title"] == "hookcast job"
    out = tmp_path / "hookcast-job.schema.json"
    written = runner.invoke(app, ["schema", "--out", str(out)])
    assert written.exit_code == 0
    assert json.loads(out.read_text()) == job_schema()
