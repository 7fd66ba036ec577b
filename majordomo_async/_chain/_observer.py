"""One observer for every moment of a call: the `majordomo_async` logger and the hooks.

The loop calls one method per moment (a call starts; an attempt starts, fails or answers;
a target is skipped, waited for, benched or recovers; a stream restarts; the call ends)
and this module decides what is logged at which level and which hook hears of it.

Levels: WARNING when a target is benched; INFO for each failed attempt, a recovery and a
mid-stream restart; DEBUG for the rest of the story (skips, retry waits and their reason,
the answering target, exhaustion). Nothing is formatted when the level is off, and the
success path of a call with no hooks and DEBUG off calls nothing here but `watching`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, final

from .._exceptions import ChainExhaustedError, ErrorClass, ProviderError, TargetSkippedError
from .._hooks import CallInfo, HookSet, logger
from .._request import Request
from .._response import Usage

__all__ = ["Observer"]

_DEBUG = logging.DEBUG
_INFO = logging.INFO
_WARNING = logging.WARNING


@final
class Observer:
    """Logging and hooks for the calls of one chain."""

    __slots__ = ("hooks",)

    def __init__(self, hooks: HookSet) -> None:
        self.hooks = hooks

    def watching(self) -> bool:
        """Whether the success path has anyone to tell (hooks, or DEBUG logging)."""
        return bool(self.hooks.hooks) or logger.isEnabledFor(_DEBUG)

    # ----------------------------------------------------------------- the call

    def call_started(
        self, targets: tuple[str, ...], request: Request, streaming: bool, now: float
    ) -> CallInfo | None:
        """A call entered the chain; the `CallInfo` hooks will see (None without hooks)."""
        if logger.isEnabledFor(_DEBUG):
            logger.debug(
                "call started over %s (%s)",
                ",".join(targets),
                "stream" if streaming else "generate",
                extra={"majordomo_targets": targets},
            )
        if not self.hooks:
            return None
        info = CallInfo(targets, request, streaming, now)
        self.hooks.emit("call_started", info)
        return info

    def call_finished(
        self,
        info: CallInfo | None,
        model: str | None,
        usage: Usage | None,
        error: BaseException | None,
    ) -> None:
        """The call ended: answered by `model`, or with `error`."""
        if isinstance(error, ChainExhaustedError):
            if logger.isEnabledFor(_DEBUG):
                logger.debug("chain exhausted: %s", error, extra={"majordomo_error": "exhausted"})
            if info is not None:
                self.hooks.emit("chain_exhausted", info, error)
        elif logger.isEnabledFor(_DEBUG):
            if error is None:
                logger.debug("call answered by %s", model, extra={"majordomo_target": model})
            else:
                logger.debug("call ended with %s", type(error).__name__)
        if info is not None:
            self.hooks.emit("call_finished", info, model=model, usage=usage, error=error)

    # ----------------------------------------------------------------- attempts

    def attempt_started(self, info: CallInfo | None, key: str, attempt: int) -> None:
        """Attempt number `attempt` on `key` begins."""
        if info is not None:
            self.hooks.emit("attempt_started", info, key, attempt)

    def attempt_answered(
        self, info: CallInfo | None, key: str, attempt: int, elapsed: float, usage: Usage | None
    ) -> None:
        """The attempt answered (a stream: it was established)."""
        if logger.isEnabledFor(_DEBUG):
            logger.debug(
                "%s answered attempt %d after %.3f s",
                key,
                attempt,
                elapsed,
                extra={"majordomo_target": key, "majordomo_attempt": attempt},
            )
        if info is not None:
            self.hooks.emit(
                "attempt_finished", info, key, attempt, elapsed=elapsed, error=None, usage=usage
            )

    def attempt_failed(
        self,
        info: CallInfo | None,
        key: str,
        attempt: int,
        error: Exception,
        error_class: ErrorClass,
        elapsed: float,
    ) -> None:
        """One INFO record per failed attempt (and per stream broken after content)."""
        if logger.isEnabledFor(_INFO):
            logger.info(
                "%s attempt %d failed after %.3f s (%s): %s: %s",
                key,
                attempt,
                elapsed,
                error_class.value,
                type(error).__name__,
                error,
                extra=_fields(key, attempt, error, error_class, elapsed),
            )
        if info is not None:
            self.hooks.emit(
                "attempt_finished", info, key, attempt, elapsed=elapsed, error=error, usage=None
            )

    def skipped(self, skip: TargetSkippedError) -> None:
        """A target was not attempted (benched, probing elsewhere, too large, out of time).

        Takes the error, not its reason: a benched target's reason formats a wall-clock
        time, which only a debug log line needs (about 3 µs a skip otherwise)."""
        if logger.isEnabledFor(_DEBUG):
            logger.debug("%s %s", skip.key, skip.reason, extra={"majordomo_target": skip.key})

    def retry_wait(self, key: str, attempt: int, wait: float, error: Exception) -> None:
        """The chain waits `wait` seconds before retrying `key` after `error`."""
        if logger.isEnabledFor(_DEBUG):
            hint = error.retry_after if isinstance(error, ProviderError) else None
            logger.debug(
                "%s retry %d in %.3f s after %s%s",
                key,
                attempt,
                wait,
                type(error).__name__,
                f" (retry-after {hint:g} s)" if hint else "",
                extra={"majordomo_target": key, "majordomo_wait": wait},
            )

    def recovery_wait(self, wait: float) -> None:
        """Every target is benched: the chain waits `wait` seconds for the first to recover."""
        if logger.isEnabledFor(_DEBUG):
            logger.debug(
                "every target is benched; waiting %.3f s for the first to recover",
                wait,
                extra={"majordomo_wait": wait},
            )

    def limit_wait(self, keys: Sequence[str], wait: float) -> None:
        """Nothing answered and `keys` are at their limits: the call waits for the first
        slot to free (the keys are joined only for a debug line)."""
        if logger.isEnabledFor(_DEBUG):
            key = ", ".join(keys)
            logger.debug(
                "%s is at its limits; waiting up to %.3f s for a slot",
                key,
                wait,
                extra={"majordomo_target": key, "majordomo_wait": wait},
            )

    # ----------------------------------------------------------------- hedges

    def hedge_started(self, info: CallInfo | None, key: str, after: float) -> None:
        """`key` had no content after `after` seconds: a hedge starts beside it."""
        if logger.isEnabledFor(_DEBUG):
            logger.debug(
                "%s has no content after %.3f s; hedging on the next target",
                key,
                after,
                extra={"majordomo_target": key, "majordomo_wait": after},
            )
        if info is not None:
            self.hooks.emit("hedge_started", info, key, after=after)

    def hedge_won(self, info: CallInfo | None, winner: str, loser: str) -> None:
        """The hedge answered first: `loser`'s attempt was cancelled."""
        if logger.isEnabledFor(_DEBUG):
            logger.debug(
                "the hedge on %s answered before %s",
                winner,
                loser,
                extra={"majordomo_target": winner, "majordomo_failed": loser},
            )
        if info is not None:
            self.hooks.emit("hedge_won", info, winner, loser=loser)

    # ----------------------------------------------------------------- health

    def benched(self, key: str, until: datetime | None, error: Exception) -> None:
        """One WARNING record and one hook event per bench (not per failure that sees it)."""
        if logger.isEnabledFor(_WARNING):
            # No end time: the cooldown was over before it could be read (a very short one).
            when = f"until {until.strftime('%H:%M:%S.%f')[:-3]}" if until else "briefly"
            logger.warning(
                "%s benched %s after %s",
                key,
                when,
                type(error).__name__,
                extra={**_fields(key, None, error, None, None), "majordomo_until": until},
            )
        if self.hooks:
            self.hooks.emit("target_benched", key, until=until, error=error)

    def recovered(self, key: str) -> None:
        """A benched target answered its probe."""
        if logger.isEnabledFor(_INFO):
            logger.info("%s recovered", key, extra={"majordomo_target": key})
        if self.hooks:
            self.hooks.emit("target_recovered", key)

    def restarted(self, failed: str, error: Exception, answering: str) -> None:
        """A stream broke mid-way on `failed` and starts over on `answering`."""
        if logger.isEnabledFor(_INFO):
            logger.info(
                "%s failed mid-stream (%s); the answer restarts on %s",
                failed,
                type(error).__name__,
                answering,
                extra={"majordomo_target": answering, "majordomo_failed": failed},
            )


def _fields(
    key: str,
    attempt: int | None,
    error: Exception,
    error_class: ErrorClass | None,
    elapsed: float | None,
) -> Mapping[str, Any]:
    provider_error = error if isinstance(error, ProviderError) else None
    return {
        "majordomo_target": key,
        "majordomo_attempt": attempt,
        "majordomo_error": type(error).__name__,
        "majordomo_error_class": error_class.value if error_class else None,
        "majordomo_status": provider_error.status if provider_error else None,
        "majordomo_retry_after": provider_error.retry_after if provider_error else None,
        "majordomo_elapsed": elapsed,
    }
