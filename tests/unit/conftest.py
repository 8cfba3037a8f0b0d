from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hookcast.actors.segment import Segment, SegmentConfig
from hookcast.cluster.ledger import Ledger

from .fakes import FakeClock

SEGMENT_BATCH = 100  # the batch size of the `segment` fixture's segments, unless told


@pytest.fixture(autouse=True)
def _no_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unit tests are plain Python: starting Ray here is a bug in the test."""
    import ray

    def refuse(*args: object, **kwargs: object) -> None:
        raise RuntimeError("unit tests must not start Ray; move this test to tests/integration")

    monkeypatch.setattr(ray, "init", refuse)


@pytest.fixture
def segment() -> Iterator[Callable[..., Segment]]:
    """Make plain `Segment`s (batch size ``SEGMENT_BATCH`` unless given); closed after."""
    opened: list[Segment] = []

    def make(source: str | Path, **options: object) -> Segment:
        options.setdefault("batch_size", SEGMENT_BATCH)
        seg = Segment(SegmentConfig(source=str(source), **options))
        opened.append(seg)
        return seg

    yield make
    for seg in opened:
        seg.close()


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    """A real ledger in a fresh state dir."""
    book = Ledger(tmp_path / "state")
    yield book
    book.close()


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A TCP socket on 127.0.0.1 that only counts the connections made to it
    (``tests.ports.accepted``)."""
    server = socket.create_server(("127.0.0.1", 0))
    server.setblocking(False)
    yield server
    server.close()


@pytest.fixture
def clock() -> FakeClock:
    """Monotonic and wall time that move only when the code under test waits."""
    return FakeClock()
