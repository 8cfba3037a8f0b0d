"""`hookcast preview` shows each request as the sender builds it: method, the full URL with
its query, every header (the batch's Idempotency-Key, tokens redacted), then the body."""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from hookcast.actors.auth import AuthorizationConfig, Token
from hookcast.cli.app import app
from hookcast.cluster import preview as preview_module
from hookcast.cluster.job import load_job
from hookcast.cluster.preview import preview_job
from hookcast.cluster.runs import batch_key
from hookcast.cluster.testbed.synth import write_audience

runner = CliRunner()
LONG_TOKEN = "eyJh" + "x" * 808
SECRET = "s3cr3t-value"


@pytest.fixture(scope="module")
def audience(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_audience(tmp_path_factory.mktemp("preview") / "contacts.parquet", 1200)


def fake_fetch(calls: list[str]):
    def fetch(config: AuthorizationConfig, key_paths: Iterable[str]) -> Token:
        calls.append(config.id)
        now = time.time()
        return Token(config.id, {key: LONG_TOKEN for key in key_paths}, now, now + 3600)

    return fetch


def _job(write_job, audience: Path, **changes) -> Path:
    wanted = {
        "webhook__query": {"campaign": "double11"},
        "webhook__headers": {"X-Api-Key": "${HOOK_KEY}"},
        **changes,
    }
    return write_job("http://127.0.0.1:9/hook", audience, **wanted)


def test_preview_shows_the_query_and_every_header_with_secrets_redacted(
    write_job, audience: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOOK_KEY", SECRET)
    result = runner.invoke(app, ["preview", str(_job(write_job, audience)), "--batches", "2"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "POST http://127.0.0.1:9/hook?campaign=double11"
    assert "Content-Type: application/json" in lines
    assert "X-Api-Key: ***" in lines
    assert f"Idempotency-Key: {batch_key('test-job-<run>', 0)}" in lines
    assert f"Idempotency-Key: {batch_key('test-job-<run>', 1)}" in lines
    assert [len(orjson.loads(x)) for x in lines if x.startswith("[")] == [500, 500]
    assert "audience: 1,200 contacts in 3 batches of up to 500" in lines
    assert "<run> in each Idempotency-Key" in result.stdout
    assert SECRET not in result.output


def test_a_url_holding_user_and_password_is_shown_without_them() -> None:
    from hookcast.actors.sender import SenderConfig
    from hookcast.cluster.preview import preview_requests

    config = SenderConfig(url="https://hookcast:pa55word-x@hooks.example.com/in?a=1")
    [request] = preview_requests(config, "j-<run>", [b'[{"id":1}]'], fetch=fake_fetch([]))
    assert request.url == "https://***@hooks.example.com/in?a=1"
    assert request.body == b'[{"id":1}]' and request.body_bytes == 10


def test_a_signed_gzip_preview_shows_the_signature_redacted_and_both_sizes(
    write_job, audience: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hookcast.actors.signing import new_secret

    signing_secret = new_secret()
    monkeypatch.setenv("HOOK_KEY", SECRET)
    monkeypatch.setenv("SIGN", signing_secret)
    path = _job(
        write_job,
        audience,
        webhook__signing={"secret": "${SIGN}"},
        webhook__compression="gzip",
    )
    result = runner.invoke(app, ["preview", str(path)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert "webhook-signature: v1,<redacted>" in lines
    assert "Content-Encoding: gzip" in lines
    assert f"webhook-id: {batch_key('test-job-<run>', 0)}" in lines
    assert any(line.startswith("webhook-timestamp: ") for line in lines)
    assert "sent gzipped as" in result.stdout
    assert signing_secret not in result.output
    assert signing_secret.removeprefix("whsec_") not in result.output
    shown = orjson.loads(
        runner.invoke(app, ["preview", str(path), "--json"]).stdout.splitlines()[0]
    )
    assert 0 < shown["wire_bytes"] < shown["body_bytes"] / 2


def test_preview_json_is_one_object_per_request_per_line(
    write_job, audience: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOOK_KEY", SECRET)
    result = runner.invoke(
        app, ["preview", str(_job(write_job, audience)), "--batches", "3", "--json"]
    )
    assert result.exit_code == 0, result.output
    shown = [orjson.loads(line) for line in result.stdout.splitlines()]
    assert len(shown) == 3
    first = shown[0]
    assert set(first) == {"method", "url", "headers", "body", "body_bytes", "wire_bytes"}
    assert first["wire_bytes"] == first["body_bytes"]  # no compression
    assert first["method"] == "POST"
    assert first["url"] == "http://127.0.0.1:9/hook?campaign=double11"
    assert first["headers"]["X-Api-Key"] == "***"
    assert first["headers"]["Idempotency-Key"] == batch_key("test-job-<run>", 0)
    assert [len(r["body"]) for r in shown] == [500, 500, 200]
    assert first["body_bytes"] == len(orjson.dumps(first["body"]))
    assert "audience: 1,200 contacts" in result.stderr


def test_wildcards_are_filled_from_one_real_fetch_per_authorization_and_shown_redacted(
    write_job, audience: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOOK_KEY", SECRET)
    job = _job(
        write_job,
        audience,
        webhook__headers={"Authorization": "Bearer #{auth.crm.data.access_token}"},
        webhook__query={"campaign": "double11", "sig": "#{auth.crm.data.access_token}"},
        authorizations={"crm": {"url": "http://127.0.0.1:9/token", "ttl_s": 60}},
    )
    calls: list[str] = []
    shown = preview_job(load_job(job), 2, fetch=fake_fetch(calls))
    assert calls == ["crm"]
    for request in shown.requests:
        headers = dict(request.headers)
        assert headers["Authorization"] == "Bearer eyJh…(812 chars)"
        assert request.url == "http://127.0.0.1:9/hook?campaign=double11&sig=eyJh…(812 chars)"
        assert LONG_TOKEN not in request.url + str(request.headers)


def test_a_token_that_cannot_be_had_stops_the_preview_with_exit_1(
    write_job, audience: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hookcast.actors.errors import TokenRequestError

    def refuse(config: AuthorizationConfig, key_paths: Iterable[str]) -> Token:
        raise TokenRequestError(config.id, f"authorization {config.id}: connection refused")

    monkeypatch.setattr(preview_module, "fetch_token", refuse)
    monkeypatch.setenv("HOOK_KEY", SECRET)
    job = _job(
        write_job,
        audience,
        webhook__headers={"Authorization": "Bearer #{auth.crm.access_token}"},
        authorizations={"crm": {"url": "http://127.0.0.1:9/token", "ttl_s": 60}},
    )
    result = runner.invoke(app, ["preview", str(job)])
    assert result.exit_code == 1, result.output
    assert "authorization crm: connection refused" in result.output
    assert "Traceback" not in result.output


def test_validate_counts_the_audience_without_fetching_a_token(
    write_job, audience: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    monkeypatch.setattr(preview_module, "fetch_token", fake_fetch(calls))
    monkeypatch.setenv("HOOK_KEY", SECRET)
    job = _job(
        write_job,
        audience,
        webhook__headers={"Authorization": "Bearer #{auth.crm.access_token}"},
        authorizations={"crm": {"url": "http://127.0.0.1:9/token", "ttl_s": 60}},
    )
    result = runner.invoke(app, ["validate", str(job)])
    assert result.exit_code == 0, result.output
    assert "1,200 contacts in 3 batches of up to 500 (1 source file)" in result.output
    assert calls == []
