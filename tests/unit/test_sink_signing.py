"""The built-in receiver as a customer's would be: Standard Webhooks signatures verified with the
official library, gzip bodies decompressed (bombs refused), HTTPS and mutual TLS. Real HTTP to
a real `Sink` on 127.0.0.1."""

from __future__ import annotations

import base64
import gzip
import os
import random
import select
import signal
import ssl
import subprocess
import sys
import time
import zlib
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path

import httpx
import orjson
import pytest
import trustme
from standardwebhooks.webhooks import Webhook
from typer.testing import CliRunner

from hookcast.actors.signing import (
    new_secret,
    secret_key,
    secret_problem,
    signature,
    signed_headers,
)
from hookcast.cluster.testbed.sink import (
    MAX_DECODED_BYTES,
    OK,
    Request,
    Sink,
    SinkTls,
    serve,
)

ROOT = Path(__file__).resolve().parents[2]
OLD, NEW = new_secret(), new_secret()


def body_of(*ids: int) -> bytes:
    return orjson.dumps([{"contact": {"id": i, "name": "树"}, "_custom": {"n": i}} for i in ids])


def signed(body: bytes, *secrets: str, timestamp: int | None = None) -> dict[str, str]:
    """The headers of ``body`` signed with ``secrets`` (one signature each), now or at
    ``timestamp``."""
    when = int(time.time()) if timestamp is None else timestamp
    keys = [secret_key(s) for s in secrets]
    return dict(signed_headers(keys, "msg_2b4T1", when, body))


@pytest.fixture(scope="module")
def sinks() -> Iterator[Callable[..., Sink]]:
    """``sinks(*secrets)``: a started sink holding those secrets, reset; one per set of
    secrets for the module."""
    started: dict[tuple[str, ...], Sink] = {}

    def get(*secrets: str) -> Sink:
        if secrets not in started:
            started[secrets] = Sink(secrets=secrets).start()
        sink = started[secrets]
        sink.behaviour = None
        sink.recorder.reset()
        return sink

    yield get
    for sink in started.values():
        sink.stop()


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(trust_env=False, timeout=10) as client:
        yield client


# Signatures


def test_a_signed_request_verifies_and_is_delivered(sinks, client: httpx.Client):
    sink = sinks(OLD)
    body = body_of(1, 2)

    response = client.post(sink.url, content=body, headers=signed(body, OLD))

    assert response.status_code == 200, response.text
    (arrival,) = sink.recorder.arrivals
    assert (arrival.verified, arrival.ids) == (True, (1, 2))
    stats = sink.recorder.snapshot()
    assert (stats["signatures_verified"], stats["signatures_rejected"]) == (1, 0)
    assert stats["contacts"] == 2


def _unsigned(body: bytes) -> dict[str, str]:
    return {}


def _other_secret(body: bytes) -> dict[str, str]:
    return signed(body, NEW)


def _other_body(body: bytes) -> dict[str, str]:
    return signed(body + b" ", OLD)


def _ten_minutes_old(body: bytes) -> dict[str, str]:
    return signed(body, OLD, timestamp=int(time.time()) - 600)


def _ten_minutes_ahead(body: bytes) -> dict[str, str]:
    return signed(body, OLD, timestamp=int(time.time()) + 600)


def _malformed(body: bytes) -> dict[str, str]:
    return {**signed(body, OLD), "webhook-signature": "not-a-signature"}


@pytest.mark.parametrize(
    ("headers_for", "why"),
    [
        (_unsigned, "the request is not signed"),
        (_other_secret, "no signature in webhook-signature matches"),
        (_other_body, "no signature in webhook-signature matches"),
        (_ten_minutes_old, "more than 5 minutes old"),
        (_ten_minutes_ahead, "more than 5 minutes ahead"),
        (_malformed, "not space-separated v1,<base64>"),
    ],
    ids=["unsigned", "other-secret", "other-body", "ten-minutes-old", "ahead", "malformed"],
)
def test_an_unverified_request_is_401_counted_rejected_and_not_delivered(
    sinks, client: httpx.Client, headers_for, why: str
):
    sink = sinks(OLD)
    asked: list[Request] = []
    sink.behaviour = lambda request: asked.append(request) or OK
    body = body_of(1, 2)

    response = client.post(sink.url, content=body, headers=headers_for(body))

    assert response.status_code == 401
    assert why in response.json()["error"]
    assert OLD not in response.text
    (arrival,) = sink.recorder.arrivals
    assert (arrival.verified, arrival.ids, arrival.status) == (False, (), 401)
    stats = sink.recorder.snapshot()
    assert (stats["signatures_verified"], stats["signatures_rejected"]) == (0, 1)
    assert (stats["requests"], stats["contacts"], stats["unique_ids"]) == (1, 0, 0)
    assert asked == []  # refused by the sink itself, before any behaviour


