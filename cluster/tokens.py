"""Authorizations seen from the command line: `hookcast auth test`.

It fetches one token per authorization, in this process (no Ray, no cache), and shows it
redacted; nothing here is ever sent to the webhook.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from hookcast.actors.auth import TokenError, fetch_token, parse_template, redact_token
from hookcast.actors.errors import JobError
from hookcast.cluster.compile import authorizations
from hookcast.cluster.job import LoadedJob


@dataclass(frozen=True, slots=True)
class AuthReport:
    """What one authorization's token endpoint gave."""

    auth_id: str
    ok: bool
    keys_present: tuple[str, ...] = ()
    tokens: tuple[tuple[str, str], ...] = ()  # (key path, redacted token)
    expires_in_s: float | None = None
    error: str | None = None


def referenced_keys(job: LoadedJob) -> dict[str, set[str]]:
    """auth id -> the token keys the webhook's wildcards use."""
    webhook = job.spec.webhook
    keys: dict[str, set[str]] = {}
    for part, values in (("headers", webhook.headers), ("query", webhook.query)):
        for name, value in values.items():
            for auth_id, key in parse_template(value, f"webhook.{part}.{name}").references:
                keys.setdefault(auth_id, set()).add(key)
    return keys


def test_authorizations(job: LoadedJob, only: str | None = None) -> list[AuthReport]:
    """Fetch each authorization's token once and report what came back."""
    configs = authorizations(job)
    if only is not None and only not in {c.id for c in configs}:
        known = ", ".join(c.id for c in configs) or "none"
        message = f"--id {only}: no authorization {only} in {job.path} (defined: {known})."
        raise JobError(message, (("--id", message),))
    keys = referenced_keys(job)
    reports = []
    for config in configs:
        if only is not None and config.id != only:
            continue
        try:
            token = fetch_token(config, keys.get(config.id, set()), timeout_s=10)
        except (TokenError, httpx.HTTPError) as exc:
            reports.append(AuthReport(config.id, False, error=_message(exc)))
            continue
        reports.append(
            AuthReport(
                config.id,
                True,
                keys_present=token.answer_keys,
                tokens=tuple((k, redact_token(v)) for k, v in sorted(token.values.items())),
                expires_in_s=None if token.expires_at == float("inf") else token.lifetime_s,
            )
        )
    return reports


def _message(exc: Exception) -> str:
    if isinstance(exc, TokenError):
        return str(exc)
    return f"{type(exc).__name__}: the token endpoint could not be asked"
