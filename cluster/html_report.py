"""One-page HTML reports: the load test's and a run's (`hookcast runs show RUN --html`).

A page is self-contained: inline CSS and SVG, no script, nothing fetched, so it opens the
same from a mail attachment or a CI artefact. Every text that reaches a page goes through
``escape``: a dead letter's answer is whatever the endpoint sent back, markup included.
"""

from __future__ import annotations

import html
import math
import os
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from hookcast.actors.redact import redact
from hookcast.actors.urls import display_url
from hookcast.cluster.ledger import BatchStatus

if TYPE_CHECKING:
    from hookcast.cluster.ledger import BatchRecord, BatchTimes, Ledger, RunRecord

_STYLE = (
    "body{font:14px sans-serif;margin:2em;color:#222}"
    "th{text-align:left;padding-right:1em;vertical-align:top}"
    "td{vertical-align:top}"
    "table.rows{border-collapse:collapse}"
    "table.rows th,table.rows td{border-bottom:1px solid #ddd;padding:2px 8px}"
    "code{white-space:pre-wrap;word-break:break-all}"
)

# -- building blocks -------------------------------------------------------------------------


def escape(value: object) -> str:
    return html.escape(str(value))


def page(title: str, *parts: str) -> str:
    """A whole document titled ``title`` around ``parts`` (already HTML)."""
    return (
        f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{escape(title)}"
        f"</title><style>{_STYLE}</style></head><body>{''.join(parts)}</body></html>\n"
    )


def facts(rows: Mapping[str, str]) -> str:
    """A two-column table: a name, then its value."""
    body = "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in rows.items())
    return f"<table>{body}</table>"


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A table with a header row; each cell's text escaped."""
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{escape(cell)}</td>" for cell in row) + "</tr>" for row in rows
    )
    return f"<table class=rows><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def line_chart(points: list[tuple[float, float]], width: int = 720, height: int = 240) -> str:
    """(seconds, value per second) points as one line, from 0 s to the last point."""
    if not points:
        return "<p>(too short to chart)</p>"
    t_max = max(t for t, _ in points) or 1.0
    y_max = max(v for _, v in points) or 1.0
    xy = " ".join(
        f"{40 + t / t_max * (width - 50):.1f},{height - 20 - v / y_max * (height - 40):.1f}"
        for t, v in points
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}">'
        f'<polyline fill="none" stroke="#2a6" stroke-width="2" points="{xy}"/>'
        f'<text x="4" y="14">{y_max:,.0f}/s</text>'
        f'<text x="{width - 60}" y="{height - 4}">{t_max:.0f} s</text>'
        f'<line x1="40" y1="{height - 20}" x2="{width - 10}" y2="{height - 20}" stroke="#999"/>'
        "</svg>"
    )


@dataclass(frozen=True, slots=True)
class Series:
    label: str
    colour: str  # a CSS colour


@dataclass(frozen=True, slots=True)
class Bar:
    label: str  # under the first and last bar, and in each bar's tooltip
    counts: tuple[int, ...]  # one per series, stacked bottom up


def bar_chart(
    bars: Sequence[Bar], series: Sequence[Series], width: int = 720, height: int = 260
) -> str:
    """Stacked bars, one per ``bars``, with a legend of the series that have any count."""
    left, right, top, bottom = 60, 10, 30, 24
    plot_w, plot_h = width - left - right, height - top - bottom
    y_max = max((sum(b.counts) for b in bars), default=0) or 1
    slot = plot_w / max(len(bars), 1)
    bar_w = min(max(slot * 0.8, 1.0), 48.0)  # one bucket: a bar, not a wall
    shapes = []
    for i, bar in enumerate(bars):
        x, y = left + i * slot + (slot - bar_w) / 2, top + plot_h
        said = ", ".join(f"{n:,} {s.label}" for n, s in zip(bar.counts, series, strict=True) if n)
        rects = []
        for n, s in zip(bar.counts, series, strict=True):
            if n:
                h = n / y_max * plot_h
                y -= h
                rects.append(
                    f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" height="{h:.1f}" '
                    f'fill="{escape(s.colour)}"/>'
                )
        shapes.append(f"<g><title>{escape(bar.label)}: {escape(said or 'none')}</title>")
        shapes.append("".join(rects) + "</g>")
    totals = [sum(b.counts[i] for b in bars) for i in range(len(series))]
    legend, lx = [], left
    for s, total in zip(series, totals, strict=True):
        if total:
            legend.append(
                f'<rect x="{lx}" y="6" width="10" height="10" fill="{escape(s.colour)}"/>'
                f'<text x="{lx + 14}" y="15">{escape(s.label)} ({total:,})</text>'
            )
            lx += 24 + 8 * len(s.label) + 8 * len(f"{total:,}")
    labels = (
        f'<text x="4" y="{top + 10}">{y_max:,}</text>'
        f'<text x="4" y="{top + plot_h}">0</text>'
        + (
            f'<text x="{left}" y="{height - 6}">{escape(bars[0].label)}</text>'
            f'<text x="{width - right}" y="{height - 6}" text-anchor="end">'
            f"{escape(bars[-1].label)}</text>"
            if bars
            else ""
        )
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'role="img">{"".join(legend)}{"".join(shapes)}{labels}'
        f'<line x1="{left}" y1="{top + plot_h}" x2="{width - right}" y2="{top + plot_h}" '
        'stroke="#999"/></svg>'
    )


