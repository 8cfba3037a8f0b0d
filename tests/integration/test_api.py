"""The Python API as an orchestrator calls it: in a fresh process, ``hookcast.run`` starts the
embedded Ray, sends every contact, and leaves no Ray behind; errors are hookcast's."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from hookcast.cluster.testbed.sink import Sink

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import psutil, ray
    import hookcast

    job = hookcast.load_job(sys.argv[1])
    seen = []
    summary = hookcast.run(job, state_dir=sys.argv[2], on_progress=seen.append)
    children = [p.name() for p in psutil.Process().children(recursive=True)]
    try:
        hookcast.resume("no-such-run", state_dir=sys.argv[2])
        error = None
    except hookcast.HookcastError as exc:
        error = type(exc).__name__
    print(json.dumps({
        "summary": summary.to_dict(),
        "ray_left": ray.is_initialized(),
        "children": children,
        "progress_calls": len(seen),
        "error": error,
    }))
    """
)


def test_run_from_python_sends_everything_and_leaves_no_ray(
    write_job, audience_5k: Path, tmp_path: Path
) -> None:
    with Sink() as sink:
        job = write_job(sink.url, audience_5k)
        ran = subprocess.run(
            [sys.executable, "-c", SCRIPT, str(job), str(tmp_path / "state")],
            capture_output=True,
            text=True,
            timeout=120,
        )
        delivered = len(sink.recorder.delivered_ids)
    assert ran.returncode == 0, ran.stderr
    out = json.loads(ran.stdout.strip().splitlines()[-1])
    assert out["summary"]["status"] == "succeeded"
    assert out["summary"]["delivered_contacts"] == 5000 == delivered
    assert out["ray_left"] is False
    assert not [name for name in out["children"] if "ray" in name or "raylet" in name]
    assert out["progress_calls"] > 0
    assert out["error"] == "RunNotFoundError"
