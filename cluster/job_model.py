"""The job file's model: every key, its bounds, and every check the job gets.

This is the one validator: anything ``cluster/compile.py`` turns into actor configs has been
checked here. Validators' messages name the key, show the value (never a secret) and say
what is allowed; ``job_messages`` turns pydantic's errors into those bullets.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    field_validator,
    model_validator,
)

from hookcast.actors.auth import find_wildcard_errors, is_authorization_id, is_key_path
from hookcast.actors.egress import parse_networks
from hookcast.actors.errors import TriggerError
from hookcast.actors.signing import secret_problem
from hookcast.actors.trigger import Schedule, schedule_from
from hookcast.actors.trigger_syntax import check_kind, time_zone
from hookcast.actors.urls import control_problem, header_name_problem, http_url_problem
from hookcast.cluster.job_messages import show


def _check_http_url(url: str) -> str:
    problem = http_url_problem(url)
    if problem is not None:
        raise ValueError(problem)
    return url


HttpUrl = Annotated[str, AfterValidator(_check_http_url)]


def _check_header_fields(fields: dict[str, str]) -> dict[str, str]:
    for name, value in fields.items():
        problem = header_name_problem(name)
        if problem is not None:
            raise ValueError(problem)
        problem = control_problem(value)
        if problem is not None:
            raise ValueError(f"the value of {name} {problem}")
    return fields


def _check_query_fields(fields: dict[str, str]) -> dict[str, str]:
    for name, value in fields.items():
        problem = control_problem(name)
        if problem is not None:
            raise ValueError(f"a parameter name {problem}")
        problem = control_problem(value)
        if problem is not None:
            raise ValueError(f"the value of {name} {problem}")
    return fields


HeaderFields = Annotated[dict[str, str], AfterValidator(_check_header_fields)]
QueryFields = Annotated[dict[str, str], AfterValidator(_check_query_fields)]


# The smallest body limit accepted: under it not even one contact's element fits (an id,
# sendTime and the list's brackets take ~60 bytes; real contacts, hundreds).
MIN_BODY_BYTES = 256
_REFERENCE = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*\}")


def _check_secret(secret: str) -> str:
    if _REFERENCE.fullmatch(secret):
        # Left unexpanded (`hookcast submit` checks a job without the values): the cluster
        # checks it when it expands the reference.
        return secret
    problem = secret_problem(secret)
    if problem is not None:
        raise ValueError(f"the secret {problem}")
    return secret


SigningSecret = Annotated[str, AfterValidator(_check_secret)]


class SigningSpec(BaseModel):
    """Standard Webhooks signatures: one secret, or several while a customer rotates."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    secret: SigningSecret | None = Field(
        None, description='The signing secret, whsec_<base64>, from the environment: "${NAME}".'
    )
    secrets: tuple[SigningSecret, ...] | None = Field(
        None,
        min_length=1,
        max_length=8,
        description="Several signing secrets (a rotation): one signature per secret.",
        json_schema_extra={"allowed": 'give 1 to 8 secrets, like ["${NEW}", "${OLD}"]'},
    )

    @model_validator(mode="after")
    def _one_way(self) -> SigningSpec:
        if (self.secret is None) == (self.secrets is None):
            raise ValueError(
                "webhook.signing needs secret (one secret) or secrets (a list, during a "
                "rotation), not both and not neither."
            )
        if self.secrets is not None and len(set(self.secrets)) < len(self.secrets):
            raise ValueError("webhook.signing.secrets: a secret is listed twice: list each once.")
        return self

    @property
    def all_secrets(self) -> tuple[str, ...]:
        return (self.secret,) if self.secret is not None else tuple(self.secrets or ())


