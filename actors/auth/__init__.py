"""Authorizations: ``#{auth.<id>.<key>}`` wildcards, token fetching and the token cache.

Plain Python, no Ray: the TokenActor wraps a `TokenCache`, senders render `Template` s.

    parse_template / find_wildcard_errors   wildcards in webhook header and query values
    authorization_config                    a job's authorization as a frozen config
    fetch_token / fetch_token_async         one request to the token endpoint -> Token
    read_token                              the endpoint's JSON answer -> Token
    TokenCache                              single-flight, refresh-ahead, once per 401

Errors (all ``HookcastError``; messages name the authorization, never a token or secret):

    TokenError                 no token could be had; ``retryable`` says if trying again may help
    ├── TokenRequestError      the request failed: refused, timed out, an HTTP error status
    ├── TokenResponseError     the answer is unusable: not JSON, not an object, key missing, empty
    │   └── TokenExpiryError   its lifetime (expires_in) is missing, 0, negative or not a number
    └── TokenUnavailableError  retries ran out (raised by TokenCache)

Time is seconds on the cache's clock (default ``time.time``, comparable across nodes).
"""

from __future__ import annotations

import asyncio
import dataclasses
import difflib
import hashlib
import inspect
import json
import logging
import math
import random
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx

from hookcast.actors.errors import (
    JobFileError,
    TokenError,
    TokenExpiryError,
    TokenRequestError,
    TokenResponseError,
    TokenUnavailableError,
)
from hookcast.actors.redact import redact

logger = logging.getLogger(__name__)

WILDCARD_PREFIX = "#{auth."
REFRESH_AHEAD_FRACTION = 0.1
REFRESH_AHEAD_MAX_S = 60.0
RETRYABLE_STATUSES = frozenset({408, 429})  # and every 5xx
_PART = r"[^\s.{}]+"
_WILDCARD = re.compile(rf"#\{{auth\.(?P<id>{_PART})\.(?P<key>{_PART}(?:\.{_PART})*)\}}")
_ID = re.compile(rf"^{_PART}$")
_KEY_PATH = re.compile(rf"^{_PART}(?:\.{_PART})*$")
_FRAGMENT_MAX = 60
_EXCERPT_MAX = 200
_KEYS_SHOWN_MAX = 30
# Numeric leaves of a failed answer that are shown: they say why, and are never a token.
_DIAGNOSTIC_KEYS = frozenset({"code", "errcode", "error_code", "status", "status_code"})
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")


# --- errors ----------------------------------------------------------------------------------


def _fail(cls: type[TokenError], auth_id: str, detail: str, retryable: bool = False) -> TokenError:
    return cls(auth_id, f'authorization "{auth_id}": {detail}', retryable)


# --- wildcards -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Wildcard:
    """One ``#{auth.<auth_id>.<key_path>}``."""

    auth_id: str
    key_path: str

    def __str__(self) -> str:
        return f"#{{auth.{self.auth_id}.{self.key_path}}}"


@dataclass(frozen=True, slots=True)
class Template:
    """A header or query value: literal text and wildcards, in order.

    ``repr`` shows where it is and what it refers to, never its literal text (which may hold
    an expanded ``${ENV}`` secret).
    """

    where: str
    parts: tuple[str | Wildcard, ...]

    @property
    def references(self) -> set[tuple[str, str]]:
        """``(auth_id, key_path)`` of every wildcard."""
        return {(p.auth_id, p.key_path) for p in self.parts if isinstance(p, Wildcard)}

    @property
    def is_static(self) -> bool:
        return not any(isinstance(p, Wildcard) for p in self.parts)

    def render(self, tokens: Mapping[tuple[str, str], str]) -> str:
        """The value with each wildcard replaced by its token.

        Raises ``TokenError`` (not retryable) when a wildcard has no token: a request never
        goes out with a wildcard left in it or blanked.
        """
        out: list[str] = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
                continue
            value = tokens.get((part.auth_id, part.key_path))
            if value is None:
                raise _fail(
                    TokenError,
                    part.auth_id,
                    f"{self.where} needs {part}, but no token is at hand for it: "
                    "fetch one from the authorization before sending.",
                )
            out.append(value)
        return "".join(out)

    def __repr__(self) -> str:
        refs = ", ".join(sorted(str(p) for p in self.parts if isinstance(p, Wildcard)))
        return f"Template({self.where}: {refs or 'no wildcards'})"


