"""`Chain` and `chain_do`: the failover loop, each branch tagged with its rule.

The rules themselves, and what every error means, are in `_policy.py`; read this loop
beside them (and beside the Go seed's `chainDo`).
"""

from __future__ import annotations

import math
import random
from collections.abc import Awaitable, Sequence
from functools import partial
from typing import Any, Final, TypeVar, final

import anyio

from .._backend import primitives
from .._capabilities import Capabilities
from .._clock import Clock
from .._download import ImageFetcher, standalone_fetch
from .._exceptions import (
    ChainExhaustedError,
    ConfigurationError,
    MajordomoError,
    ProviderError,
    RateLimitError,
    TargetFailure,
    TargetSkippedError,
    linked_errors,
)
from .._fitting import RequestFitter
from .._health import Admission, Bench, HealthTracker
from .._hooks import CallInfo, Hooks, HookSet
from .._limits import Lease, Refused
from .._request import Option, Request, as_request
from .._response import Response, Usage
from .._routing import Cursor, Group, Hold
from .._stream import Stream
from ._attempt import OutOfTime, attempt
from ._config import ChainConfig, Target
from ._hedge import hedged
from ._observer import Observer
from ._policy import Failure, Step, judge, recovery_wait, retry_wait
from ._streams import ESTABLISH, GENERATE, Mode, restart_relay

__all__ = ["Chain", "chain_do"]

T = TypeVar("T")


@final
class Chain:
    """An `AsyncModel` over ordered targets with failover. Built by `Registry.parse`.

    A one-target spec is a chain of one: the same code path and bookkeeping. The rules
    it follows are listed in `majordomo_async._chain._policy` (and the README). A position
    of the chain may be a balanced group of equivalent targets (`Group`), whose members
    a call takes best first by `ChainConfig.strategy`.
    """

    __slots__ = (
        "_config",
        "_fetch_image",
        "_observer",
        "_position_of",
        "_positions",
        "_routed",
        "_targets",
        "_tracker",
    )

    def __init__(
        self,
        targets: Sequence[Target | Group],
        tracker: HealthTracker,
        config: ChainConfig,
        *,
        fetch_image: ImageFetcher | None = None,
        hooks: Sequence[Hooks] | HookSet = (),
    ) -> None:
        if not targets:
            raise ConfigurationError("a chain needs at least one target")
        self._positions = tuple(targets)
        self._position_of: dict[str, int] = {}
        members: list[Target] = []
        for index, position in enumerate(self._positions):
            for member in _members(position):
                members.append(member)
                self._position_of.setdefault(member.key, index)
        self._targets = tuple(members)
        self._routed = (
            len(self._targets) != len(self._positions)
            or config.hedge_after is not None
            or any(target.limited for target in self._targets)
        )
        """Whether calls track load (groups, limits, hedging): a plain chain pays nothing."""
        self._tracker = tracker
        self._config = config
        # A Registry passes a fetcher on its shared session; a bare chain opens a
        # short-lived session per download.
        self._fetch_image = fetch_image or standalone_fetch
        self._observer = Observer(hooks if isinstance(hooks, HookSet) else HookSet(hooks))

    @property
    def targets(self) -> tuple[str, ...]:
        """The "provider/model-id" keys, in chain order (a group's members as the spec
        lists them; a call orders them by `ChainConfig.strategy`)."""
        return tuple(target.key for target in self._targets)

    @property
    def positions(self) -> tuple[tuple[str, ...], ...]:
        """The keys of each position, head to tail: one key, or a balanced group's."""
        return tuple(
            tuple(m.key for m in p.members) if isinstance(p, Group) else (p.key,)
            for p in self._positions
        )

    @property
    def capabilities(self) -> Capabilities:
        """The head target's capabilities (each attempt uses its own target's)."""
        return self._targets[0].capabilities

    @property
    def config(self) -> ChainConfig:
        """The chain's retry and deadline policy."""
        return self._config

    async def generate(self, request: Request | str, *options: Option) -> Response:
        """Answer `request`, failing over per the chain rules.

        Raises:
            ChainExhaustedError: every target failed or was skipped.
            ProviderError: a permanent error the chain does not fail over (auth, bad request).
        """
        return await chain_do(self, as_request(request).apply(*options), GENERATE)

    async def stream(self, request: Request | str, *options: Option) -> Stream:
        """Open a stream on the first target that delivers content, failing over until then.

        Raises:
            ChainExhaustedError: every target failed or was skipped.
            ProviderError: a permanent error the chain does not fail over.
        """
        return await chain_do(self, as_request(request).apply(*options), ESTABLISH)

    def __repr__(self) -> str:
        return f"Chain({','.join('|'.join(keys) for keys in self.positions)})"