# -- a run's report --------------------------------------------------------------------------

MAX_BUCKETS = 60
# Bucket widths a reader can count in: the narrowest that keeps the chart to MAX_BUCKETS.
_WIDTHS_S = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200)
_DAY_S = 86400
MAX_DEAD_LETTER_ROWS = 1000  # past that, `runs show RUN --json` lists them all
EXCERPT_CHARS = 300

# What the chart counts, and when each happened: delivered at delivered_at; a dead letter
# or a skipped batch at its last write, which is when it was given up.
OUTCOMES = (
    (BatchStatus.DELIVERED, Series("delivered", "#2a6")),
    (BatchStatus.DEAD_LETTERED, Series("dead-lettered", "#c33")),
    (BatchStatus.SKIPPED, Series("skipped", "#e90")),
)
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True, slots=True)
class OutcomeBuckets:
    """Contacts per outcome (in ``OUTCOMES`` order) in each ``width_s`` from ``start``."""

    start: float  # epoch s
    width_s: float
    counts: list[tuple[int, ...]]


def bucket_width_s(span_s: float, max_buckets: int = MAX_BUCKETS) -> float:
    """The narrowest bucket width that cuts ``span_s`` into at most ``max_buckets``."""
    for width in _WIDTHS_S:
        if span_s < width * max_buckets:
            return float(width)
    return float(_DAY_S * math.ceil((span_s + 1) / (_DAY_S * max_buckets)))