def _scan(
    text: str, where: str, example_id: str = "crm"
) -> tuple[tuple[str | Wildcard, ...], list[str]]:
    """The parts of ``text`` and a message per malformed wildcard."""
    parts: list[str | Wildcard] = []
    problems: list[str] = []
    literal_start = pos = 0
    while (start := text.find(WILDCARD_PREFIX, pos)) != -1:
        match = _WILDCARD.match(text, start)
        if match is None:
            problems.append(
                f"{where}: {_fragment(text, start)} is not a wildcard: write #{{auth.<authorization"
                f" id>.<token key>}}, like #{{auth.{example_id}.access_token}}"
            )
            pos = start + len(WILDCARD_PREFIX)
            continue
        if start > literal_start:
            parts.append(text[literal_start:start])
        parts.append(Wildcard(match["id"], match["key"]))
        literal_start = pos = match.end()
    if literal_start < len(text) or not parts:
        parts.append(text[literal_start:])
    return tuple(parts), problems


def _fragment(text: str, start: int) -> str:
    """The malformed wildcard as written: up to its ``}``, stopping at whitespace."""
    end = start + len(WILDCARD_PREFIX)
    while end < len(text) and not text[end].isspace():
        end += 1
        if text[end - 1] == "}":
            break
        if end - start >= _FRAGMENT_MAX:
            return f"{text[start:end]}…"
    return text[start:end]


def parse_template(text: str, where: str) -> Template:
    """Split a header or query value into text and wildcards.

    ``where`` is the value's key (``webhook.headers.Authorization``) for messages. Raises
    ``JobFileError`` for a malformed wildcard: anything starting ``#{auth.`` that is not
    ``#{auth.<id>.<dotted.key>}`` with non-empty parts and no spaces.
    """
    parts, problems = _scan(text, where)
    if problems:
        raise JobFileError(problems[0])
    return Template(where, parts)


def find_wildcard_errors(
    headers: Mapping[str, str],
    query: Mapping[str, str],
    defined_ids: Iterable[str],
    *,
    prefix: str = "webhook",
    secrets: Iterable[str] = (),
) -> list[str]:
    """One message per malformed wildcard or wildcard naming an undefined authorization,
    in header then query order; empty when every wildcard is sound. Messages show only the
    wildcard, never the rest of the value."""
    defined = sorted(set(defined_ids))
    example_id = defined[0] if defined else "crm"
    messages: list[str] = []
    for part_name, values in (("headers", headers), ("query", query)):
        for name, value in values.items():
            where = f"{prefix}.{part_name}.{name}"
            parts, problems = _scan(value, where, example_id)
            messages.extend(problems)
            for part in parts:
                if isinstance(part, Wildcard) and part.auth_id not in defined:
                    messages.append(f"{where}: {part} {_undefined(part.auth_id, defined)}")
    return [redact(m, secrets) for m in messages]


def _undefined(auth_id: str, defined: list[str]) -> str:
    if not defined:
        return (
            f'refers to authorization "{auth_id}", which is not defined '
            f"(no authorizations are defined): add it under authorizations.{auth_id}"
        )
    message = f'refers to authorization "{auth_id}", which is not defined (defined: '
    message += f"{', '.join(defined)})"
    close = difflib.get_close_matches(auth_id, defined, n=1)
    return f'{message}; did you mean "{close[0]}"?' if close else message


