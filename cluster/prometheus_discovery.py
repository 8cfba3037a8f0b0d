"""Ray's Prometheus discovery file, written for an embedded Ray that runs without a dashboard.

Ray's docs point Prometheus at ``<temp dir>/prom_metrics_service_discovery.json``
(``file_sd_configs``). Ray 2.60 writes it from the dashboard (``PrometheusServiceDiscoveryWriter``
in ``ray/_private/metrics_agent.py``): the session's own file in the session dir, and a symlink
to it at the temp dir's path. The embedded default has no dashboard, so nothing wrote it and
the symlink went on naming an older session; `publish` writes both, in the same format.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

FILE_NAME = "prom_metrics_service_discovery.json"  # ray_constants.PROMETHEUS_SERVICE_DISCOVERY_FILE


def discovery_content(nodes: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The file's content for ``ray.nodes()``: one target group, label ``job="ray"`` as Ray
    writes it, with each live node's metrics export port (not its metrics agent port, which
    is the gRPC port workers report to)."""
    targets = [
        _address(node["NodeManagerAddress"], node["MetricsExportPort"])
        for node in nodes
        if node.get("alive") is True and node.get("MetricsExportPort", 0) > 0
    ]
    return [{"labels": {"job": "ray"}, "targets": targets}]


def write_discovery_file(content: list[dict[str, Any]], session_dir: Path, temp_dir: Path) -> Path:
    """Write ``content`` to the session's file, then point the temp dir's path at it.

    Both steps are atomic (``os.replace``), so a Prometheus re-reading the file never sees
    half of one. Where symlinks are refused, the temp dir gets a copy instead. Returns the
    session's file."""
    target = session_dir / FILE_NAME
    _replace_atomically(target, lambda tmp: tmp.write_text(json.dumps(content)))
    legacy = temp_dir / FILE_NAME
    if legacy != target:
        try:
            _replace_atomically(legacy, lambda tmp: tmp.symlink_to(target))
        except OSError:
            _replace_atomically(legacy, lambda tmp: tmp.write_bytes(target.read_bytes()))
    return target


def publish() -> Path | None:
    """Write the discovery file for the Ray this process started (``ray.init`` done).

    Costs one GCS call and two small writes (measured: 6 ms, against 3.3 s for ``ray.init``).
    A failure is logged, not raised: a run does not need Prometheus."""
    import ray

    try:
        node = ray._private.worker._global_node
        return write_discovery_file(
            discovery_content(ray.nodes()),
            Path(node.get_session_dir_path()),
            Path(node.get_temp_dir_path()),
        )
    except Exception as exc:  # an unwritable temp dir, or Ray's GCS call failing
        logger.warning("could not write Prometheus' discovery file %s: %s", FILE_NAME, exc)
        return None


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _replace_atomically(path: Path, make: Callable[[Path], object]) -> None:
    # A name per process: several Rays on one machine share the temp dir.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        make(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
