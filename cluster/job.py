"""The job file: its model, and the loader that reads, expands and validates it.

``load_job`` is the one way in: YAML is parsed, ``${NAME}`` references are filled from the
environment, and the result is validated by ``JobSpec``. Every problem becomes a
``JobFileError`` or ``MissingEnvError`` whose message names the key, shows the value (never a
secret) and says what is allowed.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import types
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import annotated_types
import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo

from hookcast.actors.errors import JobFileError, MissingEnvError
from hookcast.actors.redact import redact

_URLS_ALLOWED = "only http and https URLs are supported"


def _check_http_url(url: str) -> str:
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        parts, host = None, None
    if parts is None or parts.scheme.lower() not in ("http", "https"):
        raise ValueError(
            f"{_show(url)} is not supported: {_URLS_ALLOWED} (like https://hooks.example.com/path)."
        )
    if not host:
        raise ValueError(
            f"{_show(url)} has no host: {_URLS_ALLOWED}, with a host "
            "(like https://hooks.example.com/path)."
        )
    return url


HttpUrl = Annotated[str, AfterValidator(_check_http_url)]


class WebhookSpec(BaseModel):
    """Where and how each batch is sent."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: HttpUrl = Field(description="The URL the batches are POSTed to.")
    method: Literal["POST"] = Field("POST", description="The HTTP method; only POST is supported.")
    format: Literal["json"] = Field(
        "json", description="The body format; only json (a JSON list of contacts) is supported."
    )
    headers: dict[str, str] = Field(
        default_factory=dict,
        description="Extra request headers; values may hold #{auth.<id>.<key>} wildcards.",
    )
    query: dict[str, str] = Field(
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

    @field_validator("method", mode="before")
    @classmethod
    def _only_post(cls, value: Any) -> Any:
        if isinstance(value, str) and value.upper() == "POST":
            return "POST"
        shown = value if isinstance(value, str) else _show(value)
        raise ValueError(f"webhook.method {shown} is not supported: only POST is.")

    @field_validator("format", mode="before")
    @classmethod
    def _only_json(cls, value: Any) -> Any:
        if isinstance(value, str) and value.lower() == "json":
            return "json"
        shown = value if isinstance(value, str) else _show(value)
        raise ValueError(f"webhook.format {shown} is not supported: only json is.")


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
    """When the broadcast fires. Only checked for completeness here; the schedule maths is
    the scheduler's."""

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

    @field_validator("at", "start", "end", mode="before")
    @classmethod
    def _datetime_as_text(cls, value: Any) -> Any:
        # YAML turns an unquoted 2026-12-01T09:00:00+08:00 into a datetime; keep it as written.
        return value.isoformat() if isinstance(value, date) else value

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            raise ValueError(
                f"trigger.timezone {value} is not an IANA time zone name: "
                "use one like UTC, Europe/Berlin or Asia/Shanghai."
            ) from None
        return value

    @model_validator(mode="after")
    def _complete(self) -> TriggerSpec:
        if self.type == "once" and self.at is None:
            raise ValueError(
                "trigger.type once needs trigger.at: give the datetime to fire at, "
                'like at: "2026-12-01T09:00:00+08:00".'
            )
        if self.type == "recurring" and self.cron is None and self.every is None:
            raise ValueError(
                "trigger.type recurring needs trigger.cron or trigger.every: "
                'give a schedule, like cron: "0 9 * * 1".'
            )
        return self


class RateLimitSpec(BaseModel):
    """How hard the endpoint may be hit, across the whole sender pool."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    requests_per_second: float | None = Field(
        None, gt=0, description="Requests per second to the endpoint; absent: no limit."
    )
    max_in_flight: int = Field(
        8, ge=1, le=1000, description="Requests awaiting an answer at once, 1 to 1000."
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
    headers: dict[str, str] = Field(
        default_factory=dict, description="Headers sent to the token endpoint."
    )
    query: dict[str, str] = Field(
        default_factory=dict, description="Query parameters sent to the token endpoint."
    )
    form: dict[str, str] | None = Field(None, description="A form body for the token request.")
    json_body: dict[str, Any] | None = Field(
        None, alias="json", description="A JSON body for the token request."
    )
    ttl_s: float | None = Field(None, gt=0, description="Seconds a token stays valid.")
    expires_in_key: str | None = Field(
        None, description="The response key that holds the token's lifetime in seconds."
    )


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


@dataclass(frozen=True, slots=True)
class LoadedJob:
    """A validated job and where it came from.

    ``raw_text`` is the file as written: it holds ``${NAME}`` references, not their values,
    so it is safe to store. ``secrets`` are the values taken from the environment; redact
    them from anything shown or stored. ``source`` and ``ids_path`` are absolute (URLs kept).
    """

    spec: JobSpec
    path: Path
    raw_text: str
    secrets: frozenset[str]
    source: str
    ids_path: str | None


def load_job(
    path: str | Path,
    *,
    env: Mapping[str, str] | None = None,
    auth_file: str | Path | None = None,
) -> LoadedJob:
    """Read, expand and validate a job file. Nothing is sent and the audience is not read.

    ``auth_file`` adds the authorizations of a shared file (its ``authorizations:`` mapping,
    or a bare mapping of them); the job's ``raw_text`` then holds both, still unexpanded, so
    a resume or a scheduled fire has everything it needs.

    Raises ``JobFileError`` for a file that is missing, unreadable, not YAML or not a valid
    job, and ``MissingEnvError`` for a ``${NAME}`` that ``env`` (default: os.environ) lacks.
    """
    source_name = str(path)
    job_path = Path(path).expanduser()
    raw_text = _read(job_path, source_name)
    if auth_file is not None:
        raw_text = _with_authorizations(raw_text, source_name, auth_file)
    return load_job_text(raw_text, job_path, env=env)


def _with_authorizations(raw_text: str, source_name: str, auth_file: str | Path) -> str:
    data = _parse_yaml(raw_text, source_name)
    shared = _parse_yaml(_read(Path(auth_file).expanduser(), str(auth_file)), str(auth_file))
    shared = shared.get("authorizations", shared)
    if not isinstance(shared, dict):
        raise JobFileError(
            f"{auth_file}: authorizations must be a mapping of authorization ids to "
            "definitions (url, method, form or json, ttl_s or expires_in_key)."
        )
    own = data.get("authorizations") or {}
    both = sorted(set(own) & set(shared))
    if both:
        raise JobFileError(
            f"authorization {both[0]} is defined both in {source_name} and in {auth_file}: "
            "keep one of them."
        )
    data["authorizations"] = {**own, **shared}
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def load_job_text(
    raw_text: str, path: str | Path, *, env: Mapping[str, str] | None = None
) -> LoadedJob:
    """``load_job`` for a job file's text kept elsewhere (the ledger); ``path`` anchors
    relative audience paths and names the job in messages."""
    source_name = str(path)
    job_path = Path(path).expanduser()
    data = _parse_yaml(raw_text, source_name)
    expanded, secrets = expand_env(data, os.environ if env is None else env)
    try:
        spec = JobSpec.model_validate(expanded)
    except ValidationError as exc:
        # Not chained: pydantic's own text repeats the input, which may hold expanded secrets.
        raise JobFileError(format_validation_error(exc, source_name, secrets=secrets)) from None
    resolved = job_path.resolve()
    audience = spec.audience
    return LoadedJob(
        spec=spec,
        path=resolved,
        raw_text=raw_text,
        secrets=secrets,
        source=_resolve_location(audience.source, resolved.parent),
        ids_path=None if audience.ids is None else _resolve_location(audience.ids, resolved.parent),
    )


def _read(job_path: Path, source_name: str) -> str:
    try:
        return job_path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise JobFileError(
            f"job file {source_name} does not exist: check the path "
            f"(a relative path starts at {Path.cwd()})."
        ) from exc
    except IsADirectoryError as exc:
        raise JobFileError(
            f"job file {source_name} is a directory: give the YAML file inside it."
        ) from exc
    except UnicodeDecodeError as exc:
        raise JobFileError(
            f"job file {source_name} is not UTF-8 text (bad byte at offset {exc.start}): "
            "save it as UTF-8."
        ) from exc
    except OSError as exc:
        raise JobFileError(f"job file {source_name} cannot be read: {exc.strerror}.") from exc


def _parse_yaml(raw_text: str, source_name: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(raw_text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise JobFileError(
            f"{source_name} is not valid YAML{where}: {exc.problem or exc.context}. "
            'Check the indentation there, and quote values that contain ": " or " #".'
        ) from exc
    except yaml.YAMLError as exc:
        raise JobFileError(f"{source_name} is not valid YAML: {exc}.") from exc
    if data is None:
        raise JobFileError(
            f"{source_name} is empty: a job file is a YAML mapping with at least name, "
            "webhook.url and audience.source."
        )
    if not isinstance(data, dict):
        raise JobFileError(
            f"{source_name} must be a YAML mapping of keys to values, got {_kind(data)}."
        )
    return data


_ENV_REF = re.compile(r"\$(\$?)\{([A-Za-z_][A-Za-z0-9_]*)\}")


def expand_env(tree: Any, env: Mapping[str, str]) -> tuple[Any, frozenset[str]]:
    """Fill ``${NAME}`` in every string value of ``tree`` (keys are left alone) from ``env``.

    ``$${NAME}`` gives a literal ``${NAME}``; ``#{auth...}`` wildcards are not touched.
    Returns the new tree and the set of non-empty values substituted, for redaction.
    Raises ``MissingEnvError`` naming the variable and the dotted key that refers to it.
    """
    secrets: set[str] = set()

    def expand(value: Any, key: str) -> Any:
        if isinstance(value, str):

            def substitute(match: re.Match[str]) -> str:
                if match.group(1):
                    return match.group(0)[1:]
                name = match.group(2)
                if name not in env:
                    raise MissingEnvError(name, key)
                secrets.add(env[name])
                return env[name]

            return _ENV_REF.sub(substitute, value)
        if isinstance(value, dict):
            return {k: expand(v, f"{key}.{k}" if key else str(k)) for k, v in value.items()}
        if isinstance(value, list):
            return [expand(v, f"{key}[{i}]") for i, v in enumerate(value)]
        return value

    expanded = expand(tree, "")
    return expanded, frozenset(s for s in secrets if s)


_URL_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def _resolve_location(location: str, base_dir: Path) -> str:
    if _URL_SCHEME.match(location):
        return location
    # Lexical, not Path.resolve(): the location may be a glob that matches no path yet.
    return os.path.normpath(os.path.join(base_dir, os.path.expanduser(location)))


# --- turning a pydantic ValidationError into bullets a person can act on -------------------

_SENSITIVE_KEY = re.compile(r"secret|token|passw|authori[sz]ation|api[-_]?key|credential", re.I)


def format_validation_error(
    exc: ValidationError, source_name: str, *, secrets: Iterable[str] = ()
) -> str:
    """One line naming the file, then one ``- key: message`` bullet per error.

    Values of keys that look secret are never shown, and ``secrets`` are redacted.
    """
    lines = [f"{source_name} is not a valid job:"]
    for error in exc.errors(include_url=False):
        key = _dotted(error["loc"])
        message = _explain(error)
        # Validators that name their key already (webhook.method GET is ...) are not repeated.
        lines.append(
            f"- {message}" if not key or message.startswith(key) else f"- {key}: {message}"
        )
    return redact("\n".join(lines), secrets)


def _explain(error: Any) -> str:
    loc: tuple[int | str, ...] = error["loc"]
    kind: str = error["type"]
    value = error.get("input")
    tp, field = _locate(loc)
    hidden = bool(loc) and bool(_SENSITIVE_KEY.search(str(loc[-1])))
    shown = "the value" if hidden else _show(value)
    allowed = _allowed(field)
    whole = _unwrap(tp) is int
    bounds = _bounds(field)

    if kind == "missing":
        return f"field required: {_purpose(field)}"
    if kind == "extra_forbidden":
        return _unknown_key(loc)
    if kind in ("value_error", "assertion_error"):
        return str(error["ctx"]["error"])
    if value is None and kind.endswith("_type"):
        return f"no value given: {_purpose(field)}"
    # "from 1 to 500", "above 0", or nothing when the field is unbounded.
    span = f" from {bounds}" if bounds[:1].isdigit() else f" {bounds}" if bounds else ""
    if kind in ("int_type", "int_parsing", "int_from_float"):
        if isinstance(value, str):
            return f"{shown} is a string: give a whole number{span} (no quotes)."
        if isinstance(value, float):
            return f"{shown} is not a whole number: give {bounds or 'a whole number'}."
        return f"{shown} is not a whole number: give a whole number{span}."
    if kind in ("float_type", "float_parsing"):
        return f"{shown} is not a number: give a number{span}."
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        number = "a whole number" if whole else "a number"
        return f"{shown} is out of range: {allowed or f'give {number}{span}'}."
    if kind in ("bool_type", "bool_parsing"):
        return f"{shown} is not true or false: give true or false (no quotes)."
    if kind == "string_type":
        return f"{shown} is not text: put it in quotes, or give text."
    if kind == "string_too_short":
        return f"{shown} is empty: give {_purpose(field)}"
    if kind == "string_pattern_mismatch":
        rule = allowed or f"it must match {error['ctx']['pattern']}"
        return f"{shown} is not allowed: {rule}."
    if kind == "literal_error":
        return f"{shown} is not allowed: give {error['ctx']['expected']}."
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        model = _unwrap(tp)
        if isinstance(model, type) and issubclass(model, BaseModel):
            keys = ", ".join(_keys(model))
            return f"{shown} is not a mapping: give keys and values (allowed keys: {keys})."
        return f"{shown} is not a mapping: give keys and values, like {{key: value}}."
    if kind in ("tuple_type", "list_type"):
        return f"{shown} is not a list: give a YAML list, like [a, b] (or [] for none)."
    return f"{shown}: {error['msg'][:1].lower()}{error['msg'][1:]}."


def _unknown_key(loc: tuple[int | str, ...]) -> str:
    parent, _ = _locate(loc[:-1])
    parent = _unwrap(parent)
    if not (isinstance(parent, type) and issubclass(parent, BaseModel)):
        return "unknown key."
    keys = _keys(parent)
    message = f"unknown key; allowed here: {', '.join(keys)}"
    close = difflib.get_close_matches(str(loc[-1]), keys, n=1)
    return f"{message}; did you mean {close[0]}?" if close else f"{message}."


def _keys(model: type[BaseModel]) -> list[str]:
    return [field.alias or name for name, field in model.model_fields.items()]


def _locate(loc: tuple[int | str, ...]) -> tuple[Any, FieldInfo | None]:
    """The type expected at ``loc`` in a JobSpec, and the nearest model field on the way."""
    tp: Any = JobSpec
    field: FieldInfo | None = None
    for part in loc:
        tp = _unwrap(tp)
        origin = get_origin(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            field = next(
                (f for n, f in tp.model_fields.items() if part in (n, f.alias)),
                None,
            )
            if field is None:
                return None, None
            tp = field.annotation
        elif origin in (dict, Mapping):
            tp = get_args(tp)[1] if get_args(tp) else Any
        elif origin in (tuple, list):
            tp = get_args(tp)[0] if get_args(tp) else Any
        else:
            return None, field
    return tp, field


def _unwrap(tp: Any) -> Any:
    """``Annotated[X, ...]`` and ``X | None`` as ``X``."""
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            tp = get_args(tp)[0]
        elif origin in (Union, types.UnionType):
            args = [a for a in get_args(tp) if a is not type(None)]
            if len(args) != 1:
                return tp
            tp = args[0]
        else:
            return tp


def _bounds(field: FieldInfo | None) -> str:
    if field is None:
        return ""
    limits: dict[str, Any] = {}
    for meta in field.metadata:
        for name in ("ge", "gt", "le", "lt"):
            if isinstance(meta, getattr(annotated_types, name.capitalize())):
                limits[name] = getattr(meta, name)
    low = f"{limits['ge']:g}" if "ge" in limits else None
    high = f"{limits['le']:g}" if "le" in limits else None
    if low is not None and high is not None:
        return f"{low} to {high}"
    parts = []
    if low is not None:
        parts.append(f"at least {low}")
    if "gt" in limits:
        parts.append(f"above {limits['gt']:g}")
    if high is not None:
        parts.append(f"at most {high}")
    if "lt" in limits:
        parts.append(f"below {limits['lt']:g}")
    return " and ".join(parts)


def _allowed(field: FieldInfo | None) -> str | None:
    extra = field.json_schema_extra if field is not None else None
    return str(extra["allowed"]) if isinstance(extra, dict) and "allowed" in extra else None


def _purpose(field: FieldInfo | None) -> str:
    description = (field.description if field is not None else None) or "a value is needed here."
    # "The URL the ..." reads as "the URL the ..." after a colon; "URL ..." stays.
    if not description[:2].isupper():
        description = description[0].lower() + description[1:]
    return description if description.endswith(".") else f"{description}."


def _dotted(loc: tuple[int | str, ...]) -> str:
    key = ""
    for part in loc:
        key += f"[{part}]" if isinstance(part, int) else f".{part}" if key else str(part)
    return key


def _show(value: Any) -> str:
    """A value as a person wrote it in YAML, short; containers only by kind."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        text = value if len(value) <= 80 else f"{value[:77]}..."
        return json.dumps(text, ensure_ascii=False)
    if isinstance(value, date):
        return value.isoformat()
    return _kind(value)


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, (int, float)):
        return "a number"
    return f"a {type(value).__name__}"