# --- authorization config --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AuthorizationConfig:
    """One authorization, as the token cache and fetcher see it.

    ``fingerprint`` is the sha256 of the whole definition: an edited definition gets a new
    one, so it is never served a token cached for the old one. ``repr`` shows neither
    headers, query, form, body, nor the URL's query string.
    """

    id: str
    url: str
    method: str = "POST"
    headers: tuple[tuple[str, str], ...] = ()
    query: tuple[tuple[str, str], ...] = ()
    form: tuple[tuple[str, str], ...] | None = None
    json_body: dict[str, Any] | None = None
    ttl_s: float | None = None
    expires_in_key: str | None = None
    fingerprint: str = ""

    def __hash__(self) -> int:
        return hash((self.id, self.fingerprint))

    def __repr__(self) -> str:
        return (
            f"AuthorizationConfig(id={self.id!r}, {self.method} {_display_url(self.url)}, "
            f"fingerprint={self.fingerprint[:12]})"
        )

    @property
    def secret_values(self) -> frozenset[str]:
        """Every value sent to the token endpoint (client ids and secrets among them), to be
        redacted from anything shown."""
        values = [v for _, v in self.headers + self.query + (self.form or ())]
        values += [v for _, v in parse_qsl(urlsplit(self.url).query)]
        values += list(_string_leaves(self.json_body))
        return frozenset(v for v in values if v)


def _string_leaves(tree: Any) -> Iterable[str]:
    if isinstance(tree, str):
        yield tree
    elif isinstance(tree, dict):
        for value in tree.values():
            yield from _string_leaves(value)
    elif isinstance(tree, (list, tuple)):
        for value in tree:
            yield from _string_leaves(value)


def _display_url(url: str) -> str:
    """``scheme://host[:port]/path``: the query string may carry an app secret."""
    try:
        parts = urlsplit(url)
        return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"
    except ValueError:
        return "(an unreadable URL)"


_SPEC_KEYS = (
    "url",
    "method",
    "headers",
    "query",
    "form",
    "json_body",
    "ttl_s",
    "expires_in_key",
)


def authorization_config(auth_id: str, spec: Any) -> AuthorizationConfig:
    """An ``AuthorizationConfig`` from a job's ``authorizations.<auth_id>``: the pydantic
    model (anything with ``model_dump``) or a plain mapping (``json`` or ``json_body``).

    Raises ``JobFileError`` naming the key: an id a wildcard cannot name, a URL that is not
    http(s), GET with a body, both form and json, a bad ttl_s or expires_in_key.
    """
    where = f"authorizations.{auth_id}"
    if not _ID.match(auth_id):
        raise JobFileError(
            f'{where}: the id "{auth_id}" cannot be named in a wildcard: use letters, digits, '
            '"_" or "-" (no dots, braces or spaces), like crm.'
        )
    data = dict(spec.model_dump(by_alias=False) if hasattr(spec, "model_dump") else spec)
    if "json" in data:
        data["json_body"] = data.pop("json")
    unknown = sorted(set(data) - set(_SPEC_KEYS))
    if unknown:
        allowed = ", ".join(k.replace("json_body", "json") for k in _SPEC_KEYS)
        raise JobFileError(f"{where}: unknown key {unknown[0]}; allowed here: {allowed}.")
    url = data.get("url")
    if not isinstance(url, str) or not url:
        raise JobFileError(f"{where}.url: field required: give the token endpoint's URL.")
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        parts, host = None, None
    if parts is None or parts.scheme.lower() not in ("http", "https") or not host:
        raise JobFileError(
            f"{where}.url {_display_url(url)} is not an http(s) URL with a host: "
            "give the token endpoint, like https://auth.example.com/oauth/token."
        )
    method = str(data.get("method") or "POST").upper()
    if method not in ("GET", "POST"):
        raise JobFileError(f"{where}.method {method} is not supported: give GET or POST.")
    form = _pairs(data.get("form"), f"{where}.form")
    json_body = data.get("json_body")
    if json_body is not None and not isinstance(json_body, dict):
        raise JobFileError(f"{where}.json is not a mapping: give keys and values.")
    if form is not None and json_body is not None:
        raise JobFileError(
            f"{where}: form and json are alternatives: the token request has one body, "
            "give one of them."
        )
    if method == "GET" and (form is not None or json_body is not None):
        raise JobFileError(
            f"{where}: method GET sends no body: move form or json into query, or use POST."
        )
    ttl_s = data.get("ttl_s")
    if ttl_s is not None and (
        isinstance(ttl_s, bool)
        or not isinstance(ttl_s, (int, float))
        or not math.isfinite(ttl_s)
        or ttl_s <= 0
    ):
        raise JobFileError(f"{where}.ttl_s {ttl_s!r} is out of range: give seconds above 0.")
    expires_in_key = data.get("expires_in_key")
    if expires_in_key is not None and not (
        isinstance(expires_in_key, str) and _KEY_PATH.match(expires_in_key)
    ):
        raise JobFileError(
            f"{where}.expires_in_key is not a key path: give the answer's key that holds "
            "the token's lifetime in seconds, like expires_in or data.expires_in."
        )
    headers = _pairs(data.get("headers"), f"{where}.headers") or ()
    query = _pairs(data.get("query"), f"{where}.query") or ()
    definition = {
        "id": auth_id,
        "url": url,
        "method": method,
        "headers": headers,
        "query": query,
        "form": form,
        "json": json_body,
        "ttl_s": None if ttl_s is None else float(ttl_s),
        "expires_in_key": expires_in_key,
    }
    canonical = json.dumps(definition, sort_keys=True, separators=(",", ":"), default=str)
    return AuthorizationConfig(
        id=auth_id,
        url=url,
        method=method,
        headers=headers,
        query=query,
        form=form,
        json_body=json_body,
        ttl_s=definition["ttl_s"],
        expires_in_key=expires_in_key,
        fingerprint=hashlib.sha256(b"hookcast-authorization\0" + canonical.encode()).hexdigest(),
    )


