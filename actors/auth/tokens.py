"""Tokens: what an authorization's token endpoint answered, read into a ``Token``.

``read_token`` takes the endpoint's JSON answer; every problem is a ``TokenResponseError`` or
``TokenExpiryError`` naming the authorization and the keys the answer held, never a value.
``token_error`` is how every module of this package words a token error.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from hookcast.actors.errors import TokenError, TokenExpiryError, TokenResponseError
from hookcast.actors.urls import control_character

REFRESH_AHEAD_FRACTION = 0.1
REFRESH_AHEAD_MAX_S = 60.0
_KEYS_SHOWN_MAX = 30
# Numeric leaves of a failed answer that are shown: they say why, and are never a token.
_DIAGNOSTIC_KEYS = frozenset({"code", "errcode", "error_code", "status", "status_code"})


def token_error(
    cls: type[TokenError], auth_id: str, detail: str, retryable: bool = False
) -> TokenError:
    """``cls`` with the message ``authorization "<auth_id>": <detail>``."""
    return cls(auth_id, f'authorization "{auth_id}": {detail}', retryable)


@dataclass(frozen=True, slots=True)
class Token:
    """The token values an authorization's wildcards need, and when they expire.

    ``values`` maps each key path to its token; ``version`` is set by `TokenCache` (0: not
    cached) and grows with every fetch. ``expires_at`` is ``inf`` when neither ``ttl_s`` nor
    ``expires_in_key`` is given: the token is then kept until the webhook answers 401.
    ``repr`` never shows a value.
    """

    auth_id: str
    values: dict[str, str] = field(repr=False)
    fetched_at: float
    expires_at: float
    version: int = 0
    answer_keys: tuple[str, ...] = field(default=(), repr=False)  # names only, for auth test

    @property
    def lifetime_s(self) -> float:
        return self.expires_at - self.fetched_at

    @property
    def refresh_at(self) -> float:
        """When to fetch the next one: ``min(10% of the lifetime, 60 s)`` before expiry."""
        ahead = min(REFRESH_AHEAD_FRACTION * self.lifetime_s, REFRESH_AHEAD_MAX_S)
        return self.expires_at - ahead

    def is_fresh(self, now: float) -> bool:
        """True until ``refresh_at``: a sender may use its local copy without asking."""
        return now < self.refresh_at

    def wildcard_values(self) -> dict[tuple[str, str], str]:
        """The ``(auth_id, key_path) -> token`` mapping ``Template.render`` takes."""
        return {(self.auth_id, key): value for key, value in self.values.items()}

    def __repr__(self) -> str:
        keys = ", ".join(sorted(self.values))
        return (
            f"Token({self.auth_id}: {keys or 'no keys'}, version={self.version}, "
            f"expires_at={self.expires_at:.3f})"
        )


def redact_token(value: str) -> str:
    """``eyJh…(812 chars)``: the first 4 characters and the length. Tokens under 16
    characters show only their length (4 characters would give too much of them away)."""
    head = value[:4] if len(value) >= 16 else ""
    return f"{head}…({len(value)} chars)"


_MISSING = object()


def _lookup(tree: Any, key_path: str) -> Any:
    node = tree
    for part in key_path.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return _MISSING
    return node


def leaf_paths(tree: dict[str, Any], prefix: str = "", depth: int = 0) -> list[str]:
    """The dotted paths of an answer's leaves (4 levels deep at most), names only."""
    paths: list[str] = []
    for key, value in tree.items():
        path = f"{prefix}{str(key)[:40]}"
        if isinstance(value, dict) and value and depth < 4:
            paths.extend(leaf_paths(value, f"{path}.", depth + 1))
        else:
            paths.append(path)
    return paths


def _present_keys(tree: dict[str, Any]) -> str:
    keys = sorted(leaf_paths(tree))
    if not keys:
        return "the answer is an empty object"
    more = f", … ({len(keys)} in all)" if len(keys) > _KEYS_SHOWN_MAX else ""
    return f"keys in the answer: {', '.join(keys[:_KEYS_SHOWN_MAX])}{more}"


