"""Free loopback ports for the servers tests start."""

from __future__ import annotations

import contextlib
import socket


def free_ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports: all probes stay bound until every port is
    chosen, or the OS may hand the same just-freed port out twice (seen: two of a node's
    components given 52369, and the node refused to start)."""
    with contextlib.ExitStack() as stack:
        probes = [stack.enter_context(socket.socket()) for _ in range(count)]
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in probes]


def free_port() -> int:
    return free_ports(1)[0]


def accepted(server: socket.socket) -> int:
    """How many connections the non-blocking listening ``server`` has waiting (each is
    accepted and closed): 0 proves nothing connected to it."""
    count = 0
    while True:
        try:
            conn, _ = server.accept()
        except BlockingIOError:
            return count
        conn.close()
        count += 1
