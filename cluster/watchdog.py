"""Ends the embedded Ray when the process that started it dies, however it dies.

``ray.shutdown`` stops the embedded Ray on a normal exit, but after a SIGKILL (or a crash)
of the driver nothing does: the GCS and the raylet notice within seconds, while the
raylet's agents (``ray::DashboardAgent``, ``ray::RuntimeEnvAgent``, ~210 MB) live on for a
minute or more. So the driver starts this small process right after its embedded
``ray.init`` and keeps the write end of a pipe whose read end only the watchdog holds. The
kernel closes the write end when the driver dies, for any reason, and the watchdog then
ends the processes of that Ray and exits.

Guarantees:

- It only ever signals processes it was given by pid *and* start time (the driver's new
  children right after ``ray.init``: the GCS, the raylet, ...) and their descendants, found
  by lineage: Ray's agents rename themselves, so command lines prove nothing. A pid reused
  by an unrelated process has another start time and is left alone, and a Ray the user
  started elsewhere is never among them.
- It refreshes the descendants every ``REFRESH_S`` while the driver lives, so a process
  whose parent dies first (the agents outlive the raylet) is still known when it counts.
- In its own session, so a Ctrl-C to the terminal's process group does not reach it.
- On a normal exit the processes are gone already: it finds nothing alive and exits.

Imports only psutil: it starts in tens of milliseconds and takes a few MB.
"""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import psutil

REFRESH_S = 1.0  # how often the descendants of the known processes are looked up
KILL_WAIT_S = 2.0  # how long the killed processes are waited for before the watchdog exits
_SAME_START_S = 0.05  # start times read by two processes may differ by rounding


@dataclass(frozen=True, slots=True)
class Watched:
    """A process known by pid and start time (together they never name another one)."""

    pid: int
    started: float

    def process(self) -> psutil.Process | None:
        """The process itself if it is still this one and alive, else None."""
        try:
            proc = psutil.Process(self.pid)
            if abs(proc.create_time() - self.started) > _SAME_START_S:
                return None
            return proc if proc.status() != psutil.STATUS_ZOMBIE else None
        except psutil.Error:
            return None

    @classmethod
    def of(cls, proc: psutil.Process) -> Watched | None:
        try:
            return cls(proc.pid, proc.create_time())
        except psutil.Error:
            return None


def new_children(before: Iterable[int]) -> list[psutil.Process]:
    """This process's children (and theirs) that did not exist as children before: what a
    call such as ``ray.init`` just started."""
    known = set(before)
    me = psutil.Process()
    roots = [p for p in me.children() if p.pid not in known]
    found = list(roots)
    for root in roots:
        with contextlib.suppress(psutil.Error):
            found += root.children(recursive=True)
    return found


def child_pids() -> set[int]:
    return {p.pid for p in psutil.Process().children()}


class Handle:
    """The driver's end: closing it (or the driver's death) lets the watchdog act."""

    def __init__(self, write_fd: int, proc: subprocess.Popen) -> None:
        self._fd: int | None = write_fd
        self.proc = proc

    def release(self) -> None:
        """Close the pipe: the watchdog ends whatever is left of the watched processes and
        exits. Idempotent."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def start(processes: Sequence[psutil.Process]) -> Handle | None:
    """Start a watchdog over ``processes`` and their future descendants; None if there is
    nothing to watch."""
    watched = [w for w in map(Watched.of, processes) if w is not None]
    if not watched:
        return None
    read_fd, write_fd = os.pipe()  # both ends non-inheritable; the child gets read_fd only
    args = [f"{w.pid}:{w.started!r}" for w in watched]
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "hookcast.cluster.watchdog", str(read_fd), *args],
            pass_fds=(read_fd,),
            start_new_session=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            close_fds=True,
        )
    finally:
        os.close(read_fd)
    return Handle(write_fd, proc)


def refresh(watched: dict[int, Watched]) -> None:
    """Add every live descendant of the watched processes to ``watched``."""
    for item in list(watched.values()):
        proc = item.process()
        if proc is None:
            continue
        try:
            children = proc.children(recursive=True)
        except psutil.Error:
            continue
        for child in children:
            if child.pid not in watched:
                found = Watched.of(child)
                if found is not None:
                    watched[child.pid] = found


def end(watched: Iterable[Watched], wait_s: float = KILL_WAIT_S) -> list[int]:
    """SIGKILL the watched processes still alive and wait up to ``wait_s`` for them to be
    gone; the pids killed.

    Not SIGTERM first: their driver is dead, so nothing they could still do is wanted, an
    embedded Ray keeps no state on disk, and the agents took over 2 s to answer SIGTERM
    (measured), which is as long as the whole cleanup takes otherwise."""
    alive = [p for p in (w.process() for w in watched) if p is not None]
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline and any(_running(p) for p in alive):
        time.sleep(0.02)
    return [p.pid for p in alive]


def _running(proc: psutil.Process) -> bool:
    """Alive and not a zombie (a killed orphan stays one until init reaps it)."""
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def watch(read_fd: int, watched: dict[int, Watched], refresh_s: float = REFRESH_S) -> None:
    """Until ``read_fd`` reaches end of file, keep ``watched`` complete; then end them all."""
    while True:
        ready, _, _ = select.select([read_fd], [], [], refresh_s)
        if ready and not os.read(read_fd, 4096):
            break
        refresh(watched)
    refresh(watched)
    end(watched.values())


def main(argv: Sequence[str] | None = None) -> None:
    fd, *specs = sys.argv[1:] if argv is None else argv
    watched: dict[int, Watched] = {}
    for spec in specs:
        pid, _, started = spec.partition(":")
        watched[int(pid)] = Watched(int(pid), float(started))
    watch(int(fd), watched)


if __name__ == "__main__":
    main()
