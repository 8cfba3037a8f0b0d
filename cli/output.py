"""How results look: rich tables and progress bars for people, one JSON object for scripts."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import orjson
from rich.console import Console, Group, JustifyMethod, RenderableType
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from hookcast.cluster.coordinator import Progress as RunProgress
from hookcast.cluster.coordinator import RunSummary
from hookcast.cluster.ledger import BatchRecord, RunRecord

if TYPE_CHECKING:
    from hookcast.cluster.status import ActorStatus, StatusSnapshot

console = Console(highlight=False)
errors = Console(stderr=True, highlight=False)

_STATUS_STYLE = {
    "succeeded": "green",
    "failed": "red",
    "interrupted": "yellow",
    "running": "cyan",
    "active": "green",
    "paused": "yellow",
    "finished": "dim",
    "delivered": "green",
    "dead_lettered": "red",
    "skipped": "yellow",
}


def print_json(value: object) -> None:
    """One JSON object on stdout, nothing else."""
    sys.stdout.write(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode() + "\n")
    sys.stdout.flush()


def print_json_line(value: object) -> None:
    """One JSON object on one line of stdout (a stream of them, one per line)."""
    sys.stdout.write(orjson.dumps(value).decode() + "\n")
    sys.stdout.flush()


def error(message: str) -> None:
    errors.print(Text("error: ", style="bold red") + Text(message), soft_wrap=True)


def warning(message: str) -> None:
    errors.print(Text("warning: ", style="bold yellow") + Text(message), soft_wrap=True)


def _when(epoch_s: float | None) -> str:
    return "" if not epoch_s else datetime.fromtimestamp(epoch_s).strftime("%Y-%m-%d %H:%M:%S")


def _status(status: str) -> Text:
    return Text(status, style=_STATUS_STYLE.get(status, ""))


class _RequestRate(ProgressColumn):
    """Requests per second since the start."""

    def __init__(self, run: RunProgress) -> None:
        super().__init__()
        self.run = run
        self.started = time.monotonic()

    def render(self, task: Task) -> Text:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        return Text(f"{self.run.requests / elapsed:,.0f} req/s", style="cyan")


class RunBar:
    """A progress bar over a run's contacts: delivered / total, requests/s, ETA."""

    def __init__(self, label: str) -> None:
        self.label = label
        self._progress: Progress | None = None
        self._task = None

    def start(self, run: RunProgress) -> None:
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("contacts"),
            _RequestRate(run),
            TextColumn("{task.fields[failed]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=errors,
            transient=False,
        )
        self._task = self._progress.add_task(
            self.label, total=run.contacts, completed=run.delivered_contacts, failed=""
        )
        self._progress.start()

    def update(self, run: RunProgress) -> None:
        if self._progress is None:
            return
        failed = run.failed_batches + run.skipped_batches
        notes = [f"[red]{failed} failed[/]"] if failed else []
        if run.breaker in ("open", "half-open"):
            notes.append(f"[yellow]endpoint failing: breaker {run.breaker}[/]")
        self._progress.update(self._task, completed=run.delivered_contacts, failed=" ".join(notes))

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()


def print_summary(summary: RunSummary) -> None:
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("run", summary.run_id)
    table.add_row("status", _status(summary.status))
    table.add_row("contacts", f"{summary.delivered_contacts:,} of {summary.contacts:,} delivered")
    table.add_row(
        "batches",
        f"{summary.delivered_batches:,} delivered, {summary.failed_batches:,} dead-lettered, "
        f"{summary.skipped_batches:,} skipped, of {summary.batches:,}",
    )
    table.add_row("requests", f"{summary.requests:,} ({summary.retries:,} retries)")
    table.add_row(
        "time",
        f"{summary.duration_s:.2f} s, {summary.contacts_per_s:,.0f} contacts/s, "
        f"{summary.requests_per_s:,.1f} requests/s",
    )
    if summary.note:
        table.add_row("note", summary.note)
    console.print(table)


