"""What every command group shares: the common options, the outcome a command ends with, and
opening the ledger or connecting to Ray on a command's behalf.

The exit code of each outcome and each error class is decided in one table, in `app.py`."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from hookcast.cli import output

if TYPE_CHECKING:
    from hookcast.cluster.job import LoadedJob
    from hookcast.cluster.ledger import Ledger
    from hookcast.cluster.runs import PreparedRun


class Outcome(enum.StrEnum):
    """How a command ended, when it did not raise; the values of a run's status included."""

    SUCCEEDED = "succeeded"  # every contact delivered, or nothing to deliver
    FAILED = "failed"  # the run finished with dead-lettered or skipped batches
    INTERRUPTED = "interrupted"  # stopped part-way (Ctrl-C, SIGTERM): resumable
    REJECTED = "rejected"  # bad input, already reported to the user


@dataclass(slots=True)
class Settings:
    """The app-wide flags the callback reads (`--verbose`, `--dashboard`)."""

    verbose: bool = False
    dashboard: bool = False
    error_lines: bool = False  # errors also as `hookcast-error` lines (`run --progress-lines`)


settings = Settings()

JobArg = Annotated[Path, typer.Argument(help="The job file (YAML).", show_default=False)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object, nothing else.")]
StateDirOpt = Annotated[
    Path,
    typer.Option(
        "--state-dir",
        envvar="HOOKCAST_HOME",
        help="Where the ledger and schedules live.",
        show_default="~/.hookcast",
    ),
]
AddressOpt = Annotated[
    str | None,
    typer.Option(
        "--address",
        envvar="RAY_ADDRESS",
        help="An existing Ray cluster (ray://host:10001, host:6379, auto). "
        "Default: an embedded local Ray on 127.0.0.1.",
    ),
]
ClusterAddressOpt = Annotated[
    str, typer.Option("--address", envvar="RAY_ADDRESS", help="The Ray cluster (required).")
]
AuthOpt = Annotated[
    Path | None,
    typer.Option("--auth", help="A file of shared authorizations (token endpoints)."),
]
SendersOpt = Annotated[
    int | None,
    typer.Option(
        "--senders",
        min=1,
        max=256,
        help="Ray sender actors. Default: on a cluster one per CPU but one; on the embedded "
        "Ray none, the run renders and sends in this process.",
    ),
]
DEFAULT_STATE_DIR = Path("~/.hookcast")


def open_ledger(state_dir: Path):
    """The ledger under ``state_dir`` (created if need be); LedgerUnavailableError if not."""
    from hookcast.cluster.ledger import Ledger

    return Ledger(state_dir.expanduser())


def connect(address: str | None) -> None:
    """Connect to ``address``, or start the embedded Ray, with a spinner on stderr."""
    from hookcast.cluster.connect import connect as connect_ray

    with output.errors.status("starting Ray" if not address else f"connecting to {address}"):
        where = connect_ray(address, verbose=settings.verbose, dashboard=settings.dashboard)
    if settings.dashboard:
        output.errors.print(where, soft_wrap=True)


def ray_first(address: str | None, senders: int | None) -> bool:
    """A run on a cluster, with Ray senders or with Ray's dashboard needs Ray before its
    first request; an embedded run sends from this process and, when it lasts, records its
    metrics in an embedded Ray of their own (``cluster/metrics_relay.py``)."""
    return bool(address) or senders is not None or settings.dashboard


def connect_if_first(address: str | None, senders: int | None) -> bool:
    """Connect now (with a spinner) when the run needs Ray first; True when it does not,
    and its metrics go to a Ray of their own (``ray_aside``)."""
    if ray_first(address, senders):
        connect(address)
        return False
    return True


def prepared_run(
    job: LoadedJob, ledger: Ledger, address: str | None, senders: int | None
) -> PreparedRun:
    """``job`` checked and its audience frozen; when the run needs Ray first, while it starts
    (bad input otherwise starts no Ray at all)."""
    from hookcast.cluster.runs import prepare_run, prepare_while

    if ray_first(address, senders):
        return prepare_while(job, lambda: connect(address), ledger)
    return prepare_run(job, ledger)
