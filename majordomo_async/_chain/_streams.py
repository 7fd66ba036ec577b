"""What an attempt is (a generate, or establishing a stream), a stream's verdict when it
ends, and the mid-stream restart relay. Each asks the policy (`judge`) what an error means.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Awaitable
from typing import TYPE_CHECKING, Generic, TypeVar

from .._events import StreamEvent, StreamRestart
from .._exceptions import (
    ChainExhaustedError,
    ModelProtocolError,
    ProviderTimeoutError,
    StreamClosedError,
)
from .._protocols import AsyncModel
from .._request import Request
from .._response import Response, Usage
from .._routing import Group, Hold
from .._stream import Stream
from ._policy import Step, judge

if TYPE_CHECKING:
    from ._loop import _Call

__all__ = [
    "ESTABLISH",
    "GENERATE",
    "CallLimits",
    "Mode",
    "RelayOwner",
    "StreamVerdict",
    "out_of_time",
    "restart_relay",
]

T = TypeVar("T")


class Mode(Generic[T]):
    """What an attempt is: how to run it, and how to stamp its result."""

    streaming = False

    def run(self, model: AsyncModel, request: Request, key: str) -> Awaitable[T]:
        """The attempt on `model`, to be awaited."""
        raise NotImplementedError

    def seal(
        self, call: _Call, result: object, key: str, attempt: int, probe: str | None, started: float
    ) -> T:
        """`result` checked, stamped with the answering target and the call's failures
        (`started`: the clock time the attempt began). A routed call's hold on the target
        ends here for an answer, and with the stream for a stream."""
        raise NotImplementedError


class _Generate(Mode[Response]):
    def run(self, model: AsyncModel, request: Request, key: str) -> Awaitable[Response]:
        # The model's own coroutine, awaited by the caller: no frame of ours in between.
        return model.generate(request)

    def seal(
        self, call: _Call, result: object, key: str, attempt: int, probe: str | None, started: float
    ) -> Response:
        if type(result) is not Response and not isinstance(result, Response):
            raise _broken(key, "generate", result, "a Response")
        if call.routed and (hold := call.take_hold(key, started)) is not None:
            hold.end(result.usage)
        failures = call.failures
        if failures or result.model != key:
            return result._restamped(key, tuple(failures))
        return result


class _Establish(Mode[Stream]):
    streaming = True

    async def run(self, model: AsyncModel, request: Request, key: str) -> Stream:
        """Open the stream and read up to its first content event (establishing it)."""
        stream = await model.stream(request)
        if type(stream) is not Stream:
            # A model's own object: it may well have no `aclose`, so nothing is closed.
            raise _broken(key, "stream", stream, "a Stream")
        try:
            await stream._establish()
        except BaseException:
            await stream.aclose()
            raise
        return stream

    def seal(
        self, call: _Call, result: object, key: str, attempt: int, probe: str | None, started: float
    ) -> Stream:
        hold = call.take_hold(key, started) if call.routed else None
        verdict = StreamVerdict(
            call, key, attempt, probe, started, hold, ends_call=not call.relayed
        )
        renew = verdict.renew if probe is not None else None
        limits = None
        if call.deadline != math.inf or call.config.idle_timeout is not None:
            limits = CallLimits(call, key)
        result._bind(key, tuple(call.failures), verdict, renew, limits)  # type: ignore[attr-defined]
        return result  # type: ignore[return-value]


GENERATE = _Generate()
ESTABLISH = _Establish()


class CallLimits:
    """The call's limits on each read of an established stream: its deadline (the
    caller's budget: no health penalty) and `ChainConfig.idle_timeout` (the target's
    silence: a transient failure). One cancel scope per read, so only streams with a
    limit pay for it."""

    __slots__ = ("call", "key")

    def __init__(self, call: _Call, key: str) -> None:
        self.call = call
        self.key = key

    async def read(self, source: AsyncIterator[StreamEvent]) -> StreamEvent:
        """See `ReadLimits.read`."""
        call = self.call
        clock, deadline, limit = call.clock, call.deadline, "deadline"
        idle = call.config.idle_timeout
        if idle is not None and clock.now() + idle < deadline:
            deadline, limit = clock.now() + idle, "idle"
        with clock.deadline_scope(deadline) as scope:
            try:
                return await source.__anext__()
            except Exception:
                if not scope.cancel_called:
                    raise
        # Reached only when our scope fired and absorbed the read's cancellation.
        raise self.timeout(limit)

    def timeout(self, limit: str) -> ProviderTimeoutError:
        """The error for `limit` running out while the stream was read."""
        provider, _, model = self.key.partition("/")
        if limit == "deadline":
            message = (
                "the call's deadline (Request.timeout or ChainConfig.timeout) ran out "
                "while the stream was read"
            )
        else:
            message = (
                f"idle timeout: no stream event for {self.call.config.idle_timeout:g} s "
                "(ChainConfig.idle_timeout)"
            )
        return ProviderTimeoutError(message, limit=limit, provider=provider, model=model)


def out_of_time(error: Exception) -> bool:
    """Whether `error` is the call's own deadline running out (rule 7: no penalty)."""
    return isinstance(error, ProviderTimeoutError) and error.limit == "deadline"


def _broken(key: str, method: str, got: object, expected: str) -> ModelProtocolError:
    return ModelProtocolError(
        f"chain target {key}: {method}() returned {type(got).__name__}, not {expected}; "
        "a model must implement the AsyncModel protocol"
    )


