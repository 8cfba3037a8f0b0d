"""The provider's description as Airflow checks it, and the operator's logic without Airflow
running: which runs fail the task, and the job text a ``url`` override makes. No Ray."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from hookcast.actors.errors import JobError
from hookcast.airflow import get_provider_info
from hookcast.airflow.broadcast import check_url, failure, jobs_api, with_url
from hookcast.cluster.coordinator import RunSummary


def test_provider_info_is_valid_for_airflow() -> None:
    # Found without importing airflow (its import reads and writes AIRFLOW_HOME).
    spec = importlib.util.find_spec("airflow")
    assert spec is not None and spec.submodule_search_locations
    schema_path = Path(spec.submodule_search_locations[0]) / "provider_info.schema.json"
    info = get_provider_info()
    jsonschema.validate(info, json.loads(schema_path.read_text()))
    assert info["package-name"] == "hookcast"  # Airflow requires the distribution's name
    modules = [m for entry in info["operators"] for m in entry["python-modules"]]
    assert modules == ["hookcast.airflow.operators"]
    assert all(importlib.util.find_spec(m) is not None for m in modules)


def test_importing_hookcast_does_not_import_airflow(tmp_path: Path) -> None:
    probe = "import sys, hookcast, hookcast.airflow; print('airflow' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"


def summary(status: str, **counts: int | str) -> RunSummary:
    base = dict(
        run_id="job-1",
        job="job",
        status=status,
        contacts=1000,
        batches=4,
        delivered_batches=4,
        failed_batches=0,
        skipped_batches=0,
        delivered_contacts=1000,
        retries=0,
        requests=4,
        duration_s=1.0,
        contacts_per_s=1000.0,
        requests_per_s=4.0,
    )
    return RunSummary(**{**base, **counts})


def test_a_run_that_delivered_everything_passes() -> None:
    assert failure(summary("succeeded")) is None


def test_dead_letters_fail_the_task_unless_allowed() -> None:
    dead = summary("failed", delivered_batches=3, failed_batches=1, delivered_contacts=750)
    message = failure(dead)
    assert message is not None
    assert "dead-lettered 1 of 4 batches (250 contacts not delivered)" in message
    assert "hookcast replay job-1" in message
    assert failure(dead, allow_dead_letters=True) is None


def test_batches_skipped_after_410_fail_even_when_dead_letters_are_allowed() -> None:
    gone = summary(
        "failed",
        delivered_batches=0,
        failed_batches=1,
        skipped_batches=3,
        delivered_contacts=0,
        note="the endpoint answered 410 Gone at batch 0",
    )
    message = failure(gone, allow_dead_letters=True)
    assert message is not None
    assert "3 batches were never sent: the endpoint answered 410 Gone" in message
    assert "hookcast resume job-1" in message


@pytest.mark.parametrize("status", ["interrupted", "aborted"])
def test_a_run_stopped_before_the_end_fails_with_its_reason(status: str) -> None:
    stopped = summary(status, delivered_batches=1, delivered_contacts=250, note="canary said no")
    message = failure(stopped, allow_dead_letters=True)
    assert (
        message == f"run job-1 {status}: canary said no. Send the rest with: hookcast resume job-1"
    )


def test_url_override_keeps_references_and_makes_paths_absolute(tmp_path: Path) -> None:
    text = yaml.safe_dump(
        {
            "name": "coupons",
            "webhook": {
                "url": "https://hooks.example.com/coupons",
                "headers": {"X-Api-Key": "${COUPON_API_KEY}"},
                "tls": {"ca_bundle": "certs/ca.pem", "client_cert": "/etc/hookcast/cert.pem"},
            },
            "audience": {"source": "data/contacts.parquet", "ids": "s3://bucket/vip.parquet"},
        }
    )
    changed = yaml.safe_load(with_url(text, "https://staging.example.com/hook", tmp_path))
    webhook = changed["webhook"]
    assert webhook["url"] == "https://staging.example.com/hook"
    assert webhook["headers"] == {"X-Api-Key": "${COUPON_API_KEY}"}  # never expanded here
    assert webhook["tls"] == {
        "ca_bundle": str(tmp_path / "certs/ca.pem"),
        "client_cert": "/etc/hookcast/cert.pem",
    }
    assert changed["audience"] == {
        "source": str(tmp_path / "data/contacts.parquet"),
        "ids": "s3://bucket/vip.parquet",
    }


def test_a_bad_url_override_is_rejected_naming_url() -> None:
    with pytest.raises(JobError) as caught:
        check_url("https://user:s3cr3t-value@hooks.example.com/x")
    assert caught.value.problems[0][0] == "url"
    assert "s3cr3t-value" not in str(caught.value)


@pytest.mark.parametrize(
    ("address", "submitted"),
    [(None, False), ("http://head:8265", True), ("ray://head:10001", False), ("auto", False)],
)
def test_only_a_dashboard_address_goes_through_the_jobs_api(
    address: str | None, submitted: bool
) -> None:
    assert jobs_api(address) is submitted
