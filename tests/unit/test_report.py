"""Progress and summary lines: what `run --progress-lines` writes and `submit --follow` reads."""

from __future__ import annotations

from hookcast.cluster.coordinator import Progress, RunSummary
from hookcast.cluster.report import LineSplitter, parse_line, progress_line, summary_line, throttled


def test_progress_and_summary_lines_round_trip() -> None:
    progress = Progress(contacts=5000, batches=10, delivered_contacts=1500, requests=4)
    summary = RunSummary(
        run_id="r-1",
        job="j",
        status="succeeded",
        contacts=5000,
        batches=10,
        delivered_batches=10,
        failed_batches=0,
        skipped_batches=0,
        delivered_contacts=5000,
        retries=1,
        requests=11,
        duration_s=1.5,
        contacts_per_s=3333.3,
        requests_per_s=7.3,
    )
    assert parse_line(progress_line(progress)) == progress
    assert parse_line(summary_line(summary)) == summary
    assert "\n" not in progress_line(progress) + summary_line(summary)


def test_other_and_garbled_lines_are_not_progress() -> None:
    for line in (
        "",
        "2026-11-28 INFO worker.py -- Connecting to existing Ray cluster",
        "hookcast-progress {not json",
        'hookcast-progress {"contacts": 1}',  # a field missing
        'hookcast-summary {"run_id": "x", "surprise": 1}',
        ' hookcast-progress {"contacts": 1, "batches": 1}',  # not at the line start
    ):
        assert parse_line(line) is None, line


def test_line_splitter_joins_lines_cut_across_reads() -> None:
    lines = LineSplitter()
    assert lines.feed("hookcast-prog") == []
    assert lines.feed('ress {"a": 1}\nsecond') == ['hookcast-progress {"a": 1}']
    assert lines.feed(" line\n\nthird") == ["second line", ""]
    assert lines.rest() == ["third"]
    assert lines.rest() == []


def test_throttled_reports_at_most_once_per_interval() -> None:
    seen: list[str] = []
    report = throttled(seen.append, every_s=3600)
    for delivered in range(5):
        report(Progress(contacts=5, batches=1, delivered_contacts=delivered))
    assert len(seen) == 1 and parse_line(seen[0]).delivered_contacts == 0
