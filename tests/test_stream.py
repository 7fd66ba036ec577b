"""`Stream`: iteration, aggregation into a `Response`, and the open/finished/closed lifecycle.

Every stream here reads from a small async generator (or a tiny iterator fake) defined in
the test, so each test sees exactly which events the "provider" produced and whether its
`finally:` (where a real adapter releases the connection) ran.
"""

from __future__ import annotations

import gc
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable

import anyio
import anyio.lowlevel
import pytest

from majordomo_async import (
    FinishReason,
    ProviderError,
    ServerError,
    Stream,
    StreamClosedError,
    StreamConsumedError,
    StreamEnd,
    StreamEvent,
    StreamNotFinishedError,
    StreamStart,
    StreamTruncatedError,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    Usage,
    UsageUpdate,
)


class Source:
    """A scripted event source that records what it produced and whether it was closed."""

    def __init__(self, events: Iterable[StreamEvent], *, error: BaseException | None = None):
        self.events = list(events)
        self.error = error
        self.produced: list[StreamEvent] = []
        self.finally_runs = 0

    async def generate(self) -> AsyncIterator[StreamEvent]:
        try:
            for event in self.events:
                self.produced.append(event)
                yield event
            if self.error is not None:
                raise self.error
        finally:
            self.finally_runs += 1


def make_stream(
    events: Iterable[StreamEvent],
    *,
    model: str = "prov/model-1",
    error: BaseException | None = None,
) -> tuple[Stream, Source]:
    source = Source(events, error=error)
    return Stream(source.generate(), model=model), source


async def drain(stream: Stream) -> list[StreamEvent]:
    return [event async for event in stream]


HELLO: list[StreamEvent] = [
    StreamStart(model="prov/model-1", request_id="req-1"),
    TextDelta("Hel"),
    TextDelta("lo"),
    UsageUpdate(Usage(3, 2)),
    StreamEnd(FinishReason.STOP),
]


# --------------------------------------------------------------------------- aggregation


async def test_iteration_yields_every_event_in_order() -> None:
    """`async for` hands out the source's events unchanged and in order."""
    stream, _ = make_stream(HELLO)

    assert await drain(stream) == HELLO


async def test_response_aggregates_text_usage_finish_reason_request_id_and_model() -> None:
    """After the last event, `response` joins the text and keeps usage, reason, ids, model."""
    events: list[StreamEvent] = [
        StreamStart(request_id="req-42"),
        TextDelta("a"),
        UsageUpdate(Usage(1, 1)),
        TextDelta("b"),
        TextDelta("c"),
        UsageUpdate(Usage(10, 7)),
        StreamEnd(FinishReason.LENGTH),
    ]
    stream, _ = make_stream(events, model="prov/model-1")
    await drain(stream)

    response = stream.response

    assert response.text == "abc"
    assert response.usage == Usage(10, 7)  # the last UsageUpdate wins
    assert response.finish_reason is FinishReason.LENGTH
    assert response.request_id == "req-42"
    assert stream.request_id == "req-42"
    assert response.model == "prov/model-1"
    assert response.tool_calls == ()


async def test_request_id_given_up_front_survives_a_start_without_one() -> None:
    """A `StreamStart` with no request id does not erase the one the stream was built with."""
    source = Source([StreamStart(), TextDelta("x"), StreamEnd()])
    stream = Stream(source.generate(), model="p/m", request_id="hdr-id")

    response = await stream.collect()

    assert response.request_id == "hdr-id"


async def test_tool_call_pieces_are_joined_by_index_and_ordered() -> None:
    """Pieces with one index form one call: id/name from the first, arguments joined, by index."""
    events: list[StreamEvent] = [
        ToolCallDelta(1, id="call_b", name="lookup", arguments='{"q": '),
        ToolCallDelta(0, id="call_a", name="now"),
        ToolCallDelta(1, arguments='"cats"'),
        ToolCallDelta(1, arguments="}"),
        ToolCallDelta(2, id="call_c", name="add", arguments='{"x": 1}'),
        StreamEnd(FinishReason.TOOL_CALLS),
    ]
    stream, _ = make_stream(events)

    response = await stream.collect()

    assert response.tool_calls == (
        ToolCall("call_a", "now", "{}"),  # no argument pieces: "{}"
        ToolCall("call_b", "lookup", '{"q": "cats"}'),
        ToolCall("call_c", "add", '{"x": 1}'),
    )
    assert response.finish_reason is FinishReason.TOOL_CALLS
    assert response.text == ""


