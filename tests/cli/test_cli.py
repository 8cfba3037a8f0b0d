"""The command line as a user drives it: exit codes, messages, --json, against a real receiver."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from hookcast.cli.app import app
from hookcast.cluster.testbed.sink import Reply, Sink

runner = CliRunner()

COMMANDS = [
    [],
    ["demo"],
    ["validate"],
    ["preview"],
    ["run"],
    ["resume"],
    ["replay"],
    ["runs"],
    ["runs", "show"],
    ["sink"],
    ["schedule"],
    ["schedule", "add"],
    ["schedule", "list"],
    ["schedule", "pause"],
    ["schedule", "resume"],
    ["schedule", "remove"],
    ["scheduler"],
    ["scheduler", "run"],
    ["scheduler", "start"],
    ["scheduler", "stop"],
    ["auth"],
    ["auth", "test"],
    ["loadtest"],
    ["status"],
    ["submit"],
    ["keys"],
    ["keys", "new"],
    ["schema"],
    ["init"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "hookcast")
def test_every_command_has_help(command: list[str]) -> None:
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_the_help_test_lists_every_command_and_sub_command() -> None:
    import typer

    def paths(command: object, prefix: list[str]) -> list[list[str]]:
        found = [prefix]
        if hasattr(command, "commands"):  # a group
            for name, sub in command.commands.items():
                found += paths(sub, [*prefix, name])
        return found

    every = paths(typer.main.get_command(app), [])
    assert sorted(map(tuple, every)) == sorted(map(tuple, COMMANDS))


def invoke(*args: str | Path, env: dict[str, str] | None = None):
    return runner.invoke(app, [str(a) for a in args], env=env)


def test_run_json_prints_one_summary_object(
    sink: Sink, write_job, audience_5k: Path, tmp_path: Path
) -> None:
    job = write_job(sink.url, audience_5k)
    result = invoke("run", job, "--json", "--state-dir", tmp_path / "state")
    assert result.exit_code == 0, result.output
    summary = orjson.loads(result.stdout)
    for key in (
        "run_id",
        "job",
        "contacts",
        "batches",
        "delivered_batches",
        "failed_batches",
        "retries",
        "duration_s",
        "contacts_per_s",
    ):
        assert key in summary
    assert summary["contacts"] == 5000 and summary["batches"] == 10
    assert summary["delivered_batches"] == 10 and summary["failed_batches"] == 0
    assert sink.recorder.contacts == 5000

    listed = invoke("runs", "--json", "--state-dir", tmp_path / "state")
    assert listed.exit_code == 0
    [run] = orjson.loads(listed.stdout)
    assert run["run_id"] == summary["run_id"] and run["status"] == "succeeded"

    shown = invoke(
        "runs", "show", summary["run_id"][:-2], "--json", "--state-dir", tmp_path / "state"
    )
    assert shown.exit_code == 0
    assert orjson.loads(shown.stdout)["failed"] == []


def test_dead_lettered_run_exits_1_and_runs_show_lists_the_batches(
    write_job, audience_5k: Path, tmp_path: Path
) -> None:
    with Sink(behaviour=lambda r: Reply(status=422, body=b"no such campaign")) as receiver:
        job = write_job(receiver.url, audience_5k, canary__batches=0)  # every batch is sent
        result = invoke("run", job, "--json", "--state-dir", tmp_path / "state")
    assert result.exit_code == 1
    run_id = orjson.loads(result.stdout)["run_id"]
    shown = invoke("runs", "show", run_id, "--json", "--state-dir", tmp_path / "state")
    failed = orjson.loads(shown.stdout)["failed"]
    assert len(failed) == 10
    assert {b["status"] for b in failed} == {"dead_lettered"}
    assert all(b["http_status"] == 422 and "no such campaign" in b["reason"] for b in failed)
    human = invoke("runs", "show", run_id, "--state-dir", tmp_path / "state")
    assert "10 batches not delivered" in human.output


def test_validate_and_preview_send_nothing(sink: Sink, write_job, audience_5k: Path) -> None:
    job = write_job(sink.url, audience_5k, webhook__headers={"X-Api-Key": "${HOOK_KEY}"})
    env = {"HOOK_KEY": "s3cr3t-value"}
    checked = invoke("validate", job, env=env)
    assert checked.exit_code == 0, checked.output
    assert "5,000 contacts in 10 batches" in checked.output

    shown = invoke("preview", job, "--batches", "2", env=env)
    assert shown.exit_code == 0, shown.output
    assert "s3cr3t-value" not in shown.output
    assert "X-Api-Key: ***" in shown.output
    bodies = [line for line in shown.output.splitlines() if line.startswith("[")]
    assert [len(orjson.loads(b)) for b in bodies] == [500, 500]
    assert "audience: 5,000 contacts in 10 batches" in shown.output
    assert sink.recorder.requests == 0


def _bad_source(tmp_path: Path, kind: str) -> str:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if kind == "no-id":
        path = tmp_path / "noid.parquet"
        pq.write_table(pa.table({"name": ["a"]}), path)
        return str(path)
    if kind == "not-parquet":
        path = tmp_path / "text.parquet"
        path.write_text("id,name\n1,a\n")
        return str(path)
    return str(tmp_path / "nowhere" / "*.parquet")


BAD_JOBS = {
    "unknown key": ({"webhook__retries": 3}, "webhook.retries"),
    "unknown top-level key": ({"batchsize": 3}, "batchsize"),
    "missing url": ({"webhook__url": "DELETE"}, "webhook.url"),
    "ftp url": ({"webhook__url": "ftp://example.com/x"}, "only http and https"),
    "method GET": ({"webhook__method": "GET"}, "webhook.method"),
    "format xml": ({"webhook__format": "xml"}, "webhook.format"),
    "batch_size 0": ({"batch_size": 0}, "batch_size"),
    "batch_size 501": ({"batch_size": 501}, "batch_size"),
    "batch_size '500'": ({"batch_size": "500"}, "batch_size"),
    "batch_size 2.5": ({"batch_size": 2.5}, "batch_size"),
    "where and ids": (
        {"audience__where": "ver > 1", "audience__ids": "ids.parquet"},
        "audience.where and audience.ids",
    ),
    "where on a missing column": ({"audience__where": "tier = 'gold'"}, 'column "tier"'),
    "missing env": (
        {"webhook__headers": {"Authorization": "Bearer ${NO_SUCH_VAR_X}"}},
        "NO_SUCH_VAR_X",
    ),
}


@pytest.mark.parametrize("case", BAD_JOBS, ids=str)
def test_bad_job_is_rejected_before_any_request(
    case: str, sink: Sink, write_job, delete, audience_5k: Path, tmp_path: Path
) -> None:
    changes, named = BAD_JOBS[case]
    changes = {k: (delete if v == "DELETE" else v) for k, v in changes.items()}
    result = invoke(
        "run", write_job(sink.url, audience_5k, **changes), "--state-dir", tmp_path / "state"
    )
    assert result.exit_code == 2, result.output
    assert named in result.output
    assert "Traceback" not in result.output
    assert sink.recorder.requests == 0


@pytest.mark.parametrize("kind", ["no-id", "not-parquet", "no-file"])
def test_bad_audience_source_is_rejected_naming_the_file(
    kind: str, sink: Sink, write_job, tmp_path: Path
) -> None:
    source = _bad_source(tmp_path, kind)
    result = invoke("run", write_job(sink.url, source), "--state-dir", tmp_path / "state")
    assert result.exit_code == 2, result.output
    assert "audience.source" in result.output
    expected = {
        "no-id": "no `id` column",
        "not-parquet": "cannot be read as parquet",
        "no-file": "matches no file",
    }[kind]
    assert expected in result.output
    assert sink.recorder.requests == 0


@pytest.mark.parametrize(
    ("text", "message"),
    [("", "is empty"), ("- a\n- b\n", "must be a YAML mapping"), ("name: [x\n", "not valid YAML")],
)
def test_malformed_job_file_is_rejected(text: str, message: str, tmp_path: Path) -> None:
    job = tmp_path / "job.yaml"
    job.write_text(text)
    result = invoke("validate", job)
    assert result.exit_code == 2
    assert message in result.output


@pytest.mark.parametrize("scheme", ["", "ray://"], ids=["gcs", "ray-client"])
def test_an_address_where_no_cluster_answers_is_a_clear_error_and_nothing_is_sent(
    write_job, audience_5k: Path, tmp_path: Path, scheme: str
) -> None:
    """Ray itself would retry for minutes with warnings only; hookcast says so at once."""
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    address = f"{scheme}127.0.0.1:{port}"
    state = str(tmp_path / "state")
    with Sink() as receiver:
        job = write_job(receiver.url, audience_5k)
        ran = subprocess.run(
            [
                sys.executable,
                "-m",
                "hookcast.cli.app",
                "run",
                str(job),
                "--address",
                address,
                "--state-dir",
                state,
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        requests = receiver.recorder.requests
    assert ran.returncode == 4, ran.stderr[-2000:]  # ClusterError
    assert f"--address {address}: no Ray cluster answers there" in ran.stderr
    assert "Traceback" not in ran.stderr
    assert requests == 0


def test_unknown_run_is_a_clear_error(tmp_path: Path) -> None:
    result = invoke("runs", "show", "nope", "--state-dir", tmp_path / "state")
    assert result.exit_code == 2
    assert "no run nope" in result.output


def test_status_lists_running_runs_and_hookcast_actors(tmp_path: Path) -> None:
    import os
    import time

    import ray

    from hookcast.cluster.ledger import Ledger, RunRecord

    ledger = Ledger(tmp_path / "state")
    ledger.create_run(
        RunRecord(
            "live-20261128T000000-abcd",
            "live",
            "running",
            contacts=10,
            batches=1,
            created_at=time.time(),
            pid=os.getpid(),
        )
    )

    @ray.remote(num_cpus=0)
    class Probe:
        def pid(self) -> int:
            return os.getpid()

        def stats(self) -> dict:
            return {"delivered_contacts": 1500, "in_flight": 2, "attempts": {"delivered": 3}}

    probe = Probe.options(name="hookcast/live-20261128T000000-abcd/sender-0").remote()
    pid = ray.get(probe.pid.remote())
    try:
        result = invoke("status", "--json", "--state-dir", tmp_path / "state")
        table = invoke("status", "--state-dir", tmp_path / "state")
    finally:
        ray.kill(probe)
    assert result.exit_code == 0, result.output
    shown = orjson.loads(result.stdout)
    assert [r["run_id"] for r in shown["runs"]] == ["live-20261128T000000-abcd"]
    [actor] = [a for a in shown["actors"] if a["kind"] == "Probe"]
    assert actor["name"] == "hookcast/live-20261128T000000-abcd/sender-0"
    assert actor["run_id"] == "live-20261128T000000-abcd"
    assert actor["state"] == "ALIVE" and actor["pid"] == pid
    assert actor["node_id"] == ray.get_runtime_context().get_node_id()
    assert actor["stats"]["delivered_contacts"] == 1500
    assert table.exit_code == 0, table.output
    assert "1,500" in table.output and "sender-0" in table.output


def test_demo_broadcasts_the_sample_audience_and_shows_what_arrived(tmp_path: Path) -> None:
    import duckdb

    result = invoke(
        "demo", "--contacts", "2000", "--dir", tmp_path / "demo", "--state-dir", tmp_path / "state"
    )
    assert result.exit_code == 0, result.output
    expected = duckdb.sql(
        f"SELECT count(*) FROM read_parquet('{tmp_path / 'demo' / 'contacts.parquet'}') "
        "WHERE isAnonymous = false"
    ).fetchall()[0][0]
    assert 0 < expected < 2000
    flat = " ".join(result.output.split())
    assert f"{expected:,} contacts ({expected:,} unique, 0 duplicates)" in flat
    requests = -(-expected // 500)
    assert f"signatures verified: {requests} of {requests}" in flat
    assert '"sendTime"' in result.output and '"_custom"' in result.output
    job_text = (tmp_path / "demo" / "job.yaml").read_text()
    assert "${HOOKCAST_DEMO_SIGNING_SECRET}" in job_text and "whsec_" not in job_text


def test_a_signed_verbose_run_shows_no_secret_in_logs_nor_process_listings(
    write_job, audience_5k: Path, tmp_path: Path
) -> None:
    from hookcast.actors.signing import new_secret

    secret = new_secret()
    listed: list[bytes] = []

    def look_at_every_command_line(request) -> object:
        if not listed:  # while the run is going: the driver, Ray's workers, the senders
            for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
                with contextlib.suppress(OSError):  # the process ended meanwhile
                    listed.append(cmdline.read_bytes())
        return Reply(200)

    with Sink(behaviour=look_at_every_command_line, secrets=[secret]) as sink:
        job = write_job(sink.url, audience_5k, webhook__signing={"secret": "${SIGN}"})
        # A process of its own: --verbose configures logging as a user's run does.
        command = [sys.executable, "-m", "hookcast.cli.app", "--verbose", "run", str(job)]
        ran = subprocess.run(
            [*command, "--state-dir", str(tmp_path / "state")],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "SIGN": secret},
        )
        assert sink.recorder.snapshot()["signatures_verified"] == 10
    assert ran.returncode == 0, ran.stdout + ran.stderr
    key = secret.removeprefix("whsec_")
    assert "INFO" in ran.stderr  # the verbose logs are there
    assert key not in ran.stdout + ran.stderr
    assert len(listed) > 5 and not any(key.encode() in line for line in listed)
