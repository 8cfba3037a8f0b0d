"""The errors hookcast raises on purpose.

    HookcastError                 every error below; the CLI prints its message, no traceback
    ├── JobError                  the job was rejected before anything was sent (exit 2)
    │   ├── JobFileError          the job file: YAML, unknown keys, values out of range
    │   ├── MissingEnvError       a ``${NAME}`` the environment does not define
    │   └── AudienceError         the audience source or segment: path, format, columns, `where`
    └── LedgerError               the state dir: an unknown run, a run that cannot be resumed

Messages say what happened, the values involved, then the fix. They never carry a secret.
Every argument goes to ``super().__init__`` so the errors survive pickling across actors.
"""

from __future__ import annotations


class HookcastError(Exception):
    """Base of every error hookcast raises on purpose."""


class JobError(HookcastError):
    """The job was rejected before any request was sent."""


class JobFileError(JobError):
    """The job file itself is wrong: YAML, structure, a key or a value."""


class MissingEnvError(JobError):
    """A ``${NAME}`` reference names an environment variable that is not set."""

    def __init__(self, name: str, key: str) -> None:
        super().__init__(name, key)
        self.name = name
        self.key = key

    def __str__(self) -> str:
        return (
            f"{self.key} refers to ${{{self.name}}}, but the environment variable "
            f"{self.name} is not set: export {self.name}=... before running."
        )


class AudienceError(JobError):
    """The audience source or its segment cannot be read as asked."""


class LedgerError(HookcastError):
    """The ledger under the state dir cannot answer: unknown run, or a run in the wrong state."""
