"""`Chain`: one model over ordered targets with health-tracked failover; `chain_do`, its loop.

The rules, in the order `chain_do` applies them to each target, head to tail:

1. A target the tracker has benched is skipped and recorded with the time it recovers.
2. Cancellation is checked before each attempt; it always propagates and is never
   counted against a target.
3. Success resets the target's health and ends the call.
4. A transient error is reported to the tracker and retried on the same target (after a
   short jittered backoff, never shorter than the error's `retry_after`) while retries
   remain, unless the tracker benched the target, the error was a timeout, or the wait
   would exceed `max_retry_wait` or the deadline: then the chain advances.
5. Model-not-found, context-length and unsupported-request errors advance with no health
   penalty: the target is fine, this request just does not fit it.
6. Other permanent errors are raised at once (failing over cannot fix a bad request or a
   bad key) unless `advance_on_permanent` is set.
7. One deadline covers the whole call. When it runs out during an attempt, that attempt
   fails with a timeout (no health penalty: the budget was the caller's) and the
   remaining targets are recorded as not tried.
8. When every target was skipped as benched, the chain waits for the one that recovers
   first, if that fits in the deadline and `max_recovery_wait`, and makes one more pass.
9. If nothing answered: `ChainExhaustedError` with every attempt and skip, in order.

Streams follow the same loop: an attempt is established once the first content event
arrived; failures after that reach the consumer (or restart the request on the next
target, with `mid_stream="restart"`). A stream's health verdict is its outcome, given when
it closes: a success once the provider's terminal event arrived, a transient failure if it
broke after content, nothing if the consumer stopped early or was cancelled.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Awaitable, Sequence
from functools import partial
from typing import Any, Final, Generic, Literal, TypeVar, final

import anyio
import attrs

from ._capabilities import Capabilities
from ._clock import Clock
from ._download import ImageFetcher, standalone_fetch
from ._events import StreamEvent, StreamRestart
from ._exceptions import (
    ADVANCE_WITHOUT_PENALTY,
    ChainExhaustedError,
    Classifier,
    ConfigurationError,
    ErrorClass,
    ProviderError,
    ProviderTimeoutError,
    TargetFailure,
    TargetSkippedError,
    classify,
)
from ._fitting import RequestFitter
from ._health import Admission, HealthTracker
from ._hooks import (
    CallInfo,
    Hooks,
    HookSet,
    log_benched,
    log_failed_attempt,
    log_recovered,
    logger,
)
from ._protocols import AsyncModel
from ._request import Option, Request, as_request
from ._response import Response, Usage
from ._stream import Stream

__all__ = ["Chain", "ChainConfig", "Target", "chain_do"]

DEFAULT_TRANSIENT_RETRIES = 1


def _non_negative(_: object, attribute: attrs.Attribute[Any], value: float | None) -> None:
    if value is not None and value < 0:
        raise ConfigurationError(f"ChainConfig.{attribute.name} must not be negative, got {value}")


def _positive_or_none(_: object, attribute: attrs.Attribute[Any], value: float | None) -> None:
    if value is not None and not value > 0:
        raise ConfigurationError(f"ChainConfig.{attribute.name} must be positive, got {value}")


@attrs.frozen
class ChainConfig:
    """How a chain retries, advances and spends its time."""

    transient_retries: int = 0
    """Same-target retries after a transient error: 0 selects the default (1), a negative
    number disables retries."""
    advance_on_permanent: bool = False
    """Advance to the next target on every permanent error instead of raising it."""
    classify: Classifier = classify
    """The error classifier (see `majordomo_async.classify`)."""
    timeout: float | None = attrs.field(default=None, validator=_positive_or_none)
    """Seconds for a whole call when the request sets no `timeout` (None: no deadline)."""
    attempt_timeout: float | None = attrs.field(default=None, validator=_positive_or_none)
    """Seconds for one attempt; a target that exceeds it fails with a timeout, counts as
    a transient failure, and is not retried. None: only the call's deadline applies."""
    retry_backoff: float = attrs.field(default=0.2, validator=_non_negative)
    """Seconds: base of the jittered same-target backoff (doubles per retry)."""
    max_retry_wait: float = attrs.field(default=2.0, validator=_non_negative)
    """Seconds: a same-target retry that would wait longer advances instead."""
    max_recovery_wait: float = attrs.field(default=30.0, validator=_non_negative)
    """Seconds: when every target is benched, the longest wait for the first to recover."""
    mid_stream: Literal["raise", "restart"] = "raise"
    """A stream whose target fails after it delivered content: "raise" the typed error
    to the consumer (a note says how much was delivered); "restart" the request on the
    next target, announced by a `StreamRestart` event, so the consumer gets a complete
    answer. A partial answer is never spliced into a continuation."""
    unsupported_images: Literal["error", "placeholder"] = "error"
    """An image a target cannot take (no vision, wrong type, too large): "error" refuses
    that target (the chain moves on without a health penalty); "placeholder" sends the
    request with the image replaced by a short text note."""
    image_download_max_bytes: int = attrs.field(default=20 * 1024 * 1024, validator=_non_negative)
    """The largest image URL downloaded for a target that takes only inline images."""
    image_download_timeout: float = attrs.field(default=30.0, validator=_positive_or_none)
    """Seconds for one image download (also bounded by the call's deadline)."""

    @property
    def retries(self) -> int:
        """The effective number of same-target retries."""
        if self.transient_retries < 0:
            return 0
        return self.transient_retries or DEFAULT_TRANSIENT_RETRIES

    def backoff(self, retry: int, retry_after: float | None) -> float:
        """Seconds before same-target retry number `retry` (1-based).

        Half-jittered exponential backoff, never less than the provider's `retry_after`.
        """
        wait = self.retry_backoff * 2.0 ** (retry - 1) * (0.5 + random.random() / 2)
        return max(wait, retry_after or 0.0)


