"""The exit table: every hookcast error class and every outcome has its exit code, and a
command's error reaches the user as its message (bullets per problem), never a traceback."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hookcast.actors import errors
from hookcast.cli.app import app, error_text, exit_code_for, exit_code_of
from hookcast.cli.options import Outcome
from hookcast.cluster.report import RunError, error_line, parse_line

runner = CliRunner()

EXPECTED = {
    "HookcastError": 1,
    "JobError": 2,
    "JobFileError": 2,
    "MissingEnvError": 2,
    "AudienceError": 2,
    "TriggerError": 2,
    "TokenError": 1,
    "TokenRequestError": 1,
    "TokenResponseError": 1,
    "TokenExpiryError": 1,
    "TokenUnavailableError": 1,
    "LedgerError": 2,
    "RunNotFoundError": 2,
    "LedgerUnavailableError": 5,
    "ClusterError": 4,
    "RunAbortedError": 3,
}

ERROR_CLASSES = {
    name: cls
    for name, cls in vars(errors).items()
    if inspect.isclass(cls) and issubclass(cls, errors.HookcastError)
}


def test_every_error_class_is_in_the_table_of_this_test() -> None:
    assert set(ERROR_CLASSES) == set(EXPECTED), "give each new error class its exit code here"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_error_class_exits_with_its_code(name: str) -> None:
    assert exit_code_for(ERROR_CLASSES[name].__new__(ERROR_CLASSES[name])) == EXPECTED[name]


@pytest.mark.parametrize(
    ("result", "code"),
    [
        (None, 0),
        (Outcome.SUCCEEDED, 0),
        ("succeeded", 0),
        ("failed", 1),
        (Outcome.REJECTED, 2),
        ("interrupted", 3),
        (4, 4),
    ],
)
def test_each_outcome_exits_with_its_code(result: object, code: int) -> None:
    assert exit_code_of(result) == code


def test_a_result_without_an_exit_code_is_a_bug() -> None:
    with pytest.raises(TypeError):
        exit_code_of(["succeeded"])
    with pytest.raises(ValueError):
        exit_code_of("running")


def test_job_error_problems_are_one_bullet_each_unless_the_message_says_them() -> None:
    listed = errors.JobFileError(
        "job.yaml is not a valid job:\n- batch_size: 800 is out of range",
        (("batch_size", "800 is out of range"),),
    )
    assert error_text(listed) == str(listed)
    bare = errors.JobFileError(
        "job.yaml is not a valid job:",
        (("batch_size", "800 is out of range"), ("webhook.url", "webhook.url is not http")),
    )
    assert error_text(bare) == (
        "job.yaml is not a valid job:\n- batch_size: 800 is out of range\n- webhook.url is not http"
    )
    missing = errors.MissingEnvError("HOOK_KEY", "webhook.headers.X-Key")
    assert error_text(missing) == str(missing)


def _job_without_authorizations(tmp_path: Path) -> Path:
    job = tmp_path / "job.yaml"
    job.write_text(
        "name: j\nwebhook: {url: 'http://127.0.0.1:9/hook'}\n"
        f"audience: {{source: {tmp_path / 'a.parquet'}}}\n"
    )
    return job


def test_a_hookcast_error_not_listed_exits_1_with_its_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hookcast.cluster import tokens

    def unavailable(job: object, only: object) -> None:
        raise errors.TokenUnavailableError("crm", "the token cache is gone")

    monkeypatch.setattr(tokens, "test_authorizations", unavailable)
    result = runner.invoke(app, ["auth", "test", str(_job_without_authorizations(tmp_path))])
    assert result.exit_code == 1, result.output
    assert "the token cache is gone" in result.output
    assert "Traceback" not in result.output


def test_an_unknown_authorization_id_is_a_usage_error_naming_the_option(tmp_path: Path) -> None:
    job = _job_without_authorizations(tmp_path)
    result = runner.invoke(app, ["auth", "test", str(job), "--id", "crm"])
    assert result.exit_code == 2, result.output
    shown = " ".join(result.output.split())  # rich wraps at 80 columns, where the path ends
    assert "--id crm: no authorization crm in" in shown
    assert "(defined: none)" in shown
    assert "Traceback" not in shown


def test_a_bad_job_with_progress_lines_also_prints_its_error_for_submit(tmp_path: Path) -> None:
    job = tmp_path / "job.yaml"
    job.write_text("name: j\nbatch_size: 800\n")
    result = runner.invoke(app, ["run", str(job), "--progress-lines"])
    assert result.exit_code == 2
    [line] = [x for x in result.stdout.splitlines() if x.startswith("hookcast-error ")]
    error = parse_line(line)
    assert isinstance(error, RunError)
    assert error.exit_code == 2 and error.kind == "JobFileError"
    assert "batch_size" in error.message


def test_error_lines_round_trip() -> None:
    error = RunError("MissingEnvError", "webhook.headers.X refers to ${K}", 2)
    assert parse_line(error_line(error)) == error
    assert parse_line("hookcast-error {not json") is None


def test_a_state_dir_that_cannot_hold_a_ledger_exits_5(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = runner.invoke(app, ["runs", "--state-dir", str(blocker / "state")])
    assert result.exit_code == 5, result.output
    assert "Traceback" not in result.output


def test_an_unexpected_exception_keeps_its_traceback_and_exits_1(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import hookcast.cli.runs as runs_commands

    def broken(state_dir: Path) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(runs_commands, "open_ledger", broken)
    result = runner.invoke(app, ["runs", "--state-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert isinstance(result.exception, RuntimeError)
