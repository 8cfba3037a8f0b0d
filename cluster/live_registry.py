"""Who is sending to which endpoint right now, so that runs share its limits.

Two views, merged: the ledger's ``live_runs`` table (every run from one state dir, whatever
Ray it runs on) and, on a Ray cluster, one detached actor (every run on that cluster,
whatever state dir it records to: a run from a laptop with ``--address``, a Ray job, the
scheduler). A run's heartbeat goes to both and it takes its share among everyone either
one knows. The actor keeps time itself, so drivers' clocks need not agree.
"""

from __future__ import annotations

import dataclasses
import logging
import time

import ray
from ray.exceptions import RayError

from hookcast.cluster.ledger import LIVE_FOR_S, Ledger, LiveRun

logger = logging.getLogger(__name__)

REGISTRY_NAME = "hookcast/live-runs"


class LiveRunRegistry:
    """The cluster's live runs, kept in memory (a detached actor; a run not heard of for
    ``LIVE_FOR_S`` has died)."""

    def __init__(self) -> None:
        self._runs: dict[str, LiveRun] = {}

    def heartbeat(self, live: LiveRun) -> list[LiveRun]:
        now = time.time()
        self._runs = {k: v for k, v in self._runs.items() if v.seen_at >= now - LIVE_FOR_S}
        self._runs[live.run_id] = dataclasses.replace(live, seen_at=now)
        return [r for r in self._runs.values() if r.endpoint == live.endpoint]

    def leave(self, run_id: str) -> None:
        self._runs.pop(run_id, None)

    def live_runs(self) -> list[LiveRun]:
        now = time.time()
        return [r for r in self._runs.values() if r.seen_at >= now - LIVE_FOR_S]


def cluster_registry() -> ray.actor.ActorHandle:
    """The connected cluster's registry (created on first use, then shared)."""
    return (
        ray.remote(LiveRunRegistry)
        .options(
            name=REGISTRY_NAME,
            namespace="hookcast",
            get_if_exists=True,
            lifetime="detached",
            num_cpus=0,
            max_restarts=-1,
        )
        .remote()
    )


class SharedEndpoints:
    """What a run's coordinator tells and asks (``heartbeat``, ``leave``): the ledger's view
    and, given one, the cluster's registry's, merged by run id."""

    def __init__(self, ledger: Ledger, registry: ray.actor.ActorHandle | None = None) -> None:
        self._ledger = ledger
        self._registry = registry

    def heartbeat(self, live: LiveRun) -> list[LiveRun]:
        runs = {r.run_id: r for r in self._ledger.heartbeat(live)}
        if self._registry is not None:
            try:
                cluster = ray.get(self._registry.heartbeat.remote(live), timeout=10)
            except (RayError, TimeoutError) as exc:
                # Sharing is a courtesy to the endpoint, not a reason to stop: go on with
                # what the ledger knows.
                logger.warning("the cluster's live-run registry did not answer (%s)", exc)
                self._registry = None
                cluster = []
            for run in cluster:
                runs.setdefault(run.run_id, run)
        return list(runs.values())

    def leave(self, run_id: str) -> None:
        self._ledger.leave(run_id)
        if self._registry is not None:
            try:
                ray.get(self._registry.leave.remote(run_id), timeout=10)
            except (RayError, TimeoutError) as exc:  # it forgets the run after LIVE_FOR_S
                logger.warning("the cluster's live-run registry did not answer (%s)", exc)