def _diagnostics(tree: dict[str, Any]) -> str:
    """``; errcode=40013``: the answer's own error code, if it has one. Numbers only: a
    string could be a token, and no value but these is ever shown."""
    found = [
        f"{path}={value:g}"
        for path in leaf_paths(tree)
        if path.rpartition(".")[2].lower() in _DIAGNOSTIC_KEYS
        and isinstance(value := _lookup(tree, path), (int, float))
        and not isinstance(value, bool)
    ]
    return f"; it says {', '.join(found[:3])}" if found else ""


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, dict):
        return "a JSON object"
    if isinstance(value, list):
        return "a JSON list"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (int, float)):
        return "a number"
    return f"a {type(value).__name__}"


def read_token(
    auth_id: str,
    response_json: Any,
    key_paths: Iterable[str],
    *,
    ttl_s: float | None = None,
    expires_in_key: str | None = None,
    now: float,
) -> Token:
    """The token values at ``key_paths`` (dotted, list indexes allowed) in an answer.

    Lifetime: ``expires_in_key``'s value (a number, or a numeric string like "3600"), capped
    by ``ttl_s`` when both are given; else ``ttl_s``; else until a 401. Raises
    ``TokenResponseError`` / ``TokenExpiryError`` (never retryable) naming the authorization
    and the keys the answer did hold, never their values.
    """
    if not isinstance(response_json, dict):
        raise token_error(
            TokenResponseError,
            auth_id,
            f"the token endpoint answered {_kind(response_json)}, not a JSON object: "
            "check the authorization's URL and method.",
        )
    values: dict[str, str] = {}
    for key_path in sorted(set(key_paths)):
        value = _lookup(response_json, key_path)
        if value is _MISSING:
            close = difflib.get_close_matches(key_path, leaf_paths(response_json), n=1)
            hint = f"did you mean #{{auth.{auth_id}.{close[0]}}}? " if close else ""
            raise token_error(
                TokenResponseError,
                auth_id,
                f"the token endpoint's answer has no {key_path} "
                f"({_present_keys(response_json)}{_diagnostics(response_json)}): "
                f"{hint}fix the token key in the wildcard #{{auth.{auth_id}.{key_path}}}.",
            )
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if value is None:
            value = ""
        if not isinstance(value, str):
            raise token_error(
                TokenResponseError,
                auth_id,
                f"{key_path} in the token endpoint's answer is {_kind(value)}, not text "
                f"({_present_keys(response_json)}): point the wildcard at the token itself.",
            )
        if not value.strip():
            raise token_error(
                TokenResponseError,
                auth_id,
                f"{key_path} in the token endpoint's answer is empty "
                f"({_present_keys(response_json)}{_diagnostics(response_json)}): "
                "the endpoint gave no token; check the authorization's credentials.",
            )
        if control_character(value):
            raise token_error(
                TokenResponseError,
                auth_id,
                f"{key_path} in the token endpoint's answer holds a line break or control "
                "character, which cannot be sent in a header: check the token key.",
            )
        values[key_path] = value
    lifetime_s = _lifetime_s(auth_id, response_json, ttl_s, expires_in_key)
    return Token(
        auth_id=auth_id,
        values=values,
        fetched_at=now,
        expires_at=now + lifetime_s,
        answer_keys=tuple(leaf_paths(response_json)),
    )


def _lifetime_s(
    auth_id: str, answer: dict[str, Any], ttl_s: float | None, expires_in_key: str | None
) -> float:
    if expires_in_key is None:
        return math.inf if ttl_s is None else ttl_s
    fix = "check the endpoint, or set ttl_s instead of expires_in_key"
    value = _lookup(answer, expires_in_key)
    if value is _MISSING or value is None:
        raise token_error(
            TokenExpiryError,
            auth_id,
            f"the token endpoint's answer has no {expires_in_key}, the token's lifetime "
            f"({_present_keys(answer)}): {fix}.",
        )
    seconds: float | None = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str):
        try:
            seconds = float(value.strip())
        except ValueError:
            seconds = None
    if seconds is None or not math.isfinite(seconds):
        raise token_error(
            TokenExpiryError,
            auth_id,
            f"{expires_in_key} in the token endpoint's answer is {_kind(value)} that is not "
            f"a number of seconds: {fix}.",
        )
    if seconds <= 0:
        raise token_error(
            TokenExpiryError,
            auth_id,
            f"{expires_in_key} in the token endpoint's answer is {seconds:g}: a token must "
            f"live for more than 0 seconds; {fix}.",
        )
    return seconds if ttl_s is None else min(seconds, ttl_s)
