"""Signed, compressed and guarded broadcasts end to end, on a real Ray and real receivers: a
receiver that verifies every request with the official ``standardwebhooks`` library, gzip
bodies, HTTPS with a CA and client certificates made by ``trustme``, and the egress guard."""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path

import pytest
import trustme
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from hookcast.actors.signing import new_secret
from hookcast.cluster.job import load_job
from hookcast.cluster.ledger import BatchStatus, Ledger, RunStatus
from hookcast.cluster.runs import replay_run, resume_run, start_run
from hookcast.cluster.testbed.sink import OK, Reply, Request, Sink, SinkTls

NEW, OLD = new_secret(), new_secret()


class Verifier:
    """A behaviour that verifies each request as a customer would, with each secret alone,
    and fails the first attempt of every third batch (so retries are signed too)."""

    def __init__(self) -> None:
        self.by_key: dict[str, list[str]] = defaultdict(list)  # key -> timestamps, in order
        self.unverified: list[str] = []

    def __call__(self, request: Request) -> Reply:
        headers = dict(request.headers)
        for secret in (NEW, OLD):
            try:
                Webhook(secret).verify(request.body, headers, json_parse=False)
            except WebhookVerificationError as exc:
                self.unverified.append(f"{request.key}: {exc}")
        assert headers["webhook-id"] == request.key
        self.by_key[request.key].append(headers["webhook-timestamp"])
        first = len(self.by_key[request.key]) == 1
        seq = int(request.key.rsplit("-", 1)[1])
        return Reply(503) if first and seq % 3 == 0 else OK


