"""The Python API as an orchestrator calls it: in a fresh process, ``hookcast.run`` starts the
embedded Ray, sends every contact, and leaves no Ray behind; errors are hookcast's."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import hookcast
from hookcast.cluster.ledger import Ledger
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


def test_a_job_built_in_code_runs_and_its_text_is_stored(
    sink: Sink, audience_5k: Path, tmp_path: Path
) -> None:
    env = {"BUILT_IN_CODE_KEY": "key-51c0"}
    job = hookcast.Job(
        name="built-in-code",
        webhook={"url": sink.url, "timeout_s": 5, "headers": {"X-Api-Key": "${BUILT_IN_CODE_KEY}"}},
        audience={"source": audience_5k.name},  # relative to base_dir
        batch_size=250,
        retry={"max_attempts": 4, "backoff_base_s": 0.05, "backoff_max_s": 0.2},
        base_dir=audience_5k.parent,
        env=env,
    )
    summary = hookcast.run(job, state_dir=tmp_path / "state")  # on the session's Ray
    assert (summary.status, summary.delivered_contacts, summary.batches) == ("succeeded", 5000, 20)
    assert len(sink.recorder.delivered_ids) == 5000
    assert {a.headers["x-api-key"] for a in sink.recorder.arrivals} == {"key-51c0"}
    with contextlib.closing(Ledger(tmp_path / "state")) as ledger:
        stored = ledger.get_run(summary.run_id)
    assert stored.job_text == job.raw_text and "key-51c0" not in stored.job_text
    again = hookcast.load_job_text(stored.job_text, stored.job_path, env=env)  # resume's route
    assert (again.spec, again.source) == (job.spec, job.source)
