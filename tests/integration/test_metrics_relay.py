"""The metrics relay over a real Ray of its own (``python -m hookcast.cluster.metrics_relay``):
what a run hands over on its stdin reaches Ray's Prometheus endpoint, with the run's tags,
and closing stdin shuts that Ray down and leaves nothing running."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request

import orjson
import psutil

from hookcast.cluster.metrics import MetricDeltas
from tests.ports import free_port

WAIT_S = 90.0  # Ray starts in seconds; a loaded machine gets room


def _series(port: int, name: str) -> list[str]:
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
    except OSError:
        return []  # not up yet
    return [line for line in text.decode().splitlines() if line.startswith(name)]


def test_handed_over_numbers_reach_rays_metrics_and_closing_ends_its_ray() -> None:
    port = free_port()
    relay = subprocess.Popen(
        [
            *(sys.executable, "-m", "hookcast.cluster.metrics_relay"),
            *("--job", "relayed", "--endpoint", "http://hooks.example/x"),
            *("--metrics-port", str(port)),
        ],
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deltas = MetricDeltas(requests={"delivered": 3, "retry": 1}, contacts=1500, retries=1)
        deltas.latencies_s.extend([0.01, 0.02, 0.03, 0.5])
        relay.stdin.write(orjson.dumps(deltas.take()) + b"\n")
        relay.stdin.flush()
        deadline = time.monotonic() + WAIT_S
        delivered: list[str] = []
        while not delivered:
            assert relay.poll() is None, relay.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "no hookcast metric reached Ray's endpoint"
            delivered = _series(port, "ray_hookcast_contacts_delivered_total")
            time.sleep(0.2)
        requests = _series(port, "ray_hookcast_requests_total")
        tree = psutil.Process(relay.pid).children(recursive=True)
        names = [p.name() for p in tree]
    finally:
        relay.stdin.close()
    assert relay.wait(timeout=60) == 0, relay.stderr.read().decode()[-2000:]

    (line,) = delivered
    assert 'endpoint="http://hooks.example/x"' in line and line.endswith(" 1500.0")
    assert "relayed" in line
    by_outcome = {part.split('outcome="')[1].split('"')[0]: part for part in requests}
    assert by_outcome["delivered"].endswith(" 3.0") and by_outcome["retry"].endswith(" 1.0")
    assert "raylet" in names and "gcs_server" in names, names
    _, alive = psutil.wait_procs(tree, timeout=15)
    assert not alive, f"left running after the relay ended: {[(p.pid, p.name()) for p in alive]}"
