"""Every error hookcast raises on purpose, in one tree.

    HookcastError                   every error below; the CLI prints its message, no traceback
    ├── JobError                    the job was rejected before anything was sent
    │   ├── JobFileError            the job file: YAML, unknown keys, values out of range
    │   ├── MissingEnvError         a ``${NAME}`` the environment does not define
    │   ├── AudienceError           the audience source or segment: path, format, columns, `where`
    │   └── TriggerError            a trigger that cannot be scheduled as written
    ├── TokenError                  no token for an authorization (``retryable`` says if for now)
    │   ├── TokenRequestError       the token request failed: refused, timed out, an error status
    │   ├── TokenResponseError      the answer holds no usable token
    │   │   └── TokenExpiryError    its lifetime is missing, 0, negative or not a number
    │   └── TokenUnavailableError   every attempt the retry deadline allowed failed
    ├── LedgerError                 the state dir: a run in the wrong state for what was asked
    │   ├── RunNotFoundError        no run with that id in this state dir
    │   └── LedgerUnavailableError  the ledger cannot be opened, read or written (sqlite)
    ├── ClusterError                no Ray cluster answers at the address given
    └── RunAbortedError             a run stopped part-way for a reason of its own; resumable

Messages say what happened, the values involved, then the fix. They never carry a secret.
Every argument goes to ``super().__init__`` so the errors survive pickling across actors.
"""

from __future__ import annotations

from typing import TypeVar


class HookcastError(Exception):
    """Base of every error hookcast raises on purpose."""


class JobError(HookcastError):
    """The job was rejected before any request was sent."""

    def __init__(self, message: str, problems: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(message, problems)
        self.message = message
        # (key, message) pairs, one per problem, for callers that show them one by one.
        self.problems = tuple(problems)

    def __str__(self) -> str:
        return self.message


class JobFileError(JobError):
    """The job file itself is wrong: YAML, structure, a key or a value."""


class MissingEnvError(JobError):
    """A ``${NAME}`` reference names an environment variable that is not set."""

    def __init__(self, name: str, key: str) -> None:
        message = (
            f"{key} refers to ${{{name}}}, but the environment variable "
            f"{name} is not set: export {name}=... before running."
        )
        super().__init__(message, ((key, message),))
        self.args = (name, key)
        self.name = name
        self.key = key


class AudienceError(JobError):
    """The audience source or its segment cannot be read as asked."""


class TriggerError(JobError):
    """The trigger cannot be scheduled as written; the message names the key and the fix."""


class TokenError(HookcastError):
    """No token could be had for an authorization; no webhook request may go without it."""

    def __init__(self, auth_id: str, message: str, retryable: bool = False) -> None:
        super().__init__(auth_id, message, retryable)
        self.auth_id = auth_id
        self.message = message
        self.retryable = retryable

    def __str__(self) -> str:
        return self.message


class TokenRequestError(TokenError):
    """The request to the token endpoint failed: refused, timed out, or an HTTP error status."""


class TokenResponseError(TokenError):
    """The token endpoint answered, but the answer holds no usable token."""


class TokenExpiryError(TokenResponseError):
    """The answer's lifetime (``expires_in_key``) is missing, 0, negative or not a number."""


class TokenUnavailableError(TokenError):
    """Every attempt the retry deadline allowed failed."""


class LedgerError(HookcastError):
    """The ledger cannot do what was asked: a run in the wrong state for it."""


class RunNotFoundError(LedgerError):
    """No run with that id is in this state dir."""


class LedgerUnavailableError(LedgerError):
    """The ledger under the state dir cannot be opened, read or written."""


class ClusterError(HookcastError):
    """No Ray cluster answers at the address given."""


class RunAbortedError(HookcastError):
    """A run stopped part-way (its segment failed, a token can never be had); it can be
    resumed once the cause is fixed."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


_E = TypeVar("_E", bound=BaseException)


def unwrap(exc: BaseException) -> BaseException:
    """The original error inside an error that came back from Ray, or ``exc`` itself.

    Ray wraps an actor's exception in a ``RayTaskError`` whose message holds the remote
    traceback and whose ``cause`` is the original; the wrapper is also made an instance of
    the cause's class, so the cause is followed whatever the wrapper's type. This is the one
    place that looks inside."""
    for _ in range(5):
        cause = getattr(exc, "cause", None)
        if not isinstance(cause, BaseException) or cause is exc:
            break
        exc = cause
    return exc


def cause_of(exc: BaseException, kind: type[_E]) -> _E | None:
    """The first error of ``kind`` in ``exc``'s chain (itself, its ``__cause__`` or
    ``__context__``, and so on), or None: what httpx wrapped, say."""
    seen: BaseException | None = exc
    for _ in range(20):  # a chain is short; a cycle must not hang us
        if seen is None:
            return None
        if isinstance(seen, kind):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def last_line(exc: BaseException, limit: int = 300) -> str:
    """A foreign error's message in one short line (Ray's carry whole tracebacks)."""
    lines = str(unwrap(exc)).strip().splitlines()
    return (lines[-1] if lines else type(exc).__name__)[:limit]
