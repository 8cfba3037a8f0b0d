"""bench/run_bench.py's ProcessTree on a real process tree: each kind keeps the peak RSS of
its largest process, so a sweep can say which process grows with the audience."""

from __future__ import annotations

import subprocess
import sys

from bench.run_bench import MB, ProcessTree

# A child that holds ~64 MB resident, then waits to be killed.
HOLDER = "import sys, time; block = bytearray(64 << 20); print('ready', flush=True); time.sleep(60)"


def test_each_kind_keeps_its_largest_process_peak() -> None:
    spawn = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {HOLDER!r}])"
    parent = subprocess.Popen([sys.executable, "-c", spawn], stdout=subprocess.PIPE, text=True)
    children = []
    try:
        assert parent.stdout.readline().strip() == "ready"  # the grandchild holds its block
        tree = ProcessTree(parent.pid)
        tree.sample()
        children = [p for pid, p in tree.known.items() if pid != parent.pid]

        (holder,) = set(tree.peak_by_kind) - {"driver"}  # the root, then the child by name
        assert tree.peak_by_kind[holder] >= 64 * MB
        assert tree.peak_by_kind["driver"] < 64 * MB
        assert (tree.peak_single, tree.largest) == (tree.peak_by_kind[holder], holder)
        assert tree.peak_total >= sum(tree.peak_by_kind.values())
    finally:
        for child in children:
            child.kill()
        parent.kill()
        parent.wait()