def _members(position: Target | Group) -> tuple[Target, ...]:
    return position.members if isinstance(position, Group) else (position,)


def chain_do(chain: Chain, request: Request, mode: Mode[T]) -> Awaitable[T]:
    """Run the head-to-tail failover algorithm (`_policy`'s rules) for one call.

    Returns the call's coroutine for the caller to await: `_Call.run` itself when no hook
    or DEBUG log watches and no stream relays restarts (every resumption of a call passes
    through each coroutine frame on its stack, so the usual call gets none of ours here).
    """
    call = _Call(chain, request, mode)
    if call.watching or call.relayed:
        return _watched(call)  # type: ignore[return-value]
    return call.run()


async def _watched(call: _Call) -> object:
    """`chain_do` for a call that hooks or logs watch, or whose stream relays restarts."""
    watching = call.watching
    if watching:
        call.begin()
    try:
        if call.relayed:
            return await restart_relay(call)
        result = await call.run()
    except BaseException as exc:
        if watching:
            call.end(None, None, exc)
        raise
    if watching and not call.mode.streaming:
        call.end(result.model, result.usage, None)
    # A stream's call ends when the stream does (`StreamVerdict`).
    return result


def _without_tracebacks(error: BaseException) -> None:
    """Drop the tracebacks of `error` and of every error it was raised from."""
    for linked in linked_errors(error):
        linked.__traceback__ = None


_rng = random.Random()
"""Ties between group members, and the "random" strategy."""

_ADVANCE: Final = object()
"""`_Call.try_target`'s "nothing here, go on" (a sentinel: a result may be anything)."""


