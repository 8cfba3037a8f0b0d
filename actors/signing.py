"""Standard Webhooks v1 signatures: the secret's format and the three headers a request carries.

Plain Python (stdlib ``hmac``). The official ``standardwebhooks`` package verifies what this
signs (tests check both ways, and the specification's own test vector); it is not used to
sign because its ``sign`` takes ``str`` and copies the body three times, where ``hmac``
reads the body's bytes as they are.

A signature is ``v1,`` + base64(HMAC-SHA256(secret, ``{id}.{timestamp}.{body}``)), keyed with
the secret's decoded bytes; with several secrets (a rotation) the header holds one signature
per secret, space-separated, so a receiver holding either secret alone verifies.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from collections.abc import Sequence

SECRET_PREFIX = "whsec_"
MIN_SECRET_BYTES = 24
MAX_SECRET_BYTES = 64
REDACTED_SIGNATURE = "v1,<redacted>"
ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"


def secret_problem(secret: str) -> str | None:
    """Why ``secret`` is not a usable signing secret, or None. Never shows the secret."""
    if not secret.startswith(SECRET_PREFIX):
        return (
            f"is not a Standard Webhooks secret: give {SECRET_PREFIX} followed by base64 of "
            f"{MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} random bytes (`hookcast keys new` "
            "prints one)."
        )
    try:
        key = _decode(secret)
    except (binascii.Error, ValueError):
        return (
            f"is not {SECRET_PREFIX} followed by base64: use only A-Z, a-z, 0-9, + and / "
            "(and = padding) after the prefix (`hookcast keys new` prints one)."
        )
    if not MIN_SECRET_BYTES <= len(key) <= MAX_SECRET_BYTES:
        return (
            f"decodes to {len(key)} bytes: a signing secret holds {MIN_SECRET_BYTES} to "
            f"{MAX_SECRET_BYTES} bytes (`hookcast keys new` prints one of 32)."
        )
    return None


def secret_key(secret: str) -> bytes:
    """The HMAC key of a secret that ``secret_problem`` accepts."""
    return _decode(secret)


def new_secret(n_bytes: int = 32) -> str:
    """A fresh random signing secret."""
    return SECRET_PREFIX + base64.b64encode(os.urandom(n_bytes)).decode("ascii")


def signature(keys: Sequence[bytes], msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: one ``v1,<base64>`` per key, space-separated."""
    prefix = f"{msg_id}.{timestamp}.".encode()
    signatures = []
    for key in keys:
        mac = hmac.new(key, prefix, hashlib.sha256)
        mac.update(body)
        signatures.append("v1," + base64.b64encode(mac.digest()).decode("ascii"))
    return " ".join(signatures)


def signed_headers(
    keys: Sequence[bytes], msg_id: str, timestamp: int, body: bytes | None
) -> tuple[tuple[str, str], ...]:
    """The three headers of a signed request; ``body=None`` shows the signature redacted
    (a preview: what is signed is real, what is shown is not the secret's work)."""
    value = REDACTED_SIGNATURE if body is None else signature(keys, msg_id, timestamp, body)
    return (
        (ID_HEADER, msg_id),
        (TIMESTAMP_HEADER, str(timestamp)),
        (SIGNATURE_HEADER, value),
    )


def _decode(secret: str) -> bytes:
    text = secret[len(SECRET_PREFIX) :]
    # Unpadded base64 is common in the wild (the official libraries accept it too).
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