@pytest.mark.parametrize(
    ("held", "signed_with"),
    [((OLD,), (NEW, OLD)), ((NEW,), (NEW, OLD)), ((OLD, NEW), (NEW,)), ((OLD, NEW), (OLD,))],
    ids=["holds-old", "holds-new", "holds-both-gets-new", "holds-both-gets-old"],
)
def test_mid_rotation_one_matching_secret_is_enough(
    sinks, client: httpx.Client, held: tuple[str, ...], signed_with: tuple[str, ...]
):
    sink = sinks(*held)
    body = body_of(3)

    response = client.post(sink.url, content=body, headers=signed(body, *signed_with))

    assert response.status_code == 200, response.text
    assert sink.recorder.snapshot()["signatures_verified"] == 1


def test_a_sink_without_secrets_checks_and_counts_no_signature(sinks, client: httpx.Client):
    sink = sinks()
    body = body_of(4)

    assert client.post(sink.url, content=body).status_code == 200
    assert client.post(sink.url, content=body, headers=signed(body, OLD)).status_code == 200

    assert [a.verified for a in sink.recorder.arrivals] == [None, None]
    stats = sink.recorder.snapshot()
    assert (stats["signatures_verified"], stats["signatures_rejected"]) == (0, 0)
    assert not sink.app.verifies


@pytest.mark.parametrize("bad", ["hunter2hunter2", "whsec_not*base64", "whsec_" + "QUJD" * 2])
def test_a_bad_secret_is_a_valueerror_naming_its_place_not_its_value(bad: str):
    with pytest.raises(ValueError, match=r"secret 2 of 2 (is not|decodes to)") as raised:
        Sink(secrets=[OLD, bad])
    assert bad not in str(raised.value)
    with pytest.raises(ValueError, match="secret 1 of 1") as raised:
        serve("127.0.0.1", 0, secrets=[bad])  # refused before listening, so it returns
    assert bad not in str(raised.value)


def test_one_string_for_secrets_is_refused_not_read_as_characters():
    with pytest.raises(TypeError, match="give a list"):
        Sink(secrets=OLD)


# Our signer and the official library agree


def test_the_specification_test_vector():
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    msg_id, timestamp, payload = "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, '{"test": 2432232314}'
    expected = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

    assert signature([secret_key(secret)], msg_id, timestamp, payload.encode()) == expected
    when = datetime.fromtimestamp(timestamp, tz=timezone.utc)
    assert Webhook(secret).sign(msg_id, when, payload) == expected


def test_the_library_verifies_what_we_sign_for_random_secrets_and_bodies():
    rng = random.Random(12)
    for n in range(8):
        secrets = [
            "whsec_" + base64.b64encode(rng.randbytes(rng.randint(24, 64))).decode()
            for _ in range(rng.randint(1, 3))
        ]
        assert all(secret_problem(s) is None for s in secrets)
        text = "".join(rng.choice('ab"\\ 树é\n{}') for _ in range(rng.randint(0, 300)))
        body = orjson.dumps([{"contact": {"id": n}, "text": text}])
        headers = signed(body, *secrets)

        for secret in secrets:  # each alone, as a receiver holding one secret would
            assert Webhook(secret).verify(body, headers, json_parse=False) is None


# gzip


def test_a_gzip_body_is_verified_over_its_decompressed_bytes(sinks, client: httpx.Client):
    sink = sinks(OLD)
    seen: list[bytes] = []
    sink.behaviour = lambda request: seen.append(request.body) or OK
    body = body_of(*range(1, 201))
    wire = gzip.compress(body)
    headers = {**signed(body, OLD), "Content-Encoding": "gzip"}

    response = client.post(sink.url, content=wire, headers=headers)

    assert response.status_code == 200, response.text
    assert seen == [body]
    (arrival,) = sink.recorder.arrivals
    assert (arrival.gzip, arrival.verified, arrival.ids) == (True, True, tuple(range(1, 201)))
    stats = sink.recorder.snapshot()
    assert stats["bytes"] == stats["bytes_received"] == len(wire)
    assert stats["bytes_decoded"] == len(body) > len(wire)
    assert (stats["gzip_requests"], stats["contacts"]) == (1, 200)