@dataclass(frozen=True, slots=True)
class Column:
    """A column of a table of runs: its header, its cell for a run, how it lines up."""

    header: str
    cell: Callable[[RunRecord], str | Text]
    justify: JustifyMethod = "left"


RUN_COLUMNS: tuple[Column, ...] = (
    Column("run id", lambda r: r.run_id),
    Column("job", lambda r: r.job),
    Column("status", lambda r: _status(r.status)),
    Column("contacts", lambda r: f"{r.delivered_contacts:,}/{r.contacts:,}", "right"),
    Column("batches", lambda r: f"{r.delivered_batches:,}/{r.batches:,}"),
    Column("failed", lambda r: str(r.failed_batches + r.skipped_batches)),
    Column("retries", lambda r: str(r.retries), "right"),
    Column("started", lambda r: _when(r.created_at)),
    Column("duration", lambda r: "" if r.duration_s is None else f"{r.duration_s:.1f} s"),
)
# What `hookcast status` shows of each running run: add live columns here.
STATUS_COLUMNS: tuple[Column, ...] = RUN_COLUMNS


def runs_table(runs: Iterable[RunRecord], columns: Sequence[Column] = RUN_COLUMNS) -> Table:
    table = Table(title="runs")
    for column in columns:
        table.add_column(column.header, justify=column.justify)
    for run in runs:
        table.add_row(*(column.cell(run) for column in columns))
    return table


def print_runs(runs: Iterable[RunRecord], columns: Sequence[Column] = RUN_COLUMNS) -> None:
    console.print(runs_table(runs, columns))


def actors_table(actors: Iterable[ActorStatus]) -> Table:
    """One row per hookcast actor: where it runs and, for those that count, its progress."""
    table = Table(title="hookcast actors")
    for column in ("run", "actor", "state", "node", "pid", "progress"):
        table.add_column(column)
    for actor in actors:
        node = f"{actor.node_ip} ({actor.node_id[:8]})" if actor.node_id else "-"
        state = actor.state + (f", {actor.restarts} restarts" if actor.restarts else "")
        role = actor.name.rsplit("/", 1)[-1]
        row = (actor.run_id or "-", role, state, node, str(actor.pid or "-"))
        table.add_row(*row, _progress(actor.stats))
    return table


def print_actors(actors: Iterable[ActorStatus]) -> None:
    console.print(actors_table(actors))


def _live_columns(snapshot: StatusSnapshot) -> tuple[Column, ...]:
    """A running run's guards as it last said (each run writes them every second)."""

    def in_flight(run: RunRecord) -> str:
        live = snapshot.live.get(run.run_id)
        return "" if live is None or live.in_flight_limit is None else str(live.in_flight_limit)

    def breaker(run: RunRecord) -> str:
        live = snapshot.live.get(run.run_id)
        if live is None or live.breaker is None:
            return ""
        if live.breaker == "open" and live.breaker_open_until:
            return f"open, probe in {max(0.0, live.breaker_open_until - snapshot.taken_at):.0f} s"
        return live.breaker

    return (Column("in flight", in_flight, "right"), Column("breaker", breaker))


def status_view(
    snapshot: StatusSnapshot,
    *,
    state_dir: object,
    address: str | None,
    every_s: float | None = None,
) -> RenderableType:
    """What `hookcast status` shows of ``snapshot``; ``every_s``: it is being watched, so
    it says when it was read and how to stop."""
    parts: list[RenderableType] = []
    if every_s is not None:
        taken = datetime.fromtimestamp(snapshot.taken_at).strftime("%H:%M:%S")
        parts.append(
            Text(f"hookcast status at {taken}, every {every_s:g} s (Ctrl-C stops)", style="dim")
        )
    if snapshot.runs:
        parts.append(runs_table(snapshot.runs, (*STATUS_COLUMNS, *_live_columns(snapshot))))
    else:
        parts.append(Text(f"no run is running in {state_dir}"))
    if snapshot.actors:
        parts.append(actors_table(snapshot.actors))
    elif address:
        parts.append(Text(f"no hookcast actors on {address}"))
    return Group(*parts)


