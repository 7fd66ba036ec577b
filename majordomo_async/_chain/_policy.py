"""THE RULES of a failover chain: what an error means, and how long a retry waits.

A chain tries its targets head to tail. For each target:

1. A target the tracker has benched is skipped, and the skip is recorded with the time
   the target recovers. A target whose half-open probe another call holds is skipped too.
2. Before each attempt the chain checks for cancellation: cancellation always propagates
   and is never counted against a target.
3. A success resets the target's health and ends the call. (A stream succeeds when its
   provider's terminal event arrives.)
4. A transient error counts toward the target's bench (every failed attempt is
   reported). The chain retries the same target after a short jittered backoff, never
   shorter than the error's `retry_after`, while retries remain; it advances instead
   when the tracker benched the target, when the error was a timeout, or when the wait
   is longer than `max_retry_wait` or than the time left. A target that is the last
   resort (no later target could be admitted) waits out a longer `retry_after` too,
   within the time left (or `max_recovery_wait` without a deadline): advancing would
   only exhaust the chain. Before the retry, the target is admitted again: a bench
   made during the backoff is respected.
5. Model-not-found, context-length and unsupported-request errors advance with no health
   penalty: the target is fine, this request just does not fit it.
6. Other permanent errors are raised at once (failing over cannot fix a bad request or a
   bad key), unless `advance_on_permanent` is set, or the error is one of the
   `advance_on` types: then they advance, with no health penalty.
7. One deadline covers the whole call, the reading of a stream included. An attempt
   cut short by it fails with a timeout that is not held against the target, and the
   targets not reached are recorded as not tried. (An attempt cut short by its own
   limits, the attempt timeout or the first-token limit, is a timeout of rule 4.)
8. When every target was skipped as benched, the chain waits for the one that recovers
   first, if that fits in the deadline and `max_recovery_wait`, and makes one more pass.
9. If nothing answered: `ChainExhaustedError` with every attempt and skip, in order.
10. A target at its `max_concurrency`, `rpm` or `tpm` limit is skipped with no health
    penalty. When a pass found no answer and skipped targets at their limits, the call
    waits for the first of their slots to free (within the deadline and
    `max_limit_wait`) and tries that target, then the others' the same way.
    A limited target's 429 with a reset hint pauses its budget until then.

A position may be a balanced group of equivalent targets: its members are tried best
first (`ChainConfig.strategy`), each under these rules. With `hedge_after`, an attempt
with no content after that long is joined by one on the next available target; the
first to produce content wins and the other is cancelled (rule 2: no penalty).

A stream follows the same rules until it is established (its first content event).
After that, an error is judged by the same `judge`: a transient one counts against the
target (rule 4) and, with `mid_stream="restart"`, the request starts over on the next
target unless the error is one to raise (rule 6).

This module decides; it does not act. No clock, no I/O, no hooks, no anyio: every
function is pure and table-tested (`tests/test_policy.py`).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable
from typing import TYPE_CHECKING

import attrs

from .._exceptions import ADVANCE_WITHOUT_PENALTY, ErrorClass, ProviderError

if TYPE_CHECKING:
    from ._config import ChainConfig

__all__ = ["Failure", "Step", "judge", "recovery_wait", "retry_wait"]


class Step(enum.Enum):
    """What the chain does after a failed attempt."""

    RAISE = "raise"
    """Rule 6: give the error to the caller now."""
    ADVANCE = "advance"
    """Rules 5, 6 (by policy) and 7: go on to the next target; the target's health is untouched."""
    COUNT = "count"
    """Rule 4: report the failure to the tracker, then maybe retry the same target."""


@attrs.frozen
class Failure:
    """A failed attempt as the rules see it."""

    step: Step
    error: Exception
    error_class: ErrorClass
    rule: int
    """The rule that decided `step` (for logs and tests)."""
    retry_after: float | None = None
    """The provider's hint, in seconds (transient errors only)."""
    timed_out: bool = False
    """The attempt timed out: no same-target retry (rule 4)."""


def judge(error: Exception, config: ChainConfig, *, out_of_time: bool = False) -> Failure:
    """What `error` from an attempt means. `out_of_time`: the call's deadline cut it (rule 7)."""
    if out_of_time:
        return Failure(Step.ADVANCE, error, ErrorClass.TRANSIENT, rule=7, timed_out=True)
    error_class = config.classify(error)
    if error_class is ErrorClass.PERMANENT:
        if isinstance(error, ADVANCE_WITHOUT_PENALTY):
            return Failure(Step.ADVANCE, error, error_class, rule=5)
        if config.advance_on_permanent or isinstance(error, config.advance_on):
            return Failure(Step.ADVANCE, error, error_class, rule=6)
        return Failure(Step.RAISE, error, error_class, rule=6)
    retry_after = error.retry_after if isinstance(error, ProviderError) else None
    timed_out = isinstance(error, TimeoutError)
    return Failure(
        Step.COUNT, error, error_class, rule=4, retry_after=retry_after, timed_out=timed_out
    )


def retry_wait(
    failure: Failure,
    attempt: int,
    benched: bool,
    config: ChainConfig,
    time_left: float,
    jitter: float,
    *,
    last_resort: bool = False,
) -> float | None:
    """Rule 4: seconds to wait before retrying the same target, or None to advance.

    `attempt` is the 1-based number of the attempt that failed, `benched` whether the
    tracker benched the target on this failure, `time_left` the seconds before the call's
    deadline (`math.inf` without one), `jitter` a number in [0, 1), and `last_resort`
    whether no later target could be admitted (then a long wait is worth it).
    """
    if failure.step is not Step.COUNT or benched or failure.timed_out:
        return None
    if attempt > config.retries:
        return None
    wait = backoff(config.retry_backoff, attempt, failure.retry_after, jitter)
    longest = config.max_retry_wait
    if last_resort:
        longest = max(longest, config.max_recovery_wait if math.isinf(time_left) else time_left)
    if wait > longest or wait >= time_left:
        return None
    return wait


def backoff(base: float, retry: int, retry_after: float | None, jitter: float) -> float:
    """Half-jittered exponential backoff before retry number `retry`, never below `retry_after`."""
    wait = base * 2.0 ** (retry - 1) * (0.5 + jitter / 2)
    return max(wait, retry_after or 0.0)


def recovery_wait(
    recoveries: Iterable[float], attempted: bool, config: ChainConfig, time_left: float
) -> float | None:
    """Rule 8: seconds until the first benched target recovers, or None to give up.

    `recoveries` are the seconds from now until each skipped target's cooldown ends;
    `attempted` whether any target was attempted in this pass.
    """
    waits = list(recoveries)
    if attempted or not waits:
        return None
    wait = max(min(waits), 0.0)
    if wait > config.max_recovery_wait or wait >= time_left:
        return None
    return wait
