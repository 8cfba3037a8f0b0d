"""hookcast: broadcast an audience in parquet to a webhook, 500 contacts per POST, on Ray.

Installed, the repository's ``actors/``, ``cluster/`` and ``cli/`` folders live under this one
import name (``hookcast.actors``, ``hookcast.cluster``, ``hookcast.cli``).
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("hookcast")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0.0.0"

__all__ = ["__version__"]
