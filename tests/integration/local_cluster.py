"""A multi-node Ray cluster on loopback for tests: `python -m tests.integration.local_cluster
N TEMP_DIR` starts a head and N-1 worker nodes with one CPU each, prints the GCS address,
and shuts them all down when its stdin closes.

`ray start` cannot do this on loopback: a worker node needs Ray's cluster mode, and cluster
mode rewrites --node-ip-address=127.0.0.1 to the machine's network address, where the
agents then listen on every interface. `ray.cluster_utils.Cluster` starts nodes in-process,
so they keep 127.0.0.1 (run with RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0)."""

from __future__ import annotations

import socket
import sys

from ray.cluster_utils import Cluster


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def own_ports() -> dict[str, int]:
    """Every agent port fresh: the test session's own Ray holds the defaults."""
    return {
        "dashboard_agent_listen_port": free_port(),
        "metrics_agent_port": free_port(),
        "metrics_export_port": free_port(),
        "runtime_env_agent_port": free_port(),
    }


def main(nodes: int, temp_dir: str) -> None:
    common = {"num_cpus": 1, "object_store_memory": 128 * 1024**2}
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            **common,
            **own_ports(),
            "include_dashboard": False,
            "temp_dir": temp_dir,
            "node_ip_address": "127.0.0.1",
        },
    )
    try:
        for _ in range(nodes - 1):
            cluster.add_node(**common, **own_ports(), node_ip_address="127.0.0.1")
        cluster.wait_for_nodes()
        print(cluster.address, flush=True)
        sys.stdin.read()  # until the test closes our stdin
    finally:
        cluster.shutdown()


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2])
