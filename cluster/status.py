"""What `hookcast status` shows of a cluster: each hookcast actor, where it runs, how far it
has got.

Names come from the named-actor list and places from Ray's actor table in the GCS, so this
works on a cluster without a dashboard too (the embedded Ray has none). Actors that keep
counters (senders, the token service) are asked for them, each with a short timeout: a busy
or dying actor is shown without them rather than holding up the command."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import ray
from ray._private import state

PREFIX = "hookcast/"


@dataclass(frozen=True, slots=True)
class ActorStatus:
    name: str  # hookcast/<run id>/sender-0, hookcast/tokens, hookcast/scheduler, ...
    kind: str  # the actor's class
    state: str  # ALIVE, RESTARTING, PENDING_CREATION, DEAD
    node_id: str | None
    node_ip: str | None
    pid: int | None
    restarts: int
    stats: dict[str, object] | None = field(default=None)  # None: it keeps none, or no answer

    @property
    def run_id(self) -> str | None:
        """The run a per-run actor belongs to (``hookcast/<run id>/<role>``)."""
        parts = self.name.split("/")
        return parts[1] if len(parts) == 3 else None

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "run_id": self.run_id}


def hookcast_actors(timeout_s: float = 2.0) -> list[ActorStatus]:
    """Every named hookcast actor on the connected cluster, sorted by name."""
    listed = ray.util.list_named_actors(all_namespaces=True)
    named = sorted((a for a in listed if a["name"].startswith(PREFIX)), key=lambda a: a["name"])
    found: list[tuple[str, ray.actor.ActorHandle, dict]] = []
    for entry in named:
        try:
            handle = ray.get_actor(entry["name"], namespace=entry["namespace"])
        except ValueError:  # gone since it was listed
            continue
        found.append((entry["name"], handle, state.actors(handle._actor_id.hex()) or {}))
    stats = _ask_for_stats(
        {name: handle for name, handle, info in found if info.get("State") == "ALIVE"}, timeout_s
    )
    return [
        ActorStatus(
            name=name,
            kind=info.get("ActorClassName", "?").rsplit(".", 1)[-1],
            state=info.get("State", "UNKNOWN"),
            node_id=(info.get("Address") or {}).get("NodeID") or None,
            node_ip=(info.get("Address") or {}).get("IPAddress") or None,
            pid=info.get("Pid") or None,
            restarts=int(info.get("NumRestarts", 0)),
            stats=stats.get(name),
        )
        for name, _, info in found
    ]


def _ask_for_stats(
    handles: dict[str, ray.actor.ActorHandle], timeout_s: float
) -> dict[str, dict[str, object]]:
    asked = {}
    for name, handle in handles.items():
        try:
            asked[handle.stats.remote()] = name
        except AttributeError:  # an actor that keeps no counters
            continue
    if not asked:
        return {}
    ready, _ = ray.wait(list(asked), num_returns=len(asked), timeout=timeout_s)
    answers = {}
    for ref in ready:
        try:
            answers[asked[ref]] = ray.get(ref)
        except ray.exceptions.RayError:  # died while answering
            continue
    return answers


def connected() -> bool:
    """True when this process is already connected to a Ray cluster."""
    return ray.is_initialized()


def running_runs(ledger, limit: int = 200) -> list:
    """The runs the ledger shows as running, newest first."""
    return [r for r in ledger.list_runs(limit=limit) if r.status == "running"]


@dataclass(frozen=True, slots=True)
class StatusSnapshot:
    """What `hookcast status` shows, read at one moment (``taken_at``, epoch s)."""

    runs: list  # RunRecords, newest first
    actors: list[ActorStatus]
    taken_at: float
    live: dict = field(default_factory=dict)  # run id -> its LiveRun (limit, breaker)

    def to_dict(self) -> dict[str, object]:
        return {
            "runs": [
                {
                    **r.to_dict(),
                    "live": live.to_dict() if (live := self.live.get(r.run_id)) else None,
                }
                for r in self.runs
            ],
            "actors": [a.to_dict() for a in self.actors],
        }


def take_snapshot(ledger, *, with_actors: bool) -> StatusSnapshot:
    """The running runs in ``ledger`` and, ``with_actors``, the connected cluster's
    hookcast actors. Reads only: as often as a watcher likes."""
    actors = hookcast_actors() if with_actors else []
    live = {r.run_id: r for r in ledger.live_runs()}
    return StatusSnapshot(running_runs(ledger), actors, time.time(), live)
