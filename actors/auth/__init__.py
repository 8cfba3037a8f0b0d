"""Authorizations: ``#{auth.<id>.<key>}`` wildcards, token fetching and the token cache.

Plain Python, no Ray: the token service (``service.py``) wraps a `TokenCache`, senders render
`Template` s. One concern a module:

    templates   parse_template / find_wildcard_errors: wildcards in header and query values
    config      AuthorizationConfig: one authorization as a frozen config (built by
                ``cluster/compile.py`` from the checked job model)
    tokens      Token, read_token: the endpoint's JSON answer -> Token
    fetch       token_request, read_answer, fetch_token / fetch_token_async: one request
    cache       TokenCache: single flight, refresh ahead, once per 401
    service     TokenService, TokenClient: the actor shell and a sender's way to it

Errors live in ``hookcast.actors.errors`` (TokenError and its subclasses, re-exported here);
messages name the authorization, never a token or secret.
"""

from hookcast.actors.auth.cache import Fetch, TokenCache
from hookcast.actors.auth.config import AuthorizationConfig
from hookcast.actors.auth.fetch import (
    RETRYABLE_STATUSES,
    fetch_token,
    fetch_token_async,
    read_answer,
    token_request,
    translated_errors,
)
from hookcast.actors.auth.templates import (
    WILDCARD_PREFIX,
    Template,
    Wildcard,
    find_wildcard_errors,
    is_authorization_id,
    is_key_path,
    parse_template,
)
from hookcast.actors.auth.tokens import (
    REFRESH_AHEAD_FRACTION,
    REFRESH_AHEAD_MAX_S,
    Token,
    leaf_paths,
    read_token,
    redact_token,
    token_error,
)
from hookcast.actors.errors import (
    TokenError,
    TokenExpiryError,
    TokenRequestError,
    TokenResponseError,
    TokenUnavailableError,
)

__all__ = [
    "REFRESH_AHEAD_FRACTION",
    "REFRESH_AHEAD_MAX_S",
    "RETRYABLE_STATUSES",
    "WILDCARD_PREFIX",
    "AuthorizationConfig",
    "Fetch",
    "Template",
    "Token",
    "TokenCache",
    "TokenError",
    "TokenExpiryError",
    "TokenRequestError",
    "TokenResponseError",
    "TokenUnavailableError",
    "Wildcard",
    "fetch_token",
    "fetch_token_async",
    "find_wildcard_errors",
    "is_authorization_id",
    "is_key_path",
    "leaf_paths",
    "parse_template",
    "read_answer",
    "read_token",
    "redact_token",
    "token_error",
    "token_request",
    "translated_errors",
]
