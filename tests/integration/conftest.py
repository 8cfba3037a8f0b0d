from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hookcast.cluster.ledger import Ledger


@pytest.fixture(autouse=True)
def _ray(ray_session: None) -> None:
    """Every integration test runs on the session's real Ray."""


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    book = Ledger(tmp_path / "state")
    yield book
    book.close()
