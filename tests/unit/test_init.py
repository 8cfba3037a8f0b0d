"""`hookcast init`: a starter job that validates as written, holds every key of the model,
and whose commented values are the model's defaults."""

from __future__ import annotations

import json
import re
import typing
from pathlib import Path

import jsonschema
import pyarrow.parquet as pq
import pytest
import yaml
from pydantic import BaseModel
from typer.testing import CliRunner

from hookcast.actors.signing import new_secret
from hookcast.cli.app import app
from hookcast.cli.init import AUTH_ID, SAMPLE_CONTACTS, SINK_URL, SKIPPED
from hookcast.cli.schema import job_schema
from hookcast.cluster.job import load_job_text
from hookcast.cluster.job_model import JobSpec
from hookcast.cluster.testbed.synth import write_audience

runner = CliRunner()
SCHEMA_LINE = "# yaml-language-server: $schema=hookcast-job.schema.json"
NAME_RULE = JobSpec.model_json_schema()["properties"]["name"]["allowed"]
# A commented key (`# key: value`, `#   key:`), not a note: what uncommenting a block restores.
COMMENTED_KEY = re.compile(r"^(\s*)# (\s*[A-Za-z_][\w-]*:(?: .*)?)$")


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def invoke(*args: str):
    return runner.invoke(app, list(args))


