"""`hookcast keys new`: a fresh signing secret, one line or one JSON object."""

from __future__ import annotations

import orjson
import pytest
from typer.testing import CliRunner

from hookcast.actors.signing import secret_key, secret_problem
from hookcast.cli.app import app

runner = CliRunner()


@pytest.fixture(autouse=True)
def _ray() -> None:
    """No Ray here: this stands in for the directory's fixture that joins the session's."""


def test_keys_new_prints_one_usable_secret_on_one_line():
    first = runner.invoke(app, ["keys", "new"])
    second = runner.invoke(app, ["keys", "new"])

    assert first.exit_code == 0, first.output
    (line,) = first.stdout.splitlines()
    assert first.stdout == line + "\n"
    assert secret_problem(line) is None
    assert len(secret_key(line)) == 32
    assert second.stdout.strip() != line


def test_keys_new_json_is_one_object_with_the_secret():
    result = runner.invoke(app, ["keys", "new", "--json"])

    assert result.exit_code == 0, result.output
    assert list(orjson.loads(result.stdout)) == ["secret"]
    assert secret_problem(orjson.loads(result.stdout)["secret"]) is None


def test_keys_new_help_says_where_the_secret_goes():
    result = runner.invoke(app, ["keys", "new", "--help"])

    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "${HOOKCAST_SIGNING_SECRET}" in text
    assert "webhook.signing.secret" in text