class TlsSpec(BaseModel):
    """How HTTPS requests to the endpoint trust it and identify themselves."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ca_bundle: str | None = Field(
        None, min_length=1, description="A PEM file of the CA(s) to trust, relative to the job."
    )
    client_cert: str | None = Field(
        None, min_length=1, description="A PEM client certificate (mutual TLS), with client_key."
    )
    client_key: str | None = Field(
        None, min_length=1, description="The PEM private key of client_cert."
    )
    insecure_skip_verify: bool = Field(
        False, strict=True, description="true: do not check the endpoint's certificate (warned)."
    )

    @model_validator(mode="after")
    def _consistent(self) -> TlsSpec:
        if (self.client_cert is None) != (self.client_key is None):
            pair = ("client_cert", "client_key")
            given, missing = pair if self.client_key is None else pair[::-1]
            raise ValueError(
                f"webhook.tls.{given} is given without webhook.tls.{missing}: mutual TLS needs "
                "both (the key may be in the certificate's file: give that file twice)."
            )
        if self.insecure_skip_verify and self.ca_bundle is not None:
            raise ValueError(
                "webhook.tls.insecure_skip_verify: true ignores webhook.tls.ca_bundle: give "
                "one of them (ca_bundle keeps verification on)."
            )
        return self


class WebhookSpec(BaseModel):
    """Where and how each batch is sent."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: HttpUrl = Field(description="The URL the batches are POSTed to.")
    method: Literal["POST"] = Field("POST", description="The HTTP method; only POST is supported.")
    format: Literal["json"] = Field(
        "json", description="The body format; only json (a JSON list of contacts) is supported."
    )
    headers: HeaderFields = Field(
        default_factory=dict,
        description="Extra request headers; values may hold #{auth.<id>.<key>} wildcards.",
    )
    query: QueryFields = Field(
        default_factory=dict,
        description="Query parameters added to the URL; values may hold #{auth...} wildcards.",
    )
    timeout_s: float = Field(
        10.0,
        gt=0,
        le=300,
        description="Seconds to wait for the endpoint to answer one request.",
        json_schema_extra={"allowed": "give a number of seconds above 0 and at most 300"},
    )
    signing: SigningSpec | None = Field(
        None, description="Standard Webhooks signatures (webhook-id, -timestamp, -signature)."
    )
    compression: Literal["none", "gzip"] = Field(
        "none", description="none, or gzip: bodies sent with Content-Encoding: gzip."
    )
    tls: TlsSpec | None = Field(None, description="HTTPS trust and client certificates.")

    @field_validator("method", mode="before")
    @classmethod
    def _only_post(cls, value: Any) -> Any:
        if isinstance(value, str) and value.upper() == "POST":
            return "POST"
        shown = value if isinstance(value, str) else show(value)
        raise ValueError(f"webhook.method {shown} is not supported: only POST is.")

    @field_validator("format", mode="before")
    @classmethod
    def _only_json(cls, value: Any) -> Any:
        if isinstance(value, str) and value.lower() == "json":
            return "json"
        shown = value if isinstance(value, str) else show(value)
        raise ValueError(f"webhook.format {shown} is not supported: only json is.")


def _check_networks(entries: tuple[str, ...]) -> tuple[str, ...]:
    for i, entry in enumerate(entries):
        try:
            parse_networks([entry])
        except ValueError as exc:
            raise ValueError(f"egress.allow[{i}]: {exc}") from None
    return entries


class EgressSpec(BaseModel):
    """Where the job may connect despite the egress guard."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    allow: Annotated[tuple[str, ...], AfterValidator(_check_networks)] = Field(
        (),
        description="Networks or addresses a job may reach although the guard blocks them.",
    )

    @field_validator("allow", mode="before")
    @classmethod
    def _none_is_empty(cls, value: Any) -> Any:
        return () if value is None else value


class PayloadSpec(BaseModel):
    """What each element of a request body holds besides ``sendTime``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    contact: bool = Field(
        True,
        strict=True,
        description="true: send every non-null contact attribute; false: only the contact id.",
    )
    identities: tuple[str, ...] = Field(
        (),
        description="The identity types to send (like wechat.openId); empty: none.",
    )
    custom: dict[str, Any] | None = Field(
        None, description='A mapping sent as "_custom" in every element; absent: no "_custom".'
    )

    @field_validator("identities", mode="before")
    @classmethod
    def _none_is_empty(cls, value: Any) -> Any:
        return () if value is None else value


