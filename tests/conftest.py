"""Fixtures shared by every test folder: a receiver on 127.0.0.1, job files, audiences."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from hookcast.cluster.testbed.sink import Sink
from hookcast.cluster.testbed.synth import write_audience

# Whole modules in the slow tier: they start extra Ray clusters or heads, emulators, or push
# load. `pytest -m "not slow"` runs the rest; CI runs everything.
SLOW_MODULES = frozenset(
    {
        "tests/integration/test_multinode.py",
        "tests/integration/test_submit.py",
        "tests/integration/test_remote_source.py",
        "tests/integration/test_scheduler.py",
        "tests/cli/test_loadtest.py",
        # Whole CLI runs under kills and signals, token lifetimes, the embedded head's
        # processes: ~3 minutes between them on 2 cores.
        "tests/integration/test_delivery.py",
        "tests/integration/test_auth.py",
        "tests/integration/test_embedded.py",
        "tests/integration/test_metrics_relay.py",  # an embedded Ray of its own
        "tests/integration/test_body_limits.py",  # nginx in front of the receiver
        "tests/integration/test_prometheus.py",  # a real Prometheus scraping a run
        "tests/cli/test_signals.py",
        # Real receivers that refuse, fail for seconds, verify signatures, serve TLS.
        "tests/integration/test_pushback.py",
        "tests/integration/test_run_guards.py",
        "tests/integration/test_signed_delivery.py",
    }
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    root = Path(str(config.rootpath))
    for item in items:
        if Path(str(item.path)).relative_to(root).as_posix() in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def metrics_port() -> int:
    """The embedded Ray's Prometheus port (a free loopback port)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def ray_session(metrics_port: int) -> Iterator[None]:
    """One real Ray for the whole session: embedded on 127.0.0.1, or RAY_ADDRESS's cluster."""
    import ray

    from hookcast.cluster.connect import connect

    # Metrics reach the agent every 2 s, not 10 (Ray's default): the Prometheus and metrics
    # tests wait for them. Ray reads it in every process it starts from the environment.
    os.environ.setdefault("RAY_metrics_report_interval_ms", "2000")
    connect(
        os.environ.get("RAY_ADDRESS"),
        num_cpus=2,
        object_store_mb=256,
        metrics_port=metrics_port,
    )
    yield
    ray.shutdown()


@pytest.fixture
def sink() -> Iterator[Sink]:
    """A real HTTP receiver on 127.0.0.1 that records every request."""
    with Sink() as receiver:
        yield receiver


@pytest.fixture(scope="session")
def audience_5k(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_audience(tmp_path_factory.mktemp("audience") / "contacts.parquet", 5000)


@pytest.fixture
def write_job(tmp_path: Path) -> Callable[..., Path]:
    """Write a job file: a valid job for ``url`` and ``source``, updated by ``changes``."""

    def write(url: str, source: Path | str, filename: str = "job.yaml", **changes: object) -> Path:
        job: dict = {
            "name": "test-job",
            "webhook": {"url": url, "timeout_s": 5},
            "payload": {
                "contact": True,
                "identities": ["wechat.openId", "wechat.unionId"],
                "custom": {"a1": "1", "a2": "2"},
            },
            "audience": {"source": str(source)},
            "batch_size": 500,
            "retry": {"max_attempts": 4, "backoff_base_s": 0.05, "backoff_max_s": 0.2},
        }
        for dotted, value in changes.items():
            _set(job, dotted.split("__"), value)
        path = tmp_path / filename
        path.write_text(yaml.safe_dump(job, allow_unicode=True, sort_keys=False))
        return path

    return write


def _set(tree: dict, keys: list[str], value: object) -> None:
    for key in keys[:-1]:
        tree = tree.setdefault(key, {})
    if value is _DELETE:
        tree.pop(keys[-1], None)
    else:
        tree[keys[-1]] = value


_DELETE = object()


@pytest.fixture
def delete() -> object:
    """Pass as a change to ``write_job`` to remove a key."""
    return _DELETE
