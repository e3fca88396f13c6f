"""What a fanned-out call does when a shard's actor dies: retry on the restarted actor, or fail loudly.

Shard actors are created with unlimited restarts (:mod:`.serving`): Ray starts a dead actor again,
which reopens its shard directory from disk, where every acknowledged add is (``Index.add`` is
durable when it returns). A call that was in flight when the actor died fails with Ray's actor
error. :func:`gather` then, per :class:`FaultPolicy`,

- ``on_failure="retry"``: waits ``backoff_s`` and submits the failed shards' calls again (adds with
  ``resume=True``, so a part that was committed before its answer was lost is not added twice),
  until they answer, ``retries`` rounds are spent or ``timeout_s`` has passed;
- ``on_failure="raise"``: raises at once.

Either way a call that cannot complete raises :class:`~quantsearch.exceptions.ShardUnavailableError`
naming the missing shards; a search never returns a shorter list.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ..exceptions import InvalidArgumentError, QuantsearchError, ShardUnavailableError

__all__ = ["FaultPolicy", "gather"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FaultPolicy:
    """How a sharded call reacts to a shard whose actor died or did not answer.

    Parameters
    ----------
    on_failure : {"retry", "raise"}
        Retry the failed shards' calls on their restarted actors, or raise at once.
    retries : int
        Rounds of retries before giving up (``"retry"`` only).
    timeout_s : float
        Longest wait for one round of answers, and for the whole call with its retries.
    backoff_s : float
        Pause before each retry round (doubling, at most 2 s): a restarting actor reopens its shard.
    """

    on_failure: Literal["retry", "raise"] = "retry"
    retries: int = 5
    timeout_s: float = 60.0
    backoff_s: float = 0.2

    def __post_init__(self) -> None:
        if self.on_failure not in ("retry", "raise"):
            raise InvalidArgumentError(f"on_failure must be 'retry' or 'raise', got {self.on_failure!r}")
        if isinstance(self.retries, bool) or not isinstance(self.retries, int) or self.retries < 0:
            raise InvalidArgumentError(f"retries must be an int >= 0, got {self.retries!r}")
        for name in ("timeout_s", "backoff_s"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not value >= 0:
                raise InvalidArgumentError(f"{name} must be a number >= 0, got {value!r}")


def gather(
    submit: Callable[[int, bool], Any],
    shards: Iterable[int],
    policy: FaultPolicy,
    what: str = "call",
    members: Callable[[int], Sequence[int]] | None = None,
) -> dict[int, Any]:
    """Submit one call per shard, wait for all, and handle dead actors per ``policy``.

    Parameters
    ----------
    submit : callable (shard, is_retry) -> ray.ObjectRef
        Starts the call on one shard (``is_retry`` is True for a resubmission).
    shards : iterable of int
    policy : FaultPolicy
    what : str
        Names the call in errors and logs.
    members : callable (key) -> sequence of int, optional
        The shard numbers behind a key, when keys are actors serving several shards; errors and
        logs name those shards (default: a key is a shard).

    Returns
    -------
    dict of int to object
        Each shard's answer.

    Raises
    ------
    QuantsearchError
        The error a shard raised for a bad request (re-raised as itself, not Ray's wrapper).
    ShardUnavailableError
        Shards whose actors did not answer, named in the message and in ``.shards``.
    """
    import ray
    from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

    lost = (RayActorError, GetTimeoutError)
    unavailable = getattr(ray.exceptions, "ActorUnavailableError", RayActorError)
    pending = {s: submit(s, False) for s in shards}
    answers: dict[int, Any] = {}
    deadline = time.monotonic() + policy.timeout_s
    backoff = policy.backoff_s
    rounds = 0
    while True:
        failed: dict[int, BaseException] = {}
        try:  # the usual case: every shard answers; one wait for all of them
            values = ray.get(list(pending.values()), timeout=max(0.0, deadline - time.monotonic()))
            answers.update(zip(pending, values, strict=True))
            return answers
        except (*lost, unavailable, RayTaskError):
            pass  # find out which shards failed, and how, one by one
        for s, ref in pending.items():
            try:
                answers[s] = ray.get(ref, timeout=max(0.0, deadline - time.monotonic()))
            except (*lost, unavailable) as exc:
                failed[s] = exc
            except RayTaskError as exc:  # the shard raised: pass our own error types through unchanged
                cause = getattr(exc, "cause", None)
                if isinstance(cause, QuantsearchError):
                    raise cause from None
                raise
        if not failed:
            return answers
        keys = sorted(failed)
        names = keys if members is None else sorted(s for key in keys for s in members(key))
        retry = policy.on_failure == "retry" and rounds < policy.retries and time.monotonic() < deadline
        logger.warning(
            "%s: shards %s did not answer (%s)%s",
            what,
            names,
            type(next(iter(failed.values()))).__name__,
            "; retrying" if retry else "",
        )
        if not retry:
            raise ShardUnavailableError(
                f"{what} failed: shard{'s' if len(names) > 1 else ''} {', '.join(map(str, names))} of "
                f"the index did not answer (actor died; "
                + (
                    f"{rounds} retries in {policy.timeout_s:g} s"
                    if policy.on_failure == "retry"
                    else "fault policy on_failure='raise'"
                )
                + ")",
                names,
            )
        time.sleep(min(backoff, max(0.0, deadline - time.monotonic())))
        backoff = min(2.0, backoff * 2 or 0.1)
        rounds += 1
        pending = {key: submit(key, True) for key in keys}
