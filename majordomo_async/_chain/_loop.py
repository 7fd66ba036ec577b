"""`Chain` and `chain_do`: the failover loop, each branch tagged with its rule.

The rules themselves, and what every error means, are in `_policy.py`; read this loop
beside them (and beside the Go seed's `chainDo`).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from functools import partial
from typing import Any, Final, TypeVar, final

import anyio

from .._capabilities import Capabilities
from .._clock import Clock
from .._download import ImageFetcher, standalone_fetch
from .._exceptions import (
    ChainExhaustedError,
    ConfigurationError,
    ProviderError,
    TargetFailure,
    TargetSkippedError,
)
from .._fitting import RequestFitter
from .._health import Admission, Bench, HealthTracker
from .._hooks import CallInfo, Hooks, HookSet
from .._request import Option, Request, as_request
from .._response import Response, Usage
from .._stream import Stream
from ._attempt import OutOfTime, attempt
from ._config import ChainConfig, Target
from ._observer import Observer
from ._policy import Failure, Step, judge, recovery_wait, retry_wait
from ._streams import ESTABLISH, GENERATE, Mode, restart_relay

__all__ = ["Chain", "chain_do"]

T = TypeVar("T")


@final
class Chain:
    """An `AsyncModel` over ordered targets with failover. Built by `Registry.parse`.

    A one-target spec is a chain of one: the same code path and bookkeeping. The rules
    it follows are listed in `majordomo_async._chain._policy` (and the README).
    """

    __slots__ = ("_config", "_fetch_image", "_observer", "_targets", "_tracker")

    def __init__(
        self,
        targets: Sequence[Target],
        tracker: HealthTracker,
        config: ChainConfig,
        *,
        fetch_image: ImageFetcher | None = None,
        hooks: Sequence[Hooks] | HookSet = (),
    ) -> None:
        if not targets:
            raise ConfigurationError("a chain needs at least one target")
        self._targets = tuple(targets)
        self._tracker = tracker
        self._config = config
        # A Registry passes a fetcher on its shared session; a bare chain opens a
        # short-lived session per download.
        self._fetch_image = fetch_image or standalone_fetch
        self._observer = Observer(hooks if isinstance(hooks, HookSet) else HookSet(hooks))

    @property
    def targets(self) -> tuple[str, ...]:
        """The "provider/model-id" keys, in the order they are tried."""
        return tuple(target.key for target in self._targets)

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
        return f"Chain({','.join(self.targets)})"


async def chain_do(chain: Chain, request: Request, mode: Mode[T]) -> T:
    """Run the head-to-tail failover algorithm (`_policy`'s rules) for one call."""
    call = _Call(chain, request, mode)
    watching = call.watching
    if watching:
        call.begin()
    try:
        if call.relayed:
            return await restart_relay(call)  # type: ignore[return-value]
        result, _ = await call.run()
    except BaseException as exc:
        if watching:
            call.end(None, None, exc)
        raise
    if watching and not mode.streaming:
        call.end(result.model, result.usage, None)
    # A stream's call ends when the stream does (`StreamVerdict`).
    return result  # type: ignore[no-any-return]


_ADVANCE: Final = object()
"""`_Call.try_target`'s "nothing here, go on" (a sentinel: a result may be anything)."""


class _Call:
    """One call through a chain: its deadline, its failures, and the loop over targets."""

    __slots__ = (
        "asks_reasoning",
        "attempts",
        "bounded",
        "chain",
        "clock",
        "config",
        "deadline",
        "failures",
        "first_token",
        "fitter",
        "info",
        "mode",
        "observer",
        "recoveries",
        "relayed",
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

    # ----------------------------------------------------------------- the loop

    async def run(self, start: int = 0) -> tuple[Any, int]:
        """Try the targets from index `start` on; the result and the answering index.

        Raises:
            ChainExhaustedError: nothing answered (rule 9), with every failure of the call.
        """
        targets = self.chain._targets[start:]
        for index, target in enumerate(targets, start):
            outcome = await self.try_target(target)
            if outcome is not _ADVANCE:
                return outcome, index
        # rule 8: every target benched -> wait for the first to recover, one more pass
        now = self.clock.now()
        waits = [until - now for until in self.recoveries]
        wait = recovery_wait(waits, self.attempts > 0, self.config, self.deadline - now)
        if wait is not None:
            self.observer.recovery_wait(wait)
            await self.clock.sleep(wait)
            for index, target in enumerate(targets, start):
                outcome = await self.try_target(target)
                if outcome is not _ADVANCE:
                    return outcome, index
        raise ChainExhaustedError(self.failures)  # rule 9

    async def try_target(self, target: Target) -> object:
        """Attempt one target, with its retries. Returns the result, or `_ADVANCE`."""
        key, mode = target.key, self.mode
        admission = await self.admit(target)  # rules 1 and 7
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
                await anyio.lowlevel.checkpoint_if_cancelled()
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
                    failure = self.failed(key, number, exc, started)
                    if failure.step is not Step.COUNT:  # rule 6 raises; rules 5, 6, 7 advance
                        return self.stop(key, failure)
                    held, probe = probe, None
                    admission = await self.count_and_retry(target, number, failure, held)
                    if admission is None:  # rule 4: benched, out of retries or of time
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

    # ----------------------------------------------------------------- the steps

    async def admit(self, target: Target) -> Admission | None:
        """Rule 7 (out of time), a request too large for the target, and rule 1 (benched):
        the admission, or None when the target is skipped (the skip is recorded)."""
        key = target.key
        skip: TargetSkippedError | None = None
        if self.deadline != math.inf and self.clock.now() >= self.deadline:
            skip = TargetSkippedError(key, "not tried (the call's deadline ran out)")
        elif (too_large := self.fitter.too_large(target.capabilities)) is not None:
            skip = TargetSkippedError(key, too_large)
        else:
            admission = await self.tracker.admit(key)
            if admission.admitted:
                return admission
            skip = self.refused(key, admission)
        self.failures.append(TargetFailure(key, skip))
        self.observer.skipped(key, skip.reason)
        return None

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
            self.failures.append(TargetFailure(key, error, number))
        return failure

    def stop(self, key: str, failure: Failure) -> object:
        """Rule 6: raise the error, with notes naming the target and earlier attempts.
        Rules 5, 6 (by policy) and 7: advance (the failure is recorded already)."""
        if failure.step is Step.ADVANCE:
            return _ADVANCE
        error = failure.error
        if not isinstance(error, ProviderError):
            error.add_note(f"raised by chain target {key}")
        if self.failures:
            error.add_note("after earlier attempts: " + "; ".join(map(str, self.failures)))
        raise error

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
        targets = self.chain._targets
        for later in targets[targets.index(target) + 1 :]:
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