async def test_collect_drains_closes_and_returns_the_response() -> None:
    """`collect()` reads what is left, closes the source, and returns the aggregate."""
    stream, source = make_stream(HELLO)
    first = await anext(aiter(stream))

    response = await stream.collect()

    assert first == HELLO[0]
    assert response.text == "Hello"
    assert response.usage == Usage(3, 2)
    assert stream.finished and stream.closed
    assert source.finally_runs == 1
    assert source.produced == HELLO


async def test_collect_on_a_finished_stream_returns_the_same_answer() -> None:
    """`collect()` after a full read does not re-read: it returns the aggregate again."""
    stream, _ = make_stream(HELLO)
    await drain(stream)

    assert await stream.collect() == stream.response


# --------------------------------------------------------------------------- misuse and truncation


async def test_response_before_the_end_raises_stream_not_finished() -> None:
    """Asking for `response` with events unread is an error, not a partial answer."""
    stream, _ = make_stream(HELLO)
    async with stream:
        await anext(aiter(stream))
        await anext(aiter(stream))

        with pytest.raises(StreamNotFinishedError):
            _ = stream.response


async def test_source_ending_without_stream_end_is_truncated() -> None:
    """No terminal event means an incomplete answer: StreamTruncatedError, and the stream closes."""
    stream, source = make_stream([StreamStart(), TextDelta("half an ans")], model="acme/m/v2")

    with pytest.raises(StreamTruncatedError) as caught:
        await drain(stream)

    error = caught.value
    assert isinstance(error, ProviderError)
    assert (error.provider, error.model) == ("acme", "m/v2")  # split on the first "/"
    assert error.key == "acme/m/v2"
    assert stream.closed and not stream.finished
    assert source.finally_runs == 1
    with pytest.raises(StreamNotFinishedError):
        _ = stream.response


async def test_iterating_again_after_the_end_raises_stream_consumed() -> None:
    """A stream is read once: a second `async for` raises StreamConsumedError."""
    stream, _ = make_stream(HELLO)
    await drain(stream)

    with pytest.raises(StreamConsumedError):
        await drain(stream)


async def test_reading_after_aclose_midway_raises_stream_closed() -> None:
    """`aclose()` mid-stream releases the source; the next read raises StreamClosedError."""
    stream, source = make_stream(HELLO)
    iterator = aiter(stream)
    await anext(iterator)

    await stream.aclose()

    assert source.finally_runs == 1
    with pytest.raises(StreamClosedError):
        await anext(iterator)
    assert source.produced == HELLO[:1]


async def test_reading_a_closed_established_stream_raises_stream_closed() -> None:
    """A stream closed after establishing raises StreamClosedError, not its held-back events."""
    stream, _ = make_stream(HELLO)
    await stream._establish()
    await stream.aclose()

    with pytest.raises(StreamClosedError):
        await anext(aiter(stream))


# --------------------------------------------------------------------------- closing


class CountingSource:
    """An async iterator (not a generator) that counts `aclose()` calls."""

    def __init__(self) -> None:
        self.aclose_calls = 0

    def __aiter__(self) -> CountingSource:
        return self

    async def __anext__(self) -> StreamEvent:
        return TextDelta("x")

    async def aclose(self) -> None:
        self.aclose_calls += 1


async def test_aclose_is_idempotent_and_closes_the_source_once() -> None:
    """Closing twice (explicitly, then via `async with`) calls the source's aclose() once."""
    source = CountingSource()
    stream = Stream(source, model="p/m")

    async with stream:
        await anext(aiter(stream))
        await stream.aclose()
        await stream.aclose()

    assert source.aclose_calls == 1
    assert stream.closed


async def test_aclose_runs_the_generator_finally_exactly_once() -> None:
    """A generator source's `finally:` runs once, however many times the stream is closed."""
    stream, source = make_stream(HELLO)
    await anext(aiter(stream))

    await stream.aclose()
    await stream.aclose()

    assert source.finally_runs == 1


async def test_async_with_and_break_closes_the_source() -> None:
    """Breaking out of `async for` inside `async with` runs the source's `finally:` at once."""
    stream, source = make_stream(HELLO)

    async with stream as entered:
        assert entered is stream
        async for event in stream:
            if isinstance(event, TextDelta):
                break
        assert source.finally_runs == 0

    assert source.finally_runs == 1
    assert stream.closed and not stream.finished


