"""bench/coordinator_rate.py on a tiny run: every batch delivered in the ledger, every
figure positive, and the fakes left as the other tests expect them."""

from __future__ import annotations

import json

import pytest

from bench import coordinator_rate

from . import fakes

BATCHES = 50


@pytest.mark.parametrize("rps", [None, 1e9], ids=["no-rate-limit", "rate-limited"])
def test_measure_delivers_every_batch_and_reports_positive_figures(rps) -> None:
    result = coordinator_rate.measure(BATCHES, rps=rps)

    assert result["succeeded"]
    assert result["delivered_batches"] == BATCHES
    assert result["delivered_contacts"] == BATCHES * coordinator_rate.CONTACTS
    assert result["requests"] == result["endpoint_requests"] == BATCHES
    for figure in ("wall_s", "cpu_s", "requests_per_s", "cpu_us_per_request"):
        assert result[figure] > 0, figure
    if rps is not None:
        assert result["sender_calls"] == BATCHES  # one request a call under a rate
    assert fakes.CONTACTS_PER_BATCH == 10  # the patch for 500-contact batches was undone


def test_main_prints_one_json_object_with_the_medians(capsys) -> None:
    assert coordinator_rate.main(["--batches", "20", "--repeats", "2", "--json"]) == 0

    out = json.loads(capsys.readouterr().out)
    assert out["all_delivered"]
    assert set(out["median"]) == set(coordinator_rate.VARIANTS)
    assert all(len(runs) == 2 for runs in out["runs"].values())
    assert all(m["requests_per_s"] > 0 for m in out["median"].values())
