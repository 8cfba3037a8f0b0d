"""Every hookcast error survives pickling (errors cross actor boundaries) and unwraps from Ray."""

from __future__ import annotations

import inspect
import pickle

import pytest

from hookcast.actors import errors
from hookcast.actors.errors import HookcastError, JobFileError, RunAbortedError, last_line, unwrap

SAMPLE_ARGS = {
    "message": "batch_size 800 is out of range: a request carries 1 to 500 contacts.",
    "problems": (("batch_size", "800 is out of range"),),
    "name": "CRM_SECRET",
    "key": "authorizations.crm.form.client_secret",
    "auth_id": "crm",
    "retryable": True,
    "reason": "batches 4.. could not be prepared",
}


def _all_errors() -> list[type[HookcastError]]:
    found = [
        value
        for value in vars(errors).values()
        if isinstance(value, type) and issubclass(value, HookcastError)
    ]
    return sorted(found, key=lambda cls: cls.__name__)


def _make(cls: type[HookcastError]) -> HookcastError:
    try:
        params = list(inspect.signature(cls).parameters.values())
    except ValueError:  # Exception's own __init__: a message
        return cls("something went wrong: here is the fix.")
    return cls(**{p.name: SAMPLE_ARGS[p.name] for p in params if p.name in SAMPLE_ARGS})


def test_the_tree_names_every_error_class() -> None:
    tree = errors.__doc__ or ""
    missing = [cls.__name__ for cls in _all_errors() if cls.__name__ not in tree]
    assert not missing, f"add to the docstring's tree: {missing}"


@pytest.mark.parametrize("cls", _all_errors(), ids=lambda cls: cls.__name__)
def test_every_error_pickles_with_its_message_and_fields(cls: type[HookcastError]) -> None:
    error = _make(cls)
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is cls
    assert str(copy) == str(error) and str(copy)
    assert vars(copy) == vars(error)


def test_job_errors_carry_their_problems() -> None:
    error = JobFileError(
        "job.yaml is not a valid job:\n- batch_size: too big", (("batch_size", "too big"),)
    )
    assert pickle.loads(pickle.dumps(error)).problems == (("batch_size", "too big"),)


class _RayLikeWrapper(Exception):
    """What Ray hands back for an actor's exception: a wrapper whose ``cause`` is the original."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(f"ray::Segment.freeze() (pid=1)\nTraceback ...\n{cause}")
        self.cause = cause


def test_unwrap_finds_the_hookcast_error_inside_a_wrapper() -> None:
    inner = RunAbortedError("the segment failed")
    assert unwrap(_RayLikeWrapper(_RayLikeWrapper(inner))) is inner
    plain = ValueError("not ours")
    assert unwrap(plain) is plain
    assert last_line(_RayLikeWrapper(ValueError("disk full"))) == "disk full"
