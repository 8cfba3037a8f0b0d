"""Standard Webhooks signatures and gzip bodies: the secret's checks, the signer against the
official ``standardwebhooks`` verifier, and what the sender puts on the wire."""

from __future__ import annotations

import asyncio
import base64
import gzip
import time
from datetime import UTC, datetime

import httpx
import pyarrow as pa
import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from hookcast.actors.render import ELEMENT_COLUMN, SEND_TIME_PLACEHOLDER
from hookcast.actors.sender import BatchOrder, Sender, SenderConfig
from hookcast.actors.signing import (
    REDACTED_SIGNATURE,
    new_secret,
    secret_key,
    secret_problem,
    signature,
    signed_headers,
)
from tests.unit.test_sender import reply

# The specification's own test vector (standard-webhooks, spec/standard-webhooks.md).
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TS = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_the_specifications_test_vector() -> None:
    assert signature([secret_key(VECTOR_SECRET)], VECTOR_ID, VECTOR_TS, VECTOR_BODY) == (
        VECTOR_SIGNATURE
    )
    official = Webhook(VECTOR_SECRET).sign(
        VECTOR_ID, datetime.fromtimestamp(VECTOR_TS, UTC), VECTOR_BODY.decode()
    )
    assert official == VECTOR_SIGNATURE


@pytest.mark.parametrize("n_bytes", [24, 32, 64])
def test_every_signature_verifies_with_the_official_library(n_bytes: int) -> None:
    secret = new_secret(n_bytes)
    assert secret_problem(secret) is None
    now = int(time.time())
    body = '[{"contact":{"id":1,"name":"Zoë \\"q\\" \\\\ 🎉"}}]'.encode()
    headers = dict(signed_headers([secret_key(secret)], "run-1-000007", now, body))
    Webhook(secret).verify(body, headers)  # raises if it does not verify
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body + b" ", headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(body, headers)


def test_rotation_one_signature_per_secret_each_verifies_alone() -> None:
    new, old = new_secret(), new_secret()
    now = int(time.time())
    body = b'[{"contact":{"id":1}}]'
    headers = dict(signed_headers([secret_key(new), secret_key(old)], "k", now, body))
    assert len(headers["webhook-signature"].split(" ")) == 2
    Webhook(new).verify(body, headers)
    Webhook(old).verify(body, headers)


def test_unpadded_base64_is_accepted_as_the_official_libraries_do() -> None:
    key = bytes(range(32))
    padded = "whsec_" + base64.b64encode(key).decode()
    assert padded.endswith("=")
    assert secret_key(padded.rstrip("=")) == key == secret_key(padded)


@pytest.mark.parametrize(
    ("secret", "says"),
    [
        ("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_"),
        ("whsec_" + base64.b64encode(b"x" * 23).decode(), "23 bytes"),
        ("whsec_" + base64.b64encode(b"x" * 65).decode(), "65 bytes"),
        ("whsec_not base64 at all!!", "base64"),
        ("whsec_", "0 bytes"),
    ],
)
def test_a_bad_secret_is_named_never_shown(secret: str, says: str) -> None:
    problem = secret_problem(secret)
    assert problem is not None and says in problem
    assert secret[6:] not in problem or not secret[6:]


def test_a_preview_shows_the_signature_redacted() -> None:
    headers = dict(signed_headers([b"k" * 32], "run-1", 5, None))
    assert headers == {
        "webhook-id": "run-1",
        "webhook-timestamp": "5",
        "webhook-signature": REDACTED_SIGNATURE,
    }


# -- the sender: what goes on the wire ------------------------------------------------------


def chunk(contacts: int) -> pa.Table:
    elements = [
        f'{{"sendTime":{SEND_TIME_PLACEHOLDER},"contact":{{"id":{i}}}}}' for i in range(contacts)
    ]
    return pa.table({"seq": pa.array([0] * contacts, pa.int64()), ELEMENT_COLUMN: elements})


class Wall:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def run_sender(config: SenderConfig, answers: list[int], wall: Wall) -> list[httpx.Request]:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        wall.now += 7  # the next attempt happens later
        return reply(answers[len(seen) - 1])

    async def go() -> None:
        sender = Sender(config, transport=httpx.MockTransport(answer), wall=wall)
        for attempt in range(1, len(answers) + 1):
            await sender.deliver(
                chunk(3), [BatchOrder(0, "run-1-000000", attempt, 1_700_000_000_000)]
            )
        await sender.close()

    asyncio.run(go())
    return seen


def test_each_attempt_is_signed_afresh_over_the_same_body() -> None:
    secret = new_secret()
    config = SenderConfig(url="http://hook.test/h", signing_keys=(secret_key(secret),))
    wall = Wall()
    first, second = run_sender(config, [503, 200], wall)
    for request in (first, second):
        assert request.headers["webhook-id"] == request.headers["idempotency-key"]
        Webhook(secret).verify(request.content, dict(request.headers))
    assert first.content == second.content
    assert int(second.headers["webhook-timestamp"]) == int(first.headers["webhook-timestamp"]) + 7
    assert first.headers["webhook-signature"] != second.headers["webhook-signature"]


def test_gzip_sends_the_signed_json_compressed() -> None:
    secret = new_secret()
    config = SenderConfig(
        url="http://hook.test/h", signing_keys=(secret_key(secret),), compression="gzip"
    )
    (request,) = run_sender(config, [200], Wall())
    assert request.headers["content-encoding"] == "gzip"
    body = gzip.decompress(request.content)
    assert body.startswith(b'[{"sendTime":1700000000000,"contact":{"id":0}}')
    Webhook(secret).verify(body, dict(request.headers))  # signed before compression
    with pytest.raises((WebhookVerificationError, UnicodeDecodeError)):
        Webhook(secret).verify(request.content, dict(request.headers))  # not the gzip bytes


def test_unsigned_and_uncompressed_by_default() -> None:
    (request,) = run_sender(SenderConfig(url="http://hook.test/h"), [200], Wall())
    assert "webhook-signature" not in request.headers
    assert "content-encoding" not in request.headers
    assert request.content.startswith(b"[{")
