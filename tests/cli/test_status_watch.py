"""`hookcast status --watch`: refreshed until Ctrl-C, in place on a terminal, as JSON lines
for scripts; and the view itself, a function of what was read."""

from __future__ import annotations

import fcntl
import itertools
import os
import pty
import queue
import select
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Callable
from pathlib import Path

import orjson
from rich.console import Console

from hookcast.cli import output
from hookcast.cluster.ledger import Ledger, RunRecord, RunStatus
from hookcast.cluster.status import ActorStatus, StatusSnapshot

RUN = "watched-20261203T100000-ab12"
DEADLINE_S = 60  # a bound for a loaded machine, not a pace: every wait ends on output


def _command(state: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "hookcast.cli.app",
        "status",
        "--watch",
        "--interval",
        "0.2",
        "--state-dir",
        str(state),
        *extra,
    ]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # no cluster to list
    return {**env, "COLUMNS": "200", "TERM": "xterm-256color"}


def _ctrl_c_as_on_a_terminal() -> None:
    """A job a non-interactive shell starts in the background inherits SIGINT ignored (and a
    Python child then never raises KeyboardInterrupt): give the watcher the default."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start_running_run(state: Path) -> None:
    """A run the watcher will show as running: its pid (this test's) is alive."""
    ledger = Ledger(state)
    ledger.create_run(
        RunRecord(
            RUN,
            "watched",
            RunStatus.RUNNING,
            contacts=1000,
            batches=2,
            created_at=time.time(),
            pid=os.getpid(),
        )
    )
    ledger.close()


def _stop(process: subprocess.Popen) -> int:
    process.send_signal(signal.SIGINT)
    return process.wait(timeout=DEADLINE_S)


def test_watch_redraws_in_place_on_a_terminal_until_ctrl_c(tmp_path: Path) -> None:
    state = tmp_path / "state"
    Ledger(state).close()
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 200, 0, 0))
    process = subprocess.Popen(
        _command(state),
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=_env(),
        close_fds=True,
        preexec_fn=_ctrl_c_as_on_a_terminal,
    )
    os.close(slave)
    seen = bytearray()

    def read_until(wanted: Callable[[bytes], bool]) -> None:
        deadline = time.monotonic() + DEADLINE_S
        while not wanted(bytes(seen)) and time.monotonic() < deadline:
            if select.select([master], [], [], 0.5)[0]:
                try:
                    seen.extend(os.read(master, 65536))
                except OSError:  # the child has gone: nothing more to read
                    return

    try:
        read_until(lambda text: b"no run is running in" in text)
        assert b"no run is running in" in seen, seen.decode(errors="replace")
        _start_running_run(state)
        read_until(lambda text: RUN.encode() in text)  # a later refresh read the ledger again
        assert RUN.encode() in seen, seen.decode(errors="replace")
        code = _stop(process)
        read_until(lambda text: False)  # what it wrote on the way out
    finally:
        if process.poll() is None:
            process.kill()
        os.close(master)
    text = seen.decode(errors="replace")
    assert code == 0, text
    assert "\x1b[2K" in text  # lines erased and drawn again: refreshed in place
    assert text.count("hookcast status at") >= 2
    assert "Traceback" not in text and "KeyboardInterrupt" not in text


def _lines(process: subprocess.Popen) -> queue.Queue:
    lines: queue.Queue = queue.Queue()

    def pump() -> None:
        for line in process.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return lines


def _next(lines: queue.Queue) -> str:
    line = lines.get(timeout=DEADLINE_S)
    assert line is not None, "the watcher ended before it was stopped"
    return line


def test_watch_with_json_prints_one_object_per_line_per_refresh(tmp_path: Path) -> None:
    state = tmp_path / "state"
    Ledger(state).close()
    process = subprocess.Popen(
        _command(state, "--json"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=_ctrl_c_as_on_a_terminal,
        text=True,
        env=_env(),
    )
    try:
        lines = _lines(process)
        first = orjson.loads(_next(lines))
        _start_running_run(state)
        later = [orjson.loads(_next(lines))]
        while not later[-1]["runs"]:
            later.append(orjson.loads(_next(lines)))
        code = _stop(process)
        stderr = process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
    assert code == 0, stderr
    assert first == {"at": first["at"], "runs": [], "actors": []}
    assert [r["run_id"] for r in later[-1]["runs"]] == [RUN]
    assert later[-1]["runs"][0]["status"] == "running"
    shown = [first, *later]
    assert all(a["at"] < b["at"] for a, b in itertools.pairwise(shown))
    assert "Traceback" not in stderr


def test_watch_into_a_pipe_prints_each_view_after_the_last(tmp_path: Path) -> None:
    state = tmp_path / "state"
    _start_running_run(state)
    process = subprocess.Popen(
        _command(state),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
        preexec_fn=_ctrl_c_as_on_a_terminal,
    )
    try:
        lines = _lines(process)
        headers = 0
        while headers < 2:
            headers += "hookcast status at" in _next(lines)
        code = _stop(process)
        stderr = process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
    assert code == 0, stderr
    assert "Traceback" not in stderr


def _shown(view) -> str:
    console = Console(width=200, record=True, color_system=None)
    console.print(view)
    return console.export_text()


def test_the_view_is_a_function_of_what_was_read() -> None:
    run = RunRecord(RUN, "watched", "running", contacts=1000, batches=2, delivered_contacts=500)
    sender = ActorStatus(
        f"hookcast/{RUN}/sender-0",
        "SenderActor",
        "ALIVE",
        "ab" * 28,
        "127.0.0.1",
        4242,
        0,
        {"delivered_contacts": 500, "attempts": {"delivered": 1}, "in_flight": 1},
    )
    taken = time.mktime((2026, 12, 3, 10, 11, 12, 0, 0, -1))

    idle = _shown(
        output.status_view(StatusSnapshot([], [], taken), state_dir="/s", address="ray://h")
    )
    busy = _shown(
        output.status_view(
            StatusSnapshot([run], [sender], taken), state_dir="/s", address=None, every_s=0.5
        )
    )

    assert "no run is running in /s" in idle and "no hookcast actors on ray://h" in idle
    assert "hookcast status at" not in idle
    assert "hookcast status at 10:11:12, every 0.5 s (Ctrl-C stops)" in busy
    assert RUN in busy and "500/1,000" in busy
    assert "sender-0" in busy and "500 delivered, 1 attempts, 1 in flight" in busy
