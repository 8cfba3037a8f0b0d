"""Where hookcast runs: an embedded local Ray (the default) or an existing cluster."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from collections.abc import Iterator
from typing import Any

import ray
from ray._private import ray_constants
from ray._private.node import Node

from hookcast.actors.errors import ClusterError
from hookcast.cluster import prometheus_discovery, watchdog

logger = logging.getLogger(__name__)

NAMESPACE = "hookcast"
# The watchdog over this process's embedded Ray (see cluster/watchdog.py), while it runs.
_watchdog: watchdog.Handle | None = None


def connect(
    address: str | None = None,
    *,
    num_cpus: int | None = None,
    object_store_mb: int | None = None,
    metrics_port: int | None = None,
    verbose: bool = False,
    dashboard: bool = False,
    prestart_workers: bool = True,
) -> str:
    """Join the Ray cluster at ``address``, or start an embedded one bound to 127.0.0.1
    (with Ray's dashboard, on loopback too, when ``dashboard``). ``prestart_workers=False``:
    the embedded Ray starts no idle worker processes ahead (one per CPU, ~0.35 CPU-s each,
    measured), for a run that delivers in this process and needs Ray only for its metrics.

    An embedded Ray never outlives this process by more than a few seconds, even when it is
    killed: a watchdog process ends it (``cluster/watchdog.py``). Without the dashboard it
    writes Ray's Prometheus discovery file itself (``cluster/prometheus_discovery.py``).

    Returns a short description of where we are. Idempotent within a process."""
    global _watchdog
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
        _check_reachable(address)
        context = _init_remote(address, quiet)
        if dashboard and context.dashboard_url:
            return f"Ray cluster at {address}, dashboard at http://{context.dashboard_url}"
        return f"Ray cluster at {address}"
    # Embedded: loopback only, so nothing outside this machine can reach it (NOTES.md, on Ray).
    ray_constants.ENABLE_RAY_CLUSTER = False
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    children_before = watchdog.child_pids()
    with _lean_embedded_head(dashboard=dashboard, driver_logs=verbose):
        context = ray.init(
            address="local",
            num_cpus=num_cpus,
            object_store_memory=object_store_mb * 1024**2 if object_store_mb else None,
            include_dashboard=dashboard,
            dashboard_host="127.0.0.1",
            _metrics_export_port=metrics_port,
            _system_config=None if prestart_workers else {"prestart_worker_first_driver": False},
            **quiet,
        )
    _watchdog = watchdog.start(watchdog.new_children(children_before))
    if not dashboard:
        # Ray's dashboard writes Prometheus' discovery file; without it, we do (one node).
        prometheus_discovery.publish()
    if dashboard and context.dashboard_url:
        return f"embedded local Ray, dashboard at http://{context.dashboard_url}"
    return "embedded local Ray (127.0.0.1)"


def _init_remote(address: str, options: dict) -> Any:
    """``ray.init`` on a cluster. A Ray Client head starts one server process per client;
    on a busy head that process can die starting up, and the next one usually comes up:
    one more try, then a ClusterError that says where the head logs why."""
    try:
        return ray.init(address=address, **options)
    except ConnectionAbortedError as exc:
        if "client server failed" not in str(exc):
            raise
        logger.warning("the Ray Client server at %s failed to start; trying again", address)
    with contextlib.suppress(Exception):
        ray.shutdown()
    time.sleep(1.0)
    try:
        return ray.init(address=address, **options)
    except ConnectionAbortedError as exc:
        raise ClusterError(
            f"--address {address}: the Ray Client server on the head did not start "
            f"({str(exc).strip().splitlines()[-1]}); the head logs why in "
            "ray_client_server_<port>.err among its session logs."
        ) from None


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail at once, saying what to do, when nothing listens at ``host:port`` (or
    ``ray://host:port``): Ray itself retries for minutes with warnings only."""
    target = address.removeprefix("ray://")
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit() or "/" in target:
        return  # "auto" or a form Ray resolves itself
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise ClusterError(
            f"--address {address}: no Ray cluster answers there ({exc.strerror or exc}). "
            "Give the head's GCS address (host:6379) or Ray Client address "
            "(ray://host:10001), or leave --address and RAY_ADDRESS unset for the embedded Ray."
        ) from None


@contextlib.contextmanager
def _lean_embedded_head(*, dashboard: bool, driver_logs: bool) -> Iterator[None]:
    """Start the embedded head without the processes this use of it does not need.

    - The autoscaler monitor: an embedded Ray is one fixed node, there is nothing to scale.
      It ignores SIGTERM, so ``ray.shutdown`` also waits 1 s for it before SIGKILL.
    - Without the dashboard, the API server still starts, only to load the usage-stats
      module (usage stats are off here), and ``ray.init`` polls 0.6 s for it to come up.
    - Without ``log_to_driver``, the log monitor tails worker logs for no one.

    Measured on 2 cores: ``ray.init`` 3.3 -> 1.7 s, ``ray.shutdown`` 1.4 -> 0.3 s. The
    per-node agents (metrics export, runtime envs) are the raylet's and are unaffected.
    ``ray.init`` has no switch for any of them (``RayParams.no_monitor`` and
    ``include_log_monitor`` are only reachable from ``ray start``), so the node's start
    methods are skipped for the duration of this one call; ray is pinned to 2.60.x for this
    and the other private APIs, and tests/integration/test_embedded.py checks the result."""

    def no_process(node: Node) -> None:
        pass

    def no_api_server(node: Node, **_: object) -> None:
        node._webui_url = None  # what ray.init reports as the dashboard address

    skipped = {"start_monitor": no_process}
    if not dashboard:
        skipped["start_api_server"] = no_api_server
    if not driver_logs:
        skipped["start_log_monitor"] = no_process
    originals = {name: getattr(Node, name) for name in skipped}
    for name, replacement in skipped.items():
        setattr(Node, name, replacement)
    try:
        yield
    finally:
        for name, method in originals.items():
            setattr(Node, name, method)


def default_senders() -> int:
    """One sender per CPU but one: the segment actor and the coordinator need a CPU too
    (on 2 cores, two senders deliver ~15% slower than one, measured with bench/)."""
    return max(1, int(ray.cluster_resources().get("CPU", 1)) - 1)


def embedded() -> bool:
    """True while this process runs its own embedded Ray (not a cluster it joined)."""
    return _watchdog is not None


def disconnect() -> None:
    """Leave the cluster; an embedded Ray is shut down, and its watchdog ends anything of
    it still running."""
    global _watchdog
    if ray.is_initialized():
        ray.shutdown()
    if _watchdog is not None:
        _watchdog.release()
        _watchdog = None
