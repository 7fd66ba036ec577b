"""Failures after a stream delivered content: raised by default, or an explicit restart."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from majordomo_async import (
    AuthenticationError,
    ChainConfig,
    ChainExhaustedError,
    HealthConfig,
    HealthTracker,
    ManualClock,
    OverloadedError,
    ProviderTimeoutError,
    ResponseFormatError,
    StreamEnd,
    StreamRestart,
    StreamStart,
    StreamTruncatedError,
    TextDelta,
    ToolCallDelta,
    Usage,
    UsageUpdate,
)
from tests.helpers.scripted import HANG, ScriptedModel, make_chain


def answer(key: str, text: str, tokens: int = 5) -> list[Any]:
    return [
        StreamStart(model=key),
        TextDelta(text),
        UsageUpdate(Usage(tokens, tokens)),
        StreamEnd(),
    ]


def broken(key: str, error: Exception, *deltas: Any) -> list[Any]:
    return [StreamStart(model=key), *deltas, error]


def cut(key: str) -> StreamTruncatedError:
    provider, _, model = key.partition("/")
    return StreamTruncatedError("the body ended early", provider=provider, model=model)


RESTART = ChainConfig(mid_stream="restart")


async def read_all(chain: Any) -> tuple[list[Any], Any]:
    async with await chain.stream("hi") as stream:
        events = [event async for event in stream]
    return events, stream


# --------------------------------------------------------------------------- default: raise


async def test_default_raises_with_how_much_was_delivered(clock: ManualClock) -> None:
    head = ScriptedModel("a/m", [broken("a/m", cut("a/m"), TextDelta("Hel"), TextDelta("lo"))])
    tail = ScriptedModel("b/m", [answer("b/m", "never")])
    chain = make_chain(head, tail, clock=clock)
    seen: list[Any] = []
    with pytest.raises(StreamTruncatedError) as info:
        async with await chain.stream("hi") as stream:
            async for event in stream:
                seen.append(event)
    assert [e.text for e in seen if isinstance(e, TextDelta)] == ["Hel", "lo"]
    assert info.value.key == "a/m"
    assert any("a/m failed mid-stream, after 5 characters" in note for note in info.value.__notes__)
    assert tail.calls == 0
    assert head.closed_streams == 1


# --------------------------------------------------------------------------- opt-in restart


@pytest.mark.parametrize(
    "error",
    [
        cut("a/m"),
        ProviderTimeoutError("no event for 120 s", provider="a", model="m"),
        ResponseFormatError("a stream chunk is not JSON", provider="a", model="m"),
        OverloadedError("in-band overloaded_error", provider="a", model="m", status=529),
    ],
    ids=["cut", "stalled", "malformed", "in-band"],
)
async def test_restart_on_next_target_after_any_mid_stream_failure(
    clock: ManualClock, error: Exception
) -> None:
    head = ScriptedModel("a/m", [broken("a/m", error, TextDelta("Partial"))])
    tail = ScriptedModel("b/m", [answer("b/m", "Complete answer", tokens=7)])
    tracker = HealthTracker(HealthConfig(), clock=clock)
    chain = make_chain(head, tail, clock=clock, config=RESTART, tracker=tracker)

    events, stream = await read_all(chain)

    restart = next(event for event in events if isinstance(event, StreamRestart))
    assert (restart.model, restart.failed, restart.error) == ("b/m", "a/m", error)
    after = events[events.index(restart) + 1 :]
    assert after == answer("b/m", "Complete answer", tokens=7)
    response = stream.response
    assert response.text == "Complete answer"
    assert response.model == "b/m"
    assert response.usage == Usage(7, 7)
    assert [(f.key, f.error) for f in response.failed_attempts] == [("a/m", error)]
    assert (await tracker.snapshot())["a/m"].consecutive_failures == 1
    assert head.closed_streams == tail.closed_streams == 1


async def test_restart_discards_partial_tool_calls(clock: ManualClock) -> None:
    head = ScriptedModel(
        "a/m", [broken("a/m", cut("a/m"), ToolCallDelta(0, id="c1", name="f", arguments='{"x'))]
    )
    tail = ScriptedModel("b/m", [answer("b/m", "no tools after all")])
    chain = make_chain(head, tail, clock=clock, config=RESTART)
    async with await chain.stream("hi") as stream:
        response = await stream.collect()
    assert response.tool_calls == ()
    assert response.text == "no tools after all"


async def test_restart_skips_a_failing_next_target_and_records_it(clock: ManualClock) -> None:
    head = ScriptedModel("a/m", [broken("a/m", cut("a/m"), TextDelta("x"))])
    down = ScriptedModel("b/m", [OverloadedError("down", provider="b", model="m", status=503)])
    last = ScriptedModel("c/m", [answer("c/m", "from c")])
    chain = make_chain(head, down, last, clock=clock, config=RESTART)
    events, stream = await read_all(chain)
    [restart] = [event for event in events if isinstance(event, StreamRestart)]
    assert restart.model == "c/m"
    assert stream.response.text == "from c"
    assert [f.key for f in stream.response.failed_attempts] == ["a/m", "b/m", "b/m"]


async def test_restart_with_nothing_left_raises_the_chain_error(clock: ManualClock) -> None:
    head = ScriptedModel("a/m", [broken("a/m", cut("a/m"), TextDelta("x"))])
    down = ScriptedModel("b/m", [OverloadedError("down", provider="b", model="m", status=503)])
    chain = make_chain(head, down, clock=clock, config=RESTART)
    with pytest.raises(ChainExhaustedError) as info:
        await read_all(chain)
    assert [f.key for f in info.value.failures] == ["a/m", "b/m", "b/m"]


async def test_restart_in_a_one_target_chain_raises_the_original_error(
    clock: ManualClock,
) -> None:
    error = cut("a/m")
    chain = make_chain(
        ScriptedModel("a/m", [broken("a/m", error, TextDelta("x"))]), clock=clock, config=RESTART
    )
    with pytest.raises(StreamTruncatedError) as info:
        await read_all(chain)
    assert info.value is error


async def test_restart_does_not_fail_over_a_permanent_error(clock: ManualClock) -> None:
    error = AuthenticationError("key revoked", provider="a", model="m", status=401)
    tail = ScriptedModel("b/m", [answer("b/m", "never")])
    chain = make_chain(
        ScriptedModel("a/m", [broken("a/m", error, TextDelta("x"))]),
        tail,
        clock=clock,
        config=RESTART,
    )
    with pytest.raises(AuthenticationError):
        await read_all(chain)
    assert tail.calls == 0


async def test_restart_stream_closes_everything_on_early_exit(clock: ManualClock) -> None:
    head = ScriptedModel("a/m", [broken("a/m", cut("a/m"), TextDelta("x"))])
    tail = ScriptedModel("b/m", [[StreamStart("b/m"), TextDelta("y"), HANG]])
    chain = make_chain(head, tail, clock=clock, config=RESTART)
    async with await chain.stream("hi") as stream:
        async for event in stream:
            if event == TextDelta("y"):
                break
    assert stream.closed
    assert head.closed_streams == tail.closed_streams == 1


async def test_cancelling_a_restarted_stream_reports_no_failure(clock: ManualClock) -> None:
    head = ScriptedModel("a/m", [broken("a/m", cut("a/m"), TextDelta("x"))])
    tail = ScriptedModel("b/m", [[StreamStart("b/m"), TextDelta("y"), HANG]])
    tracker = HealthTracker(HealthConfig(), clock=clock)
    chain = make_chain(head, tail, clock=clock, config=RESTART, tracker=tracker)
    reached = anyio.Event()

    async def consume() -> None:
        async with await chain.stream("hi") as stream:
            async for event in stream:
                if event == TextDelta("y"):
                    reached.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(consume)
        await reached.wait()
        tg.cancel_scope.cancel()
    snapshot = await tracker.snapshot()
    assert "b/m" not in snapshot
    assert snapshot["a/m"].consecutive_failures == 1
    assert tail.closed_streams == 1


async def test_closing_an_unread_restartable_stream_releases_it(clock: ManualClock) -> None:
    head = ScriptedModel("a/m", [answer("a/m", "unread")])
    chain = make_chain(head, ScriptedModel("b/m"), clock=clock, config=RESTART)
    stream = await chain.stream("hi")
    await stream.aclose()
    assert head.closed_streams == 1


async def test_a_restart_is_logged_and_a_bench_announced(
    clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    health = HealthConfig(failure_threshold=1)
    head = ScriptedModel("a/m", [broken("a/m", cut("a/m"), TextDelta("x"))])
    tail = ScriptedModel("b/m", [answer("b/m", "ok")])
    tracker = HealthTracker(health, clock=clock)
    chain = make_chain(head, tail, clock=clock, config=RESTART, tracker=tracker)
    with caplog.at_level(logging.INFO, logger="majordomo_async"):
        await read_all(chain)
    messages = [record.getMessage() for record in caplog.records]
    assert any(m.startswith("a/m attempt 1 failed") for m in messages), messages
    assert any(m.startswith("a/m benched until") for m in messages), messages


async def test_default_mode_still_reports_a_mid_stream_failure_to_health(
    clock: ManualClock,
) -> None:
    """A target that always cuts its streams after content gets benched all the same."""
    tracker = HealthTracker(HealthConfig(failure_threshold=2), clock=clock)
    head = ScriptedModel("a/m", [broken("a/m", cut("a/m"), TextDelta("x"))])
    tail = ScriptedModel("b/m", [answer("b/m", "ok")])
    chain = make_chain(head, tail, clock=clock, tracker=tracker)
    for _ in range(2):
        with pytest.raises(StreamTruncatedError):
            await read_all(chain)
    assert (await tracker.snapshot())["a/m"].state == "benched"
    _, stream = await read_all(chain)
    assert stream.response.model == "b/m"
    assert head.calls == 2


async def test_default_mode_ignores_a_permanent_mid_stream_failure_for_health(
    clock: ManualClock,
) -> None:
    tracker = HealthTracker(HealthConfig(failure_threshold=1), clock=clock)
    error = AuthenticationError("revoked", provider="a", model="m", status=401)
    head = ScriptedModel("a/m", [broken("a/m", error, TextDelta("x"))])
    chain = make_chain(head, clock=clock, tracker=tracker)
    with pytest.raises(AuthenticationError):
        await read_all(chain)
    assert await tracker.snapshot() == {}


async def test_a_probe_stream_recovers_only_when_it_finishes(clock: ManualClock) -> None:
    tracker = HealthTracker(HealthConfig(failure_threshold=1), clock=clock)
    head = ScriptedModel(
        "a/m",
        [OverloadedError("down", provider="a", model="m", status=503), answer("a/m", "back")],
    )
    chain = make_chain(
        head, ScriptedModel("b/m", [answer("b/m", "ok")]), clock=clock, tracker=tracker
    )
    await read_all(chain)  # the head fails and is benched; b answers
    clock.advance(1)
    # The probe stream is abandoned after its first event: no verdict, slot given back.
    async with await chain.stream("hi") as stream:
        assert stream.model == "a/m"
    assert (await tracker.snapshot())["a/m"].state == "half-open"
    # The next caller may probe at once, and reading to the end recovers the target.
    _, stream = await read_all(chain)
    assert stream.response.model == "a/m"
    assert await tracker.snapshot() == {}