class AudienceSpec(BaseModel):
    """Which contacts receive the broadcast."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str = Field(
        min_length=1,
        description="The parquet file, folder or glob of contacts, relative to the job file.",
    )
    where: str | None = Field(
        None, description="A SQL condition selecting a dynamic segment, evaluated at each fire."
    )
    ids: str | None = Field(
        None, description="A parquet file with an `id` column: a static segment of the source."
    )

    @model_validator(mode="after")
    def _where_or_ids(self) -> AudienceSpec:
        if self.where is not None and self.ids is not None:
            raise ValueError(
                "audience.where and audience.ids are alternatives: give one (a dynamic segment) "
                "or the other (a static list of ids), not both."
            )
        return self


class TriggerSpec(BaseModel):
    """When the broadcast fires: checked here, compiled once into ``schedule`` (whether it
    still fires from now on is asked when it is scheduled)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["immediate", "once", "recurring"] = Field(
        "immediate", description="immediate (now), once (at trigger.at) or recurring."
    )
    at: str | None = Field(None, description="once: the ISO datetime to fire at.")
    cron: str | None = Field(None, description='recurring: a 5-field cron like "0 9 * * 1".')
    timezone: str = Field("UTC", description="The IANA time zone of cron and naive datetimes.")
    start: str | None = Field(None, description="recurring: no fire before this ISO datetime.")
    end: str | None = Field(None, description="recurring: no fire after this ISO datetime.")
    every: str | None = Field(None, description="recurring: a friendly interval instead of cron.")
    _schedule: Schedule | None = PrivateAttr(None)

    @field_validator("type", mode="before")
    @classmethod
    def _known_type(cls, value: Any) -> Any:
        try:
            return check_kind(value)
        except TriggerError as exc:
            raise ValueError(exc.message) from None

    @field_validator("at", "start", "end", mode="before")
    @classmethod
    def _datetime_as_text(cls, value: Any) -> Any:
        # YAML turns an unquoted 2026-12-01T09:00:00+08:00 into a datetime; keep it as written.
        return value.isoformat() if isinstance(value, date) else value

    @model_validator(mode="after")
    def _compiles(self) -> TriggerSpec:
        try:
            self._schedule = schedule_from(**self.model_dump())
        except TriggerError as exc:
            raise ValueError(exc.message) from None
        return self

    @property
    def schedule(self) -> Schedule:
        """The trigger compiled (no clock checks: see ``actors.trigger.require_fires``)."""
        assert self._schedule is not None  # set by the validator of every instance
        return self._schedule


class RateLimitSpec(BaseModel):
    """How hard the endpoint may be hit, across the whole sender pool."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    requests_per_second: float | None = Field(
        None, gt=0, description="Requests per second to the endpoint; absent: no limit."
    )
    max_in_flight: int = Field(
        8, ge=1, le=1000, description="Requests awaiting an answer at once, 1 to 1000."
    )
    contacts_per_second: float | None = Field(
        None, gt=0, description="Contacts per second to the endpoint; absent: no limit."
    )
    adaptive: bool = Field(
        True,
        strict=True,
        description="true: concurrency adapts (AIMD) between 1 and max_in_flight.",
    )
    daily_contacts: int | None = Field(
        None,
        strict=True,
        ge=1,
        description="Contacts per endpoint per day, across every run and job; absent: no quota.",
    )
    timezone: str | None = Field(
        None,
        description="The IANA time zone a day starts in; absent: the trigger's, else UTC.",
    )

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                time_zone(value)
            except TriggerError:
                raise ValueError(
                    f"{show(value)} is not an IANA time zone: give one like Asia/Shanghai or UTC."
                ) from None
        return value


class CanarySpec(BaseModel):
    """The first requests of a run, which stop it if the endpoint refuses every one."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    batches: int = Field(
        3,
        strict=True,
        ge=0,
        le=100,
        description="Batches sent first, alone; if each fails for good the run stops. 0: off.",
    )


class CircuitBreakerSpec(BaseModel):
    """When the endpoint is failing, wait for it instead of using up the retries."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(
        True, strict=True, description="false: no breaker (every failure uses an attempt)."
    )
    failure_ratio: float = Field(
        0.7,
        gt=0,
        le=1,
        description="The share of failed requests in window_s that opens the breaker.",
        json_schema_extra={"allowed": "give a share above 0 and at most 1, like 0.7"},
    )
    min_requests: int = Field(
        10, strict=True, ge=1, description="Requests in window_s before it may open."
    )
    window_s: float = Field(30.0, gt=0, description="The window failures are counted over.")
    open_s: float = Field(30.0, gt=0, description="The first pause; it doubles up to 300 s.")
    max_outage_s: float = Field(
        3600.0, gt=0, description="An outage this long stops the run as interrupted."
    )


class RetrySpec(BaseModel):
    """How a failed request is retried before its batch is dead-lettered."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_attempts: int = Field(
        6, ge=1, le=100, description="Attempts per batch, the first included, 1 to 100."
    )
    backoff_base_s: float = Field(0.5, gt=0, description="Seconds before the first retry.")
    backoff_max_s: float = Field(30.0, gt=0, description="The longest wait between attempts.")
    retry_after_max_s: float = Field(
        60.0, gt=0, description="The longest Retry-After from the endpoint that is honoured."
    )

    @model_validator(mode="after")
    def _cap_above_base(self) -> RetrySpec:
        if self.backoff_max_s < self.backoff_base_s:
            raise ValueError(
                f"retry.backoff_max_s {self.backoff_max_s:g} is below retry.backoff_base_s "
                f"{self.backoff_base_s:g}: raise backoff_max_s or lower backoff_base_s."
            )
        return self


