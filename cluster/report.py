"""A run's progress as text lines, for when another process reads its output: a job
submitted to a cluster is watched through its logs (`hookcast submit --follow`).

`hookcast run --progress-lines` prints one ``hookcast-progress {...}`` line at the start and
at most once a second, then one ``hookcast-summary {...}`` line (the keys of `run --json`);
a run that ends in an error instead prints one ``hookcast-error {...}`` line with the error's
class, message and exit code. Anything else in the output is passed through to the user as
it is."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass

import orjson

from hookcast.cluster.coordinator import Progress, RunSummary

PROGRESS = "hookcast-progress "
SUMMARY = "hookcast-summary "
ERROR = "hookcast-error "


@dataclass(frozen=True, slots=True)
class RunError:
    """The error a run ended with, as the command that ran it reported it."""

    kind: str  # the error's class name, e.g. MissingEnvError
    message: str
    exit_code: int


def progress_line(progress: Progress) -> str:
    return PROGRESS + orjson.dumps(dataclasses.asdict(progress)).decode()


def summary_line(summary: RunSummary) -> str:
    return SUMMARY + orjson.dumps(summary.to_dict()).decode()


def error_line(error: RunError) -> str:
    return ERROR + orjson.dumps(dataclasses.asdict(error)).decode()


def parse_line(line: str) -> Progress | RunSummary | RunError | None:
    """The progress, summary or error a line carries; None for any other line (or a
    garbled one)."""
    for prefix, kind in ((PROGRESS, Progress), (SUMMARY, RunSummary), (ERROR, RunError)):
        if line.startswith(prefix):
            try:
                return kind(**orjson.loads(line[len(prefix) :]))
            except (orjson.JSONDecodeError, TypeError):
                return None
    return None


def throttled(emit: Callable[[str], None], every_s: float = 1.0) -> Callable[[Progress], None]:
    """An ``on_progress`` callback that emits a progress line at most every ``every_s``."""
    last: list[float | None] = [None]  # the first report always goes out

    def report(progress: Progress) -> None:
        now = time.monotonic()
        if last[0] is None or now - last[0] >= every_s:
            last[0] = now
            emit(progress_line(progress))

    return report


class LineSplitter:
    """Cuts text that arrives in arbitrary pieces into whole lines."""

    def __init__(self) -> None:
        self._partial = ""

    def feed(self, text: str) -> list[str]:
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        return lines

    def rest(self) -> list[str]:
        rest, self._partial = self._partial, ""
        return [rest] if rest else []
