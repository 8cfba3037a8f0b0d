"""Authorizations end to end: a real token server and a real receiver on 127.0.0.1."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs

import pytest
from typer.testing import CliRunner

from hookcast.cli.app import app
from hookcast.cluster.job import load_job
from hookcast.cluster.ledger import Ledger
from hookcast.cluster.runs import start_run
from hookcast.cluster.testbed.sink import OK, Reply, Sink
from hookcast.cluster.testbed.synth import write_audience

runner = CliRunner()
CLIENT_SECRET = "s3cret-client-value-9f2c"


class TokenServer:
    """Issues token-1, token-2, ... and counts calls and the most at once."""

    def __init__(
        self,
        port: int = 0,
        answer: Callable[[int], tuple[int, dict | str]] | None = None,
        expires_in: float | None = None,
        delay_s: float = 0.0,
    ) -> None:
        self.calls = 0
        self.open = 0
        self.most_open = 0
        self.forms: list[dict] = []
        self._lock = threading.Lock()
        self.expires_in = expires_in
        self.delay_s = delay_s
        self.answer = answer or self._token
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", 0))
                form = parse_qs(self.rfile.read(length).decode())
                with server._lock:
                    server.calls += 1
                    server.open += 1
                    server.most_open = max(server.most_open, server.open)
                    n = server.calls
                    server.forms.append(form)
                time.sleep(server.delay_s)
                status, body = server.answer(n)
                payload = body if isinstance(body, str) else json.dumps(body)
                with server._lock:
                    server.open -= 1
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(payload.encode())

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/oauth/token"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def _token(self, n: int) -> tuple[int, dict]:
        body: dict = {"data": {"access_token": f"token-{n}"}}
        if self.expires_in is not None:
            body["expires_in"] = self.expires_in
        return 200, body

    def __enter__(self) -> TokenServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def audience_4k(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_audience(tmp_path_factory.mktemp("auth") / "contacts.parquet", 4000)


@pytest.fixture(autouse=True)
def _client_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRM_SECRET", CLIENT_SECRET)


def _auth_job(write_job, url: str, source: Path, token_url: str, **changes) -> Path:
    auth = {
        "url": token_url,
        "method": "POST",
        "form": {"grant_type": "client_credentials", "client_secret": "${CRM_SECRET}"},
        "expires_in_key": "expires_in",
    }
    auth.update(changes.pop("auth", {}))
    return write_job(
        url,
        source,
        batch_size=100,
        webhook__headers={"Authorization": "Bearer #{auth.crm.data.access_token}"},
        authorizations={"crm": auth},
        **changes,
    )


def _bearers(receiver: Sink) -> list[str | None]:
    return [a.headers.get("authorization") for a in receiver.recorder.arrivals]


def test_one_token_call_serves_every_sender(
    sink: Sink, write_job, ledger: Ledger, audience_4k: Path
) -> None:
    with TokenServer(expires_in=3600) as tokens:
        job = load_job(_auth_job(write_job, sink.url, audience_4k, tokens.url))
        summary = start_run(job, ledger, senders=4)
    assert summary.status == "succeeded" and summary.batches == 40
    assert tokens.calls == 1
    assert set(_bearers(sink)) == {"Bearer token-1"}
    assert tokens.forms[0]["client_secret"] == [CLIENT_SECRET]


def test_short_lived_token_is_refreshed_ahead_and_never_twice_at_once(
    write_job, ledger: Ledger, audience_4k: Path
) -> None:
    with (
        TokenServer(expires_in=2, delay_s=0.05) as tokens,
        Sink(behaviour=lambda r: Reply(delay_s=0.3)) as receiver,
    ):
        job = load_job(
            _auth_job(
                write_job, receiver.url, audience_4k, tokens.url, rate_limit={"max_in_flight": 4}
            )
        )
        started = time.monotonic()
        summary = start_run(job, ledger, senders=2)
        run_s = time.monotonic() - started
    assert summary.status == "succeeded"
    # 40 batches, 4 in flight, each held 0.3 s: the last request leaves >= 2.7 s after the
    # first, when the first 2 s token has expired; so it was refreshed, at least once.
    assert run_s > 3
    bearers = _bearers(receiver)
    assert None not in bearers
    assert tokens.calls >= 2 and len(set(bearers)) >= 2
    # A fetch only once the last token is past its refresh time (1.8 s into its 2 s): load
    # can only space fetches out. Never two at once.
    assert tokens.calls <= run_s / 1.8 + 2
    assert tokens.most_open == 1


def test_401_refreshes_the_token_once_and_every_contact_arrives(
    write_job, ledger: Ledger, audience_4k: Path
) -> None:
    seen = {"n": 0}
    lock = threading.Lock()

    def revoke_first_token_at_30_percent(request):
        with lock:
            seen["n"] += 1
            late = seen["n"] > 12
        if late and request.headers.get("authorization") == "Bearer token-1":
            return Reply(status=401, body=b'{"error": "token revoked"}')
        return OK

    with (
        TokenServer(expires_in=3600) as tokens,
        Sink(behaviour=revoke_first_token_at_30_percent) as receiver,
    ):
        job = load_job(_auth_job(write_job, receiver.url, audience_4k, tokens.url))
        summary = start_run(job, ledger, senders=4)
        delivered = receiver.recorder.delivered_ids
    assert summary.status == "succeeded"
    assert tokens.calls == 2
    assert len(delivered) == 4000


def test_run_waits_for_a_token_server_that_is_down_and_never_sends_without_a_token(
    sink: Sink, write_job, ledger: Ledger, audience_4k: Path
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    late: list[TokenServer] = []

    def start_late() -> None:
        time.sleep(3)
        late.append(TokenServer(port=port, expires_in=3600).__enter__())

    starter = threading.Thread(target=start_late)
    started = time.monotonic()  # the token server is up no earlier than 3 s from here
    starter.start()
    try:
        job = load_job(
            _auth_job(write_job, sink.url, audience_4k, f"http://127.0.0.1:{port}/oauth/token")
        )
        summary = start_run(job, ledger)
        waited = time.monotonic() - started
    finally:
        starter.join()
        for server in late:
            server.__exit__()
    assert summary.status == "succeeded"
    assert waited >= 2.5
    assert sink.recorder.contacts == 4000
    assert set(_bearers(sink)) == {"Bearer token-1"}


BROKEN = {
    "not json": ((200, "<html>login</html>"), "not JSON"),
    "key missing": ((200, {"data": {"token": "x"}, "expires_in": 60}), "data.token"),
    "empty token": ((200, {"data": {"access_token": ""}, "expires_in": 60}), "empty"),
    "expires_in missing": ((200, {"data": {"access_token": "t"}}), "expires_in"),
    "expires_in 0": ((200, {"data": {"access_token": "t"}, "expires_in": 0}), "expires_in"),
    "expires_in negative": ((200, {"data": {"access_token": "t"}, "expires_in": -5}), "expires_in"),
    "expires_in a word": (
        (200, {"data": {"access_token": "t"}, "expires_in": "soon"}),
        "expires_in",
    ),
    "400": ((400, {"error": "invalid_client"}), "400"),
}


@pytest.mark.parametrize("case", BROKEN, ids=str)
def test_broken_token_answer_gets_a_clear_error_and_nothing_is_sent(
    case: str, sink: Sink, write_job, audience_4k: Path, tmp_path: Path
) -> None:
    answer, expected = BROKEN[case]
    with TokenServer(answer=lambda n: answer) as tokens:
        job = _auth_job(write_job, sink.url, audience_4k, tokens.url)
        tested = runner.invoke(app, ["auth", "test", str(job)])
        assert tested.exit_code == 2, tested.output
        assert "crm" in tested.output and expected in tested.output
        assert CLIENT_SECRET not in tested.output

        ran = runner.invoke(app, ["run", str(job), "--json", "--state-dir", str(tmp_path / "s")])
    assert ran.exit_code == 3, ran.output
    assert json.loads(ran.stdout)["note"] and "crm" in json.loads(ran.stdout)["note"]
    assert sink.recorder.requests == 0  # fail closed: never a request without its token


def test_auth_test_shows_keys_expiry_and_the_token_redacted(
    write_job, audience_4k: Path, sink: Sink
) -> None:
    long_token = "eyJh" + "x" * 808
    with TokenServer(
        answer=lambda n: (
            200,
            {"data": {"access_token": long_token}, "expires_in": 7200, "scope": "push"},
        )
    ) as tokens:
        result = runner.invoke(
            app, ["auth", "test", str(_auth_job(write_job, sink.url, audience_4k, tokens.url))]
        )
    assert result.exit_code == 0, result.output
    assert "eyJh…(812 chars)" in result.output
    assert long_token not in result.output
    assert "data.access_token" in result.output and "scope" in result.output
    assert "7,200 s" in result.output


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("Bearer #{auth.crm}", "is not a wildcard"),
        ("Bearer #{auth..x}", "is not a wildcard"),
        ("Bearer #{auth.erp.token}", '"erp", which is not defined'),
    ],
)
def test_bad_wildcards_are_rejected_before_sending(
    header: str, message: str, sink: Sink, write_job, audience_4k: Path, tmp_path: Path
) -> None:
    job = write_job(
        sink.url,
        audience_4k,
        webhook__headers={"Authorization": header},
        authorizations={"crm": {"url": "http://127.0.0.1:9/token", "ttl_s": 60}},
    )
    result = runner.invoke(app, ["run", str(job), "--state-dir", str(tmp_path / "s")])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert sink.recorder.requests == 0


def test_secrets_never_reach_logs_output_or_the_ledger(
    write_job, audience_4k: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    secret_token = "tok-" + "q" * 40
    with (
        TokenServer(
            answer=lambda n: (200, {"data": {"access_token": secret_token}, "expires_in": 3600})
        ) as tokens,
        Sink(behaviour=lambda r: Reply(status=401) if r.n <= 2 else OK) as receiver,
    ):
        job = _auth_job(write_job, receiver.url, audience_4k, tokens.url)
        state = tmp_path / "state"
        with caplog.at_level(logging.DEBUG):
            result = runner.invoke(
                app, ["-v", "run", str(job), "--json", "--state-dir", str(state)]
            )
            shown = runner.invoke(
                app,
                [
                    "runs",
                    "show",
                    json.loads(result.stdout)["run_id"],
                    "--json",
                    "--state-dir",
                    str(state),
                ],
            )
            previewed = runner.invoke(app, ["preview", str(job)])
    assert result.exit_code in (0, 1), result.output
    everything = "\n".join([result.output, shown.output, previewed.output, caplog.text])
    ledger_bytes = b"".join(p.read_bytes() for p in state.rglob("*") if p.is_file())
    for secret in (CLIENT_SECRET, secret_token):
        assert secret not in everything
        assert secret.encode() not in ledger_bytes
    assert "Authorization: Bearer tok-…(44 chars)" in previewed.output


def test_authorizations_from_a_shared_file_are_used_and_kept_for_resume(
    sink: Sink, write_job, audience_4k: Path, tmp_path: Path
) -> None:
    with TokenServer(expires_in=3600) as tokens:
        shared = tmp_path / "auth.yaml"
        shared.write_text(
            "authorizations:\n  crm:\n"
            f"    url: {tokens.url}\n"
            "    form: {grant_type: client_credentials, client_secret: '${CRM_SECRET}'}\n"
            "    expires_in_key: expires_in\n"
        )
        job = write_job(
            sink.url,
            audience_4k,
            batch_size=500,
            webhook__headers={"Authorization": "Bearer #{auth.crm.data.access_token}"},
        )
        state = tmp_path / "state"
        ran = runner.invoke(
            app, ["run", str(job), "--auth", str(shared), "--json", "--state-dir", str(state)]
        )
    assert ran.exit_code == 0, ran.output
    assert tokens.calls == 1 and set(_bearers(sink)) == {"Bearer token-1"}
    [run] = Ledger(state).list_runs()
    kept = Ledger(state).get_run(run.run_id).job_text or ""
    assert "authorizations" in kept and "${CRM_SECRET}" in kept and CLIENT_SECRET not in kept
