"""A run's one-page report (cluster/html_report.py), from a real ledger on tmp_path."""

from __future__ import annotations

import time
from html.parser import HTMLParser
from pathlib import Path

import pytest

from hookcast.cluster import html_report
from hookcast.cluster.html_report import bucket_width_s, outcome_buckets, write_run_report
from hookcast.cluster.ledger import (
    BatchRecord,
    BatchStatus,
    BatchTimes,
    BatchUpdate,
    Ledger,
    RunRecord,
    RunStatus,
)
from hookcast.cluster.testbed.loadtest import throughput

RUN = "coupons-20261203T100000-ab12"
SCRIPT = '<script>alert("owned")</script>'
VOID = {"meta", "br", "img", "input", "link", "hr", "rect", "line", "polyline"}


class Page(HTMLParser):
    """The parts of a page the tests read, and whether its tags balance."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.open: list[str] = []
        self.tags: list[str] = []
        self.unbalanced: list[str] = []
        self.cells: list[list[str]] = []  # every table row: its th/td texts
        self.svg_text: list[str] = []
        self._cell: list[str] | None = None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.tags.append(tag)
        if tag == "tr":
            self.cells.append([])
        if tag in ("th", "td"):
            self._cell = []
        if tag not in VOID:
            self.open.append(tag)

    def handle_startendtag(self, tag: str, attrs: list) -> None:
        self.tags.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID:
            return
        if not self.open or self.open[-1] != tag:
            self.unbalanced.append(tag)
            return
        self.open.pop()
        if tag in ("th", "td") and self._cell is not None:
            self.cells[-1].append("".join(self._cell))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        if "svg" in self.open:
            self.svg_text.append(data)

    def fact(self, name: str) -> str:
        return next(row[1] for row in self.cells if len(row) == 2 and row[0] == name)


def _plans(n: int, size: int = 500) -> list[BatchRecord]:
    return [
        BatchRecord(seq, seq * size, seq * size + size - 1, size, f"{RUN}-{seq:06d}", "planned")
        for seq in range(n)
    ]


def _run(ledger: Ledger, *, job_text: str = "", endpoint: str = "https://hooks.example/in"):
    ledger.create_run(
        RunRecord(
            RUN,
            "coupons",
            RunStatus.RUNNING,
            contacts=3000,
            batches=6,
            batch_size=500,
            created_at=time.time(),
            endpoint=endpoint,
            job_text=job_text,
        ),
        _plans(6),
    )


def _report(ledger: Ledger, tmp_path: Path) -> tuple[str, Page]:
    path = write_run_report(ledger, RUN, tmp_path / "out" / "report.html")
    text = path.read_text(encoding="utf-8")
    return text, Page(text)


def test_report_shows_the_counts_the_chart_and_the_dead_letters(ledger, tmp_path) -> None:
    _run(ledger)
    ledger.update_batches(
        RUN,
        [
            BatchUpdate(0, BatchStatus.DELIVERED, 1, 200),
            BatchUpdate(1, BatchStatus.DELIVERED, 3, 200),
            BatchUpdate(2, BatchStatus.DELIVERED, 1, 204),
            BatchUpdate(3, BatchStatus.DEAD_LETTERED, 1, 422, reason=f"422: {SCRIPT} closed"),
            BatchUpdate(5, BatchStatus.DEAD_LETTERED, 6, 503, reason="gave up after 6 attempts"),
        ],
    )
    ledger.finish_run(RUN, RunStatus.FAILED, duration_s=2.5, retries=7)

    text, page = _report(ledger, tmp_path)

    assert page.unbalanced == [] and page.open == []
    assert page.fact("status") == "failed"
    assert page.fact("delivered") == "1,500 contacts in 3 batches"
    assert page.fact("dead letters") == "2 batches, 1,000 contacts"
    assert page.fact("unfinished") == "1 batches"  # batch 4 was never sent
    assert page.fact("attempts") == "12 (7 retries)"
    assert page.fact("endpoint") == "https://hooks.example/in"
    # The chart: one bar per outcome in the bucket, a legend with each outcome's contacts.
    assert page.tags.count("svg") == 1 and page.tags.count("rect") >= 2 + 2
    assert "delivered (1,500)" in page.svg_text and "dead-lettered (1,000)" in page.svg_text
    dead = [row for row in page.cells if row and row[0] in ("3", "5")]
    assert dead == [
        ["3", "1500..1999", "500", "1", "422", f"422: {SCRIPT} closed"],
        ["5", "2500..2999", "500", "6", "503", "gave up after 6 attempts"],
    ]
    # The endpoint's answer is text on the page, never markup.
    assert "script" not in page.tags and "<script" not in text
    assert "&lt;script&gt;" in text


def test_secrets_and_query_strings_are_kept_off_the_page(ledger, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HOOK_KEY", "s3cr3t-value")
    _run(
        ledger,
        job_text='webhook: {headers: {X-Api-Key: "${HOOK_KEY}"}}',
        endpoint="https://user:pw@hooks.example/in?token=t0ken-in-query",
    )
    ledger.update_batches(
        RUN,
        [BatchUpdate(0, BatchStatus.DEAD_LETTERED, 1, 400, reason="400: bad key s3cr3t-value")],
    )
    ledger.finish_run(RUN, RunStatus.FAILED, duration_s=1.0, retries=0, note="key s3cr3t-value")

    text, page = _report(ledger, tmp_path)

    assert "s3cr3t-value" not in text and "t0ken-in-query" not in text and "pw@" not in text
    assert page.fact("endpoint") == "https://hooks.example/in"
    assert page.fact("note") == "key ***"
    assert ["0", "0..499", "500", "1", "400", "400: bad key ***"] in page.cells


def test_a_run_with_no_outcome_yet_has_no_chart(ledger, tmp_path) -> None:
    _run(ledger)

    text, page = _report(ledger, tmp_path)

    assert "svg" not in page.tags
    assert "nothing delivered or given up yet" in text
    assert page.fact("dead letters") == "0 batches, 0 contacts"


def test_a_long_dead_letter_list_is_cut_and_says_where_the_rest_is(
    ledger, tmp_path, monkeypatch
) -> None:
    monkeypatch.setattr(html_report, "MAX_DEAD_LETTER_ROWS", 2)
    _run(ledger)
    ledger.update_batches(
        RUN, [BatchUpdate(seq, BatchStatus.DEAD_LETTERED, 1, 400) for seq in range(4)]
    )

    text, page = _report(ledger, tmp_path)

    assert [row[0] for row in page.cells if row and row[0].isdigit()] == ["0", "1"]
    assert "the first 2 of 4" in text and "hookcast runs show RUN --json" in text


def _times(status: str, at: float | None, contacts: int = 500, seq: int = 0) -> BatchTimes:
    delivered = at if status == BatchStatus.DELIVERED else None
    return BatchTimes(seq, contacts, status, at, delivered)


def test_outcomes_are_counted_in_the_bucket_of_their_time() -> None:
    since = 1_000_000.0
    buckets = outcome_buckets(
        [
            _times(BatchStatus.DELIVERED, since + 0.5),
            _times(BatchStatus.DELIVERED, since + 3.2),
            _times(BatchStatus.DEAD_LETTERED, since + 3.9, contacts=200),
            _times(BatchStatus.SKIPPED, since + 10.0, contacts=100),
            _times(BatchStatus.PLANNED, since + 4.0),  # not an outcome
            BatchTimes(9, 500, BatchStatus.DELIVERED, since + 5, None),  # no delivery time
        ],
        since,
    )

    assert buckets.start == since and buckets.width_s == 1.0
    assert len(buckets.counts) == 11
    assert buckets.counts[0] == (500, 0, 0)
    assert buckets.counts[3] == (500, 200, 0)
    assert buckets.counts[10] == (0, 0, 100)
    assert sum(map(sum, buckets.counts)) == 1300


@pytest.mark.parametrize("span_s", [0, 0.5, 59.9, 60, 299, 3600, 86_399, 86_400 * 45, 86_400 * 400])
def test_bucket_width_is_the_narrowest_that_keeps_at_most_60_buckets(span_s: float) -> None:
    width = bucket_width_s(span_s)

    assert int(span_s // width) + 1 <= 60
    narrower = [w for w in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600) if w < width]
    assert all(int(span_s // w) + 1 > 60 for w in narrower)


def test_a_load_test_shorter_than_a_second_still_gets_a_throughput_curve() -> None:
    timeline = [(0.1 * i, 20_000 * i) for i in range(1, 9)]  # 160,000 contacts in 0.8 s

    points = throughput(timeline)

    assert len(points) >= 5
    assert all(abs(rate - 200_000) < 1 for _, rate in points)
    assert throughput([(1.0, 100), (2.0, 300)]) == [(1.0, 100.0), (2.0, 200.0)]  # 1 s windows
