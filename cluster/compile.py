"""The user's job file, compiled into the small frozen configs each actor takes."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

import orjson

from actors.delivery import RetryPolicy
from actors.errors import JobFileError
from actors.redact import redact
from actors.render import PayloadConfig
from actors.segment import SegmentConfig
from actors.sender import SenderConfig
from cluster.broadcast import DeliverySettings
from cluster.job import LoadedJob

_AUTH_WILDCARD = re.compile(r"#\{auth\.[^}]*\}")


def payload_config(job: LoadedJob) -> PayloadConfig:
    payload = job.spec.payload
    custom = None if payload.custom is None else orjson.dumps(payload.custom).decode()
    return PayloadConfig(contact=payload.contact, identities=payload.identities, custom_json=custom)


def segment_config(job: LoadedJob) -> SegmentConfig:
    return SegmentConfig(
        source=job.source,
        batch_size=job.spec.batch_size,
        payload=payload_config(job),
        where=job.spec.audience.where,
        ids_path=job.ids_path,
    )


def sender_config(job: LoadedJob, *, url: str | None = None) -> SenderConfig:
    webhook = job.spec.webhook
    for part, values in (("headers", webhook.headers), ("query", webhook.query)):
        for name, value in values.items():
            if _AUTH_WILDCARD.search(value):
                raise JobFileError(
                    f"webhook.{part}.{name} uses an authorization wildcard "
                    f"({_AUTH_WILDCARD.search(value).group(0)}), which this version of hookcast "
                    "does not resolve yet: put the token in an environment variable and write "
                    '"Bearer ${MY_TOKEN}" instead.'
                )
    return SenderConfig(
        url=url or webhook.url,
        headers=tuple(webhook.headers.items()),
        query=tuple(webhook.query.items()),
        timeout_s=webhook.timeout_s,
        max_connections=job.spec.rate_limit.max_in_flight,
        secrets=job.secrets,
    )


def delivery_settings(job: LoadedJob) -> DeliverySettings:
    retry = job.spec.retry
    return DeliverySettings(
        max_in_flight=job.spec.rate_limit.max_in_flight,
        requests_per_second=job.spec.rate_limit.requests_per_second,
        retry=RetryPolicy(
            max_attempts=retry.max_attempts,
            backoff_base_s=retry.backoff_base_s,
            backoff_max_s=retry.backoff_max_s,
            retry_after_max_s=retry.retry_after_max_s,
        ),
    )


def shown_endpoint(url: str, secrets: frozenset[str]) -> str:
    """The endpoint as logs and the ledger show it: no credentials, no query, no secrets."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = host + (f":{parts.port}" if parts.port else "")
    return redact(urlunsplit((parts.scheme, netloc, parts.path, "", "")), secrets)
