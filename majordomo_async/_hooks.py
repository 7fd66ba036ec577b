"""Observing chains: `Hooks` callbacks for metrics, and the `majordomo_async` logger.

Both see the same moments of a call: it starts; each attempt starts and ends; a target
is benched or recovers; the call ends (answered, or with an error). Nothing here runs on
the hot path unless a hook is registered or the logger is enabled for the level.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final, final

import attrs

from ._exceptions import ChainExhaustedError
from ._request import Request
from ._response import Usage

if TYPE_CHECKING:
    from ._redis_store import RedisStoreEvent

__all__ = ["CallInfo", "HookSet", "Hooks", "logger"]

logger: Final = logging.getLogger("majordomo_async")
"""The library's logger. Records carry structured fields (see README, Observability)."""
logger.addHandler(logging.NullHandler())

_call_ids = itertools.count(1)


@attrs.define(slots=True, eq=False)
class CallInfo:
    """One call through a chain, as hooks see it."""

    targets: tuple[str, ...]
    """The chain's target keys, in order."""
    request: Request
    streaming: bool
    started: float
    """Clock time the call started."""
    id: int = attrs.field(factory=lambda: next(_call_ids))
    """Unique within the process."""
    state: dict[str, Any] = attrs.field(factory=dict)
    """Free room for hooks (a tracing hook keeps its span here)."""


class Hooks:
    """Callbacks for metrics and tracing. Subclass and override what you need.

    Every method is a no-op here. Hooks run inline on the event loop: keep them quick and
    never block. An exception raised in a hook is logged and swallowed: a hook can never
    break a call.
    """

    def call_started(self, call: CallInfo) -> None:
        """A call entered the chain."""

    def attempt_started(self, call: CallInfo, key: str, attempt: int) -> None:
        """Attempt number `attempt` (1-based per target) on target `key` begins."""

    def attempt_finished(
        self,
        call: CallInfo,
        key: str,
        attempt: int,
        *,
        elapsed: float,
        error: Exception | None,
        usage: Usage | None,
    ) -> None:
        """The attempt answered (`error` None; for a stream: it was established) or failed."""

    def hedge_started(self, call: CallInfo, key: str, *, after: float) -> None:
        """Target `key` had produced no content `after` seconds into its attempt
        (`ChainConfig.hedge_after`): the next available target starts beside it. Each
        hedge is a second request, paid for: count these to see the cost."""

    def hedge_won(self, call: CallInfo, key: str, *, loser: str) -> None:
        """The hedge on `key` produced content first; the attempt on `loser` was cancelled
        (not counted against it). A hedge started and not won lost to the first attempt."""

    def target_benched(self, key: str, *, until: datetime | None, error: Exception) -> None:
        """`key` reached the failure threshold (or failed its probe) and is benched."""

    def target_recovered(self, key: str) -> None:
        """`key` answered its half-open probe: it is healthy again."""

    def chain_exhausted(self, call: CallInfo, error: ChainExhaustedError) -> None:
        """Every target of the call failed or was skipped (`error.failures` says how);
        `call_finished` follows with the same error."""

    def call_finished(
        self,
        call: CallInfo,
        *,
        model: str | None,
        usage: Usage | None,
        error: BaseException | None,
    ) -> None:
        """The call ended: answered by `model` (a stream: when it closes), or with `error`
        (`ChainExhaustedError`, a permanent error, or a cancellation)."""

    def health_store_event(self, event: RedisStoreEvent) -> None:
        """The registry's shared health store changed state: it fell back to in-process
        state ("degraded"), shares again ("resynced"), made a round trip ("round_trip"),
        or gained or lost its live feed of the fleet's changes (see `RedisStoreEvent`).
        Told only for a store the registry built (`MAJORDOMO_HEALTH_STORE`, a config
        file); give a store you build yourself `observer=` instead."""


@final
class HookSet:
    """Registered hooks, called in order; a failing hook is logged and skipped."""

    __slots__ = ("hooks",)

    def __init__(self, hooks: Iterable[Hooks]) -> None:
        self.hooks = tuple(hooks)
        """The hooks, in call order (a plain attribute: the chain reads it per call)."""

    def __bool__(self) -> bool:
        return bool(self.hooks)

    def emit(self, method: str, *args: Any, **kwargs: Any) -> None:
        for hook in self.hooks:
            try:
                getattr(hook, method)(*args, **kwargs)
            except Exception:
                logger.exception("majordomo hook %s.%s failed", type(hook).__name__, method)