def _pairs(mapping: Any, where: str) -> tuple[tuple[str, str], ...] | None:
    if mapping is None:
        return None
    if not isinstance(mapping, Mapping):
        raise JobFileError(f"{where} is not a mapping: give keys and values.")
    for key, value in mapping.items():
        if not isinstance(value, str):
            raise JobFileError(f"{where}.{key}: the value is not text: put it in quotes.")
    return tuple((str(k), v) for k, v in mapping.items())


# --- tokens ----------------------------------------------------------------------------------


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


def _leaf_paths(tree: dict[str, Any], prefix: str = "", depth: int = 0) -> list[str]:
    paths: list[str] = []
    for key, value in tree.items():
        path = f"{prefix}{str(key)[:40]}"
        if isinstance(value, dict) and value and depth < 4:
            paths.extend(_leaf_paths(value, f"{path}.", depth + 1))
        else:
            paths.append(path)
    return paths


def _present_keys(tree: dict[str, Any]) -> str:
    keys = sorted(_leaf_paths(tree))
    if not keys:
        return "the answer is an empty object"
    more = f", … ({len(keys)} in all)" if len(keys) > _KEYS_SHOWN_MAX else ""
    return f"keys in the answer: {', '.join(keys[:_KEYS_SHOWN_MAX])}{more}"