def _progress(stats: dict | None) -> str:
    if stats is None:
        return ""
    if "delivered_contacts" in stats:  # a sender
        attempts = sum(stats["attempts"].values())
        return (
            f"{stats['delivered_contacts']:,} delivered, {attempts:,} attempts, "
            f"{stats['in_flight']} in flight"
        )
    return ", ".join(f"{name} {value:,}" for name, value in stats.items())


def print_run(run: RunRecord, failed: list[BatchRecord]) -> None:
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    for name, value in run.to_dict().items():
        if value is not None and value != "":
            shown = _when(value) if name in ("created_at", "finished_at") else str(value)
            table.add_row(name, _status(shown) if name == "status" else shown)
    console.print(table)
    if not failed:
        return
    batches = Table(title=f"{len(failed)} batches not delivered")
    for column in ("seq", "ids", "contacts", "status", "http", "attempts", "reason"):
        batches.add_column(column)
    for batch in failed:
        batches.add_row(
            str(batch.seq),
            f"{batch.first_id}..{batch.last_id}",
            str(batch.contacts),
            _status(batch.status),
            "" if batch.http_status is None else str(batch.http_status),
            str(batch.attempts),
            (batch.reason or "")[:120],
        )
    console.print(batches)


def print_schedules(rows: list[dict]) -> None:
    table = Table(title="scheduled jobs")
    for column in ("name", "status", "trigger", "timezone", "next fires", "last fire"):
        table.add_column(column)
    for row in rows:
        last = row.get("last_fire")
        table.add_row(
            row["name"],
            _status(row["status"]),
            row["trigger"],
            row["timezone"],
            "\n".join(row["next"]) or row.get("error", ""),
            "" if not last else f"{last['outcome']} {last['run_id'] or ''}",
        )
    console.print(table)


def print_event(event) -> None:
    """One line per thing the scheduler did."""
    due = f" due {event.due.isoformat()}" if event.due else ""
    run = f" run {event.run_id}" if event.run_id else ""
    note = f" ({event.note})" if event.note else ""
    style = {
        "fired": "green",
        "done": "green",
        "failed": "red",
        "missed": "yellow",
        "skipped_overlap": "yellow",
    }.get(event.kind, "")
    console.print(
        Text(f"{event.at:%Y-%m-%d %H:%M:%S} ")
        + Text(event.kind, style=style)
        + Text(f" {event.job}{due}{run}{note}"),
        soft_wrap=True,
    )


def print_auth_report(report) -> None:
    if not report.ok:
        console.print(
            Text(f"✗ {report.auth_id}: ", style="red") + Text(report.error or ""), soft_wrap=True
        )
        return
    expiry = (
        "never (kept until a 401)"
        if report.expires_in_s is None
        else f"in {report.expires_in_s:,.0f} s"
    )
    console.print(Text(f"✓ {report.auth_id}", style="green") + Text(f": expires {expiry}"))
    console.print(
        f"  keys in the answer: {', '.join(report.keys_present) or '(none)'}", soft_wrap=True
    )
    for key, shown in report.tokens:
        console.print(f"  {key} = {shown}")


def print_loadtest(report, path) -> None:
    print_summary(report.summary)
    latency = ", ".join(f"{k} {v:.1f} ms" for k, v in report.latency_ms.items())
    console.print(f"[bold]latency[/]   {latency}")
    verdict = (
        "[green]every contact arrived once[/]"
        if report.verified
        else (f"[red]{report.lost_contacts:,} contacts lost[/]")
    )
    console.print(f"[bold]verified[/]  {verdict}")
    console.print(f"[bold]report[/]    {path}", soft_wrap=True)
