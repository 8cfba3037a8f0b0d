"""A run's counters reach Ray's Prometheus export and agree with the receiver."""

from __future__ import annotations

import re
import time
import urllib.request
from pathlib import Path

import pytest

from hookcast.cluster.job import load_job
from hookcast.cluster.ledger import Ledger
from hookcast.cluster.runs import start_run
from hookcast.cluster.testbed.sink import OK, Reply, Sink


def _scrape(port: int, name: str, job: str) -> dict[str, float]:
    """Every series of ``name`` for ``job``: labels text -> value."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    series = {}
    for line in text.splitlines():
        if line.startswith(name + "{") and f'job="{job}"' in line:
            labels, value = line.rsplit(" ", 1)
            series[labels] = float(value)
    return series


def test_counters_match_what_the_receiver_counted(
    metrics_port: int, write_job, ledger: Ledger, audience_5k: Path
) -> None:
    seen: set[str] = set()

    def first_attempt_fails(request):
        if request.key not in seen:
            seen.add(request.key)
            if len(seen) <= 3:
                return Reply(status=503)
        return OK

    with Sink(behaviour=first_attempt_fails) as receiver:
        job = load_job(write_job(receiver.url, audience_5k, name="metrics-job"))
        start_run(job, ledger)
        delivered = receiver.recorder.contacts
        requests = receiver.recorder.requests
    assert (delivered, requests) == (5000, 13)

    deadline = time.monotonic() + 40  # Ray exports every ~10 s
    contacts = retries = sent = 0.0
    while time.monotonic() < deadline:
        contacts = sum(
            _scrape(metrics_port, "ray_hookcast_contacts_delivered_total", "metrics-job").values()
        )
        retries = sum(_scrape(metrics_port, "ray_hookcast_retries_total", "metrics-job").values())
        sent = sum(_scrape(metrics_port, "ray_hookcast_requests_total", "metrics-job").values())
        if contacts == delivered and sent == requests:
            break
        time.sleep(1)
    assert contacts == delivered
    assert sent == requests
    assert retries == 3
    outcomes = _scrape(metrics_port, "ray_hookcast_requests_total", "metrics-job")
    by_outcome = {re.search(r'outcome="(\w+)"', k).group(1): v for k, v in outcomes.items()}
    assert by_outcome == pytest.approx({"delivered": 10, "retry": 3})