def test_a_rotating_gzip_broadcast_verifies_with_either_secret_and_retries_are_resigned(
    write_job, ledger: Ledger, audience_5k: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIGN_NEW", NEW)
    monkeypatch.setenv("SIGN_OLD", OLD)
    verifier = Verifier()
    with Sink(behaviour=verifier, secrets=[OLD]) as sink:
        path = write_job(
            sink.url,
            audience_5k,
            webhook__signing={"secrets": ["${SIGN_NEW}", "${SIGN_OLD}"]},
            webhook__compression="gzip",
        )
        summary = start_run(load_job(path), ledger)
        stats = sink.recorder.snapshot()

    assert summary.status == RunStatus.SUCCEEDED
    assert verifier.unverified == []
    assert stats["signatures_rejected"] == 0 and stats["signatures_verified"] == stats["requests"]
    assert sink.recorder.delivered_ids and len(sink.recorder.delivered_ids) == 5000
    assert sink.recorder.duplicate_ids == 0
    assert stats["gzip_requests"] == stats["requests"]
    assert stats["bytes_decoded"] > 2 * stats["bytes_received"]
    retried = [stamps for stamps in verifier.by_key.values() if len(stamps) > 1]
    assert len(retried) == 4  # seq 0, 3, 6, 9 of 10
    assert summary.retries == 4
    # A new timestamp per attempt, never earlier (the sink answers 503 at once, so the
    # retry may share the second).
    assert all(int(s[0]) <= int(s[1]) for s in retried)
    assert {b.idem_key for b in ledger.batches(summary.run_id)} == set(verifier.by_key)
    assert_no_secret_under(ledger.state_dir, NEW, OLD)


def assert_no_secret_under(folder: Path, *secrets: str) -> None:
    """Neither a secret nor its base64 part (the key) in any file: ledger, WAL, parquet."""
    files = [f for f in folder.rglob("*") if f.is_file()]
    assert files
    for file in files:
        data = file.read_bytes()
        for secret in secrets:
            assert secret.removeprefix("whsec_").encode() not in data, file


def test_a_blocked_endpoint_gets_no_connection_and_resume_sends_it_signed(
    write_job, ledger: Ledger, audience_5k: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIGN_NEW", NEW)
    with Sink(secrets=[NEW]) as sink:
        # A host name: checked at connect time on what it resolves to (127.0.0.1, ::1).
        url = sink.url.replace("127.0.0.1", "localhost")
        path = write_job(url, audience_5k, webhook__signing={"secret": "${SIGN_NEW}"})
        monkeypatch.setenv("HOOKCAST_EGRESS", "public-only")
        blocked = start_run(load_job(path), ledger)
        assert sink.recorder.requests == 0
        assert blocked.status == RunStatus.INTERRUPTED
        assert "loopback" in (blocked.note or "") and "public-only" in (blocked.note or "")
        assert "no connection was made" in (blocked.note or "")

        monkeypatch.delenv("HOOKCAST_EGRESS")
        resumed = resume_run(ledger, blocked.run_id)
        stats = sink.recorder.snapshot()
        arrivals = sink.recorder.arrivals
    assert resumed.status == RunStatus.SUCCEEDED
    assert stats["signatures_verified"] == stats["requests"] == 10
    keys = {b.idem_key for b in ledger.batches(blocked.run_id)}
    assert {a.headers["webhook-id"] for a in arrivals} == keys == {a.key for a in arrivals}


def test_replay_signs_the_dead_letters_with_their_first_webhook_id(
    write_job, ledger: Ledger, audience_5k: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIGN_NEW", NEW)
    refused: set[str] = set()

    def refuse_two(request: Request) -> Reply:
        if request.key.endswith(("-000002", "-000007")) and len(refused) < 2:
            refused.add(request.key)
            return Reply(422)
        return OK

    with Sink(behaviour=refuse_two, secrets=[NEW]) as sink:
        path = write_job(sink.url, audience_5k, webhook__signing={"secret": "${SIGN_NEW}"})
        first = start_run(load_job(path), ledger)
        assert first.failed_batches == 2
        before = {a.key: a.headers["webhook-timestamp"] for a in sink.recorder.arrivals}
        sink.recorder.reset()
        replayed = replay_run(ledger, first.run_id)
        arrivals = sink.recorder.arrivals
        stats = sink.recorder.snapshot()
    assert replayed.status == RunStatus.SUCCEEDED
    assert {a.headers["webhook-id"] for a in arrivals} == refused
    assert stats["signatures_verified"] == 2
    assert all(int(a.headers["webhook-timestamp"]) >= int(before[a.key]) for a in arrivals)


# -- TLS -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A CA, the receiver's certificate (127.0.0.1, localhost) and a client certificate."""
    folder = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("hookcast-client")
    files = {
        "ca": folder / "ca.pem",
        "server_cert": folder / "server.pem",
        "server_key": folder / "server.key",
        "client_cert": folder / "client.pem",
        "client_key": folder / "client.key",
    }
    ca.cert_pem.write_to_path(str(files["ca"]))
    server.private_key_and_cert_chain_pem.write_to_path(str(files["server_cert"]))
    server.private_key_pem.write_to_path(str(files["server_key"]))
    client.cert_chain_pems[0].write_to_path(str(files["client_cert"]))
    client.private_key_pem.write_to_path(str(files["client_key"]))
    return files


def test_mutual_tls_with_a_private_ca(
    write_job, ledger: Ledger, audience_5k: Path, pki: dict[str, Path]
) -> None:
    tls = SinkTls(str(pki["server_cert"]), str(pki["server_key"]), client_ca=str(pki["ca"]))
    with Sink(tls=tls) as sink:
        assert sink.url.startswith("https://")
        path = write_job(
            sink.url,
            audience_5k,
            webhook__tls={
                "ca_bundle": str(pki["ca"]),
                "client_cert": str(pki["client_cert"]),
                "client_key": str(pki["client_key"]),
            },
        )
        summary = start_run(load_job(path), ledger)
        assert summary.status == RunStatus.SUCCEEDED
        assert len(sink.recorder.delivered_ids) == 5000


def test_an_untrusted_certificate_is_dead_lettered_after_the_retries_with_the_reason(
    write_job, ledger: Ledger, audience_5k: Path, pki: dict[str, Path]
) -> None:
    tls = SinkTls(str(pki["server_cert"]), str(pki["server_key"]))
    with Sink(tls=tls) as sink:
        path = write_job(sink.url, audience_5k, retry__max_attempts=2, retry__backoff_base_s=0.01)
        summary = start_run(load_job(path), ledger)
        assert sink.recorder.requests == 0
    # Each of the canary's 3 batches used its 2 attempts, then the canary stopped the run.
    assert summary.status == RunStatus.ABORTED and summary.failed_batches == 3
    assert "certificate verification failed" in (summary.note or "")
    dead = ledger.batches(summary.run_id, (BatchStatus.DEAD_LETTERED,))
    assert len(dead) == 3
    assert all(b.attempts == 2 for b in dead)
    reason = dead[0].reason or ""
    assert "certificate verification failed" in reason and "webhook.tls.ca_bundle" in reason


def test_insecure_skip_verify_sends_and_warns_on_every_run(
    write_job, ledger: Ledger, audience_5k: Path, pki: dict[str, Path], caplog
) -> None:
    tls = SinkTls(str(pki["server_cert"]), str(pki["server_key"]))
    with Sink(tls=tls) as sink:
        path = write_job(sink.url, audience_5k, webhook__tls={"insecure_skip_verify": True})
        with caplog.at_level(logging.WARNING, logger="hookcast"):
            summary = start_run(load_job(path), ledger)
    assert summary.status == RunStatus.SUCCEEDED
    assert any("insecure_skip_verify" in r.getMessage() for r in caplog.records)
