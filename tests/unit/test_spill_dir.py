"""A segment's spill folder: a new segment removes the folders of this host's processes
that are gone (a killed actor runs no cleanup), never a live process's or another host's."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from hookcast.actors import spill_dir
from hookcast.actors.spill_dir import PREFIX, make_spill_dir, remove_orphans


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # reaped: the pid names no process now
    return child.pid


def _spill(parent: Path, host: str, pid: int) -> Path:
    folder = parent / f"{PREFIX}{host}-{pid}-abc123"
    (folder / "bucket-0").mkdir(parents=True)
    (folder / "bucket-0" / "part.arrow").write_bytes(b"spilled")
    return folder


def test_only_the_folders_of_this_hosts_gone_processes_are_removed(tmp_path: Path) -> None:
    dead, live = _dead_pid(), os.getpid()
    gone = _spill(tmp_path, "node_a", dead)
    running = _spill(tmp_path, "node_a", live)
    other_host = _spill(tmp_path, "node_b", dead)
    unnamed = tmp_path / f"{PREFIX}x1y2z3"  # an older segment's: no owner to check
    unnamed.mkdir()

    assert remove_orphans(tmp_path, "node_a") == [gone]
    assert not gone.exists()
    assert running.exists() and other_host.exists() and unnamed.exists()


def test_a_host_name_that_prefixes_another_is_not_confused(tmp_path: Path) -> None:
    longer = _spill(tmp_path, "node_1", _dead_pid())  # host names are kept free of "-"
    assert remove_orphans(tmp_path, "node") == []
    assert longer.exists()


def test_host_names_lose_the_separator() -> None:
    assert "-" not in spill_dir.host_name("ray-worker-7.cluster.local")


def test_make_spill_dir_names_this_process(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)  # gettempdir() reads TMPDIR again
    folder = Path(make_spill_dir())
    assert folder.parent == tmp_path
    assert folder.name.startswith(PREFIX) and f"-{os.getpid()}-" in folder.name
