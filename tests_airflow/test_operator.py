"""HookcastOperator in a real Airflow 3: ``dag.test()`` runs tests_airflow/dags/ against real
receivers on 127.0.0.1, each task on its own embedded Ray.

Needs a virtualenv with Airflow (not the main suite's): see .ci/run. One DAG run in a fresh
process holds the three cases, so Airflow and its database are set up once; each task starts
and stops its own embedded Ray (~5-8 s each on a busy 2-core machine).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from hookcast.cluster.testbed.behaviours import OK, Reply, Request
from hookcast.cluster.testbed.sink import Sink
from hookcast.cluster.testbed.synth import write_audience

DAGS = Path(__file__).parent / "dags"
CONTACTS, BATCH_SIZE = 2000, 250  # 8 batches
REFUSED_SEQ = 5  # past the canary's first 3 batches

SCRIPT = textwrap.dedent(
    """
    import importlib.util, json, sys
    import psutil, ray

    spec = importlib.util.spec_from_file_location("hookcast_broadcast", sys.argv[1])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    from airflow.models.xcom import XComModel
    from airflow.providers_manager import ProvidersManager
    from airflow.utils.session import create_session

    run = module.dag.test(run_conf=json.loads(sys.argv[2]))
    with create_session() as session:
        states = {ti.task_id: str(ti.state) for ti in run.get_task_instances(session=session)}
        rows = session.scalars(XComModel.get_many(run_id=run.run_id, dag_ids=run.dag_id))
        xcoms = {f"{r.task_id}.{r.key}": XComModel.deserialize_value(r) for r in rows}
    children = [p.name() for p in psutil.Process().children(recursive=True)]
    print("RESULT " + json.dumps({
        "tasks": states,
        "xcoms": xcoms,
        "ray_left": ray.is_initialized(),
        "children": children,
        "provider": ProvidersManager().providers.get("hookcast") is not None,
    }))
    """
)


def refuse_one_batch(request: Request) -> Reply:
    """400 to one batch (the same in every run): a dead letter, the rest delivered."""
    if request.key and request.key.endswith(f"-{REFUSED_SEQ:06d}"):
        return Reply(400, body=b'{"error":"contact rejected"}')
    return OK


@pytest.fixture(scope="module")
def airflow_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """An Airflow home in a temp dir with its SQLite metadata database migrated."""
    airflow = Path(sys.executable).parent / "airflow"
    assert airflow.exists(), f"no Airflow in {sys.prefix}: pip install 'hookcast[airflow]'"
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(tmp_path_factory.mktemp("airflow-home")),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    env.pop("RAY_ADDRESS", None)  # the operator's default: its own embedded Ray
    migrated = subprocess.run(
        [str(airflow), "db", "migrate"], env=env, capture_output=True, text=True, timeout=300
    )
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    return env


def test_dag_delivers_fails_on_dead_letters_and_leaves_no_ray(
    airflow_env: dict[str, str], tmp_path: Path
) -> None:
    audience = write_audience(tmp_path / "contacts.parquet", CONTACTS)
    ids = set(pq.read_table(audience, columns=["id"]).column("id").to_pylist())
    job_file = tmp_path / "job.yaml"
    job = {
        "name": "airflow-broadcast",
        # Never used: every task gives its own url, which must win.
        "webhook": {"url": "http://127.0.0.1:9/not-this-one", "timeout_s": 10},
        "audience": {"source": audience.name},  # relative to the job file
        "batch_size": BATCH_SIZE,
        "retry": {"max_attempts": 3, "backoff_base_s": 0.05, "backoff_max_s": 0.2},
    }
    job_file.write_text(yaml.safe_dump(job))
    with Sink() as ok, Sink(behaviour=refuse_one_batch) as refusing:
        conf = {
            "job_file": str(job_file),
            "state_dir": str(tmp_path / "state"),
            "ok_url": ok.url,
            "refusing_url": refusing.url,
        }
        ran = subprocess.run(
            [sys.executable, "-c", SCRIPT, str(DAGS / "hookcast_broadcast.py"), json.dumps(conf)],
            env=airflow_env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        result_lines = [line for line in ran.stdout.splitlines() if line.startswith("RESULT ")]
        assert ran.returncode == 0 and result_lines, ran.stdout[-4000:] + ran.stderr[-4000:]
        out = json.loads(result_lines[-1].removeprefix("RESULT "))
        received, refused = ok.recorder, refusing.recorder

    assert out["tasks"] == {
        "deliver": "success",
        "dead_letters": "failed",
        "dead_letters_allowed": "success",
        "report": "success",
    }, ran.stdout[-4000:]

    delivered = out["xcoms"]["deliver.return_value"]
    assert delivered["status"] == "succeeded"
    assert delivered["delivered_contacts"] == CONTACTS == received.contacts
    assert received.delivered_ids == ids and received.duplicate_ids == 0

    # Both runs to the refusing receiver: batch 5 dead-lettered, the other 7 delivered;
    # the failed task's summary is in XCom too.
    for task in ("dead_letters", "dead_letters_allowed"):
        summary = out["xcoms"][f"{task}.return_value"]
        assert summary["status"] == "failed", task
        assert summary["failed_batches"] == 1, task
        assert summary["delivered_contacts"] == CONTACTS - BATCH_SIZE, task
    assert refused.statuses[400] == 2
    assert len(refused.delivered_ids) == CONTACTS - BATCH_SIZE
    assert "dead-lettered 1 of 8 batches (250 contacts not delivered)" in ran.stdout
    assert out["xcoms"]["report.return_value"] == 1  # read downstream, all_done

    assert out["ray_left"] is False
    assert not [name for name in out["children"] if "ray" in name or "gcs_server" in name]
    assert out["provider"], "Airflow does not list the hookcast provider (entry point)"
