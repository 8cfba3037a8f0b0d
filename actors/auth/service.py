"""The token service: one per cluster, caching every authorization's token for all senders.

The logic (single flight, refresh ahead, refresh once per version on a 401) is
``actors.auth.cache.TokenCache``; this is its asyncio actor shell, and the small client a
sender uses to reach it.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

import httpx

from hookcast.actors.auth.cache import TokenCache
from hookcast.actors.auth.config import AuthorizationConfig
from hookcast.actors.auth.fetch import fetch_token_async
from hookcast.actors.auth.tokens import Token
from hookcast.actors.egress import EgressPolicy, guarded_async_transport
from hookcast.actors.errors import TokenError, unwrap


class TokenService:
    """Fetches and caches tokens; every sender of every run asks this one actor."""

    def __init__(self, timeout_s: float = 10.0, deadline_s: float = 30.0) -> None:
        self._timeout_s = timeout_s
        self._clients: dict[EgressPolicy, httpx.AsyncClient] = {}  # one per egress policy
        self.cache = TokenCache(self._fetch, deadline_s=deadline_s)
        self.fetches = 0

    async def _fetch(self, config: AuthorizationConfig, key_paths, *, now: float) -> Token:
        policy = EgressPolicy.for_node(config.egress)
        client = self._clients.get(policy)
        if client is None:
            transport = guarded_async_transport(policy)
            client = self._clients[policy] = httpx.AsyncClient(transport=transport)
        self.fetches += 1
        fetch = functools.partial(fetch_token_async, client=client, timeout_s=self._timeout_s)
        return await fetch(config, key_paths, now=now)

    async def get(self, auth: AuthorizationConfig, key_paths: Iterable[str]) -> Token:
        return await self.cache.get(auth, key_paths)

    async def invalidate(self, auth: AuthorizationConfig, version: int) -> Token:
        return await self.cache.invalidate(auth.id, auth.fingerprint, version)

    async def stats(self) -> dict[str, int]:
        return {"fetches": self.fetches}

    async def close(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()

    def __repr__(self) -> str:
        return "hookcast/tokens"


class TokenClient:
    """A sender's way to the token service (an actor handle), with a local copy of each
    token so most requests need no call at all."""

    def __init__(self, service) -> None:
        self._service = service
        self._tokens: dict[str, Token] = {}

    async def tokens(
        self, auths: Iterable[AuthorizationConfig], keys: dict[str, frozenset[str]], now: float
    ) -> dict[str, Token]:
        for auth in auths:
            token = self._tokens.get(auth.id)
            if token is None or not token.is_fresh(now):
                self._tokens[auth.id] = await self._get(auth, keys[auth.id])
        return dict(self._tokens)

    async def refused(self, auth: AuthorizationConfig, version: int) -> Token:
        """The webhook answered 401 to ``version``: the newer token (one fetch per version
        across all senders)."""
        token = await self._invalidate(auth, version)
        self._tokens[auth.id] = token
        return token

    async def _get(self, auth: AuthorizationConfig, keys: frozenset[str]) -> Token:
        return await _unwrapped(self._service.get.remote(auth, keys))

    async def _invalidate(self, auth: AuthorizationConfig, version: int) -> Token:
        return await _unwrapped(self._service.invalidate.remote(auth, version))


class InProcessTokenClient(TokenClient):
    """The token service in the sender's own process and event loop: a run that delivers
    in the process it was started in (``cluster/local_pool.py``) has one sender, so its
    cache is as central as the cluster's actor."""

    def __init__(self, service: TokenService | None = None) -> None:
        super().__init__(service or TokenService())

    async def _get(self, auth: AuthorizationConfig, keys: frozenset[str]) -> Token:
        return await self._service.get(auth, keys)

    async def _invalidate(self, auth: AuthorizationConfig, version: int) -> Token:
        return await self._service.invalidate(auth, version)

    async def close(self) -> None:
        await self._service.close()


async def _unwrapped(call):
    """The call's result; a TokenError raised in the service comes out as itself, not as
    Ray's wrapper with the service's traceback in its message."""
    try:
        return await call
    except Exception as exc:
        # Ray's task error is also an instance of the service's error class (so unwrap
        # stops at it), but its message is the remote traceback: take its cause.
        cause = getattr(exc, "cause", None)
        if not isinstance(cause, TokenError):
            cause = unwrap(exc)
        if isinstance(cause, TokenError):
            raise cause from None
        raise