@attrs.frozen
class Target:
    """One resolved element of a chain."""

    key: str
    """"provider/model-id": the health tracker's key and `Response.model`."""
    model: AsyncModel
    capabilities_override: Capabilities | None = None
    """What the target accepts, when the user overrode the model's own `capabilities`."""

    @property
    def capabilities(self) -> Capabilities:
        """The capabilities each attempt on this target is fitted to."""
        override = self.capabilities_override
        return override if override is not None else self.model.capabilities


T = TypeVar("T")


class _Mode(Generic[T]):
    """What an attempt is: how to run it, and how to stamp its result."""

    streaming = False

    def run(self, model: AsyncModel, request: Request) -> Awaitable[T]:
        raise NotImplementedError

    def seal(self, result: T, key: str, failures: list[TargetFailure]) -> T:
        raise NotImplementedError


class _Generate(_Mode[Response]):
    def run(self, model: AsyncModel, request: Request) -> Awaitable[Response]:
        # The model's own coroutine, awaited by the caller: no frame of ours in between.
        return model.generate(request)

    def seal(self, result: Response, key: str, failures: list[TargetFailure]) -> Response:
        if failures or result.model != key:
            return result._restamped(key, tuple(failures))
        return result


class _Establish(_Mode[Stream]):
    streaming = True

    def run(self, model: AsyncModel, request: Request) -> Awaitable[Stream]:
        return self._establish(model, request)

    @staticmethod
    async def _establish(model: AsyncModel, request: Request) -> Stream:
        stream = await model.stream(request)
        try:
            await stream._establish()
        except BaseException:
            await stream.aclose()
            raise
        return stream

    def seal(self, result: Stream, key: str, failures: list[TargetFailure]) -> Stream:
        result._model = key
        if failures:
            result._failed_attempts = tuple(failures)
        return result


_GENERATE = _Generate()
_ESTABLISH = _Establish()


