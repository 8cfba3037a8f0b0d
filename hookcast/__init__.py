"""hookcast: broadcast an audience in parquet to a webhook, 500 contacts per POST, on Ray.

Installed, the repository's ``actors/``, ``cluster/`` and ``cli/`` folders live under this one
import name (``hookcast.actors``, ``hookcast.cluster``, ``hookcast.cli``). The Python API
(``hookcast.load_job``, ``Job``, ``validate``, ``run``, ``resume``, ``replay``) is
``hookcast.api``'s.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("hookcast")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0.0.0"

# The Python API (``hookcast.api``), importable from here.
_API = (
    "AudienceSize",
    "HookcastError",
    "Job",
    "JobError",
    "LoadedJob",
    "Progress",
    "RunSummary",
    "load_job",
    "load_job_text",
    "replay",
    "resume",
    "run",
    "validate",
)


def __getattr__(name: str) -> object:
    # Imported when first asked for: `hookcast.cli` (the command line) does not pay for it.
    if name in _API:
        from hookcast import api

        return getattr(api, name)
    raise AttributeError(f"module 'hookcast' has no attribute {name!r}")


__all__ = ["__version__", *_API]
