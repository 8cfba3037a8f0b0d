"""The watchdog that ends an embedded Ray whose driver died: real processes, no Ray.

A "Ray" here is a sleeping process tree; the "driver" is a subprocess that starts the
watchdog over its own child, the way cluster/connect.py does after ``ray.init``."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator

import psutil
import pytest

from hookcast.cluster import watchdog

SLEEPER = [sys.executable, "-c", "import time; time.sleep(120)"]
# A process that starts a sleeping child, then sleeps itself (a raylet and its agent).
PARENT = [
    sys.executable,
    "-c",
    "import subprocess, sys, time; "
    "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']); time.sleep(120)",
]
GONE_WITHIN_S = 10  # the watchdog reacts in ~0.1 s; the bound is for a loaded machine


def _running(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _wait_until_gone(procs: list[psutil.Process], within_s: float = GONE_WITHIN_S) -> list:
    deadline = time.monotonic() + within_s
    alive = procs
    while alive and time.monotonic() < deadline:
        alive = [p for p in alive if _running(p)]
        time.sleep(0.02)
    return alive


def _children_of(proc: psutil.Process, count: int) -> list[psutil.Process]:
    deadline = time.monotonic() + GONE_WITHIN_S
    while len(found := proc.children(recursive=True)) < count:
        assert time.monotonic() < deadline, f"{proc.pid} did not start {count} children"
        time.sleep(0.02)
    return found


@pytest.fixture
def spawned() -> Iterator[list[subprocess.Popen]]:
    """Processes a test starts; whatever a test leaves is killed by pid after it."""
    started: list[subprocess.Popen] = []
    yield started
    for proc in started:
        try:
            for child in psutil.Process(proc.pid).children(recursive=True):
                child.kill()
        except psutil.NoSuchProcess:
            pass
        proc.kill()
        proc.wait()


def test_release_ends_watched_processes_and_their_descendants(spawned) -> None:
    parent = subprocess.Popen(PARENT)
    spawned.append(parent)
    root = psutil.Process(parent.pid)
    (grandchild,) = _children_of(root, 1)

    handle = watchdog.start([root])  # the grandchild is found by lineage, not given
    assert handle is not None
    handle.release()

    assert not _wait_until_gone([root, grandchild])
    assert handle.proc.wait(timeout=GONE_WITHIN_S) == 0
    handle.release()  # idempotent


def test_a_killed_driver_takes_its_processes_with_it(spawned, tmp_path) -> None:
    driver_code = textwrap.dedent(
        f"""
        import subprocess, sys, time
        import psutil
        from hookcast.cluster import watchdog
        before = watchdog.child_pids()
        ray = psutil.Process(subprocess.Popen({PARENT!r}).pid)
        while not ray.children():
            time.sleep(0.01)
        handle = watchdog.start(watchdog.new_children(before))
        print(handle.proc.pid, flush=True)
        time.sleep(120)
        """
    )
    driver = subprocess.Popen([sys.executable, "-c", driver_code], stdout=subprocess.PIPE)
    spawned.append(driver)
    watchdog_pid = int(driver.stdout.readline())
    tree = psutil.Process(driver.pid).children(recursive=True)
    watched = [p for p in tree if p.pid != watchdog_pid]
    assert len(watched) == 2, tree
    assert psutil.Process(watchdog_pid).children() == []
    assert watchdog_pid == os.getsid(watchdog_pid)  # its own session

    driver.kill()
    driver.wait()

    assert not _wait_until_gone([*watched, psutil.Process(watchdog_pid)])


def test_processes_found_while_the_driver_lives_are_ended_after_their_parent_died(
    spawned,
) -> None:
    parent = subprocess.Popen(PARENT)
    spawned.append(parent)
    root = psutil.Process(parent.pid)
    (orphan,) = _children_of(root, 1)
    watched = {root.pid: watchdog.Watched.of(root)}

    watchdog.refresh(watched)
    parent.kill()
    parent.wait()  # the child now belongs to init: no lineage leads to it any more

    assert orphan.pid in watched
    assert watchdog.end(watched.values()) == [orphan.pid]
    assert not _running(orphan)


def test_a_pid_with_another_start_time_is_never_signalled(spawned) -> None:
    bystander = subprocess.Popen(SLEEPER)
    spawned.append(bystander)
    proc = psutil.Process(bystander.pid)
    recycled = watchdog.Watched(proc.pid, proc.create_time() - 60)

    assert recycled.process() is None
    assert watchdog.end([recycled]) == []
    assert _running(proc)


def test_nothing_left_to_end_on_a_normal_exit(spawned) -> None:
    child = subprocess.Popen(SLEEPER)
    spawned.append(child)
    handle = watchdog.start([psutil.Process(child.pid)])
    assert handle is not None
    child.kill()
    child.wait()  # what ray.shutdown does before the pipe closes

    handle.release()
    assert handle.proc.wait(timeout=GONE_WITHIN_S) == 0


def test_nothing_to_watch_starts_no_watchdog() -> None:
    assert watchdog.start([]) is None