@final
class Chain:
    """An `AsyncModel` over ordered targets with failover. Built by `Registry.parse`.

    A one-target spec is a chain of one: the same code path and bookkeeping.
    """

    __slots__ = ("_config", "_fetch_image", "_hooks", "_targets", "_tracker")

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
        self._hooks = hooks if isinstance(hooks, HookSet) else HookSet(hooks)

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
        return await chain_do(self, as_request(request).apply(*options), _GENERATE)

    async def stream(self, request: Request | str, *options: Option) -> Stream:
        """Open a stream on the first target that delivers content, failing over until then.

        Raises:
            ChainExhaustedError: every target failed or was skipped.
            ProviderError: a permanent error the chain does not fail over.
        """
        request = as_request(request).apply(*options)
        if self._config.mid_stream == "restart":
            return await _restartable_stream(self, request)
        return await chain_do(self, request, _ESTABLISH)

    def __repr__(self) -> str:
        return f"Chain({','.join(self.targets)})"


async def chain_do(chain: Chain, request: Request, mode: _Mode[T]) -> T:
    """Run the head-to-tail failover algorithm (module docstring) for one call."""
    call = _Call(chain, request)
    if not call.hooks:
        result, _ = await call.run(mode)
        return result
    call.begin(mode.streaming)
    try:
        result, _ = await call.run(mode)
    except BaseException as exc:
        call.end(None, None, exc)
        raise
    if isinstance(result, Stream):
        result._on_end = call.end_stream
    else:
        assert isinstance(result, Response)
        call.end(result.model, result.usage, None)
    return result


async def _restartable_stream(chain: Chain, request: Request) -> Stream:
    """A stream that starts over on the next target when its target fails mid-stream."""
    call = _Call(chain, request)
    if call.hooks:
        call.begin(streaming=True)
    try:
        stream, index = await call.run(_ESTABLISH)
    except BaseException as exc:
        if call.hooks:
            call.end(None, None, exc)
        raise
    outer = Stream(_Relay(call, stream, index), model=stream.model, request_id=stream.request_id)
    outer._failed_attempts = stream.failed_attempts
    if call.hooks:
        outer._on_end = call.end_stream
    return outer


class _Relay:
    """The events of a chain's stream, then, after a mid-stream failure, a `StreamRestart`
    and the events of the next target that establishes a stream (per the chain rules).

    A class rather than an async generator: closing it must close the current stream
    even when iteration never started.
    """

    __slots__ = ("_call", "_index", "_stream")

    def __init__(self, call: _Call, stream: Stream, index: int) -> None:
        self._call = call
        self._stream = stream
        self._index = index

    def __aiter__(self) -> _Relay:
        return self

    async def __anext__(self) -> StreamEvent:
        try:
            return await self._stream.__anext__()
        except StopAsyncIteration:
            raise
        except Exception as exc:
            # The stream closed itself on the way out of its failed read.
            return await self._restart(exc)

    async def _restart(self, exc: Exception) -> StreamRestart:
        call, targets = self._call, self._call.chain._targets
        key = targets[self._index].key
        error_class = call.config.classify(exc)
        fatal = (
            error_class is ErrorClass.PERMANENT
            and not isinstance(exc, ADVANCE_WITHOUT_PENALTY)
            and not call.config.advance_on_permanent
        )
        if fatal or self._index + 1 >= len(targets):
            raise exc
        # The failed stream already logged and reported its failure as it closed.
        attempt = 1 + sum(failure.key == key and not failure.skipped for failure in call.failures)
        call.failures.append(TargetFailure(key, exc, attempt))
        self._stream, self._index = await call.run(_ESTABLISH, start=self._index + 1)
        return StreamRestart(self._stream.model, key, exc, tuple(call.failures))

    async def aclose(self) -> None:
        await self._stream.aclose()


_ADVANCE: Final = object()
"""`_Call.try_target`'s "nothing here, go on" (a sentinel: a result may be anything)."""
_UNASKED: Final = object()
"""`_Call.try_target`'s default `gate`: the caller did not run `_Call.gate` first."""


