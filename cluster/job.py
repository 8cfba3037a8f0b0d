"""The job file: the loader that reads, expands and validates it.

``load_job`` is the one way in: YAML is parsed safely (``job_yaml``: no alias bomb, no key
given twice), ``${NAME}`` references are filled from the environment, and the result is
validated by ``JobSpec`` (``job_model``), once. Every problem becomes a ``JobFileError`` or
``MissingEnvError`` whose message names the key, shows the value (never a secret) and says
what is allowed; its ``problems`` hold one ``(key, message)`` per bullet.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from hookcast.actors.egress import EGRESS_ENV, EgressPolicy
from hookcast.actors.errors import JobFileError, MissingEnvError
from hookcast.actors.tls import TlsConfig, TlsFileError, load_tls
from hookcast.actors.urls import has_scheme
from hookcast.cluster.job_messages import kind_of, problems_message, validation_problems
from hookcast.cluster.job_model import (
    AudienceSpec,
    AuthorizationSpec,
    JobSpec,
    PayloadSpec,
    RateLimitSpec,
    RetrySpec,
    TriggerSpec,
    WebhookSpec,
)
from hookcast.cluster.job_yaml import safe_load

__all__ = [
    "AudienceSpec",
    "AuthorizationSpec",
    "JobSpec",
    "LoadedJob",
    "PayloadSpec",
    "RateLimitSpec",
    "RetrySpec",
    "TriggerSpec",
    "WebhookSpec",
    "expand_env",
    "load_job",
    "load_job_text",
]


@dataclass(frozen=True, slots=True)
class LoadedJob:
    """A validated job and where it came from.

    ``raw_text`` is the file as written: it holds ``${NAME}`` references, not their values,
    so it is safe to store. ``secrets`` are the values taken from the environment; redact
    them from anything shown or stored. ``source`` and ``ids_path`` are absolute (URLs kept).
    ``tls`` holds the contents of the job's TLS files; ``egress`` is the guard's policy
    (``HOOKCAST_EGRESS`` from the environment the job was loaded in, ``egress.allow``).
    """

    spec: JobSpec
    path: Path
    raw_text: str
    secrets: frozenset[str]
    source: str
    ids_path: str | None
    tls: TlsConfig | None = None
    egress: EgressPolicy = field(default_factory=EgressPolicy)


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
        message = (
            f"{auth_file}: authorizations must be a mapping of authorization ids to "
            "definitions (url, method, form or json, ttl_s or expires_in_key)."
        )
        raise JobFileError(message, (("authorizations", message),))
    own = data.get("authorizations") or {}
    both = sorted(set(own) & set(shared))
    if both:
        message = (
            f"authorization {both[0]} is defined both in {source_name} and in {auth_file}: "
            "keep one of them."
        )
        raise JobFileError(message, ((f"authorizations.{both[0]}", message),))
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
    env = os.environ if env is None else env
    _signing_secrets_from_env(data, source_name)
    expanded, secrets = expand_env(data, env)
    try:
        spec = JobSpec.model_validate(expanded)
    except ValidationError as exc:
        # Not chained: pydantic's own text repeats the input, which may hold expanded secrets.
        problems = validation_problems(exc, JobSpec, secrets=secrets)
        headline = f"{source_name} is not a valid job:"
        raise JobFileError(problems_message(headline, problems), problems) from None
    resolved = job_path.resolve()
    audience = spec.audience
    return LoadedJob(
        spec=spec,
        path=resolved,
        raw_text=raw_text,
        secrets=secrets,
        source=_resolve_location(audience.source, resolved.parent),
        ids_path=None if audience.ids is None else _resolve_location(audience.ids, resolved.parent),
        tls=_tls(spec, resolved.parent, source_name),
        egress=_egress(spec, env, source_name),
    )


def _signing_secrets_from_env(data: dict[str, Any], source_name: str) -> None:
    """A signing secret must be a ``${NAME}`` reference: the job's text is stored with
    every run, so a secret written into it would be kept in the state dir."""
    webhook = data.get("webhook")
    signing = webhook.get("signing") if isinstance(webhook, dict) else None
    if not isinstance(signing, dict):
        return
    written = []
    if isinstance(signing.get("secret"), str):
        written.append(("webhook.signing.secret", signing["secret"]))
    if isinstance(signing.get("secrets"), list):
        written += [(f"webhook.signing.secrets[{i}]", v) for i, v in enumerate(signing["secrets"])]
    problems = [
        (
            key,
            f'{key} is written into the job file: give it from the environment, like "${{'
            'HOOKCAST_SIGNING_SECRET}", so that it is not stored with the runs.',
        )
        for key, value in written
        if isinstance(value, str) and not _ENV_REF.search(value)
    ]
    if problems:
        raise JobFileError(
            problems_message(f"{source_name} is not a valid job:", problems), problems
        )


def _invalid(source_name: str, problems: tuple[tuple[str, str], ...] | list) -> JobFileError:
    problems = tuple(problems)
    return JobFileError(problems_message(f"{source_name} is not a valid job:", problems), problems)


def _tls(spec: JobSpec, base_dir: Path, source_name: str) -> TlsConfig | None:
    tls = spec.webhook.tls
    if tls is None:
        return None
    try:
        return load_tls(
            base_dir,
            ca_bundle=tls.ca_bundle,
            client_cert=tls.client_cert,
            client_key=tls.client_key,
            insecure_skip_verify=tls.insecure_skip_verify,
        )
    except TlsFileError as exc:
        raise _invalid(source_name, ((exc.key, str(exc)),)) from None


def _egress(spec: JobSpec, env: Mapping[str, str], source_name: str) -> EgressPolicy:
    """The guard's policy; a URL whose host is a literal blocked address is rejected now
    (a host name is checked at connect time, on every address it resolves to)."""
    try:
        policy = EgressPolicy.from_env(spec.egress.allow, env)
    except ValueError as exc:
        raise _invalid(source_name, ((EGRESS_ENV, f"{EGRESS_ENV}: {exc}"),)) from None
    urls = [("webhook.url", spec.webhook.url)]
    urls += [(f"authorizations.{i}.url", a.url) for i, a in spec.authorizations.items()]
    problems = tuple(
        (key, f"{key}: {problem}")
        for key, url in urls
        if (problem := policy.url_problem(url)) is not None
    )
    if problems:
        raise JobFileError(
            problems_message(f"{source_name} is not a valid job:", problems), problems
        )
    return policy


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
        data = safe_load(raw_text, source_name)
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
            f"{source_name} must be a YAML mapping of keys to values, got {kind_of(data)}."
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


def _resolve_location(location: str, base_dir: Path) -> str:
    if has_scheme(location):
        return location
    # Lexical, not Path.resolve(): the location may be a glob that matches no path yet.
    return os.path.normpath(os.path.join(base_dir, os.path.expanduser(location)))