def uncommented(text: str) -> str:
    """The starter with every commented key uncommented (the header's notes left alone)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("name:"))
    body = [COMMENTED_KEY.sub(r"\1\2", line) for line in lines[start:]]
    return "\n".join([*lines[:start], *body]) + "\n"


def model_keys(model: type[BaseModel], path: str = "") -> set[str]:
    """Every dotted key of ``model`` (``*`` for an id in a mapping of models)."""
    keys = set()
    for name, field in model.model_fields.items():
        dotted = f"{path}.{field.alias or name}" if path else field.alias or name
        keys.add(dotted)
        kinds = [field.annotation, *typing.get_args(field.annotation)]
        for kind in kinds:
            if isinstance(kind, type) and issubclass(kind, BaseModel):
                star = typing.get_origin(field.annotation) is dict
                keys |= model_keys(kind, f"{dotted}.*" if star else dotted)
                if star:
                    keys.add(f"{dotted}.*")
    return keys


def written_keys(tree: dict, path: str = "") -> set[str]:
    keys = set()
    for key, value in tree.items():
        dotted = f"{path}.{key}" if path else key
        if path == "authorizations":
            dotted = f"{path}.*"
        keys.add(dotted)
        if isinstance(value, dict) and dotted not in ("webhook.headers",):
            keys |= written_keys(value, dotted)
    return keys


def test_with_sample_it_validates_and_previews_as_written(tmp_path: Path) -> None:
    made = invoke("init", "shop", "--sample")
    assert made.exit_code == 0, made.output
    text = (tmp_path / "shop.yaml").read_text()
    assert text.splitlines()[0] == SCHEMA_LINE
    assert yaml.safe_load(text)["audience"] == {"source": "data/shop-sample.parquet"}
    assert pq.read_metadata(tmp_path / "data/shop-sample.parquet").num_rows == SAMPLE_CONTACTS

    checked = invoke("validate", "shop.yaml")
    assert checked.exit_code == 0, checked.output
    assert "shop.yaml is valid: 1,000 contacts in 2 batches of up to 500" in checked.stdout
    shown = invoke("preview", "shop.yaml")
    assert shown.exit_code == 0, shown.output
    assert shown.stdout.startswith(f"POST {SINK_URL}\n")
    assert "audience: 1,000 contacts in 2 batches of up to 500" in shown.stdout
    jsonschema.Draft202012Validator(job_schema()).validate(yaml.safe_load(text))


def test_without_sample_it_validates_once_its_audience_exists(tmp_path: Path) -> None:
    assert invoke("init", "crm-sync").exit_code == 0
    missing = invoke("validate", "crm-sync.yaml")
    assert missing.exit_code == 2
    assert "data/contacts.parquet does not exist" in missing.stderr
    write_audience(tmp_path / "data/contacts.parquet", 30)
    checked = invoke("validate", "crm-sync.yaml")
    assert checked.exit_code == 0, checked.output
    assert "30 contacts in 1 batches" in checked.stdout


def test_secrets_and_the_real_url_are_environment_references(tmp_path: Path) -> None:
    assert invoke("init", "shop-eu").exit_code == 0
    text = (tmp_path / "shop-eu.yaml").read_text()
    assert '"${SHOP_EU_WEBHOOK_URL}"' in text
    assert '  # headers: {X-Api-Key: "${SHOP_EU_API_KEY}"}' in text
    assert '  #   secret: "${HOOKCAST_SIGNING_SECRET}"' in text
    assert not re.search(r"whsec_\w", text)


def test_every_key_of_the_model_is_there_and_commented_ones_hold_the_defaults(
    tmp_path: Path,
) -> None:
    assert invoke("init", "shop", "--sample").exit_code == 0
    text = (tmp_path / "shop.yaml").read_text()
    full = uncommented(text)
    assert written_keys(yaml.safe_load(full)) == model_keys(JobSpec) - SKIPPED

    env = {"SHOP_API_KEY": "key-1", "HOOKCAST_SIGNING_SECRET": new_secret()}
    everything = load_job_text(full, tmp_path / "shop.yaml", env=env).spec
    as_written = load_job_text(text, tmp_path / "shop.yaml", env={}).spec
    for key in JobSpec.model_fields:
        if key not in ("webhook", "authorizations"):
            assert getattr(everything, key) == getattr(as_written, key), key
    defaults = as_written.webhook.model_dump()
    for key, value in everything.webhook.model_dump().items():
        if key not in ("headers", "signing", "tls"):  # examples, absent by default
            assert value == defaults[key], f"webhook.{key}"
    assert everything.authorizations[AUTH_ID].url.startswith("https://")


def test_it_refuses_to_overwrite_unless_forced(tmp_path: Path) -> None:
    job = tmp_path / "shop.yaml"
    job.write_text("keep me\n")
    refused = invoke("init", "shop")
    assert refused.exit_code == 2
    assert "shop.yaml exists: give --force to overwrite it" in refused.stderr
    assert job.read_text() == "keep me\n"
    assert invoke("init", "shop", "--force").exit_code == 0
    assert job.read_text().startswith(SCHEMA_LINE)


def test_it_refuses_to_overwrite_a_sample_unless_forced(tmp_path: Path) -> None:
    sample = tmp_path / "data/shop-sample.parquet"
    sample.parent.mkdir()
    sample.write_bytes(b"mine")
    refused = invoke("init", "shop", "--sample")
    assert refused.exit_code == 2
    assert f"{Path('data/shop-sample.parquet')} exists" in refused.stderr
    assert sample.read_bytes() == b"mine" and not (tmp_path / "shop.yaml").exists()
    assert invoke("init", "shop", "--sample", "--force").exit_code == 0
    assert pq.read_metadata(sample).num_rows == SAMPLE_CONTACTS


@pytest.mark.parametrize("name", ["Shop", "_shop", "shop eu", "a" * 64, "shop.eu"])
def test_a_bad_name_is_refused_with_the_models_rule(tmp_path: Path, name: str) -> None:
    refused = invoke("init", name)
    assert refused.exit_code == 2
    assert f"{name!r} cannot be a job name: {NAME_RULE}." in refused.stderr
    assert list(tmp_path.iterdir()) == []


def test_json_says_what_was_written(tmp_path: Path) -> None:
    (tmp_path / "jobs").mkdir()
    made = invoke("init", "shop", "--sample", "--output", "jobs", "--json")
    assert made.exit_code == 0, made.output
    assert json.loads(made.stdout) == {
        "name": "shop",
        "job": str(tmp_path / "jobs/shop.yaml"),
        "source": "data/shop-sample.parquet",
        "sample": str(tmp_path / "jobs/data/shop-sample.parquet"),
        "sample_contacts": SAMPLE_CONTACTS,
    }
    checked = invoke("validate", "jobs/shop.yaml")
    assert checked.exit_code == 0, checked.output


def test_output_names_the_file_and_its_folder_is_made(tmp_path: Path) -> None:
    made = invoke("init", "shop", "-o", "new/dir/broadcast.yaml", "--json")
    assert made.exit_code == 0, made.output
    assert json.loads(made.stdout)["job"] == str(tmp_path / "new/dir/broadcast.yaml")
    assert yaml.safe_load((tmp_path / "new/dir/broadcast.yaml").read_text())["name"] == "shop"
