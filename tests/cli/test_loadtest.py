"""`hookcast loadtest` against the built-in receiver (reduced from the README's 10 million)."""

from __future__ import annotations

import re
from pathlib import Path

import orjson
from typer.testing import CliRunner

from hookcast.cli.app import app

runner = CliRunner()


def test_loadtest_of_200000_contacts_verifies_every_contact_and_writes_a_chart(
    tmp_path: Path,
) -> None:
    report = tmp_path / "report.html"
    result = runner.invoke(
        app,
        [
            "loadtest",
            "--contacts",
            "200000",
            "--fail-rate",
            "0.05",
            "--json",
            "--state-dir",
            str(tmp_path / "state"),
            "--report",
            str(report),
        ],
    )
    assert result.exit_code == 0, result.output
    outcome = orjson.loads(result.stdout)
    assert outcome["verified"] is True and outcome["lost_contacts"] == 0
    assert outcome["received"]["unique_ids"] == 200_000
    assert outcome["received"]["duplicate_ids"] == 0
    assert outcome["summary"]["retries"] > 0  # 5% of answers were 500s
    assert set(outcome["latency_ms"]) == {"p50", "p95", "p99"}
    assert outcome["latency_ms"]["p50"] <= outcome["latency_ms"]["p99"]
    page = report.read_text()
    [points] = re.findall(r'points="([^"]+)"', page)
    assert len(points.split()) >= 1
    assert "<th>verified</th><td>yes</td>" in page and "200,000" in page
