"""Asking a token endpoint: one request builder, one answer reader, one error translation.

``fetch_token`` and ``fetch_token_async`` are thin shells around the same three pieces, so
the sync path (``hookcast auth test``, preview) and the async one (the token service) send
the same request and read the answer the same way.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import httpx

from hookcast.actors.auth.config import AuthorizationConfig
from hookcast.actors.auth.tokens import Token, read_token, token_error
from hookcast.actors.egress import (
    EgressPolicy,
    blocked_reason,
    guarded_async_transport,
    guarded_transport,
)
from hookcast.actors.errors import TokenError, TokenRequestError, TokenResponseError
from hookcast.actors.redact import redact
from hookcast.actors.urls import display_url

RETRYABLE_STATUSES = frozenset({408, 429})  # and every 5xx
_EXCERPT_MAX = 200


def token_request(config: AuthorizationConfig, timeout_s: float = 10.0) -> httpx.Request:
    """The request for a token: GET with query; POST with query and form or json."""
    url = httpx.URL(config.url)
    # Merged by hand: httpx's params= replaces a query already in the URL.
    if config.query:
        url = url.copy_merge_params(list(config.query))
    form = json_body = None
    if config.method == "POST":
        if config.form is not None:
            form = dict(config.form)
        elif config.json_body is not None:
            json_body = config.json_body
    return httpx.Request(
        config.method,
        url,
        headers={"Accept": "application/json", **dict(config.headers)},
        data=form,
        json=json_body,
        extensions={"timeout": httpx.Timeout(timeout_s).as_dict()},
    )


def read_answer(
    config: AuthorizationConfig, response: httpx.Response, key_paths: Iterable[str], now: float
) -> Token:
    """The token in the endpoint's ``response`` (a 2xx JSON object), its lifetime counted from
    ``now``. Raises ``TokenRequestError`` for any other status (retryable for 408, 429 and
    5xx), ``TokenResponseError`` for an answer that is not JSON or holds no usable token."""
    url = display_url(config.url)
    status = response.status_code
    if not 200 <= status < 300:
        phrase = f" ({response.reason_phrase})" if response.reason_phrase else ""
        excerpt = redact(response.text[:_EXCERPT_MAX], config.secret_values).strip()
        said = f": {excerpt}" if excerpt else ""
        if 300 <= status < 400:
            location = display_url(response.headers.get("location", ""))
            fix = f"redirects are not followed: use the final URL ({location})."
        elif status in RETRYABLE_STATUSES or status >= 500:
            fix = "the endpoint is failing or busy."
        elif status in (401, 403):
            fix = "check the authorization's credentials (headers, query, form or json)."
        else:
            fix = "check the authorization's URL, method and parameters."
        raise token_error(
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
        raise token_error(
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


@contextmanager
def translated_errors(config: AuthorizationConfig, timeout_s: float) -> Iterator[None]:
    """httpx's transport errors inside, as ``TokenRequestError`` (chained): refused and
    timed-out connections retryable, a bad URL or protocol not."""
    try:
        yield
    except httpx.HTTPError as exc:
        raise _request_failure(config, exc, timeout_s) from exc


def fetch_token(
    config: AuthorizationConfig,
    key_paths: Iterable[str],
    *,
    client: httpx.Client | None = None,
    timeout_s: float = 10.0,
    now: float | None = None,
) -> Token:
    """One request to the token endpoint, no retries, redirects not followed. ``now``
    (default ``time.time()``) is when the request starts: the token's lifetime counts from
    then, erring early.

    Raises ``TokenError``; ``retryable`` is True for refused connections, timeouts, 408, 429
    and 5xx, False for other statuses and unusable answers.
    """
    started = time.time() if now is None else now
    request = token_request(config, timeout_s)
    with translated_errors(config, timeout_s):
        if client is None:
            transport = guarded_transport(EgressPolicy.for_node(config.egress))
            with httpx.Client(follow_redirects=False, transport=transport) as own:
                response = own.send(request)
        else:
            response = client.send(request, follow_redirects=False)
    return read_answer(config, response, key_paths, started)


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
    request = token_request(config, timeout_s)
    with translated_errors(config, timeout_s):
        if client is None:
            transport = guarded_async_transport(EgressPolicy.for_node(config.egress))
            async with httpx.AsyncClient(follow_redirects=False, transport=transport) as own:
                response = await own.send(request)
        else:
            response = await client.send(request, follow_redirects=False)
    return read_answer(config, response, key_paths, started)


def _request_failure(
    config: AuthorizationConfig, exc: httpx.HTTPError, timeout_s: float
) -> TokenError:
    url = display_url(config.url)
    blocked = blocked_reason(exc)
    if blocked is not None:
        detail = f"the token endpoint {url} is not reached: {blocked}"
        return token_error(TokenRequestError, config.id, detail, retryable=False)
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
    return token_error(TokenRequestError, config.id, detail, retryable)
