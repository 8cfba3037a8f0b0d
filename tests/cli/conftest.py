from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _ray(ray_session: None) -> None:
    """`hookcast run` in these tests joins the session's real Ray."""
