"""The user's job file, compiled once into the small frozen configs each part of a run takes.

``compile_job`` is the one entry: everything here is conversion of a job the pydantic model
has already validated."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import orjson

from hookcast.actors.auth import AuthorizationConfig, authorization_config, find_wildcard_errors
from hookcast.actors.delivery import RetryPolicy
from hookcast.actors.errors import JobFileError
from hookcast.actors.redact import redact
from hookcast.actors.render import PayloadConfig
from hookcast.actors.segment import SegmentConfig
from hookcast.actors.sender import SenderConfig
from hookcast.cluster.coordinator import DeliverySettings
from hookcast.cluster.job import LoadedJob


@dataclass(frozen=True, slots=True)
class RunPlan:
    """A job compiled once: what the segment, the senders and the coordinator are given.

    ``endpoint`` is the URL as logs, metrics and the ledger show it (no credentials, no
    query, no secrets); ``secrets`` are every value to redact from anything shown."""

    segment: SegmentConfig
    sender: SenderConfig
    delivery: DeliverySettings
    endpoint: str
    secrets: frozenset[str]


def compile_job(job: LoadedJob, *, url: str | None = None) -> RunPlan:
    """The run plan of ``job``; ``url`` replaces the webhook URL (replay to staging)."""
    sender = sender_config(job, url=url)
    return RunPlan(
        segment=segment_config(job),
        sender=sender,
        delivery=delivery_settings(job),
        endpoint=shown_endpoint(sender.url, sender.secrets),
        secrets=sender.secrets,
    )


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


def authorizations(job: LoadedJob) -> tuple[AuthorizationConfig, ...]:
    """Every authorization of the job, checked, with the webhook's wildcards checked against
    them: raises a JobFileError naming the key before anything is sent."""
    configs = tuple(
        authorization_config(auth_id, spec) for auth_id, spec in job.spec.authorizations.items()
    )
    webhook = job.spec.webhook
    problems = find_wildcard_errors(
        webhook.headers, webhook.query, [c.id for c in configs], secrets=job.secrets
    )
    if problems:
        raise JobFileError("\n".join(redact(p, job.secrets) for p in problems))
    return configs


def sender_config(job: LoadedJob, *, url: str | None = None) -> SenderConfig:
    webhook = job.spec.webhook
    configs = authorizations(job)
    secrets = job.secrets.union(*(c.secret_values for c in configs))
    return SenderConfig(
        url=url or webhook.url,
        headers=tuple(webhook.headers.items()),
        query=tuple(webhook.query.items()),
        timeout_s=webhook.timeout_s,
        max_connections=job.spec.rate_limit.max_in_flight,
        secrets=frozenset(secrets),
        authorizations=configs,
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