async def test_source_exception_propagates_and_closes_the_stream() -> None:
    """An error raised by the source reaches the consumer unchanged, and the stream is closed."""
    boom = ServerError("upstream broke", provider="prov", model="m", status=500)
    stream, source = make_stream([StreamStart(), TextDelta("a")], error=boom)

    with pytest.raises(ServerError) as caught:
        await drain(stream)

    assert caught.value is boom
    assert stream.closed
    assert source.finally_runs == 1
    with pytest.raises(StreamClosedError):
        await anext(aiter(stream))


async def test_cancellation_closes_the_source() -> None:
    """A cancel scope expiring while the source waits closes the stream and runs its finally."""
    finally_ran = []

    async def hanging() -> AsyncIterator[StreamEvent]:
        try:
            yield StreamStart()
            yield TextDelta("a")
            await anyio.sleep_forever()
            yield StreamEnd()  # pragma: no cover - never reached
        finally:
            finally_ran.append(True)

    stream = Stream(hanging(), model="p/m")
    received = []
    with anyio.move_on_after(0) as scope:
        async for event in stream:
            received.append(event)

    assert scope.cancelled_caught
    assert received == [StreamStart(), TextDelta("a")]
    assert stream.closed
    assert finally_ran == [True]


async def test_aclose_completes_inside_a_cancelled_scope() -> None:
    """`aclose()` is shielded: the source's awaiting cleanup finishes even while cancelled."""
    cleanup_done = []

    async def slow_cleanup() -> AsyncIterator[StreamEvent]:
        try:
            yield TextDelta("a")
            yield StreamEnd()  # pragma: no cover - closed before this
        finally:
            await anyio.lowlevel.checkpoint()  # raises here if the close is not shielded
            cleanup_done.append(True)

    stream = Stream(slow_cleanup(), model="p/m")
    await anext(aiter(stream))

    with anyio.CancelScope() as scope:
        scope.cancel()
        await stream.aclose()

    assert cleanup_done == [True]
    assert stream.closed


# --------------------------------------------------------------------------- establishing


@pytest.mark.parametrize(
    "committing",
    [TextDelta("a"), ToolCallDelta(0, id="c1", name="f"), StreamEnd()],
    ids=["text", "tool-call", "end"],
)
async def test_establish_reads_up_to_the_first_committing_event(committing: StreamEvent) -> None:
    """`_establish()` pulls preamble events and stops right after the first committing one."""
    events: list[StreamEvent] = [
        StreamStart(request_id="r1"),
        UsageUpdate(Usage(5, 0)),
        committing,
        TextDelta("never read by establish"),
        StreamEnd(),
    ]
    stream, source = make_stream(events)

    await stream._establish()

    assert source.produced == events[:3]
    assert stream.request_id == "r1"  # preamble bookkeeping already folded in
    await stream.aclose()


async def test_established_events_are_yielded_first_in_order_exactly_once() -> None:
    """The events held back while establishing come out first, once each, then the rest."""
    events: list[StreamEvent] = [
        StreamStart(request_id="r1"),
        UsageUpdate(Usage(5, 0)),
        TextDelta("a"),
        TextDelta("b"),
        UsageUpdate(Usage(5, 2)),
        StreamEnd(),
    ]
    stream, source = make_stream(events)
    await stream._establish()

    assert await drain(stream) == events
    assert source.produced == events
    response = stream.response
    assert response.text == "ab"  # buffered text not counted twice
    assert response.usage == Usage(5, 2)


async def test_establish_propagates_an_error_before_content_and_closes() -> None:
    """A source failing before any content raises out of `_establish()` with the stream closed."""
    boom = ServerError("down", provider="prov", model="m", status=503)
    stream, source = make_stream([StreamStart()], error=boom)

    with pytest.raises(ServerError):
        await stream._establish()

    assert stream.closed
    assert source.finally_runs == 1


# --------------------------------------------------------------------------- repr


async def test_repr_shows_model_and_state() -> None:
    """The repr names the target key and says whether the stream is open or closed."""
    stream, _ = make_stream(HELLO, model="prov/model-1")
    assert repr(stream) == "<Stream prov/model-1 open>"

    await stream.aclose()

    assert repr(stream) == "<Stream prov/model-1 closed>"