def _diagnostics(tree: dict[str, Any]) -> str:
    """``; errcode=40013``: the answer's own error code, if it has one. Numbers only: a
    string could be a token, and no value but these is ever shown."""
    found = [
        f"{path}={value:g}"
        for path in _leaf_paths(tree)
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
        raise _fail(
            TokenResponseError,
            auth_id,
            f"the token endpoint answered {_kind(response_json)}, not a JSON object: "
            "check the authorization's URL and method.",
        )
    values: dict[str, str] = {}
    for key_path in sorted(set(key_paths)):
        value = _lookup(response_json, key_path)
        if value is _MISSING:
            close = difflib.get_close_matches(key_path, _leaf_paths(response_json), n=1)
            hint = f"did you mean #{{auth.{auth_id}.{close[0]}}}? " if close else ""
            raise _fail(
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
            raise _fail(
                TokenResponseError,
                auth_id,
                f"{key_path} in the token endpoint's answer is {_kind(value)}, not text "
                f"({_present_keys(response_json)}): point the wildcard at the token itself.",
            )
        if not value.strip():
            raise _fail(
                TokenResponseError,
                auth_id,
                f"{key_path} in the token endpoint's answer is empty "
                f"({_present_keys(response_json)}{_diagnostics(response_json)}): "
                "the endpoint gave no token; check the authorization's credentials.",
            )
        if _CONTROL_CHARS.search(value):
            raise _fail(
                TokenResponseError,
                auth_id,
                f"{key_path} in the token endpoint's answer holds a line break or control "
                "character, which cannot be sent in a header: check the token key.",
            )
        values[key_path] = value
    lifetime_s = _lifetime_s(auth_id, response_json, ttl_s, expires_in_key)
    return Token(auth_id=auth_id, values=values, fetched_at=now, expires_at=now + lifetime_s)


def _lifetime_s(
    auth_id: str, answer: dict[str, Any], ttl_s: float | None, expires_in_key: str | None
) -> float:
    if expires_in_key is None:
        return math.inf if ttl_s is None else ttl_s
    fix = "check the endpoint, or set ttl_s instead of expires_in_key"
    value = _lookup(answer, expires_in_key)
    if value is _MISSING or value is None:
        raise _fail(
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
        raise _fail(
            TokenExpiryError,
            auth_id,
            f"{expires_in_key} in the token endpoint's answer is {_kind(value)} that is not "
            f"a number of seconds: {fix}.",
        )
    if seconds <= 0:
        raise _fail(
            TokenExpiryError,
            auth_id,
            f"{expires_in_key} in the token endpoint's answer is {seconds:g}: a token must "
            f"live for more than 0 seconds; {fix}.",
        )
    return seconds if ttl_s is None else min(seconds, ttl_s)


# --- fetching --------------------------------------------------------------------------------


def _request_args(config: AuthorizationConfig) -> dict[str, Any]:
    url = httpx.URL(config.url)
    # Merged by hand: httpx's params= replaces a query already in the URL.
    args: dict[str, Any] = {
        "method": config.method,
        "url": url.copy_merge_params(list(config.query)) if config.query else url,
        "headers": {"Accept": "application/json", **dict(config.headers)},
    }
    if config.method == "POST":
        if config.form is not None:
            args["data"] = dict(config.form)
        elif config.json_body is not None:
            args["json"] = config.json_body
    return args


def _transport_error(
    config: AuthorizationConfig, exc: httpx.HTTPError, timeout_s: float
) -> TokenError:
    url = _display_url(config.url)
    if isinstance(exc, httpx.TimeoutException):
        detail = (
            f"the token endpoint {url} did not answer within {timeout_s:g} s "
            f"({type(exc).__name__}): check that it is up and reachable."
        )
        retryable = True
    elif isinstance(exc, httpx.TransportError) and not isinstance(
        exc, (httpx.UnsupportedProtocol, httpx.ProxyError)
    ):
        reason = redact(str(exc), config.secret_values)[:120] or type(exc).__name__
        detail = (
            f"the token endpoint {url} cannot be reached ({reason}): check the URL and that "
            "the endpoint is up."
        )
        retryable = True
    else:
        reason = redact(str(exc), config.secret_values)[:120] or type(exc).__name__
        detail = f"the request to the token endpoint {url} failed ({reason}): check the URL."
        retryable = False
    return _fail(TokenRequestError, config.id, detail, retryable)


def _read_answer(
    config: AuthorizationConfig, response: httpx.Response, key_paths: Iterable[str], now: float
) -> Token:
    url = _display_url(config.url)
    status = response.status_code
    if not 200 <= status < 300:
        phrase = f" ({response.reason_phrase})" if response.reason_phrase else ""
        excerpt = redact(response.text[:_EXCERPT_MAX], config.secret_values).strip()
        said = f": {excerpt}" if excerpt else ""
        if 300 <= status < 400:
            location = _display_url(response.headers.get("location", ""))
            fix = f"redirects are not followed: use the final URL ({location})."
        elif status in RETRYABLE_STATUSES or status >= 500:
            fix = "the endpoint is failing or busy."
        elif status in (401, 403):
            fix = "check the authorization's credentials (headers, query, form or json)."
        else:
            fix = "check the authorization's URL, method and parameters."
        raise _fail(
            TokenRequestError,
            config.id,
            f"the token endpoint {url} answered {status}{phrase}{said}; {fix}",
            retryable=status in RETRYABLE_STATUSES or status >= 500,
        )
    try:
        answer = response.json()
    except ValueError:
        # Not chained: the decode error keeps the whole body, which may be a bare token.
        content_type = response.headers.get("content-type", "no content type")
        raise _fail(
            TokenResponseError,
            config.id,
            f"the token endpoint {url} answered {status} with {content_type}, "
            f"{len(response.content)} bytes that are not JSON: check the authorization's URL "
            "points at the token endpoint.",
        ) from None
    return read_token(
        config.id,
        answer,
        key_paths,
        ttl_s=config.ttl_s,
        expires_in_key=config.expires_in_key,
        now=now,
    )


def fetch_token(
    config: AuthorizationConfig,
    key_paths: Iterable[str],
    *,
    client: httpx.Client | None = None,
    timeout_s: float = 10.0,
    now: float | None = None,
) -> Token:
    """One request to the token endpoint (GET with query; POST with query and form or json),
    no retries, redirects not followed. ``now`` (default ``time.time()``) is when the
    request starts: the token's lifetime counts from then, erring early.

    Raises ``TokenError``; ``retryable`` is True for refused connections, timeouts, 408, 429
    and 5xx, False for other statuses and unusable answers.
    """
    started = time.time() if now is None else now
    try:
        if client is None:
            with httpx.Client(timeout=timeout_s, follow_redirects=False) as own:
                response = own.request(**_request_args(config))
        else:
            response = client.request(timeout=timeout_s, **_request_args(config))
    except httpx.HTTPError as exc:
        raise _transport_error(config, exc, timeout_s) from exc
    return _read_answer(config, response, key_paths, started)


async def fetch_token_async(
    config: AuthorizationConfig,
    key_paths: Iterable[str],
    *,
    client: httpx.AsyncClient | None = None,
    timeout_s: float = 10.0,
    now: float | None = None,
) -> Token:
    """``fetch_token`` on an ``httpx.AsyncClient``, for an asyncio actor."""
    started = time.time() if now is None else now
    try:
        if client is None:
            async with httpx.AsyncClient(timeout=timeout_s, follow_redirects=False) as own:
                response = await own.request(**_request_args(config))
        else:
            response = await client.request(timeout=timeout_s, **_request_args(config))
    except httpx.HTTPError as exc:
        raise _transport_error(config, exc, timeout_s) from exc
    return _read_answer(config, response, key_paths, started)


# --- the cache -------------------------------------------------------------------------------

Fetch = Callable[..., Awaitable[Token] | Token]
"""``fetch(config, key_paths: frozenset[str], *, now: float) -> Token`` (or awaitable)."""


@dataclass(slots=True)
class _Entry:
    config: AuthorizationConfig
    key_paths: frozenset[str]
    token: Token | None = None
    flight: asyncio.Task[Token] | None = None  # the one fetch under way, shared by all callers


def _consume(task: asyncio.Task[Token]) -> None:
    # A background refresh nobody awaits must not warn "exception was never retrieved";
    # _refresh has logged it.
    if not task.cancelled():
        task.exception()


class TokenCache:
    """Tokens per authorization, keyed by ``(id, fingerprint)``, for one asyncio event loop.

    - Single flight: however many callers ask at once, one fetch is under way per key.
    - Refresh ahead: from ``Token.refresh_at`` a caller still gets the cached token while
      one background fetch replaces it; only a missing or expired token makes callers wait.
    - Once per version: ``invalidate`` refetches only when the reported version is current.
    - Retryable fetch errors are retried with exponential backoff (full jitter) until
      ``deadline_s`` after the first attempt; then ``TokenUnavailableError``. Other errors
      are raised at once. A failed fetch never clears a still-valid token (except one a
      401 has condemned) and nothing token-less is ever returned.
    """

    def __init__(
        self,
        fetch: Fetch,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 8.0,
        deadline_s: float = 30.0,
        rng: random.Random | None = None,
    ) -> None:
        self._fetch = fetch
        self._clock = clock
        self._sleep = sleep
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.deadline_s = deadline_s
        self._rng = rng or random.Random()
        self._entries: dict[tuple[str, str], _Entry] = {}
        self._version = 0  # across entries, so a version names one token

    async def get(self, auth: AuthorizationConfig, key_paths: Iterable[str] = ()) -> Token:
        """A token holding every key in ``key_paths`` (and any other key asked for before)."""
        keys = frozenset(key_paths)
        entry = self._entries.get((auth.id, auth.fingerprint))
        if entry is None:
            entry = self._entries[(auth.id, auth.fingerprint)] = _Entry(auth, keys)
        elif not keys <= entry.key_paths:
            entry.key_paths |= keys
        token = entry.token
        if token is not None and keys <= token.values.keys():
            now = self._clock()
            if now < token.refresh_at:
                return token
            if now < token.expires_at:
                self._start(entry)
                return token
        token = await self._join(entry)
        if keys <= token.values.keys():
            return token
        # That fetch started before these keys were added; the next one asks for them.
        return await self._join(entry)

    async def invalidate(self, auth_id: str, fingerprint: str, version: int) -> Token:
        """The webhook refused the token of ``version``: return a newer one, fetching only
        if ``version`` is still the current one (or a fetch is already under way)."""
        entry = self._entries.get((auth_id, fingerprint))
        if entry is None:
            raise _fail(
                TokenError,
                auth_id,
                "no token was fetched for this definition, so none can be refreshed: "
                "ask for one first.",
            )
        token = entry.token
        if token is not None and version < token.version and self._clock() < token.expires_at:
            return token
        if token is not None and version >= token.version:
            entry.token = None  # condemned: no caller gets it while the new one is fetched
        return await self._join(entry)

    def current(self, auth_id: str, fingerprint: str) -> Token | None:
        """The cached token, without fetching (for ``hookcast auth test`` and metrics)."""
        entry = self._entries.get((auth_id, fingerprint))
        return None if entry is None else entry.token

    def _start(self, entry: _Entry) -> asyncio.Task[Token]:
        if entry.flight is None:
            entry.flight = asyncio.get_running_loop().create_task(self._refresh(entry))
            entry.flight.add_done_callback(_consume)
        return entry.flight

    async def _join(self, entry: _Entry) -> Token:
        # Shielded: a caller that gives up does not cancel the fetch the others wait on.
        return await asyncio.shield(self._start(entry))

    async def _refresh(self, entry: _Entry) -> Token:
        try:
            config, keys = entry.config, entry.key_paths
            started = self._clock()
            attempt = 0
            while True:
                attempt += 1
                try:
                    fetched = self._fetch(config, keys, now=self._clock())
                    if inspect.isawaitable(fetched):
                        fetched = await fetched
                    break
                except TokenError as exc:
                    if not exc.retryable:
                        raise
                    elapsed_s = self._clock() - started
                    delay_s = self._delay_s(attempt)
                    if elapsed_s + delay_s > self.deadline_s:
                        last = exc.message.removeprefix(f'authorization "{config.id}": ')
                        raise _fail(
                            TokenUnavailableError,
                            config.id,
                            f"no token after {attempt} attempts in {elapsed_s:.1f} s; "
                            f"the last: {last}",
                            retryable=True,
                        ) from exc
                    logger.debug(
                        "token attempt %d for %s failed, retrying in %.2f s",
                        attempt,
                        config.id,
                        delay_s,
                    )
                    await self._sleep(delay_s)
        except TokenError as exc:
            logger.warning("%s", exc)  # one line per failed refresh; messages hold no secret
            raise
        finally:
            entry.flight = None
        self._version += 1
        token = dataclasses.replace(fetched, version=self._version)
        entry.token = token
        return token

    def _delay_s(self, attempt: int) -> float:
        ceiling = min(self.backoff_max_s, self.backoff_base_s * 2 ** (attempt - 1))
        return self._rng.uniform(ceiling / 2, ceiling)