class _Call:
    """The state of one call through a chain: its deadline and what failed so far."""

    __slots__ = (
        "attempts",
        "chain",
        "clock",
        "config",
        "deadline",
        "failures",
        "fitter",
        "hooks",
        "info",
        "recoveries",
        "request",
        "tracker",
    )

    def __init__(self, chain: Chain, request: Request) -> None:
        self.chain = chain
        self.request = request
        self.tracker = chain._tracker
        self.config = config = chain._config
        self.fitter = RequestFitter(
            request,
            chain._fetch_image,
            policy=config.unsupported_images,
            max_download_bytes=config.image_download_max_bytes,
            download_timeout=config.image_download_timeout,
        )
        self.clock: Clock = self.tracker.clock
        timeout = request.timeout or self.config.timeout
        self.deadline = self.clock.now() + timeout if timeout else math.inf
        self.failures: list[TargetFailure] = []
        self.recoveries: list[float] = []
        """Clock times at which skipped, benched targets recover."""
        self.attempts = 0
        self.hooks = chain._hooks
        self.info: CallInfo | None = None

    # ----------------------------------------------------------------- observation

    def begin(self, streaming: bool) -> None:
        """Tell the hooks a call started."""
        self.info = CallInfo(self.chain.targets, self.request, streaming, self.clock.now())
        self.hooks.emit("call_started", self.info)

    def end(self, model: str | None, usage: Usage | None, error: BaseException | None) -> None:
        """Tell the hooks the call ended."""
        if isinstance(error, ChainExhaustedError):
            self.hooks.emit("chain_exhausted", self.info, error)
        self.hooks.emit("call_finished", self.info, model=model, usage=usage, error=error)

    def end_stream(self, stream: Stream) -> None:
        """A stream's call ends when the stream closes: read to the end, failed, or dropped."""
        self.end(stream.model, stream._usage, stream._error)

    # ----------------------------------------------------------------- the loop

    async def run(self, mode: _Mode[T], start: int = 0) -> tuple[T, int]:
        """Try the targets from index `start` on; the result and the answering index.

        Raises:
            ChainExhaustedError: nothing answered (with every failure of this call).
        """
        targets = self.chain._targets[start:]
        for offset, target in enumerate(targets):
            # Skips (benched, too large, out of time) are decided without a coroutine.
            gate = self.gate(target)
            if gate is _ADVANCE:
                continue
            outcome = await self.try_target(target, mode, gate)
            if outcome is not _ADVANCE:
                return outcome, start + offset  # type: ignore[return-value]

        if self.attempts == 0 and self.recoveries:
            # Every target is benched: rather than fail at once, wait for the first to recover.
            clock = self.clock
            wait = min(self.recoveries) - clock.now()
            if wait <= self.config.max_recovery_wait and clock.now() + wait < self.deadline:
                await clock.sleep(wait)
                for offset, target in enumerate(targets):
                    outcome = await self.try_target(target, mode)
                    if outcome is not _ADVANCE:
                        return outcome, start + offset  # type: ignore[return-value]

        raise ChainExhaustedError(self.failures)

    def gate(self, target: Target) -> Admission | object | None:
        """The checks before attempting `target` that need no await.

        Returns `_ADVANCE` when the target is skipped (out of time, too large for its
        context window, or benched: the skip is recorded), the admission when the health
        store answered without awaiting, or None when `try_target` must ask it.
        """
        key = target.key
        failures = self.failures
        if self.deadline != math.inf and self.clock.now() >= self.deadline:
            skip = TargetSkippedError(key, "not tried (the call's deadline ran out)")
            failures.append(TargetFailure(key, skip))
            return _ADVANCE
        too_large = self.fitter.too_large(target.capabilities)
        if too_large is not None:
            failures.append(TargetFailure(key, TargetSkippedError(key, too_large)))
            return _ADVANCE
        admission = self.tracker.admit_now(key)
        if admission is not None and not admission.admitted:
            failures.append(TargetFailure(key, self._skip(key, admission.until)))
            return _ADVANCE
        return admission

    async def try_target(
        self, target: Target, mode: _Mode[T], gate: Admission | object | None = _UNASKED
    ) -> T | object:
        """Attempt one target, with its retries. Returns the result, or `_ADVANCE`.

        `gate` is what `gate(target)` returned, when the caller already asked.
        """
        key = target.key
        clock, tracker, config, failures = self.clock, self.tracker, self.config, self.failures
        hooks, fitter = self.hooks, self.fitter
        if gate is _UNASKED:
            gate = self.gate(target)
        if gate is _ADVANCE:
            return _ADVANCE
        admission = gate if isinstance(gate, Admission) else await tracker.admit(key)
        if not admission.admitted:
            failures.append(TargetFailure(key, self._skip(key, admission.until)))
            return _ADVANCE
        capabilities = target.capabilities

        holds_probe = admission.probe
        try:
            attempt = 0
            while True:
                attempt += 1
                self.attempts += 1
                # A call cancelled before it got here must not send a request (aiohttp
                # writes it before its first suspension).
                await anyio.lowlevel.checkpoint_if_cancelled()
                started = clock.now()
                if hooks:
                    hooks.emit("attempt_started", self.info, key, attempt)
                try:
                    if self.deadline == math.inf and config.attempt_timeout is None:
                        # Unbounded: no cancel scope, and no image to fit (the usual
                        # case) is answered without awaiting.
                        request = fitter.fit_now(key, capabilities, streaming=mode.streaming)
                        if request is None:
                            request = await fitter.fit(key, capabilities, streaming=mode.streaming)
                        result = await mode.run(target.model, request)
                    else:
                        result = await self._bounded(target, capabilities, mode)
                except Exception as exc:
                    error, penalised = exc, True
                    if isinstance(exc, _OutOfTime):
                        error, penalised = exc.error, not exc.call_deadline
                    error_class = config.classify(error)
                    elapsed = clock.now() - started
                    log_failed_attempt(key, attempt, error, error_class, elapsed)
                    if hooks:
                        hooks.emit(
                            "attempt_finished",
                            self.info,
                            key,
                            attempt,
                            elapsed=elapsed,
                            error=error,
                            usage=None,
                        )
                    if error_class is ErrorClass.PERMANENT:
                        if (
                            isinstance(error, ADVANCE_WITHOUT_PENALTY)
                            or config.advance_on_permanent
                        ):
                            failures.append(TargetFailure(key, error, attempt))
                            return _ADVANCE
                        if not isinstance(error, ProviderError):
                            error.add_note(f"raised by chain target {key}")
                        if failures:
                            error.add_note(
                                "after earlier attempts: " + "; ".join(map(str, failures))
                            )
                        if error is exc:
                            raise
                        raise error from exc
                    failures.append(TargetFailure(key, error, attempt))
                    if not penalised:
                        return _ADVANCE
                    retry_after = error.retry_after if isinstance(error, ProviderError) else None
                    benched = await tracker.report_failure(key, retry_after=retry_after)
                    holds_probe = False
                    if benched:
                        await self._benched(key, error)
                    if benched or attempt > config.retries or isinstance(error, TimeoutError):
                        return _ADVANCE
                    wait = config.backoff(attempt, retry_after)
                    if wait > config.max_retry_wait or clock.now() + wait >= self.deadline:
                        return _ADVANCE
                    await clock.sleep(wait)
                    continue
                if hooks:
                    hooks.emit(
                        "attempt_finished",
                        self.info,
                        key,
                        attempt,
                        elapsed=clock.now() - started,
                        error=None,
                        usage=result.usage if isinstance(result, Response) else None,
                    )
                if isinstance(result, Stream):
                    # A stream's verdict is its outcome: success once the provider's
                    # terminal event arrived, a failure if it broke after content. The
                    # stream gives it when it closes, and takes over the probe slot.
                    result._verdict = partial(
                        self._stream_verdict, key, attempt, holds_probe, clock.now()
                    )
                elif holds_probe or not tracker.is_clear(key):
                    await tracker.report_success(key)
                    if holds_probe:
                        self._recovered(key)
                holds_probe = False
                return mode.seal(result, key, failures)
        finally:
            if holds_probe:
                # Cancelled, or an error that says nothing about health: give the slot
                # back so the next caller can probe.
                with anyio.CancelScope(shield=True):
                    await tracker.release_probe(key)

    async def _bounded(self, target: Target, capabilities: Capabilities, mode: _Mode[T]) -> T:
        """One attempt, bounded by the call's deadline and the attempt timeout.

        The request is fitted to the target first (inside the bounds: fitting may
        download an image).
        """
        deadline = self.deadline
        attempt_timeout = self.config.attempt_timeout
        if attempt_timeout is not None:
            deadline = min(deadline, self.clock.now() + attempt_timeout)
        fitter, key, streaming = self.fitter, target.key, mode.streaming
        with self.clock.deadline_scope(deadline) as scope:
            try:
                request = fitter.fit_now(key, capabilities, streaming=streaming)
                if request is None:
                    request = await fitter.fit(key, capabilities, streaming=streaming)
                return await mode.run(target.model, request)
            except Exception:
                # A provider may turn our cancellation into its own error: still a timeout.
                if not scope.cancel_called:
                    raise
        # Reached only when our scope fired and absorbed the attempt's cancellation.
        call_deadline = deadline >= self.deadline
        provider, _, model = target.key.partition("/")
        error = ProviderTimeoutError(
            "no answer before the call's deadline"
            if call_deadline
            else f"no answer within the attempt timeout ({attempt_timeout:g} s)",
            provider=provider,
            model=model,
        )
        raise _OutOfTime(error, call_deadline)

    def _stream_verdict(
        self,
        key: str,
        attempt: int,
        probe: bool,
        established: float,
        error: Exception | None,
        finished: bool,
    ) -> Awaitable[None] | None:
        """`_report_stream` to await, or None when it would change nothing (a healthy
        target's stream that finished: the usual case, answered without a coroutine)."""
        if finished and not probe and self.tracker.is_clear(key):
            return None
        return self._report_stream(key, attempt, probe, established, error, finished)

    async def _report_stream(
        self,
        key: str,
        attempt: int,
        probe: bool,
        established: float,
        error: Exception | None,
        finished: bool,
    ) -> None:
        """Report how an established stream of `key` ended (called once, at its close).

        Finished: a success (and a recovery, for a probe). Broken by a transient error
        after content: a failure, logged. Anything else (the consumer stopped early or was
        cancelled, a permanent error): no verdict, and a probe slot is given back.
        """
        tracker = self.tracker
        if finished:
            await tracker.report_success(key)
            if probe:
                self._recovered(key)
            return
        if error is not None:
            error_class = self.config.classify(error)
            elapsed = self.clock.now() - established
            log_failed_attempt(key, attempt, error, error_class, elapsed)
            if error_class is ErrorClass.TRANSIENT:
                retry_after = error.retry_after if isinstance(error, ProviderError) else None
                if await tracker.report_failure(key, retry_after=retry_after):
                    await self._benched(key, error)
                return
        if probe:
            await tracker.release_probe(key)

    def _recovered(self, key: str) -> None:
        log_recovered(key)
        if self.hooks:
            self.hooks.emit("target_recovered", key)

    async def _benched(self, key: str, error: Exception) -> None:
        """Log and announce that `key` was benched (the wall time costs a store read)."""
        if not self.hooks and not logger.isEnabledFor(logging.WARNING):
            return
        until = await self.tracker.backed_off_until(key)
        log_benched(key, until, error)
        if self.hooks:
            self.hooks.emit("target_benched", key, until=until, error=error)

    def _skip(self, key: str, until: float | None) -> TargetSkippedError:
        if until is None:
            return TargetSkippedError(key, "skipped (a recovery probe is in flight)")
        # The store may keep its own timeline (a shared store uses server time).
        local_until = self.tracker.local_time(until)
        self.recoveries.append(local_until)
        return TargetSkippedError.backed_off(key, partial(self.clock.wall, local_until))


class _OutOfTime(Exception):
    """Internal: an attempt ran out of time; carries the error to record and whose budget."""

    def __init__(self, error: ProviderTimeoutError, call_deadline: bool) -> None:
        super().__init__(str(error))
        self.error = error
        self.call_deadline = call_deadline
