"""The user's job file, compiled once into the small frozen configs each part of a run takes.

``compile_job`` is the one entry: everything here is conversion of a job the pydantic model
has already validated (``cluster/job_model.py``): nothing here checks or raises."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import orjson

from hookcast.actors.auth import AuthorizationConfig
from hookcast.actors.breaker import BreakerSettings
from hookcast.actors.delivery import RetryPolicy
from hookcast.actors.egress import EgressPolicy
from hookcast.actors.errors import JobError
from hookcast.actors.redact import redact
from hookcast.actors.render import PayloadConfig
from hookcast.actors.segment import SegmentConfig
from hookcast.actors.sender import SenderConfig
from hookcast.actors.signing import secret_key
from hookcast.actors.trigger import Schedule, require_fires
from hookcast.actors.urls import display_url, http_url_problem
from hookcast.cluster.coordinator import DeliverySettings
from hookcast.cluster.job import AuthorizationSpec, LoadedJob


@dataclass(frozen=True, slots=True)
class RunPlan:
    """A job compiled once: what the segment, the senders and the coordinator are given.

    ``endpoint`` is the URL as logs, metrics and the ledger show it (no credentials, no
    query, no secrets); ``secrets`` are every value to redact from anything shown."""

    segment: SegmentConfig
    sender: SenderConfig
    delivery: DeliverySettings
    endpoint: str
    secrets: frozenset[str] = field(repr=False)


def check_url_override(url: str, egress: EgressPolicy | None = None, key: str = "--url") -> None:
    """Raise a JobError naming ``key`` when ``url`` cannot replace a job's webhook URL."""
    problem = http_url_problem(url) or (None if egress is None else egress.url_problem(url))
    if problem is not None:
        message = f"{key} {problem}"
        raise JobError(message, ((key, message),))


def compile_job(job: LoadedJob, *, url: str | None = None) -> RunPlan:
    """The run plan of ``job``; ``url`` replaces the webhook URL (replay to staging) and is
    checked as the job's own URL is (raises JobError naming ``--url``)."""
    if url is not None:
        check_url_override(url, job.egress)
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


def authorization_config(
    auth_id: str, spec: AuthorizationSpec, egress: EgressPolicy | None = None
) -> AuthorizationConfig:
    """The frozen config of the job's ``authorizations.<auth_id>``; ``egress`` is the
    policy its token endpoint is reached under (default: the guard's own)."""
    return AuthorizationConfig(
        id=auth_id,
        url=spec.url,
        method=spec.method,
        headers=tuple(spec.headers.items()),
        query=tuple(spec.query.items()),
        form=None if spec.form is None else tuple(spec.form.items()),
        json_body=spec.json_body,
        ttl_s=None if spec.ttl_s is None else float(spec.ttl_s),
        expires_in_key=spec.expires_in_key,
        egress=egress or EgressPolicy(),
    )


def authorizations(job: LoadedJob) -> tuple[AuthorizationConfig, ...]:
    """Every authorization of the job, in the order written."""
    return tuple(
        authorization_config(auth_id, spec, job.egress)
        for auth_id, spec in job.spec.authorizations.items()
    )


def job_schedule(job: LoadedJob, *, now: datetime | None) -> Schedule:
    """The job's trigger, compiled by the model; with ``now`` it must still fire (raises
    ``TriggerError`` naming the key)."""
    schedule = job.spec.trigger.schedule
    if now is not None:
        require_fires(schedule, now)
    return schedule


def sender_config(job: LoadedJob, *, url: str | None = None) -> SenderConfig:
    webhook = job.spec.webhook
    configs = authorizations(job)
    secrets = job.secrets.union(*(c.secret_values for c in configs))
    signing = () if webhook.signing is None else webhook.signing.all_secrets
    return SenderConfig(
        url=url or webhook.url,
        headers=tuple(webhook.headers.items()),
        query=tuple(webhook.query.items()),
        timeout_s=webhook.timeout_s,
        max_connections=job.spec.rate_limit.max_in_flight,
        secrets=frozenset(secrets),
        authorizations=configs,
        signing_keys=tuple(secret_key(secret) for secret in signing),
        compression=webhook.compression,
        tls=job.tls,
        egress=job.egress,
    )


def delivery_settings(job: LoadedJob) -> DeliverySettings:
    retry = job.spec.retry
    limits = job.spec.rate_limit
    return DeliverySettings(
        signed=job.spec.webhook.signing is not None,
        max_in_flight=limits.max_in_flight,
        requests_per_second=limits.requests_per_second,
        contacts_per_second=limits.contacts_per_second,
        batch_size=job.spec.batch_size,
        max_body_bytes=job.spec.max_body_bytes,
        canary_batches=job.spec.canary.batches,
        adaptive=limits.adaptive,
        breaker=breaker_settings(job),
        retry=RetryPolicy(
            max_attempts=retry.max_attempts,
            backoff_base_s=retry.backoff_base_s,
            backoff_max_s=retry.backoff_max_s,
            retry_after_max_s=retry.retry_after_max_s,
        ),
    )


def breaker_settings(job: LoadedJob) -> BreakerSettings | None:
    spec = job.spec.circuit_breaker
    if not spec.enabled:
        return None
    return BreakerSettings(**spec.model_dump(exclude={"enabled"}))


def shown_endpoint(url: str, secrets: frozenset[str]) -> str:
    """The endpoint as logs and the ledger show it: no credentials, no query, no secrets."""
    return redact(display_url(url), secrets)


def insecure_warning(plan: RunPlan) -> str | None:
    """The warning every run (and validate) gives when certificates are not checked."""
    tls = plan.sender.tls
    if tls is None or not tls.insecure_skip_verify:
        return None
    return (
        f"webhook.tls.insecure_skip_verify is true: the certificate of {plan.endpoint} is not "
        "checked, so anyone on the way can read and change the requests; use "
        "webhook.tls.ca_bundle to trust a private CA instead."
    )