def test_a_signature_over_the_compressed_bytes_does_not_verify(sinks, client: httpx.Client):
    sink = sinks(OLD)
    wire = gzip.compress(body_of(1))
    headers = {**signed(wire, OLD), "Content-Encoding": "gzip"}

    response = client.post(sink.url, content=wire, headers=headers)

    assert response.status_code == 401
    assert sink.recorder.snapshot()["signatures_rejected"] == 1


def test_uncompressed_bytes_decoded_equal_bytes(sinks, client: httpx.Client):
    sink = sinks()
    body = body_of(1, 2, 3)

    assert client.post(sink.url, content=body).status_code == 200

    stats = sink.recorder.snapshot()
    assert stats["bytes"] == stats["bytes_received"] == stats["bytes_decoded"] == len(body)
    assert stats["gzip_requests"] == 0


def test_several_gzip_members_are_one_body_as_gzip_decompress_reads_them(
    sinks, client: httpx.Client
):
    sink = sinks()
    body = body_of(5, 6)
    wire = gzip.compress(body[:10]) + gzip.compress(body[10:])

    response = client.post(sink.url, content=wire, headers={"Content-Encoding": "gzip"})

    assert response.status_code == 200, response.text
    assert sink.recorder.delivered_ids == {5, 6}


@pytest.mark.parametrize(
    ("wire", "why"),
    [
        (body_of(1), "the body is not gzip though Content-Encoding says so"),
        (gzip.compress(body_of(1))[:-12], "ends short"),
        (b"", "empty or ends short"),
        (gzip.compress(body_of(1)) + b"trailing junk", "not gzip"),
    ],
    ids=["plain-json", "truncated", "empty", "trailing-junk"],
)
def test_a_body_that_is_not_gzip_is_400(sinks, client: httpx.Client, wire: bytes, why: str):
    sink = sinks()

    response = client.post(sink.url, content=wire, headers={"Content-Encoding": "gzip"})

    assert response.status_code == 400
    assert why in response.json()["error"]
    stats = sink.recorder.snapshot()
    assert (stats["statuses"], stats["contacts"], stats["gzip_requests"]) == ({"400": 1}, 0, 1)
    assert stats["bytes_decoded"] == 0


def test_another_content_encoding_is_415_naming_gzip(sinks, client: httpx.Client):
    sink = sinks()

    response = client.post(sink.url, content=b"\x1b\x00", headers={"Content-Encoding": "br"})

    assert response.status_code == 415
    assert "'br' is not supported: send gzip" in response.json()["error"]
    assert response.headers["accept-encoding"] == "gzip"
    assert sink.recorder.snapshot()["statuses"] == {"415": 1}


@pytest.fixture(scope="module")
def gzip_bomb() -> bytes:
    """100 MiB of zeros in about 100 kB of gzip."""
    packer = zlib.compressobj(9, wbits=31)
    mib = bytes(1 << 20)
    return b"".join([*(packer.compress(mib) for _ in range(100)), packer.flush()])


def test_a_gzip_bomb_is_413_without_inflating_it(sinks, client: httpx.Client, gzip_bomb: bytes):
    sink = sinks(OLD)
    assert len(gzip_bomb) < 200_000

    started = time.monotonic()
    response = client.post(sink.url, content=gzip_bomb, headers={"Content-Encoding": "gzip"})

    assert time.monotonic() - started < 5
    assert response.status_code == 413
    assert f"more than {MAX_DECODED_BYTES:,} bytes" in response.json()["error"]
    stats = sink.recorder.snapshot()
    assert (stats["bytes_received"], stats["bytes_decoded"]) == (len(gzip_bomb), 0)
    assert (stats["signatures_verified"], stats["signatures_rejected"]) == (0, 0)