class AuthorizationSpec(BaseModel):
    """How to fetch a token from the customer's auth endpoint."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    url: HttpUrl = Field(description="The token endpoint.")
    method: Literal["GET", "POST"] = Field("POST", description="GET or POST.")
    headers: HeaderFields = Field(
        default_factory=dict, description="Headers sent to the token endpoint."
    )
    query: QueryFields = Field(
        default_factory=dict, description="Query parameters sent to the token endpoint."
    )
    form: dict[str, str] | None = Field(None, description="A form body for the token request.")
    json_body: dict[str, Any] | None = Field(
        None, alias="json", description="A JSON body for the token request."
    )
    ttl_s: float | None = Field(
        None, gt=0, allow_inf_nan=False, description="Seconds a token stays valid."
    )
    expires_in_key: str | None = Field(
        None, description="The response key that holds the token's lifetime in seconds."
    )

    @field_validator("method", mode="before")
    @classmethod
    def _get_or_post(cls, value: Any) -> Any:
        if isinstance(value, str) and value.upper() in ("GET", "POST"):
            return value.upper()
        shown = value if isinstance(value, str) else show(value)
        raise ValueError(f"{shown} is not supported: give GET or POST.")

    @field_validator("expires_in_key")
    @classmethod
    def _key_path(cls, value: str | None) -> str | None:
        if value is not None and not is_key_path(value):
            raise ValueError(
                f"{show(value)} is not a key path: give the answer's key that holds the "
                "token's lifetime in seconds, like expires_in or data.expires_in."
            )
        return value

    @model_validator(mode="after")
    def _one_body(self) -> AuthorizationSpec:
        if self.form is not None and self.json_body is not None:
            raise ValueError(
                "form and json are alternatives: the token request has one body, give one of them."
            )
        if self.method == "GET" and (self.form is not None or self.json_body is not None):
            raise ValueError("method GET sends no body: move form or json into query, or use POST.")
        return self


class JobSpec(BaseModel):
    """One broadcast: who receives it, where it is sent, when and how fast."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(
        pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$",
        description="The job's name, unique per state dir.",
        json_schema_extra={
            "allowed": 'use 1 to 63 lowercase letters, digits, "-" or "_", '
            "starting with a letter or digit"
        },
    )
    webhook: WebhookSpec = Field(description="Where and how the batches are sent.")
    payload: PayloadSpec = Field(
        default_factory=PayloadSpec, description="What each element of a request holds."
    )
    audience: AudienceSpec = Field(description="Which contacts receive the broadcast.")
    batch_size: int = Field(
        500,
        strict=True,
        ge=1,
        le=500,
        description="Contacts per request, 1 to 500.",
        json_schema_extra={"allowed": "a request carries 1 to 500 contacts"},
    )
    max_body_bytes: int = Field(
        5_000_000,
        strict=True,
        ge=MIN_BODY_BYTES,
        description=(
            "A request's JSON body never exceeds this many bytes (before compression): a "
            "larger batch is cut into parts; a 413 halves the part it answered."
        ),
        json_schema_extra={"allowed": f"an integer of at least {MIN_BODY_BYTES} bytes"},
    )
    canary: CanarySpec = Field(
        default_factory=CanarySpec, description="The first batches, which can stop a run."
    )
    circuit_breaker: CircuitBreakerSpec = Field(
        default_factory=CircuitBreakerSpec, description="Waiting out an endpoint's outage."
    )
    trigger: TriggerSpec = Field(
        default_factory=TriggerSpec, description="When the broadcast fires; absent: now."
    )
    rate_limit: RateLimitSpec = Field(
        default_factory=RateLimitSpec, description="How hard the endpoint may be hit."
    )
    retry: RetrySpec = Field(
        default_factory=RetrySpec, description="How failed requests are retried."
    )
    authorizations: dict[str, AuthorizationSpec] = Field(
        default_factory=dict, description="Token endpoints, by the id wildcards refer to."
    )
    egress: EgressSpec = Field(
        default_factory=EgressSpec, description="Addresses allowed despite the egress guard."
    )

    @field_validator("authorizations")
    @classmethod
    def _nameable_ids(cls, value: dict[str, AuthorizationSpec]) -> dict[str, AuthorizationSpec]:
        for auth_id in value:
            if not is_authorization_id(auth_id):
                raise ValueError(
                    f'the id "{auth_id}" cannot be named in a wildcard: use letters, digits, '
                    '"_" or "-" (no dots, braces or spaces), like crm.'
                )
        return value

    @model_validator(mode="after")
    def _wildcards_defined(self) -> JobSpec:
        problems = find_wildcard_errors(
            self.webhook.headers, self.webhook.query, self.authorizations
        )
        if problems:
            raise ValueError("\n- ".join(problems))
        return self