async def test_repr_of_a_fully_read_stream_says_finished() -> None:
    """A stream read to its end reports the 'finished' state, not merely 'closed'."""
    stream, _ = make_stream(HELLO, model="prov/model-1")
    await drain(stream)

    assert repr(stream) == "<Stream prov/model-1 finished>"


async def test_on_close_runs_even_when_the_source_never_started() -> None:
    """A stream closed before its first read still releases what on_close holds."""
    started, released = [], []

    async def source() -> AsyncIterator[StreamEvent]:
        started.append(True)
        yield StreamEnd()

    stream = Stream(source(), model="p/m", on_close=lambda: released.append(True))
    await stream.aclose()
    await stream.aclose()

    assert (started, released) == ([], [True])


async def test_on_close_runs_when_the_source_fails_to_close() -> None:
    """on_close runs even if closing the source raises."""
    released = []

    class BadSource:
        def __aiter__(self) -> BadSource:
            return self

        async def __anext__(self) -> StreamEvent:
            raise StopAsyncIteration

        async def aclose(self) -> None:
            raise RuntimeError("close failed")

    stream = Stream(BadSource(), model="p/m", on_close=lambda: released.append(True))
    with pytest.raises(RuntimeError):
        await stream.aclose()

    assert released == [True]


# --------------------------------------------------------------------------- the close path


class Owner:
    """A chain's side of a stream, as a test double: records what it is told."""

    def __init__(self, pending: Callable[[], Awaitable[None]] | None = None) -> None:
        self.closes: list[tuple[str, Exception | None, bool]] = []
        self.abandons: list[str] = []
        self.pending = pending

    def closed(
        self, model: str, usage: Usage, error: Exception | None, finished: bool
    ) -> Awaitable[None] | None:
        self.closes.append((model, error, finished))
        return self.pending() if self.pending else None

    def abandoned(self, model: str, usage: Usage) -> None:
        self.abandons.append(model)


async def test_a_verdict_that_needs_no_await_closes_without_one() -> None:
    """A stream read to its end whose owner needs no await: closed, told once."""
    stream, source = make_stream(HELLO)
    owner = Owner()
    stream._bind("p/m", (), owner)
    assert await drain(stream) == HELLO
    assert stream.closed
    assert owner.closes == [("p/m", None, True)]
    assert source.finally_runs == 1
    await stream.aclose()
    assert len(owner.closes) == 1


async def test_a_pending_verdict_is_awaited_even_when_closing_is_cancelled() -> None:
    """A verdict that must await still runs to its end when the closer is cancelled."""
    stream, _ = make_stream(HELLO)
    reported = anyio.Event()

    async def report() -> None:
        await anyio.lowlevel.checkpoint()  # would raise here if the close were not shielded
        reported.set()

    stream._bind("p/m", (), Owner(report))
    with anyio.CancelScope() as scope:
        scope.cancel()
        await stream.aclose()
    assert reported.is_set()
    assert stream.closed


async def test_a_stream_collected_unclosed_warns_releases_and_tells_its_owner() -> None:
    closed: list[str] = []
    stream = Stream(_never(), model="p/dropped", on_close=lambda: closed.append("http"))
    owner = Owner()
    stream._bind("p/dropped", (), owner)
    with pytest.warns(ResourceWarning, match="unclosed stream of p/dropped"):
        del stream
        gc.collect()
    assert closed == ["http"]
    assert owner.abandons == ["p/dropped"]
    assert owner.closes == []


async def test_a_closed_or_finished_stream_collects_silently() -> None:
    stream, _ = make_stream(HELLO)
    await drain(stream)
    other, _ = make_stream(HELLO)
    await other.aclose()
    del stream, other
    gc.collect()  # warnings are errors here


async def _never() -> AsyncIterator[StreamEvent]:
    await anyio.sleep_forever()
    yield StreamEnd()  # pragma: no cover


async def test_a_stream_built_with_wrong_arguments_raises_and_says_nothing_more() -> None:
    """A constructor call that raises leaves an object with no state: collecting it must
    not print "Exception ignored in Stream.__del__" on top of the TypeError."""

    async def source() -> AsyncGenerator[StreamEvent, None]:
        yield TextDelta("x")

    events = source()
    with pytest.raises(TypeError, match="model"):
        Stream(events)  # type: ignore[call-arg]
    await events.aclose()
    gc.collect()  # an unraisable error here fails the test (warnings are errors)
