"""The trigger is checked once, by the job model, and compiled there; ``job_schedule`` adds
only the clock checks a scheduling needs."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from hookcast.actors.errors import JobFileError, TriggerError
from hookcast.cluster.compile import authorizations, job_schedule
from hookcast.cluster.job import LoadedJob, load_job_text

NOW = datetime(2026, 2, 1, 12, 0, tzinfo=UTC)


def job(tmp_path: Path, trigger: str, extra: str = "") -> LoadedJob:
    text = (
        "name: j\nwebhook: {url: 'https://hooks.example.com/in'}\n"
        f"audience: {{source: a.parquet}}\ntrigger: {trigger}\n{extra}"
    )
    return load_job_text(text, tmp_path / "job.yaml", env={})


def test_a_bad_cron_is_a_job_file_error_naming_the_key(tmp_path):
    with pytest.raises(JobFileError) as info:
        job(tmp_path, "{type: recurring, cron: '61 * * * *'}")
    assert str(info.value).endswith(
        '\n- trigger.cron "61 * * * *" is not a valid 5-field cron: minute 61 is out of range 0-59.'
    )
    assert info.value.problems[0][0] == "trigger.cron"


def test_a_bad_type_gets_the_triggers_own_message(tmp_path):
    with pytest.raises(JobFileError) as info:
        job(tmp_path, "{type: weekly}")
    assert '- trigger.type "weekly" is not allowed: give immediate, once or recurring.' in str(
        info.value
    )


def test_job_schedule_is_the_models_schedule_and_checks_the_clock(tmp_path):
    once = job(tmp_path, "{type: once, at: '2026-01-01T09:00:00Z'}")
    stored = job_schedule(once, now=None)
    assert stored is once.spec.trigger.schedule
    assert stored.at == datetime(2026, 1, 1, 9, 0, tzinfo=UTC)
    with pytest.raises(TriggerError) as info:
        job_schedule(once, now=NOW)
    assert str(info.value).startswith("trigger.at 2026-01-01T09:00:00+00:00 is in the past")


def test_recurring_window_in_the_past_is_rejected_only_with_a_clock(tmp_path):
    loaded = job(tmp_path, "{type: recurring, cron: '0 9 * * *', end: '2026-01-15T00:00Z'}")
    assert job_schedule(loaded, now=None).cron == "0 9 * * *"
    with pytest.raises(TriggerError, match=r"^trigger\.end 2026-01-15T00:00:00"):
        job_schedule(loaded, now=NOW)


def test_authorizations_are_converted_in_order_without_checks(tmp_path):
    loaded = job(
        tmp_path,
        "{type: immediate}",
        "authorizations:\n  b: {url: 'https://b/t', method: get}\n  a: {url: 'https://a/t'}\n",
    )
    configs = authorizations(loaded)
    assert [(c.id, c.method) for c in configs] == [("b", "GET"), ("a", "POST")]
    assert all(len(c.fingerprint) == 64 for c in configs)
