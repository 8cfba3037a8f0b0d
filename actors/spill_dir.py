"""The segment's folder for spill files (DuckDB's and the frozen-order buckets').

A segment actor ends with ``ray.kill``, which runs no cleanup, and a worker can crash: each
folder is named after its host and process, and a new one first removes the folders of this
host's processes that are gone, with whatever they spilled. Another host's folders (a /tmp
shared between pods) are never touched: their processes cannot be seen from here."""

from __future__ import annotations

import os
import re
import shutil
import socket
import tempfile
from pathlib import Path

PREFIX = "hookcast-segment-"


def host_name(name: str | None = None) -> str:
    """This host's name as folder names carry it: no "-", which separates host from pid."""
    return re.sub(r"[^A-Za-z0-9.]", "_", name or socket.gethostname())[:64] or "host"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_orphans(parent: Path, host: str) -> list[Path]:
    """Remove ``parent``'s spill folders of ``host`` (a ``host_name``) whose process is
    gone; returns the removed."""
    owned = re.compile(rf"{re.escape(PREFIX)}{re.escape(host)}-(\d+)-")
    removed = []
    for path in parent.glob(f"{PREFIX}{host}-*"):
        found = owned.match(path.name)
        if found and path.is_dir() and not _alive(int(found.group(1))):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def make_spill_dir() -> str:
    """A new spill folder for this process, in the temp dir, once the orphans are gone."""
    parent, host = Path(tempfile.gettempdir()), host_name()
    remove_orphans(parent, host)
    return tempfile.mkdtemp(prefix=f"{PREFIX}{host}-{os.getpid()}-")
