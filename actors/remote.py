"""Every actor's Ray options, in one place; the classes themselves stay plain Python."""

from __future__ import annotations

import os

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from hookcast.actors.auth.service import TokenClient, TokenService
from hookcast.actors.scheduler import SchedulerActor
from hookcast.actors.segment import Segment, SegmentConfig
from hookcast.actors.sender import Sender, SenderConfig
from hookcast.actors.sources import is_remote, location_env


def start_segment(config: SegmentConfig, *, name: str) -> ray.actor.ActorHandle:
    """The run's segment actor: DuckDB and its temp files live wherever it lands.

    It reads the source with the driver's object-store endpoint and region settings (not
    its keys, which would show in the dashboard's runtime env): validated here, read there."""
    options: dict = {"name": name, "num_cpus": 0, "max_restarts": 0}
    forwarded = location_env(os.environ) if _reads_object_store(config) else {}
    if forwarded:
        options["runtime_env"] = {"env_vars": forwarded}
    return ray.remote(Segment).options(**options).remote(config)


def _reads_object_store(config: SegmentConfig) -> bool:
    return is_remote(config.source) or (config.ids_path is not None and is_remote(config.ids_path))


def start_token_service() -> ray.actor.ActorHandle:
    """The cluster's one token service (created on first use, then shared).

    Detached: a named actor that only a run's handles keep alive is destroyed when the run
    ends, and the next run's ``get_if_exists`` can get it while it is shutting down (seen
    under load: every call then failed with ActorDiedError). It ends with the cluster."""
    return (
        ray.remote(TokenService)
        .options(
            name="hookcast/tokens",
            get_if_exists=True,
            lifetime="detached",
            num_cpus=0,
            max_restarts=-1,
            max_concurrency=1000,
        )
        .remote()
    )


def start_senders(
    config: SenderConfig, *, count: int, name_prefix: str
) -> list[ray.actor.ActorHandle]:
    """``count`` async senders spread over the cluster's nodes, round robin.

    A sender that dies is restarted; its in-flight calls fail and the coordinator resends
    those batches with the same key."""
    tokens = TokenClient(start_token_service()) if config.authorizations else None
    actor = ray.remote(Sender)
    nodes = _worker_nodes()
    return [
        actor.options(
            name=f"{name_prefix}/sender-{i}",
            num_cpus=0,
            max_restarts=-1,
            max_task_retries=0,
            max_concurrency=max(8, config.max_connections),
            # Ray's "SPREAD", and soft affinity too, put 3 senders on 2 of 3 nodes (seen
            # with 3 loopback nodes); hard affinity places them exactly. A sender whose
            # node is lost stays dead, and the coordinator moves its batches to the next.
            scheduling_strategy=NodeAffinitySchedulingStrategy(nodes[i % len(nodes)], soft=False),
        ).remote(config, tokens)
        for i in range(count)
    ]


def _worker_nodes() -> list[str]:
    """Alive nodes that offer CPUs (a head started with --num-cpus=0 keeps out of the
    work), in a stable order."""
    alive = [n for n in ray.nodes() if n["Alive"]]
    working = [n for n in alive if n["Resources"].get("CPU", 0) > 0] or alive
    return sorted(n["NodeID"] for n in working)


def stop_actors(handles: list[ray.actor.ActorHandle]) -> None:
    for handle in handles:
        ray.kill(handle, no_restart=True)


def start_scheduler_actor(config, hooks, *, name: str, detached: bool) -> ray.actor.ActorHandle:
    """The one scheduler of a cluster, on the head node (where the state dir is).

    Restarted if it dies; its __init__ reloads everything from the store."""
    return (
        ray.remote(SchedulerActor)
        .options(
            name=name,
            get_if_exists=True,
            lifetime="detached" if detached else None,
            num_cpus=0,
            max_restarts=-1,
            max_concurrency=4,
            resources={"node:__internal_head__": 0.001},
        )
        .remote(config, hooks)
    )