# TLS


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 and localhost, a client certificate; the
    PEM files by name."""
    folder = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("client@example.com")
    files = {
        "ca": ca.cert_pem,
        "cert": server.cert_chain_pems[0],
        "key": server.private_key_pem,
        "client": client.private_key_and_cert_chain_pem,
    }
    paths = {name: folder / f"{name}.pem" for name in files}
    for name, blob in files.items():
        blob.write_to_path(str(paths[name]))
    return paths


def trusting(pki: dict[str, Path], with_client_cert: bool = False) -> httpx.Client:
    context = ssl.create_default_context(cafile=str(pki["ca"]))
    if with_client_cert:
        context.load_cert_chain(str(pki["client"]))
    return httpx.Client(verify=context, trust_env=False, timeout=10)


def test_https_answers_a_client_that_trusts_the_ca(pki: dict[str, Path]):
    with Sink(tls=SinkTls(pki["cert"], pki["key"])) as sink, trusting(pki) as client:
        assert sink.url.startswith("https://127.0.0.1:")
        assert client.post(sink.url, content=body_of(1)).status_code == 200
        stranger = httpx.Client(trust_env=False, timeout=10)  # the system's CAs only
        with stranger, pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            stranger.post(sink.url, content=body_of(2))
        assert sink.recorder.delivered_ids == {1}


def test_a_hostname_is_put_in_the_url_for_name_checks(pki: dict[str, Path]):
    tls = SinkTls(pki["cert"], pki["key"], hostname="localhost")
    with Sink(tls=tls) as sink, trusting(pki) as client:
        assert sink.url == f"https://localhost:{sink.port}/hook"
        assert client.post(sink.url, content=body_of(1)).status_code == 200


def test_mutual_tls_refuses_a_client_without_a_certificate(pki: dict[str, Path]):
    tls = SinkTls(pki["cert"], pki["key"], client_ca=pki["ca"])
    with Sink(tls=tls) as sink:
        with trusting(pki) as anonymous, pytest.raises(httpx.TransportError):
            anonymous.post(sink.url, content=body_of(1))
        with trusting(pki, with_client_cert=True) as client:
            assert client.post(sink.url, content=body_of(2)).status_code == 200
        assert sink.recorder.delivered_ids == {2}


def test_tls_files_that_are_no_certificate_are_a_valueerror(pki: dict[str, Path]):
    sink = Sink(tls=SinkTls(pki["ca"], pki["ca"]))  # a certificate is no key

    with pytest.raises(ValueError, match="the sink's TLS files cannot be used"):
        sink.start()
    sink.stop()


# The command line


runner = CliRunner()


def sink_command(*args: str, env: dict[str, str] | None = None):
    from hookcast.cli.app import app

    return runner.invoke(app, ["sink", "--port", "0", *args], env=env)


def test_cli_a_bad_secret_exits_2_naming_secret_never_its_value():
    bad = "whsec_tooshort"

    by_option = sink_command("--secret", OLD, "--secret", bad)
    by_env = sink_command(env={"HOOKCAST_SINK_SECRET": bad})

    assert by_option.exit_code == 2
    assert "--secret 2 of 2" in by_option.output
    assert (by_env.exit_code, "--secret (or HOOKCAST_SINK_SECRET)" in by_env.output) == (2, True)
    for result in (by_option, by_env):
        assert "tooshort" not in result.output
        assert "listening" not in result.output


def test_cli_tls_key_without_certificate_exits_2(pki: dict[str, Path]):
    result = sink_command("--tls-key", str(pki["key"]))

    assert result.exit_code == 2
    assert "--tls-cert and --tls-key go together" in result.output


def test_cli_sink_verifies_with_env_secrets_and_says_how_many_verified():
    env = {**os.environ, "HOOKCAST_SINK_SECRET": f"{OLD} {NEW}"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "hookcast.cli.app", "sink", "--port", "0"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 20)
        assert ready, "the sink printed nothing within 20 s"
        first = proc.stdout.readline()
        url = first.split()[2]
        body = body_of(1)
        with httpx.Client(trust_env=False, timeout=10) as client:
            assert client.post(url, content=body, headers=signed(body, NEW)).status_code == 200
            assert client.post(url, content=body).status_code == 401
        proc.send_signal(signal.SIGINT)
        # Read on through the text buffer: readline() may hold the next lines already
        # (communicate() would read past them, from the pipe).
        out = first + proc.stdout.read()
        proc.wait(timeout=10)
    finally:
        proc.kill()
    assert proc.returncode == 0
    assert "verifying signatures with 2 secrets" in out
    assert out.splitlines()[-1].endswith("; signatures verified: 1 of 2")
    assert OLD not in out and NEW not in out
