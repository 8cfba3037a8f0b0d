"""The Python API without Ray: a job from a file, from text or built in code, its check,
its errors."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import yaml

import hookcast
from hookcast.actors.signing import new_secret
from hookcast.cluster.testbed.synth import write_audience

URL = "http://127.0.0.1:9/h"


def test_a_job_from_text_is_checked_and_counted(tmp_path: Path) -> None:
    write_audience(tmp_path / "contacts.parquet", 1200)
    text = (
        "name: from-code\nwebhook: {url: 'http://127.0.0.1:9/h'}\n"
        "audience: {source: contacts.parquet}\nbatch_size: 500\n"
    )
    job = hookcast.load_job_text(text, tmp_path / "job.yaml")
    size = hookcast.validate(job)
    assert (size.contacts, size.batches, size.batch_size) == (1200, 3, 500)


def test_a_bad_job_raises_the_documented_error_with_its_problems(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(
        "name: x\nwebhook: {url: 'http://127.0.0.1:9/h'}\naudience: {source: a}\nbatch_size: 800\n"
    )
    with pytest.raises(hookcast.JobError) as caught:
        hookcast.load_job(path)
    assert isinstance(caught.value, hookcast.HookcastError)
    assert [key for key, _ in caught.value.problems] == ["batch_size"]


def test_the_names_the_readme_documents_are_there() -> None:
    for name in ("load_job", "load_job_text", "Job", "validate", "run", "resume", "replay"):
        assert callable(getattr(hookcast, name)), name
    with pytest.raises(AttributeError):
        hookcast.no_such_thing  # noqa: B018


def test_the_package_exports_exactly_the_api() -> None:
    from hookcast import api

    assert hookcast.__all__ == ["__version__", *api.__all__]


def test_a_job_built_in_code_is_the_job_its_text_would_be(tmp_path: Path) -> None:
    write_audience(tmp_path / "contacts.parquet", 1200)
    env = {"FROM_CODE_KEY": "key-7f3a"}
    job = hookcast.Job(
        {"name": "from-code", "batch_size": 500},
        webhook={"url": URL, "headers": {"X-Api-Key": "${FROM_CODE_KEY}"}},
        audience={"source": "contacts.parquet"},
        batch_size=400,
        base_dir=tmp_path,
        env=env,
    )
    assert isinstance(job, hookcast.LoadedJob)
    assert job.spec.batch_size == 400  # keyword arguments win over the mapping
    assert job.spec.webhook.headers == {"X-Api-Key": "key-7f3a"}
    assert job.secrets == {"key-7f3a"}
    size = hookcast.validate(job)
    assert (size.contacts, size.batches) == (1200, 3)
    from_text = hookcast.load_job_text(job.raw_text, tmp_path / "from-code.yaml", env=env)
    assert (from_text.spec, from_text.source) == (job.spec, job.source)


def test_the_stored_text_is_the_job_with_its_references_not_their_values(tmp_path: Path) -> None:
    at = dt.datetime(2031, 5, 1, 9, 30, tzinfo=dt.timezone.utc)
    job = hookcast.Job(
        name="stored",
        webhook={"url": "${STORED_URL}"},
        audience={"source": Path("data") / "c.parquet"},
        payload={"identities": ("wechat.openId",), "custom": {"note": "a: b # c", "n": 1.5}},
        trigger={"type": "once", "at": at},
        base_dir=tmp_path,
        env={"STORED_URL": URL},
    )
    assert job.raw_text.startswith("# built in code: hookcast.Job(...)\n")
    assert URL not in job.raw_text
    assert yaml.safe_load(job.raw_text) == {
        "name": "stored",
        "webhook": {"url": "${STORED_URL}"},
        "audience": {"source": "data/c.parquet"},
        "payload": {"identities": ["wechat.openId"], "custom": {"note": "a: b # c", "n": 1.5}},
        "trigger": {"type": "once", "at": "2031-05-01T09:30:00+00:00"},
    }
    # What resume and replay do with a run's stored text and path.
    again = hookcast.load_job_text(job.raw_text, job.path, env={"STORED_URL": URL})
    assert (again.spec, again.source, again.path) == (job.spec, job.source, job.path)


def test_relative_paths_are_relative_to_base_dir(tmp_path: Path) -> None:
    base = tmp_path / "jobs"
    job = hookcast.Job(
        name="paths",
        webhook={"url": URL},
        audience={"source": "data/*.parquet", "ids": "../vip.parquet"},
        base_dir=base,
    )
    assert job.source == str(base / "data/*.parquet")
    assert job.ids_path == str(tmp_path / "vip.parquet")
    assert job.path == base / "paths.yaml" and not job.path.exists()
    elsewhere = hookcast.Job(
        name="paths", webhook={"url": URL}, audience={"source": "/srv/c.parquet"}, base_dir=base
    )
    assert elsewhere.source == "/srv/c.parquet"


def test_a_bad_job_in_code_gets_the_messages_a_file_gets(tmp_path: Path) -> None:
    keys = {"webhook": {"url": URL}, "audience": {"source": "a"}, "batch_sise": 5}
    with pytest.raises(hookcast.JobError) as in_code:
        hookcast.Job(keys, base_dir=tmp_path)
    with pytest.raises(hookcast.JobError) as in_file:
        hookcast.load_job_text(yaml.safe_dump(keys), tmp_path / "job.yaml")
    assert [key for key, _ in in_code.value.problems] == ["name", "batch_sise"]
    assert in_code.value.problems == in_file.value.problems
    assert "did you mean batch_size?" in str(in_code.value)


def test_a_signing_secret_must_be_a_reference_in_code_too(tmp_path: Path) -> None:
    secret = new_secret()
    with pytest.raises(hookcast.JobError) as caught:
        hookcast.Job(
            name="signed",
            webhook={"url": URL, "signing": {"secret": secret}},
            audience={"source": "a"},
            base_dir=tmp_path,
        )
    assert [key for key, _ in caught.value.problems] == ["webhook.signing.secret"]
    assert secret not in str(caught.value)
    signed = hookcast.Job(
        name="signed",
        webhook={"url": URL, "signing": {"secret": "${SIGNED_SECRET}"}},
        audience={"source": "a"},
        env={"SIGNED_SECRET": secret},
    )
    assert signed.spec.webhook.signing.secret == secret and secret not in signed.raw_text


def test_a_value_no_job_file_can_hold_is_named(tmp_path: Path) -> None:
    with pytest.raises(hookcast.JobError) as caught:
        hookcast.Job(
            name="odd",
            webhook={"url": URL},
            audience={"source": "a"},
            payload={"custom": {"when": object()}},
        )
    assert [key for key, _ in caught.value.problems] == ["payload.custom.when"]
    assert "a object cannot be written in a job" in str(caught.value)
