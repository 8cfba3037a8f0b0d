"""The DAG the Airflow tests run through ``dag.test()``: one job file (templated from the
run's conf) sent by three tasks: to a receiver that takes everything, and twice to one that
refuses a batch (dead letters fail the task, unless allowed); then a task that reads the
failed one's summary.

conf: job_file, state_dir, ok_url, refusing_url (see test_operator.py).
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG, task

from hookcast.airflow.operators import HookcastOperator

JOB_FILE = "{{ dag_run.conf['job_file'] }}"
STATE_DIR = "{{ dag_run.conf['state_dir'] }}"

with DAG(dag_id="hookcast_broadcast", schedule=None, start_date=datetime(2026, 1, 1)) as dag:
    HookcastOperator(
        task_id="deliver",
        job_file=JOB_FILE,
        url="{{ dag_run.conf['ok_url'] }}",
        state_dir=STATE_DIR,
    )
    dead_letters = HookcastOperator(
        task_id="dead_letters",
        job_file=JOB_FILE,
        url="{{ dag_run.conf['refusing_url'] }}",
        state_dir=STATE_DIR,
    )
    HookcastOperator(
        task_id="dead_letters_allowed",
        job_file=JOB_FILE,
        url="{{ dag_run.conf['refusing_url'] }}",
        state_dir=STATE_DIR,
        allow_dead_letters=True,
    )

    @task(trigger_rule="all_done")
    def report(summary: dict) -> int:
        """What a downstream task reads of a failed broadcast: its summary in XCom."""
        return summary["failed_batches"]

    report(dead_letters.output)