def outcome_buckets(times: Iterable[BatchTimes], since: float) -> OutcomeBuckets:
    """Each outcome's contacts per time bucket, buckets counted from ``since`` (the run's
    start) or the first outcome if earlier; batches without a time are left out."""
    index = {status: i for i, (status, _) in enumerate(OUTCOMES)}
    events = []
    for batch in times:
        if batch.status not in index:
            continue
        at = batch.delivered_at if batch.status == BatchStatus.DELIVERED else batch.updated_at
        if at is not None:
            events.append((at, index[batch.status], batch.contacts))
    if not events:
        return OutcomeBuckets(since, 1.0, [])
    start = min(since, *(at for at, _, _ in events))
    end = max(at for at, _, _ in events)
    width = bucket_width_s(end - start)
    counts = [[0] * len(OUTCOMES) for _ in range(int((end - start) // width) + 1)]
    for at, i, contacts in events:
        counts[int((at - start) // width)][i] += contacts
    return OutcomeBuckets(start, width, [tuple(c) for c in counts])


@dataclass(frozen=True, slots=True)
class RunReport:
    """What a run's page shows, as read from the ledger."""

    run: RunRecord
    batches: list[BatchRecord]
    times: list[BatchTimes]
    written_at: float


def read_run_report(ledger: Ledger, run_id: str) -> RunReport:
    """The run (a unique prefix will do; RunNotFoundError if none) with its batches."""
    run = ledger.get_run(run_id)
    return RunReport(run, ledger.batches(run.run_id), ledger.batch_times(run.run_id), time.time())


def write_run_report(ledger: Ledger, run_id: str, path: Path) -> Path:
    """Write the run's page to ``path`` (its folder created if need be)."""
    text = render_run_report(read_run_report(ledger, run_id))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def render_run_report(report: RunReport) -> str:
    """The run's page: its summary, outcomes over time, the dead letters."""
    run = report.run
    secrets = _secrets_of(run.job_text)
    dead = [b for b in report.batches if b.status == BatchStatus.DEAD_LETTERED]
    return page(
        f"hookcast run {run.run_id}",
        f"<h1>hookcast run {escape(run.run_id)}</h1>",
        f"<p>written {escape(_when(report.written_at))}</p>",
        facts(_summary(run, report.batches, secrets)),
        "<h2>outcomes over time</h2>",
        _chart(outcome_buckets(report.times, run.created_at)),
        f"<h2>dead letters ({len(dead):,})</h2>",
        _dead_letters(dead, secrets),
    )


def _secrets_of(job_text: str | None) -> frozenset[str]:
    """The values, here, of the ``${NAME}`` variables the run's job refers to. The ledger's
    texts were redacted when written; this masks them again where they can be known, in
    case an answer echoed one back in a way the sender could not see."""
    names = set(_ENV_REF.findall(job_text or ""))
    return frozenset(v for name in names if (v := os.environ.get(name)))


def _summary(run: RunRecord, batches: list[BatchRecord], secrets: frozenset[str]) -> dict[str, str]:
    by_status: dict[str, list[BatchRecord]] = {}
    for batch in batches:
        by_status.setdefault(batch.status, []).append(batch)
    dead = by_status.get(BatchStatus.DEAD_LETTERED, [])
    unfinished = by_status.get(BatchStatus.PLANNED, []) + by_status.get(BatchStatus.SENDING, [])
    rows = {
        "job": run.job + (f" ({run.job_path})" if run.job_path else ""),
        "endpoint": redact(display_url(run.endpoint), secrets) if run.endpoint else "-",
        "status": run.status,
        "started": _when(run.created_at),
        "finished": _when(run.finished_at) if run.finished_at else "-",
        "duration": "-" if run.duration_s is None else f"{run.duration_s:,.2f} s",
        "contacts": f"{run.contacts:,} in {run.batches:,} batches of up to {run.batch_size:,}",
        "delivered": f"{run.delivered_contacts:,} contacts in {run.delivered_batches:,} batches",
        "dead letters": f"{len(dead):,} batches, {sum(b.contacts for b in dead):,} contacts",
        "skipped": f"{run.skipped_batches:,} batches",
        "unfinished": f"{len(unfinished):,} batches",
        "attempts": f"{sum(b.attempts for b in batches):,} ({run.retries:,} retries)",
    }
    if run.note:
        rows["note"] = redact(run.note, secrets)
    return rows


def _chart(buckets: OutcomeBuckets) -> str:
    if not buckets.counts:
        return "<p>nothing delivered or given up yet</p>"
    end = buckets.start + buckets.width_s * len(buckets.counts)
    one_day = time.localtime(buckets.start)[:3] == time.localtime(end)[:3]
    shape = "%H:%M:%S" if one_day else "%m-%d %H:%M"
    bars = [
        Bar(time.strftime(shape, time.localtime(buckets.start + i * buckets.width_s)), counts)
        for i, counts in enumerate(buckets.counts)
    ]
    caption = (
        f"<p>contacts per {escape(_span(buckets.width_s))}, from {escape(_when(buckets.start))}</p>"
    )
    return caption + bar_chart(bars, [series for _, series in OUTCOMES])


def _dead_letters(dead: list[BatchRecord], secrets: frozenset[str]) -> str:
    if not dead:
        return "<p>none</p>"
    rows = [
        (
            batch.seq,
            f"{batch.first_id}..{batch.last_id}",
            f"{batch.contacts:,}",
            batch.attempts,
            "-" if batch.http_status is None else batch.http_status,
            _excerpt(redact(batch.reason or "", secrets)),
        )
        for batch in dead[:MAX_DEAD_LETTER_ROWS]
    ]
    shown = table(("batch", "ids", "contacts", "attempts", "last status", "error"), rows)
    if len(dead) > MAX_DEAD_LETTER_ROWS:
        shown += (
            f"<p>the first {MAX_DEAD_LETTER_ROWS:,} of {len(dead):,}: "
            "<code>hookcast runs show RUN --json</code> lists them all</p>"
        )
    return shown


def _excerpt(text: str) -> str:
    return text if len(text) <= EXCERPT_CHARS else text[: EXCERPT_CHARS - 1] + "…"


def _when(epoch_s: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S %z", time.localtime(epoch_s))


def _span(seconds: float) -> str:
    for unit, size in (("d", _DAY_S), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:.0f} {unit}"
    return f"{seconds:.0f} s"