class StreamVerdict:
    """The chain's side of an established stream: its health verdict when it ends
    (rules 3 and 4, by `judge`), the probe it holds, and the end of the call."""

    __slots__ = ("attempt", "call", "ends_call", "hold", "key", "probe", "renew_at", "started")

    def __init__(
        self,
        call: _Call,
        key: str,
        attempt: int,
        probe: str | None,
        started: float,
        hold: Hold | None = None,
        *,
        ends_call: bool,
    ) -> None:
        self.call = call
        self.key = key
        self.attempt = attempt
        self.probe = probe
        self.hold = hold
        """The target's load and limits' slot, held until the stream ends."""
        self.ends_call = ends_call
        self.started = started
        """When the attempt that opened the stream began (for the failure's elapsed time)."""
        self.renew_at = self.started + call.tracker.probe_lease / 3

    def closed(
        self, model: str, usage: Usage, error: Exception | None, finished: bool
    ) -> Awaitable[None] | None:
        """See `StreamOwner.closed`. Answered without a coroutine when nothing changes
        (a healthy target's stream that finished: the usual case)."""
        call = self.call
        if self.hold is not None:
            self.hold.end(usage)
        if call.abandoned is not None and self.key in call.abandoned:
            self.ends_call = False  # the stream that lost a hedge race: not the call's
        if finished and call.tracker.is_clear(self.key, self.probe):
            if self.ends_call and call.watching:
                call.end(model, usage, None)
            return None
        return self._settle(model, usage, error, finished)

    async def _settle(
        self, model: str, usage: Usage, error: Exception | None, finished: bool
    ) -> None:
        call, key, probe = self.call, self.key, self.probe
        try:
            if finished:  # rule 3
                await call.report_success(key, probe)
            elif (
                error is not None
                and (failure := judge(error, call.config, out_of_time=out_of_time(error))).step
                is Step.COUNT
            ):
                # rule 4: broken after content by a transient error
                elapsed = call.clock.now() - self.started
                call.observer.attempt_failed(
                    None, key, self.attempt, error, failure.error_class, elapsed
                )
                await call.report_failure(key, failure, probe)
            elif probe is not None:
                # stopped early, cancelled, or an error that says nothing of health
                await call.tracker.release_probe(key, probe)
        finally:
            if self.ends_call and call.watching:
                call.end(model, usage, error if not finished else None)

    def abandoned(self, model: str, usage: Usage) -> None:
        """See `StreamOwner.abandoned`: the probe goes back, nothing is counted."""
        call = self.call
        if self.hold is not None:
            self.hold.end(usage)
        if self.probe is not None:
            call.tracker.abandon_probe(self.key, self.probe)
        if self.ends_call and call.watching:
            call.end(model, usage, _abandoned(model))

    def renew(self) -> Awaitable[bool] | None:
        """Renew the probe's lease while the stream is read (a third of a lease apart)."""
        now = self.call.clock.now()
        if now < self.renew_at or self.probe is None:
            return None
        self.renew_at = now + self.call.tracker.probe_lease / 3
        return self.call.tracker.renew_probe(self.key, self.probe)


def _abandoned(model: str) -> StreamClosedError:
    return StreamClosedError(f"the stream of {model} was garbage-collected without being closed")


# --------------------------------------------------------------------------- restarts


async def restart_relay(call: _Call) -> Stream:
    """A stream that starts over on the next target when its target fails mid-stream."""
    stream: Stream = await call.run()
    relay = _Relay(call, stream, call.position)
    outer = Stream(relay, model=stream.model, request_id=stream.request_id)
    outer._bind(stream.model, stream.failed_attempts, RelayOwner(call, relay))
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
            # The stream closed itself on the way out of its failed read (and gave its
            # verdict there).
            return await self._restart(exc)

    async def _restart(self, exc: Exception) -> StreamRestart:
        call = self._call
        key = self._stream.model
        start, done = self._index + 1, frozenset[str]()
        position = call.chain._positions[self._index]
        if isinstance(position, Group):
            # The group's members not tried yet in this call come first.
            done = frozenset(failure.key for failure in call.failures) | {key}
            if any(member.key not in done for member in position.members):
                start = self._index
        if (
            out_of_time(exc)
            or judge(exc, call.config).step is Step.RAISE
            or start >= len(call.chain._positions)
        ):
            raise exc  # rule 7 (no time left), rule 6, or no target left to restart on
        attempt = 1 + sum(failure.key == key and not failure.skipped for failure in call.failures)
        call.record(key, exc, attempt)
        try:
            self._stream = await call.run(start, done)
            self._index = call.position
        except ChainExhaustedError as exhausted:
            if call.clock.now() < call.deadline:
                raise
            # rule 7: the caller's budget ran out while the answer was being restarted.
            raise CallLimits(call, key).timeout("deadline") from exhausted
        call.observer.restarted(key, exc, self._stream.model)
        return StreamRestart(self._stream.model, key, exc, tuple(call.failures))

    async def aclose(self) -> None:
        await self._stream.aclose()

    def abandon(self) -> None:
        """The outer stream was dropped: drop the current one too (it does not warn twice)."""
        self._stream._abandon()


class RelayOwner:
    """The call's side of a restartable stream: only the end of the call (each target's
    stream inside gives its own verdict)."""

    __slots__ = ("call", "relay")

    def __init__(self, call: _Call, relay: _Relay) -> None:
        self.call = call
        self.relay = relay

    def closed(
        self, model: str, usage: Usage, error: Exception | None, finished: bool
    ) -> Awaitable[None] | None:
        """See `StreamOwner.closed`."""
        if self.call.watching:
            self.call.end(model, usage, None if finished else error)
        return None

    def abandoned(self, model: str, usage: Usage) -> None:
        """See `StreamOwner.abandoned`."""
        self.relay.abandon()
        if self.call.watching:
            self.call.end(model, usage, _abandoned(model))
