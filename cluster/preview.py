"""What a job would send, shown before anything is sent (`hookcast validate`, `hookcast preview`).

A preview is built by the sender's own request builder (`Sender.request_for`) from the
job's compiled sender config, so its method, URL (query included) and headers are exactly
those of a real request; the bodies are rendered by the segment as a run renders them.
What differs is only what must not be shown: every secret (``${ENV}`` values, token
endpoint credentials) becomes ``***``, a URL's ``user:password`` becomes ``***``, and each
token a wildcard draws on is fetched once for real and shown redacted (``eyJh…(812
chars)``). The Idempotency-Key holds the placeholder run id ``<run>``: a real run gets its
own id, and its keys are ``batch_key(run_id, seq)``.
"""

from __future__ import annotations

import secrets as randomness
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import orjson

from hookcast.actors.auth import AuthorizationConfig, Token, fetch_token, parse_template
from hookcast.actors.auth import redact_token as shown_token
from hookcast.actors.redact import MASK, redact
from hookcast.actors.render import ELEMENT_COLUMN, assemble_body
from hookcast.actors.segment import Segment
from hookcast.actors.sender import Sender, SenderConfig, gzip_body
from hookcast.cluster.compile import compile_job, insecure_warning, segment_config
from hookcast.cluster.job import LoadedJob

PLACEHOLDER_RUN = "<run>"

FetchToken = Callable[[AuthorizationConfig, Iterable[str]], Token]


@dataclass(frozen=True, slots=True)
class AudienceSize:
    """What `hookcast validate` reports of a valid job's audience."""

    contacts: int
    batches: int
    batch_size: int
    files: int
    warnings: tuple[str, ...] = ()  # what is sent otherwise than it is stored (NaN, ±inf)


@dataclass(frozen=True, slots=True)
class PreviewRequest:
    """One request as it would be sent, secrets redacted; ``body_bytes`` is the size of the
    JSON body (what is signed), ``wire_bytes`` of what is sent (gzipped, with compression)."""

    method: str
    url: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    body_bytes: int
    wire_bytes: int

    def to_dict(self) -> dict[str, object]:
        """``{"method", "url", "headers", "body" (the parsed JSON list), "body_bytes",
        "wire_bytes"}``."""
        return {
            "method": self.method,
            "url": self.url,
            "headers": dict(self.headers),
            "body": orjson.loads(self.body),
            "body_bytes": self.body_bytes,
            "wire_bytes": self.wire_bytes,
        }


@dataclass(frozen=True, slots=True)
class JobPreview:
    audience: AudienceSize
    requests: tuple[PreviewRequest, ...]
    run_id: str  # the placeholder run id the Idempotency-Keys are made of


def placeholder_run_id(job: LoadedJob) -> str:
    return f"{job.spec.name}-{PLACEHOLDER_RUN}"


def audience_size(job: LoadedJob) -> AudienceSize:
    """Check the job as a run would (raises a JobError on bad input) and count its audience.
    Nothing is sent, no token is fetched."""
    from hookcast.cluster.runs import validate

    info = validate(job)
    segment = Segment(segment_config(job))
    try:
        contacts = len(segment.freeze())
    finally:
        segment.close()
    size = job.spec.batch_size
    return AudienceSize(contacts, -(-contacts // size), size, info.files, info.warnings)


def preview_job(job: LoadedJob, batches: int, *, fetch: FetchToken | None = None) -> JobPreview:
    """The first ``batches`` requests of ``job`` exactly as a run would send them, redacted
    (see the module's docstring). Raises a JobError on bad input, a TokenError when a token
    cannot be had. ``fetch`` asks a token endpoint (default: `fetch_token`)."""
    plan = compile_job(job)
    segment = Segment(plan.segment)
    try:
        info = segment.validate()
        ids = segment.freeze()
        size = plan.segment.batch_size
        total = -(-len(ids) // size)
        sent_at_ms = int(time.time() * 1000)
        bodies = [
            assemble_body(chunk.column(ELEMENT_COLUMN), sent_at_ms)
            for chunk in segment.stream(ids, list(range(min(batches, total))))
        ]
    finally:
        segment.close()
    run_id = placeholder_run_id(job)
    fetch = fetch or fetch_token
    requests = preview_requests(plan.sender, run_id, bodies, fetch=fetch) if bodies else ()
    warnings = info.warnings
    if (insecure := insecure_warning(plan)) is not None:
        warnings = (*warnings, insecure)
    size_info = AudienceSize(len(ids), total, size, info.files, warnings)
    return JobPreview(size_info, requests, run_id)


def preview_requests(
    config: SenderConfig,
    run_id: str,
    bodies: list[bytes],
    *,
    fetch: FetchToken,
) -> tuple[PreviewRequest, ...]:
    """Request ``seq`` carries ``bodies[seq]`` with the key ``batch_key(run_id, seq)``."""
    from hookcast.cluster.runs import batch_key

    tokens, shown = _stand_in_tokens(config, fetch)
    sender = Sender(config)
    requests = []
    for seq, body in enumerate(bodies):
        request = sender.request_for(batch_key(run_id, seq), tokens)
        requests.append(
            PreviewRequest(
                method=request.method,
                url=_without_credentials(_show(request.url, shown, config.secrets)),
                headers=tuple(
                    (name, _show(value, shown, config.secrets)) for name, value in request.headers
                ),
                body=redact(body.decode(), config.secrets).encode(),
                body_bytes=len(body),
                wire_bytes=len(gzip_body(body)) if config.compression == "gzip" else len(body),
            )
        )
    return tuple(requests)


def _stand_in_tokens(
    config: SenderConfig, fetch: FetchToken
) -> tuple[dict[str, Token], dict[str, str]]:
    """Each token the wildcards draw on, fetched once, as a stand-in value (letters, digits
    and dashes: a URL carries it unchanged) and the map from stand-in to the redacted token."""
    wanted: dict[str, set[str]] = {}
    for part, pairs in (("headers", config.headers), ("query", config.query)):
        for name, value in pairs:
            for auth_id, key in parse_template(value, f"webhook.{part}.{name}").references:
                wanted.setdefault(auth_id, set()).add(key)
    by_id = {auth.id: auth for auth in config.authorizations}
    tokens: dict[str, Token] = {}
    shown: dict[str, str] = {}
    for auth_id, keys in sorted(wanted.items()):
        real = fetch(by_id[auth_id], sorted(keys))
        stand_ins = {}
        for key, value in real.values.items():
            stand_in = f"hookcast-token-{randomness.token_hex(8)}"
            stand_ins[key] = stand_in
            shown[stand_in] = shown_token(value)
        tokens[auth_id] = Token(auth_id, stand_ins, real.fetched_at, real.expires_at)
    return tokens, shown


def _show(text: str, shown_tokens: Mapping[str, str], secrets: frozenset[str]) -> str:
    text = redact(text, secrets)
    for stand_in, shown in shown_tokens.items():
        text = text.replace(stand_in, shown)
    return text


def _without_credentials(url: str) -> str:
    """``https://user:password@host/x`` -> ``https://***@host/x``."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, f"{MASK}@{host}", parts.path, parts.query, parts.fragment))
