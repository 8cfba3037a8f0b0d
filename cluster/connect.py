"""Where hookcast runs: an embedded local Ray (the default) or an existing cluster."""

from __future__ import annotations

import logging
import os

import ray
from ray._private import ray_constants

logger = logging.getLogger(__name__)

NAMESPACE = "hookcast"


def connect(
    address: str | None = None,
    *,
    num_cpus: int | None = None,
    object_store_mb: int | None = None,
    metrics_port: int | None = None,
    verbose: bool = False,
) -> str:
    """Join the Ray cluster at ``address``, or start an embedded one bound to 127.0.0.1.

    Returns a short description of where we are. Idempotent within a process."""
    if ray.is_initialized():
        return "ray (already connected)"
    # No usage telemetry leaves this machine unless the user asks for it.
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if not verbose:
        # Ray announces its default token auth with a warning on every start.
        logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(
            logging.ERROR
        )
    quiet = {
        "log_to_driver": verbose,
        "logging_level": "INFO" if verbose else "WARNING",
        "configure_logging": True,
        "namespace": NAMESPACE,
    }
    if address and address != "local":
        # Ray's own rule for which address this node has (a loopback-only head sets
        # RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 for its drivers too).
        ray_constants.ENABLE_RAY_CLUSTER = (
            os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "1") != "0"
        )
        ray.init(address=address, **quiet)
        return f"Ray cluster at {address}"
    # Embedded: loopback only, so nothing outside this machine can reach it (RAY-NOTES).
    ray_constants.ENABLE_RAY_CLUSTER = False
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    ray.init(
        address="local",
        num_cpus=num_cpus,
        object_store_memory=object_store_mb * 1024**2 if object_store_mb else None,
        include_dashboard=False if not verbose else None,
        _metrics_export_port=metrics_port,
        **quiet,
    )
    return "embedded local Ray (127.0.0.1)"


def default_senders() -> int:
    """One sender per CPU but one: the segment actor and the coordinator need a CPU too
    (on 2 cores, two senders deliver ~15% slower than one, measured with bench/)."""
    return max(1, int(ray.cluster_resources().get("CPU", 1)) - 1)


def disconnect() -> None:
    if ray.is_initialized():
        ray.shutdown()
