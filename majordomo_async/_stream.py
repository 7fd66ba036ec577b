"""`Stream`: an async iterator of events that owns its connection.

Lifecycle (the AsyncResource contract of anyio and trio):

- open: events can be read; `async with` closes it on the way out, whatever happens.
- finished: the provider's `StreamEnd` arrived and the source is exhausted; `response`
  gives the aggregated `Response`. Iterating a finished stream again raises
  `StreamConsumedError`.
- closed: `aclose()` released the connection. It is idempotent; reading a closed,
  unfinished stream raises `StreamClosedError`.

A source that ends without a `StreamEnd` is a truncated answer: `StreamTruncatedError`,
never a silent success.
"""

from __future__ import annotations

import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from types import TracebackType
from typing import Protocol, final

import anyio

from ._events import (
    ReasoningDelta,
    StreamEnd,
    StreamEvent,
    StreamRestart,
    StreamStart,
    TextDelta,
    ToolCallDelta,
    UsageUpdate,
)
from ._exceptions import (
    StreamClosedError,
    StreamConsumedError,
    StreamNotFinishedError,
    StreamTruncatedError,
    TargetFailure,
)
from ._messages import ReasoningPart, ToolCall
from ._response import FinishReason, Response, Usage

__all__ = ["ReadLimits", "Stream", "StreamOwner"]


class _ToolCallBuilder:
    __slots__ = ("arguments", "id", "name")

    def __init__(self) -> None:
        self.id = ""
        self.name = ""
        self.arguments: list[str] = []


class _ReasoningBuilder:
    __slots__ = ("provider", "redacted", "signature", "text")

    def __init__(self, provider: str) -> None:
        self.provider = provider
        self.text: list[str] = []
        self.signature: str | None = None
        self.redacted: str | None = None

    def part(self) -> ReasoningPart:
        return ReasoningPart("".join(self.text), self.signature, self.redacted, self.provider)


