"""`hookcast loadtest`: a synthetic audience broadcast to a receiver, measured and reported.

The built-in receiver runs in its own process (so it does not share this one's interpreter)
and checks that every contact arrived exactly once; with ``url`` the broadcast goes to the
user's endpoint instead and losses are read from the ledger. The report is one HTML file
with the figures and a throughput chart (inline SVG, `html_report.py`'s building blocks).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
import yaml

from hookcast.cluster import html_report
from hookcast.cluster.coordinator import Progress, RunSummary
from hookcast.cluster.job import load_job
from hookcast.cluster.ledger import BatchStatus, Ledger
from hookcast.cluster.runs import start_run
from hookcast.cluster.testbed.synth import load_test_job, write_audience


@dataclass(frozen=True, slots=True)
class LoadtestOptions:
    contacts: int
    url: str | None = None
    batch_size: int = 500
    requests_per_second: float | None = None
    max_in_flight: int = 8
    fail_rate: float = 0.0  # built-in receiver only
    latency_ms: float = 0.0  # built-in receiver only
    senders: int | None = None


@dataclass(slots=True)
class LoadtestReport:
    options: LoadtestOptions
    summary: RunSummary
    timeline: list[tuple[float, int]] = field(default_factory=list)  # (s, contacts delivered)
    latency_ms: dict[str, float] = field(default_factory=dict)  # p50, p95, p99
    received: dict | None = None  # the built-in receiver's counts
    lost_contacts: int = 0
    verified: bool = False

    def to_dict(self) -> dict:
        data = asdict(self)
        data["summary"] = self.summary.to_dict()
        return data


class _Receiver:
    """`python -m hookcast.cluster.testbed.sink` in a subprocess, on 127.0.0.1."""

    def __init__(self, fail_rate: float, latency_ms: float) -> None:
        cmd = [sys.executable, "-m", "hookcast.cluster.testbed.sink", "--port", "0"]
        if fail_rate:
            cmd += ["--fail-rate", str(fail_rate)]
        if latency_ms:
            cmd += ["--latency-ms", str(latency_ms)]
        self.process = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        line = self.process.stdout.readline() if self.process.stdout else ""
        if not line.startswith("listening on "):
            self.stop()
            raise RuntimeError(f"the built-in receiver did not start: {line!r}")
        self.url = line.split()[-1]

    def stats(self) -> dict:
        return httpx.get(self.url.rsplit("/", 1)[0] + "/_stats", timeout=10).json()

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def _percentiles(values: list[float]) -> dict[str, float]:
    if len(values) < 2:
        return {"p50": values[0], "p95": values[0], "p99": values[0]} if values else {}
    cuts = statistics.quantiles(values, n=100)
    return {"p50": round(cuts[49], 2), "p95": round(cuts[94], 2), "p99": round(cuts[98], 2)}


def run_loadtest(
    options: LoadtestOptions,
    ledger: Ledger,
    *,
    on_planned: Callable[[Progress], None] | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    stop: threading.Event | None = None,
    stop_now: threading.Event | None = None,
    ray_aside: bool = False,
) -> LoadtestReport:
    """Generate the audience, broadcast it (as ``start_run`` does: Ray senders need Ray
    connected; ``ray_aside`` as there), measure, verify."""
    receiver = None if options.url else _Receiver(options.fail_rate, options.latency_ms)
    try:
        with tempfile.TemporaryDirectory(prefix="hookcast-loadtest-") as work:
            source = write_audience(Path(work) / "contacts.parquet", options.contacts)
            job_path = Path(work) / "loadtest.yaml"
            job_path.write_text(yaml.safe_dump(_job(options, receiver, source), sort_keys=False))
            timeline: list[tuple[float, int]] = []
            started = time.monotonic()

            def record(progress: Progress) -> None:
                timeline.append((round(time.monotonic() - started, 3), progress.delivered_contacts))
                if on_progress:
                    on_progress(progress)

            summary = start_run(
                load_job(job_path),
                ledger,
                senders=options.senders,
                on_planned=on_planned,
                on_progress=record,
                stop=stop,
                stop_now=stop_now,
                ray_aside=ray_aside,
            )
        latencies = [
            b.latency_ms
            for b in ledger.batches(summary.run_id, [BatchStatus.DELIVERED])
            if b.latency_ms is not None
        ]
        report = LoadtestReport(options, summary, timeline, _percentiles(latencies))
        if receiver is not None:
            report.received = receiver.stats()
            report.lost_contacts = options.contacts - report.received["unique_ids"]
            report.verified = report.lost_contacts == 0 and report.received["duplicate_ids"] == 0
        else:
            report.lost_contacts = summary.contacts - summary.delivered_contacts
            report.verified = report.lost_contacts == 0
        return report
    finally:
        if receiver is not None:
            receiver.stop()


def _job(options: LoadtestOptions, receiver: _Receiver | None, source: Path) -> dict:
    return load_test_job(
        "loadtest",
        options.url or receiver.url,
        source,
        batch_size=options.batch_size,
        max_in_flight=options.max_in_flight,
        requests_per_second=options.requests_per_second,
    )


def throughput(
    timeline: list[tuple[float, int]], step_s: float | None = None
) -> list[tuple[float, float]]:
    """Contacts per second in each ``step_s`` window of the run: by default one second, or
    a twentieth of a shorter run (a 200,000-contact test can take under a second)."""
    if step_s is None:
        span_s = timeline[-1][0] if timeline else 0.0
        step_s = min(1.0, max(span_s / 20, 0.01))
    points: list[tuple[float, float]] = []
    last_t, last_n = 0.0, 0
    for t, n in timeline:
        if t - last_t >= step_s:
            points.append((t, (n - last_n) / (t - last_t)))
            last_t, last_n = t, n
    return points


def write_report(report: LoadtestReport, path: Path) -> Path:
    """One self-contained HTML file: the figures and the throughput curve."""
    s = report.summary
    rows = {
        "contacts": f"{s.contacts:,}",
        "delivered": f"{s.delivered_contacts:,}",
        "lost": f"{report.lost_contacts:,}",
        "requests": f"{s.requests:,} ({s.retries:,} retries)",
        "duration": f"{s.duration_s:.2f} s",
        "throughput": f"{s.contacts_per_s:,.0f} contacts/s, {s.requests_per_s:,.1f} requests/s",
        "latency": ", ".join(f"{k} {v:.1f} ms" for k, v in report.latency_ms.items()),
        "verified": "yes" if report.verified else "NO",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        html_report.page(
            "hookcast load test",
            f"<h1>hookcast load test: {html_report.escape(s.run_id)}</h1>",
            html_report.facts(rows),
            "<h2>contacts/s over time</h2>",
            html_report.line_chart(throughput(report.timeline)),
        ),
        encoding="utf-8",
    )
    return path