class _Call:
    """One call through a chain: its deadline, its failures, and the loop over targets."""

    __slots__ = (
        "abandoned",
        "asks_reasoning",
        "attempts",
        "bounded",
        "chain",
        "clock",
        "config",
        "cursor",
        "deadline",
        "failures",
        "first_token",
        "fitter",
        "holds",
        "info",
        "limit_until",
        "limited",
        "mode",
        "observer",
        "position",
        "recoveries",
        "relayed",
        "routed",
        "tracker",
        "watching",
    )

    def __init__(self, chain: Chain, request: Request, mode: Mode[T]) -> None:
        self.chain = chain
        self.mode: Mode[object] = mode  # type: ignore[assignment]
        self.tracker = chain._tracker
        config = self.config = chain._config
        self.fitter = RequestFitter(
            request,
            chain._fetch_image,
            policy=config.unsupported_images,
            max_download_bytes=config.image_download_max_bytes,
            download_timeout=config.image_download_timeout,
        )
        self.clock: Clock = self.tracker.clock
        timeout = request.timeout or config.timeout
        self.deadline = self.clock.now() + timeout if timeout else math.inf
        self.first_token = request.first_token_timeout
        """The request's own first-token limit, if it set one."""
        self.asks_reasoning = request.reasoning is not None and request.reasoning.enabled
        """The request asks the model to reason (a longer first-token limit)."""
        self.bounded = (
            mode.streaming  # a stream's first-token limit
            or self.deadline != math.inf
            or config.attempt_timeout is not None
            or self.first_token is not None
        )
        """Whether attempts run in a cancel scope (`_attempt.attempt`)."""
        self.failures: list[TargetFailure] = []
        self.recoveries: list[float] = []
        """Clock times at which skipped, benched targets recover."""
        self.attempts = 0
        self.relayed = mode.streaming and config.mid_stream == "restart"
        self.observer = chain._observer
        self.watching = self.observer.watching()
        self.info: CallInfo | None = None
        self.routed = chain._routed
        """Attempts hold their target's load and limits (`Hold`); passes use a `Cursor`."""
        self.cursor: Cursor | None = None
        """The current pass of a routed call."""
        self.holds: dict[str, Hold] | None = None
        """The routed attempts' holds, by target, until a result or a failure takes them."""
        self.limited: list[tuple[Target, Refused]] | None = None
        """Targets of this pass skipped at their limits, with why."""
        self.limit_until: float | None = None
        """Until when the call may wait for a slot (rule 10), from its first wait."""
        self.abandoned: set[str] | None = None
        """Targets whose attempt lost a hedge race: cancelled, nothing recorded."""
        self.position = 0
        """The index of the position that answered (`run`)."""

    # ----------------------------------------------------------------- the loop

    async def run(self, start: int = 0, done: frozenset[str] = frozenset()) -> Any:
        """Try the positions from index `start` on (of its group, the members not in
        `done`); the result (the answering position's index is left in `position`).

        Raises:
            ChainExhaustedError: nothing answered (rule 9), with every failure of the call.
        """
        if self.routed:
            return await self.run_routed(start, done)
        targets = self.chain._targets[start:]  # a plain chain: one target per position
        for index, target in enumerate(targets, start):
            outcome = await self.try_target(target)
            if outcome is not _ADVANCE:
                self.position = index
                return outcome
        if await self.recovered():  # rule 8
            for index, target in enumerate(targets, start):
                outcome = await self.try_target(target)
                if outcome is not _ADVANCE:
                    self.position = index
                    return outcome
        raise ChainExhaustedError(self.failures)  # rule 9

    async def run_routed(self, start: int, done: frozenset[str]) -> Any:
        """`run` for a chain with groups, limits or hedging: each pass takes targets from
        a `Cursor` (a group's members best first); a target skipped at its limit is
        waited for when nothing else answered (rule 10)."""
        try:
            outcome = await self.pass_over(start, done)
            if outcome is _ADVANCE and self.limited is not None:
                outcome = await self.wait_for_slot()  # rule 10
            if outcome is _ADVANCE and await self.recovered():  # rule 8
                outcome = await self.pass_over(start, done)
                if outcome is _ADVANCE and self.limited is not None:
                    outcome = await self.wait_for_slot()
        finally:
            self.drop_holds()
        if outcome is _ADVANCE:
            raise ChainExhaustedError(self.failures)  # rule 9
        key = outcome.model if isinstance(outcome, Response | Stream) else ""
        self.position = self.chain._position_of.get(key, start)
        return outcome

    async def pass_over(self, start: int, done: frozenset[str]) -> object:
        """One pass over the positions from `start`: the first result, or `_ADVANCE`."""
        cursor = self.cursor = Cursor(
            self.chain._positions, start, done, self.config.strategy, _rng
        )
        hedging = self.config.hedge_after is not None
        while (target := cursor.next()) is not None:
            if hedging:
                outcome = await hedged(self, target, cursor)
            else:
                outcome = await self.try_target(target)
            if outcome is not _ADVANCE:
                return outcome
        return _ADVANCE

    async def recovered(self) -> bool:
        """Rule 8: when every target was skipped as benched, wait for the first to recover
        (within the deadline and `max_recovery_wait`); whether to make one more pass."""
        now = self.clock.now()
        waits = [until - now for until in self.recoveries]
        wait = recovery_wait(waits, self.attempts > 0, self.config, self.deadline - now)
        if wait is None:
            return False
        self.observer.recovery_wait(wait)
        await self.clock.sleep(wait)
        return True

    async def wait_for_slot(self) -> object:
        """Rule 10: nothing answered, and targets were skipped at their limits: wait for
        the first of their slots to free, then try that target; if it does not answer,
        wait for the others'. All within the deadline and `max_limit_wait` (counted from
        the call's first wait). Never counted against a target's health."""
        assert self.limited is not None
        waiting = list({target.key: target for target, _ in self.limited}.values())
        self.limited = None
        now = self.clock.now()
        if self.limit_until is None:
            self.limit_until = min(self.deadline, now + self.config.max_limit_wait)
        until = self.limit_until
        limits, tokens = self.tracker.limits, self.fitter.tokens()
        while waiting and now < until:
            keys = [target.key for target in waiting]
            self.observer.limit_wait(keys, until - now)
            got = await limits.acquire_first(keys, tokens, wait_until=until)
            if got is None:
                return _ADVANCE
            index, lease = got
            outcome = await self.try_target(waiting.pop(index), lease)
            if outcome is not _ADVANCE:
                return outcome
            now = self.clock.now()
        return _ADVANCE

    async def try_target(self, target: Target, lease: Lease | None = None) -> object:
        """Attempt one target, with its retries (`lease`: a slot of its limits already
        taken). Returns the result, or `_ADVANCE`."""
        key, mode = target.key, self.mode
        admission = await self.admit(target, lease)  # rules 1, 7 and 10
        if admission is None:
            return _ADVANCE
        probe = admission.probe
        try:
            number = 0
            while True:
                number += 1
                self.attempts += 1
                # rule 2: a call cancelled before it got here sends no request (aiohttp
                # writes it before its first suspension).
                await primitives().checkpoint_if_cancelled()
                started = self.clock.now()
                if self.watching:
                    self.observer.attempt_started(self.info, key, number)
                try:
                    if self.bounded:
                        result = await attempt(self, target)
                    else:  # no deadline: no cancel scope, and no coroutine of ours
                        caps = target.capabilities
                        request = await self.fitter.fit(key, caps, streaming=mode.streaming)
                        result = await mode.run(target.model, request, key)
                    sealed = mode.seal(self, result, key, number, probe, started)
                except Exception as exc:
                    held, probe = probe, None
                    admission = await self.retry(target, number, exc, started, held)
                    if admission is None:  # rules 4-7: advance
                        return _ADVANCE
                    probe = admission.probe
                    continue
                held, probe = probe, None  # a stream holds it from here until it ends
                if self.watching:
                    self.answered(key, number, started, sealed)
                if not (mode.streaming or self.tracker.is_clear(key, held)):
                    await self.report_success(key, held)  # rule 3 (a stream: when it ends)
                return sealed
        finally:
            if probe is not None:
                # Cancelled, raising, or advancing with no verdict: give the probe back.
                with anyio.CancelScope(shield=True):
                    await self.tracker.release_probe(key, probe)

    async def retry(
        self, target: Target, number: int, exc: Exception, started: float, probe: str | None
    ) -> Admission | None:
        """After a failed attempt: raise (rule 6), or the admission of a retry of the same
        target (rule 4), or None to advance (rules 4-7). `probe` is given back or
        reported here."""
        key = target.key
        if self.abandoned is not None and key in self.abandoned:
            failure = None  # lost a hedge race: cancelled, not failed
        else:
            failure = self.failed(key, number, exc, started)
        if self.routed:
            self.drop_hold(target, failure)
        if failure is None or failure.step is not Step.COUNT:
            if probe is not None:
                with anyio.CancelScope(shield=True):
                    await self.tracker.release_probe(key, probe)
            if failure is not None:
                try:
                    self.stop(key, failure)  # rule 6 raises; rules 5, 6 (by policy), 7 advance
                finally:
                    del exc, failure  # a raised error's traceback holds this frame: no cycle
            return None
        return await self.count_and_retry(target, number, failure, probe)

    # ----------------------------------------------------------------- the steps

    async def admit(self, target: Target, lease: Lease | None = None) -> Admission | None:
        """Rule 7 (out of time), a request too large for the target, rule 1 (benched) and
        rule 10 (at its limits): the admission, or None when the target is skipped (the
        skip is recorded). A routed call's admission holds the target's load (`Hold`)."""
        key = target.key
        skip: TargetSkippedError | None = None
        if self.deadline != math.inf and self.clock.now() >= self.deadline:
            skip = TargetSkippedError(key, "not tried (the call's deadline ran out)")
        elif (too_large := self.fitter.too_large(target.capabilities)) is not None:
            skip = TargetSkippedError(key, too_large)
        else:
            admission = await self.tracker.admit(key)
            if admission.admitted:
                if not self.routed:
                    return admission
                return await self.hold(target, admission, lease)
            skip = self.refused(key, admission)
        if lease is not None:
            lease.release()
        self.failures.append(TargetFailure(key, skip))
        self.observer.skipped(skip)
        return None

    async def hold(
        self, target: Target, admission: Admission, lease: Lease | None
    ) -> Admission | None:
        """Rule 10: take a slot of the target's limits (unless `lease` is one); a target
        at its limit is skipped with no health penalty (its probe goes back)."""
        key = target.key
        if target.limited and lease is None:
            got = await self.tracker.limits.acquire(key, self.fitter.tokens())
            if isinstance(got, Refused):
                if admission.probe is not None:
                    with anyio.CancelScope(shield=True):
                        await self.tracker.release_probe(key, admission.probe)
                if self.limited is None:
                    self.limited = []
                self.limited.append((target, got))
                skip = TargetSkippedError(key, got.reason)
                self.failures.append(TargetFailure(key, skip))
                self.observer.skipped(skip)
                return None
            lease = got
        load = self.tracker.load
        if self.holds is None:
            self.holds = {}
        self.holds[key] = Hold(load, load.load(key), lease)
        return admission

    def take_hold(self, key: str, started: float) -> Hold | None:
        """The answering attempt's hold, its time to first content recorded (`seal`)."""
        hold = self.holds.pop(key, None) if self.holds is not None else None
        if hold is not None:
            hold.answered(self.clock.now() - started)
        return hold

    def drop_hold(self, target: Target, failure: Failure | None) -> None:
        """A failed attempt's hold ends; a limited target's 429 with a reset hint pauses
        its budget until then (rule 10)."""
        hold = self.holds.pop(target.key, None) if self.holds is not None else None
        if hold is not None:
            hold.end()
        error = failure.error if failure is not None else None
        if target.limited and isinstance(error, RateLimitError) and error.retry_after:
            self.tracker.limits.pause(target.key, self.clock.now() + error.retry_after)

    def drop_holds(self) -> None:
        """The run is over: every hold no result took ends (cancelled, raised, lost)."""
        holds, self.holds = self.holds, None
        for hold in (holds or {}).values():
            hold.end()

    def refused(self, key: str, admission: Admission) -> TargetSkippedError:
        """Rule 1: why the tracker refused `key` (benched until when, or probing)."""
        if admission.until is None:
            return TargetSkippedError(key, "skipped (a recovery probe is in flight)")
        # The store may keep its own timeline (a shared store uses server time).
        until = self.tracker.local_time(admission.until)
        self.recoveries.append(until)
        return TargetSkippedError.backed_off(key, partial(self.clock.wall, until))

    def failed(self, key: str, number: int, exc: Exception, started: float) -> Failure:
        """What the failed attempt means (`judge`), recorded and observed."""
        error: Exception = exc
        out_of_time = False
        if isinstance(exc, OutOfTime):
            error, out_of_time = exc.error, exc.call_deadline
        failure = judge(error, self.config, out_of_time=out_of_time)
        elapsed = self.clock.now() - started
        self.observer.attempt_failed(self.info, key, number, error, failure.error_class, elapsed)
        if failure.step is not Step.RAISE:
            self.record(key, error, number)
        return failure

    def record(self, key: str, error: Exception, attempt: int) -> None:
        """Add a failed attempt to the call's record (`failures`), for the answer's
        `failed_attempts` or the `ChainExhaustedError`.

        One of our errors is kept without its traceback, nor those of the errors it was
        raised from: its type and message say what failed, while the frames of a
        traceback lead back to this call, which holds its record, a cycle that only the
        cyclic garbage collector would break. Each failed attempt kept its reply,
        request and headers alive until then (with 64 calls in flight failing over,
        collecting them cost about a third of the client's CPU). Cutting the chain's
        frames off is not enough: from Python 3.12 a finished frame holds its caller.
        Any other exception is a bug (recorded only with `advance_on_permanent` or
        `advance_on`), and keeps its traceback for whoever debugs it.
        """
        if isinstance(error, MajordomoError):
            _without_tracebacks(error)
        self.failures.append(TargetFailure(key, error, attempt))

    def stop(self, key: str, failure: Failure) -> None:
        """Rule 6: raise the error, with notes naming the target and earlier attempts.
        Rules 5, 6 (by policy) and 7: advance (the failure is recorded already)."""
        if failure.step is Step.ADVANCE:
            return
        error = failure.error
        if not isinstance(error, ProviderError):
            error.add_note(f"raised by chain target {key}")
        if self.failures:
            error.add_note("after earlier attempts: " + "; ".join(map(str, self.failures)))
        try:
            raise error
        finally:
            # Its traceback holds this frame: locals naming it would make a cycle that
            # keeps the call, its reply and its request until the cyclic collector runs.
            del error, failure

    async def report_failure(self, key: str, failure: Failure, probe: str | None) -> Bench | None:
        """Rule 4: count the failure; announce the bench once, when this failure made it."""
        bench = await self.tracker.report_failure(key, retry_after=failure.retry_after, probe=probe)
        if bench is not None and bench.new:
            self.observer.benched(key, self.tracker.wall(bench.until), failure.error)
        return bench

    async def report_success(self, key: str, probe: str | None) -> None:
        """Rule 3: a success resets the target (and ends its probe: a recovery)."""
        await self.tracker.report_success(key, probe=probe)
        if probe is not None:
            self.observer.recovered(key)

    async def count_and_retry(
        self, target: Target, number: int, failure: Failure, probe: str | None
    ) -> Admission | None:
        """Rule 4: count the failure, wait out the backoff, and admit the target again
        (a bench made meanwhile is respected). None: advance instead."""
        key = target.key
        bench = await self.report_failure(key, failure, probe)
        time_left = self.deadline - self.clock.now()
        jitter, benched = random.random(), bench is not None
        wait = retry_wait(failure, number, benched, self.config, time_left, jitter)
        if wait is None:
            # A longer wait is worth it when nothing after this target could answer.
            wait = retry_wait(
                failure, number, benched, self.config, time_left, jitter, last_resort=True
            )
            if wait is None or not await self.last_resort(target):
                return None
        self.observer.retry_wait(key, number, wait, failure.error)
        await self.clock.sleep(wait)
        return await self.admit(target)

    async def last_resort(self, target: Target) -> bool:
        """Rule 4: whether no target after `target` could be admitted now (each later one
        is benched, or the request is too large for it). Asked only when it matters."""
        if self.cursor is not None:
            later_targets = self.cursor.remaining()
        else:
            targets = self.chain._targets
            later_targets = list(targets[targets.index(target) + 1 :])
        for later in later_targets:
            if self.fitter.too_large(later.capabilities) is None and (
                await self.tracker.available(later.key)
            ):
                return False
        return True

    def answered(self, key: str, number: int, started: float, result: object) -> None:
        """Tell the observer the attempt answered (a stream: it was established)."""
        usage = result.usage if isinstance(result, Response) else None
        self.observer.attempt_answered(self.info, key, number, self.clock.now() - started, usage)

    # ----------------------------------------------------------------- observation

    def begin(self) -> None:
        """The call starts (hooks and DEBUG logging)."""
        self.info = self.observer.call_started(
            self.chain.targets, self.fitter._request, self.mode.streaming, self.clock.now()
        )

    def end(self, model: str | None, usage: Usage | None, error: BaseException | None) -> None:
        """The call ended: answered by `model`, or with `error`."""
        self.observer.call_finished(self.info, model, usage, error)