@final
class Stream:
    """A streamed answer: `async for event in stream`, then `stream.response`.

    Always close it; `async with` does:

    ```python
    async with await model.stream("Tell me a story") as stream:
        async for event in stream:
            if isinstance(event, TextDelta):
                print(event.text, end="")
    print(stream.response.usage)
    ```

    Args:
        events: the provider's event source. If it has `aclose()` (an async generator
            does), closing the stream calls it: that is where the connection is released.
        model: the "provider/model-id" key of the target streaming.
        request_id: the provider's request id, if known up front.
        on_close: called once when the stream closes, after the source (a provider passes
            its HTTP response's `close`). Needed because closing an async generator that
            never started runs none of its code, `finally` blocks included.
        on_error: called with an exception the source raised, before it reaches the
            consumer (a provider masks its credential in the message there).
    """

    __slots__ = (
        "_buffer",
        "_closed",
        "_error",
        "_failed_attempts",
        "_finish_reason",
        "_finished",
        "_iterated",
        "_limits",
        "_model",
        "_on_close",
        "_on_error",
        "_owner",
        "_reasoning",
        "_refusal",
        "_renew",
        "_request_id",
        "_served_model",
        "_source",
        "_text",
        "_tool_calls",
        "_usage",
    )

    def __init__(
        self,
        events: AsyncIterator[StreamEvent],
        *,
        model: str,
        request_id: str | None = None,
        on_close: Callable[[], object] | None = None,
        on_error: Callable[[Exception], object] | None = None,
    ) -> None:
        self._source = events
        self._on_close = on_close
        self._on_error = on_error
        self._model = model
        self._request_id = request_id
        # A list, not a deque: it holds the two or three events read while the chain
        # established the stream, and a deque's first block alone is over 500 bytes.
        self._buffer: list[StreamEvent] = []
        self._closed = False
        self._finished = False
        self._iterated = False
        self._text: list[str] = []
        self._tool_calls: dict[int, _ToolCallBuilder] = {}
        self._reasoning: dict[int, _ReasoningBuilder] = {}
        self._refusal: str | None = None
        self._served_model: str | None = None
        self._usage = Usage()
        self._finish_reason: FinishReason | None = None
        self._failed_attempts: tuple[TargetFailure, ...] = ()
        self._error: BaseException | None = None
        """What ended the stream early, if anything did."""
        self._owner: StreamOwner | None = None
        """The chain call this stream answers (see `_bind`), told once how it ended."""
        self._renew: Callable[[], Awaitable[object] | None] | None = None
        """Called per event while the stream holds a half-open probe (its lease)."""
        self._limits: ReadLimits | None = None
        """The chain call's time limits on each read (its deadline, an idle limit)."""

    # ----------------------------------------------------------------- public surface

    @property
    def model(self) -> str:
        """The "provider/model-id" key of the target streaming this answer."""
        return self._model

    @property
    def request_id(self) -> str | None:
        """The provider's request id, once known."""
        return self._request_id

    @property
    def failed_attempts(self) -> tuple[TargetFailure, ...]:
        """Attempts and skips the chain went through before this stream was established."""
        return self._failed_attempts

    @property
    def finished(self) -> bool:
        """True once the provider's terminal event was read."""
        return self._finished

    @property
    def closed(self) -> bool:
        """True once `aclose()` ran (it runs by itself after the last event)."""
        return self._closed

    @property
    def response(self) -> Response:
        """The aggregated answer. Only after the stream was read to the end.

        Raises:
            StreamNotFinishedError: events remain unread (use `collect()`).
        """
        if not self._finished:
            raise StreamNotFinishedError(
                "the stream has unread events: iterate it to the end or use collect()"
            )
        reasoning = tuple(builder.part() for _, builder in sorted(self._reasoning.items()))
        return Response(
            text="".join(self._text),
            tool_calls=tuple(
                ToolCall(builder.id, builder.name, "".join(builder.arguments) or "{}")
                for _, builder in sorted(self._tool_calls.items())
            ),
            finish_reason=self._finish_reason or FinishReason.STOP,
            usage=self._usage,
            model=self._model,
            request_id=self._request_id,
            failed_attempts=self._failed_attempts,
            reasoning="".join(part.text for part in reasoning),
            reasoning_parts=reasoning,
            refusal=self._refusal,
            served_model=self._served_model,
        )

    async def collect(self) -> Response:
        """Read the remaining events, close, and return the aggregated `Response`."""
        async with self:
            if not self._finished:
                async for _ in self:
                    pass
        return self.response

    def __aiter__(self) -> Stream:
        if self._finished and not self._buffer:
            raise StreamConsumedError("this stream was already read to the end")
        self._iterated = True
        return self

    async def __anext__(self) -> StreamEvent:
        if self._closed and not self._finished:
            raise StreamClosedError("the stream was closed before it was read to the end")
        if self._buffer:
            return self._buffer.pop(0)
        if self._finished:
            raise StopAsyncIteration
        # `_pull()` inlined: one coroutine less per event.
        try:
            if self._limits is None:
                event = await self._source.__anext__()
            else:
                event = await self._limits.read(self._source)
        except BaseException as exc:
            await self._failed(exc)
            raise
        if self._renew is not None:
            # This stream is a recovery probe: reading it is news of the target.
            pending = self._renew()
            if pending is not None:
                await pending
        if type(event) is TextDelta:  # nearly every event: `_fold` inlined
            self._text.append(event.text)
            return event
        return self._fold(event)

    async def aclose(self) -> None:
        """Release the connection. Idempotent; safe to call while cancelled."""
        if self._closed:
            return
        self._closed = True
        source = self._source
        # An async generator that ran to its end has nothing left to close.
        aclose = (
            None if getattr(source, "ag_frame", True) is None else getattr(source, "aclose", None)
        )
        owner, self._owner = self._owner, None
        self._renew = self._limits = None
        try:
            pending = None
            # Let go of the error: its traceback holds this stream's frames, and through
            # them this stream (a cycle the collector would have to break).
            error, self._error = self._error, None
            if owner is not None:
                failure = error if isinstance(error, Exception) else None
                pending = owner.closed(self._model, self._usage, failure, self._finished)
            if aclose is not None or pending is not None:
                # Shielded: closing must finish even when the caller is being cancelled,
                # or the connection would be left to the garbage collector (and the
                # chain's health report, a probe included, would be lost). Only entered
                # when something must be awaited: a cancel scope costs several
                # microseconds, and a stream read to its end usually needs none.
                with anyio.CancelScope(shield=True):
                    try:
                        if aclose is not None:
                            await aclose()
                    finally:
                        if pending is not None:
                            await pending
        finally:
            if self._on_close is not None:
                self._on_close()

    async def __aenter__(self) -> Stream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        state = "finished" if self._finished else "closed" if self._closed else "open"
        return f"<Stream {self._model} {state}>"

    def __del__(self) -> None:
        # Collected unclosed: the consumer dropped it without `aclose()` (a service whose
        # client left, a `break` outside `async with`). Say so, as aiohttp does for an
        # unclosed response, and give everything back that can be given without awaiting.
        # (A constructor that raised left no state: nothing to give back.)
        if getattr(self, "_closed", True):
            return
        try:
            warnings.warn(
                f"unclosed stream of {self._model}: close it with `async with` or "
                "`await stream.aclose()`",
                ResourceWarning,
                source=self,
                stacklevel=1,
            )
        finally:
            self._abandon()

    # ----------------------------------------------------------------- the chain's side

    def _bind(
        self,
        model: str,
        failed_attempts: tuple[TargetFailure, ...],
        owner: StreamOwner,
        renew: Callable[[], Awaitable[object] | None] | None = None,
        limits: ReadLimits | None = None,
    ) -> None:
        """Bind this stream to the chain call it answers: the answering target's key,
        the attempts that failed before it, the owner told how it ends, (for a recovery
        probe) the lease renewal to run as events arrive, and the time limits every
        read must keep (the call's deadline, an idle limit)."""
        self._model = model
        self._failed_attempts = failed_attempts
        self._owner = owner
        self._renew = renew
        self._limits = limits

    def _abandon(self) -> None:
        """Close without awaiting: release the connection, and tell the owner the stream
        was abandoned (no verdict). For `__del__`, and for a relay dropping its stream."""
        self._closed = True
        owner, self._owner = self._owner, None
        self._renew = self._limits = None
        try:
            if self._on_close is not None:
                self._on_close()
        except Exception:  # the loop may be gone already; the connection goes with it
            pass
        finally:
            if owner is not None:
                owner.abandoned(self._model, self._usage)

    # ----------------------------------------------------------------- internals

    async def _pull(self) -> StreamEvent:
        """Read one event from the source and fold it into the aggregate."""
        try:
            event = await self._source.__anext__()
        except BaseException as exc:
            await self._failed(exc)
            raise
        return self._fold(event)

    async def _failed(self, exc: BaseException) -> None:
        """The source ended or failed with `exc`: close, and say what it means.

        The caller re-raises `exc`; this raises instead when the source merely ended
        before the provider's terminal event (a truncated answer).
        """
        if isinstance(exc, StopAsyncIteration):
            if self._finish_reason is None:
                provider, _, model = self._model.partition("/")
                truncated = StreamTruncatedError(
                    "the stream ended before the provider's terminal event",
                    provider=provider,
                    model=model,
                )
                self._error = truncated
                await self.aclose()
                try:
                    raise truncated from None
                finally:
                    del truncated  # its traceback holds this frame: no cycle through it
            self._finished = True
            await self.aclose()
            return
        self._error = exc
        if isinstance(exc, Exception):
            if self._on_error is not None:
                self._on_error(exc)
            await self.aclose()
            if self._text or self._tool_calls or self._reasoning:
                exc.add_note(
                    f"{self._model} failed mid-stream, after {sum(map(len, self._text))} "
                    f"characters of text and {len(self._tool_calls)} tool calls had been "
                    "delivered"
                )
            return
        await self.aclose()  # cancellation and other BaseExceptions

    def _fold(self, event: StreamEvent) -> StreamEvent:
        """Add `event` to the aggregate; return it."""
        kind = type(event)
        if kind is TextDelta:
            self._text.append(event.text)  # type: ignore[union-attr]
        elif kind is ToolCallDelta:
            self._add_tool_call_delta(event)  # type: ignore[arg-type]
        elif kind is UsageUpdate:
            self._usage = event.usage  # type: ignore[union-attr]
        elif kind is StreamEnd:
            self._finish_reason = event.finish_reason  # type: ignore[union-attr]
            self._refusal = event.refusal  # type: ignore[union-attr]
        elif kind is ReasoningDelta:
            self._add_reasoning(event)  # type: ignore[arg-type]
        elif kind is StreamStart:
            if event.request_id:  # type: ignore[union-attr]
                self._request_id = event.request_id  # type: ignore[union-attr]
            self._served_model = event.served_model  # type: ignore[union-attr]
        elif kind is StreamRestart:
            self._restart(event)  # type: ignore[arg-type]
        return event

    def _restart(self, event: StreamRestart) -> None:
        """Forget the failed target's partial answer: the next events are a new one."""
        self._text = []
        self._tool_calls = {}
        self._reasoning = {}
        self._refusal = self._served_model = None
        self._usage = Usage()
        self._finish_reason = None
        self._request_id = None
        self._model = event.model
        self._failed_attempts = event.failures

    def _add_reasoning(self, delta: ReasoningDelta) -> None:
        builder = self._reasoning.get(delta.index)
        if builder is None:
            builder = self._reasoning[delta.index] = _ReasoningBuilder(delta.provider)
        if delta.text:
            builder.text.append(delta.text)
        if delta.signature is not None:
            builder.signature = delta.signature
        if delta.redacted is not None:
            builder.redacted = delta.redacted

    def _add_tool_call_delta(self, delta: ToolCallDelta) -> None:
        builder = self._tool_calls.get(delta.index)
        if builder is None:
            builder = self._tool_calls[delta.index] = _ToolCallBuilder()
        # The first piece names the call; later pieces only add arguments.
        if delta.id and not builder.id:
            builder.id = delta.id
        if delta.name and not builder.name:
            builder.name = delta.name
        if delta.arguments:
            builder.arguments.append(delta.arguments)

    async def _establish(self) -> None:
        """Read ahead until the first content event (or the end), holding events back.

        The chain calls this inside its failover loop: an error here still fails over.
        Preamble events (start, usage) do not commit the stream.
        """
        while True:
            try:
                event = await self._pull()
            except StopAsyncIteration:
                return
            self._buffer.append(event)
            if type(event) in _COMMITTING:
                return


_COMMITTING = frozenset({TextDelta, ToolCallDelta, ReasoningDelta, StreamEnd})


class ReadLimits(Protocol):
    """What a chain binds to a stream to bound each read (`Stream._bind`)."""

    async def read(self, source: AsyncIterator[StreamEvent]) -> StreamEvent:
        """The source's next event, or `ProviderTimeoutError` when a limit runs out
        first (the read is cancelled)."""
        ...


class StreamOwner(Protocol):
    """What a chain binds to a stream it answers with (`Stream._bind`)."""

    def closed(
        self, model: str, usage: Usage, error: Exception | None, finished: bool
    ) -> Awaitable[None] | None:
        """The stream closed: `finished` if the provider's terminal event arrived, else
        `error` if one ended it (None: the consumer stopped early). Returns what remains
        to be awaited (shielded), or None."""
        ...

    def abandoned(self, model: str, usage: Usage) -> None:
        """The stream was garbage-collected unclosed: no verdict, nothing awaited."""
        ...
