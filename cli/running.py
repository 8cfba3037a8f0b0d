"""Driving a run from the command line: Ctrl-C and SIGTERM, the progress bar (or progress
lines for a reader of the output), and the summary with what to do next.

Ctrl-C (or SIGTERM) once sets ``stop``: nothing new is sent, answers in flight are awaited.
A second one sets ``stop_now``: the run returns at once and its batches in flight stay
resumable. Either way the run ends as interrupted, with its summary and the resume hint,
and the command exits 3; neither ever raises KeyboardInterrupt.

The hint after the summary names the command that sends what is left: `hookcast resume`
for batches never acknowledged (an interrupted run, one the canary stopped, batches skipped
after a 410 or left by the daily quota), `hookcast replay` for dead letters."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from hookcast.cli import output
from hookcast.cli.options import Outcome
from hookcast.cluster.coordinator import RunSummary

# Run statuses that are not outcomes of their own: a run the canary stopped is resumable,
# as an interrupted one is (exit 3).
# The canary stopped it: the endpoint refused the first batches for good, which retrying
# cannot fix (exit 1, as for dead letters); `hookcast resume` sends it once it is fixed.
_OUTCOME_OF_STATUS = {"aborted": Outcome.FAILED}


@dataclass(frozen=True, slots=True)
class StopSignals:
    """What a run watches: ``stop`` (finish what is in flight) and ``stop_now`` (return)."""

    stop: threading.Event = field(default_factory=threading.Event)
    stop_now: threading.Event = field(default_factory=threading.Event)

    def signalled(self) -> None:
        """One more Ctrl-C or SIGTERM: the first stops, the second stops at once."""
        if not self.stop.is_set():
            self.stop.set()
            output.errors.print(
                "[yellow]stopping: letting requests in flight finish (Ctrl-C again to stop now)"
            )
        elif not self.stop_now.is_set():
            self.stop_now.set()
            output.errors.print(
                "[yellow]stopping now: the batches in flight stay unfinished, to be resumed"
            )

    def options(self) -> dict[str, threading.Event]:
        """``stop`` and ``stop_now``, as every run entry point takes them."""
        return {"stop": self.stop, "stop_now": self.stop_now}


@contextlib.contextmanager
def stop_on_signals() -> Iterator[StopSignals]:
    """SIGINT and SIGTERM feed a `StopSignals` for as long as the block runs."""
    signals = StopSignals()
    previous = {
        sig: signal.signal(sig, lambda signum, frame: signals.signalled())
        for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        yield signals
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_with_progress(
    start: Callable[..., object],
    stop_options: dict[str, threading.Event],
    label: str,
    quiet: bool,
    **arguments: object,
) -> object:
    """``start(**arguments, on_planned=, on_progress=, **stop_options)`` under a progress bar
    on stderr (none when ``quiet``); returns what it returns."""
    bar = None if quiet else output.RunBar(label)
    try:
        return start(
            **arguments,
            on_planned=bar.start if bar else None,
            on_progress=bar.update if bar else None,
            **stop_options,
        )
    finally:
        if bar:
            bar.stop()


def run_with_progress_lines(
    start: Callable[..., RunSummary],
    stop_options: dict[str, threading.Event],
    **arguments: object,
) -> RunSummary:
    """``start`` with its progress printed as ``hookcast-progress`` lines on stdout."""
    from hookcast.cluster.report import progress_line, throttled

    def emit(line: str) -> None:
        print(line, flush=True)

    return start(
        **arguments,
        on_planned=lambda progress: emit(progress_line(progress)),
        on_progress=throttled(emit),
        **stop_options,
    )


def outcome_of(summary: RunSummary) -> Outcome:
    """How a command that ran ``summary``'s run ended (its exit code follows from it)."""
    return _OUTCOME_OF_STATUS.get(summary.status) or Outcome(summary.status)


def next_steps(summary: RunSummary) -> list[str]:
    """What to do next after a run: resume what was never sent, replay the dead letters."""
    run = summary.run_id
    steps = []
    if summary.status in ("interrupted", "aborted"):
        steps.append(f"resume it with: hookcast resume {run}")
    elif summary.skipped_batches:
        steps.append(
            f"{summary.skipped_batches:,} batches were skipped, never sent: once the "
            f"endpoint is back, send them (same keys) with: hookcast resume {run}"
        )
    if summary.failed_batches:
        steps.append(
            f"see the dead letters with: hookcast runs show {run}; "
            f"resend them with: hookcast replay {run}"
        )
    return steps


def show_summary(summary: RunSummary) -> None:
    """The summary table, then what to do next: resume, or look at the dead letters."""
    output.print_summary(summary)
    for step in next_steps(summary):
        output.errors.print(step)
