"""A multi-node Ray cluster on loopback for tests: `python -m tests.integration.local_cluster
N TEMP_DIR` starts a head and N-1 worker nodes with one CPU each, prints the GCS address,
and shuts them all down when its stdin closes.

`ray start` cannot do this on loopback: a worker node needs Ray's cluster mode, and cluster
mode rewrites --node-ip-address=127.0.0.1 to the machine's network address, where the
agents then listen on every interface. `ray.cluster_utils.Cluster` starts nodes in-process,
so they keep 127.0.0.1 (run with RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0)."""

from __future__ import annotations

import sys

from ray.cluster_utils import Cluster

from tests.ports import free_ports

AGENT_PORTS = (
    "dashboard_agent_listen_port",
    "metrics_agent_port",
    "metrics_export_port",
    "runtime_env_agent_port",
)


def own_ports(nodes: int) -> list[dict[str, int]]:
    """Every node's agent ports, fresh and chosen together (agents bind theirs late, so a
    later pick could hand out one of them again): the test session's Ray holds the defaults."""
    ports = iter(free_ports(nodes * len(AGENT_PORTS)))
    return [{name: next(ports) for name in AGENT_PORTS} for _ in range(nodes)]


def main(nodes: int, temp_dir: str) -> None:
    common = {"num_cpus": 1, "object_store_memory": 128 * 1024**2}
    head_ports, *worker_ports = own_ports(nodes)
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            **common,
            **head_ports,
            "include_dashboard": False,
            "temp_dir": temp_dir,
            "node_ip_address": "127.0.0.1",
        },
    )
    try:
        for ports in worker_ports:
            cluster.add_node(**common, **ports, node_ip_address="127.0.0.1")
        cluster.wait_for_nodes()
        print(cluster.address, flush=True)
        sys.stdin.read()  # until the test closes our stdin
    finally:
        cluster.shutdown()


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2])
