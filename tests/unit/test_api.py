"""The Python API without Ray: a job from a file or from text, its check, its errors."""

from __future__ import annotations

from pathlib import Path

import pytest

import hookcast
from hookcast.cluster.testbed.synth import write_audience


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
    for name in ("load_job", "load_job_text", "validate", "run", "resume", "replay"):
        assert callable(getattr(hookcast, name)), name
    with pytest.raises(AttributeError):
        hookcast.no_such_thing  # noqa: B018


def test_the_package_exports_exactly_the_api() -> None:
    from hookcast import api

    assert hookcast.__all__ == ["__version__", *api.__all__]
