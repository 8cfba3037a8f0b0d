"""The token cache: single flight, refresh ahead, refresh once per 401.

Plain asyncio, no Ray: the token service (``service.py``) is its actor shell. Time is seconds
on the cache's clock (default ``time.time``, comparable across nodes).
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from hookcast.actors.auth.config import AuthorizationConfig
from hookcast.actors.auth.tokens import Token, token_error
from hookcast.actors.errors import TokenError, TokenUnavailableError

logger = logging.getLogger(__name__)

Fetch = Callable[..., Awaitable[Token] | Token]
"""``fetch(config, key_paths: frozenset[str], *, now: float) -> Token`` (or awaitable)."""

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
            raise token_error(
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
                        raise token_error(
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
