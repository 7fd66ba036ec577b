"""The chain's time limits on the manual clock: the first-token limit, the idle limit
between events, the call's deadline over an established stream, and waiting out a long
Retry-After on the last resort. (`test_time_limits.py` runs the same faults against
real servers with the real defaults.)"""

from __future__ import annotations

import math
import pickle
from typing import Any

import pytest

from majordomo_async import (
    Capabilities,
    ChainConfig,
    ChainExhaustedError,
    ConfigurationError,
    HealthConfig,
    HealthTracker,
    ManualClock,
    ProviderTimeoutError,
    RateLimitError,
    Request,
    StreamEnd,
    StreamRestart,
    StreamStart,
    Target,
    TextDelta,
    first_token_timeout,
    reasoning,
)
from majordomo_async._capabilities import builtin_capabilities
from majordomo_async._http import HOSTED_TIMEOUTS, ON_DEMAND_TIMEOUTS, Timeouts

from .helpers.scripted import HANG, ScriptedModel, Sleep, error, make_chain

REASONING = Capabilities(reasoning=True, reasons_by_default=True)
CAN_REASON = Capabilities(reasoning=True)


def events(*texts: str, pause: float = 0.0) -> list[Any]:
    """A stream of `texts`, with `pause` seconds on the clock before each."""
    body: list[Any] = [StreamStart(model="p/m")]
    for text in texts:
        if pause:
            body.append(Sleep(pause))
        body.append(TextDelta(text))
    return [*body, StreamEnd()]


async def read(stream: Any) -> tuple[list[str], list[StreamRestart]]:
    texts: list[str] = []
    restarts: list[StreamRestart] = []
    async with stream:
        async for event in stream:
            if isinstance(event, TextDelta):
                texts.append(event.text)
            elif isinstance(event, StreamRestart):
                restarts.append(event)
    return texts, restarts


# --------------------------------------------------------------------------- first token


async def test_a_stream_without_content_in_30_s_fails_over_by_default(
    clock: ManualClock,
) -> None:
    """The default first-token limit of a model without provider timeouts is the hosted
    one, 30 s: a head thinking 40 s is left for the backup, once, and counted."""
    head = ScriptedModel("p/head", [[StreamStart(model="p/head"), Sleep(40), "never"]], clock=clock)
    backup = ScriptedModel("p/backup", ["backup"], clock=clock)
    chain = make_chain(head, backup, clock=clock)
    stream = await chain.stream("hi")
    assert clock.now() == pytest.approx(40.0)  # the manual clock jumps the whole sleep
    texts, _ = await read(stream)
    assert texts == ["backup"]
    assert head.calls == 1  # a timeout is not retried on its target
    failure = stream.failed_attempts[0]
    assert isinstance(failure.error, ProviderTimeoutError)
    assert failure.error.limit == "first_token"
    assert "30 s" in str(failure.error)
    assert (await chain._tracker.snapshot())["p/head"].consecutive_failures == 1


async def test_a_reasoning_model_gets_the_longer_first_token_limit(clock: ManualClock) -> None:
    head = ScriptedModel(
        "p/head", [events("thought it through", pause=120)], clock=clock, capabilities=REASONING
    )
    chain = make_chain(head, ScriptedModel("p/backup", ["backup"]), clock=clock)
    texts, _ = await read(await chain.stream("hi"))
    assert texts == ["thought it through"]  # 120 s < 300 s


async def test_the_chain_and_the_request_set_the_first_token_limit(clock: ManualClock) -> None:
    def chain(config: ChainConfig) -> Any:
        head = ScriptedModel("p/head", [events("late", pause=8)], clock=clock)
        return make_chain(head, ScriptedModel("p/backup", ["backup"]), clock=clock, config=config)

    texts, _ = await read(await chain(ChainConfig(first_token_timeout=5)).stream("hi"))
    assert texts == ["backup"]
    texts, _ = await read(await chain(ChainConfig(first_token_timeout=None)).stream("hi"))
    assert texts == ["late"]
    # The request's own limit wins over the chain's, both ways.
    loose = chain(ChainConfig(first_token_timeout=5))
    texts, _ = await read(await loose.stream("hi", first_token_timeout(10)))
    assert texts == ["late"]
    strict = chain(ChainConfig())
    texts, _ = await read(await strict.stream(Request("hi", first_token_timeout=5)))
    assert texts == ["backup"]
    unlimited = chain(ChainConfig(first_token_timeout=5))
    texts, _ = await read(await unlimited.stream("hi", first_token_timeout(math.inf)))
    assert texts == ["late"]


async def test_a_generate_has_no_first_token_limit_unless_the_request_sets_one(
    clock: ManualClock,
) -> None:
    """A generate's first content is its whole answer: the chain's stream limit does not
    cut it; a request's own limit does."""
    config = ChainConfig.interactive()  # first_token_timeout=10
    head = ScriptedModel("p/head", [Sleep(60, "slow but whole")], clock=clock)
    backup = ScriptedModel("p/backup", ["backup"], clock=clock)
    chain = make_chain(head, backup, clock=clock, config=config)
    assert (await chain.generate("hi")).text == "slow but whole"
    response = await chain.generate(Request("hi", first_token_timeout=20))
    assert response.text == "backup"
    assert response.failed_attempts[0].error.limit == "first_token"  # type: ignore[union-attr]


def test_the_first_token_limit_comes_from_the_targets_provider() -> None:
    config = ChainConfig()

    class Local(ScriptedModel):
        timeouts = ON_DEMAND_TIMEOUTS

    plain = Target("p/m", ScriptedModel("p/m"))
    assert plain.first_token_limit(config, None, streaming=True) == HOSTED_TIMEOUTS.first_token
    thinker = Target("p/m", ScriptedModel("p/m", capabilities=REASONING))
    assert thinker.first_token_limit(config, None, streaming=True) == 300.0
    local = Target("o/m", Local("o/m"))
    assert local.first_token_limit(config, None, streaming=True) == 600.0
    assert local.first_token_limit(config, None, streaming=False) is None
    assert local.first_token_limit(config, 7.0, streaming=False) == 7.0
    override = ChainConfig(first_token_timeout=12, reasoning_first_token_timeout=None)
    assert local.first_token_limit(override, None, streaming=True) == 12
    assert thinker.first_token_limit(override, None, streaming=True) is None


@pytest.mark.parametrize(
    ("model", "can", "by_default"),
    [
        ("gpt-4o-mini", False, False),
        ("o3-mini", True, True),
        ("gpt-5", True, True),
        ("gpt-5-chat-latest", False, False),
        ("gemini-2.5-pro", True, True),
        ("gemini-2.5-flash-lite", True, False),  # thinks only when asked to
        ("gemini-2.0-flash", False, False),
        ("deepseek-reasoner", True, True),
        ("deepseek-r1:14b", True, True),
        ("claude-sonnet-4-5", True, False),  # extended thinking, when asked
        ("claude-3-5-sonnet-latest", False, False),
    ],
)
def test_the_capability_table_knows_which_models_reason(
    model: str, can: bool, by_default: bool
) -> None:
    capabilities = builtin_capabilities("openai", model)
    assert (capabilities.reasoning, capabilities.reasons_by_default) == (can, by_default)


async def test_asking_a_model_to_reason_gives_it_the_longer_first_token_limit(
    clock: ManualClock,
) -> None:
    """Claude thinks only when asked: asked, it gets the reasoning limit (300 s)."""
    head = ScriptedModel(
        "p/head", [events("thought", pause=120)], clock=clock, capabilities=CAN_REASON
    )
    chain = make_chain(head, ScriptedModel("p/backup", ["backup"]), clock=clock)
    texts, _ = await read(await chain.stream("hi"))
    assert texts == ["backup"]  # not asked: 30 s
    head.calls = 0
    texts, _ = await read(await chain.stream("hi", reasoning("high")))
    assert texts == ["thought"]
    texts, _ = await read(await chain.stream("hi", reasoning("none")))
    assert texts == ["backup"]  # asked not to: the plain limit


@pytest.mark.parametrize(
    "bad", [0, -1, "soon", True, math.nan], ids=["zero", "negative", "word", "bool", "nan"]
)
def test_first_token_settings_are_validated(bad: object) -> None:
    with pytest.raises(ConfigurationError, match="first_token_timeout"):
        ChainConfig(first_token_timeout=bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="idle_timeout"):
        ChainConfig(idle_timeout=-1)
    assert ChainConfig(first_token_timeout=None).first_token_timeout is None


def test_the_interactive_preset() -> None:
    preset = ChainConfig.interactive()
    assert preset.mid_stream == "restart"
    assert (preset.first_token_timeout, preset.reasoning_first_token_timeout) == (10.0, 120.0)
    assert (preset.idle_timeout, preset.max_retry_wait, preset.timeout) == (20.0, 1.0, 300.0)
    assert ChainConfig.interactive(timeout=60).timeout == 60
    assert ChainConfig().max_retry_wait == 5.0  # margin above the common Retry-After: 2


# --------------------------------------------------------------------------- idle


async def test_an_established_stream_silent_past_idle_timeout_fails(clock: ManualClock) -> None:
    head = ScriptedModel("p/head", [[*events("one")[:-1], Sleep(25), HANG]], clock=clock)
    chain = make_chain(
        head,
        ScriptedModel("p/backup", ["backup"]),
        clock=clock,
        config=ChainConfig(idle_timeout=20),
    )
    stream = await chain.stream("hi")
    texts: list[str] = []
    with pytest.raises(ProviderTimeoutError) as info:
        async with stream:
            async for event in stream:
                if isinstance(event, TextDelta):
                    texts.append(event.text)
    assert texts == ["one"]
    assert clock.now() == pytest.approx(25.0)  # the 25 s pause ran past the 20 s limit
    assert info.value.limit == "idle"
    assert head.closed_streams == 1
    # The target's silence is its own: counted.
    assert (await chain._tracker.snapshot())["p/head"].consecutive_failures == 1


async def test_an_idle_stream_restarts_on_the_next_target(clock: ManualClock) -> None:
    head = ScriptedModel(
        "p/head", [[*events("one")[:-1], Sleep(25), TextDelta("late")]], clock=clock
    )
    backup = ScriptedModel("p/backup", ["backup"], clock=clock)
    config = ChainConfig(idle_timeout=20, mid_stream="restart")
    chain = make_chain(head, backup, clock=clock, config=config)
    texts, restarts = await read(await chain.stream("hi"))
    assert texts == ["one", "backup"]
    assert [r.failed for r in restarts] == ["p/head"]
    assert restarts[0].error.limit == "idle"  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- deadline


async def test_the_deadline_ends_an_established_stream_without_blaming_the_target(
    clock: ManualClock,
) -> None:
    head = ScriptedModel("p/head", [events("a", "b", "c", "d", pause=1.5)], clock=clock)
    chain = make_chain(head, ScriptedModel("p/backup", ["backup"]), clock=clock)
    texts: list[str] = []
    with pytest.raises(ProviderTimeoutError) as info:
        stream = await chain.stream(Request("hi", timeout=4.0))
        async with stream:
            async for event in stream:
                if isinstance(event, TextDelta):
                    texts.append(event.text)
    assert info.value.limit == "deadline"
    assert texts == ["a", "b"]  # "c" was due at 4.5 s
    assert head.closed_streams == 1
    assert await chain._tracker.snapshot() == {}


async def test_the_deadline_gives_back_a_probe_it_cut(clock: ManualClock) -> None:
    """A recovery probe cut by the caller's deadline is given back, not failed: the
    next call may probe at once."""
    health = HealthConfig(failure_threshold=1, base_cooldown=1.0)
    tracker = HealthTracker(health, clock=clock)
    slow = [StreamStart(model="p/head"), TextDelta("a"), Sleep(3), TextDelta("b"), StreamEnd()]
    head = ScriptedModel("p/head", [error(RateLimitError), slow, "ok"], clock=clock)
    chain = make_chain(head, ScriptedModel("p/backup", ["backup"]), clock=clock, tracker=tracker)
    await read(await chain.stream("hi"))  # head benched for 1 s, the backup answers
    clock.advance(1)
    with pytest.raises(ProviderTimeoutError):
        await read(await chain.stream(Request("hi", timeout=2.0)))
    assert (await tracker.snapshot())["p/head"].state == "half-open"
    texts, _ = await read(await chain.stream("hi"))
    assert texts == ["ok"]


async def test_the_deadline_in_restart_mode_raises_instead_of_restarting(
    clock: ManualClock,
) -> None:
    head = ScriptedModel("p/head", [events("a", "b", "c", pause=1.5)], clock=clock)
    backup = ScriptedModel("p/backup", ["backup"], clock=clock)
    chain = make_chain(head, backup, clock=clock, config=ChainConfig(mid_stream="restart"))
    with pytest.raises(ProviderTimeoutError) as info:
        await read(await chain.stream(Request("hi", timeout=2.0)))
    assert info.value.limit == "deadline"
    assert backup.calls == 0


async def test_a_restart_that_runs_out_of_time_is_a_deadline_timeout(
    clock: ManualClock,
) -> None:
    """The head breaks at 1 s; restarting on the backup, which needs 5 s to its first
    token, runs into the 3 s deadline: the consumer gets the deadline timeout, with
    every failure in its cause."""
    head = ScriptedModel(
        "p/head",
        [[StreamStart(model="p/head"), TextDelta("a"), Sleep(1), error(RateLimitError)]],
        clock=clock,
    )
    backup = ScriptedModel("p/backup", [events("b", pause=5)], clock=clock)
    chain = make_chain(head, backup, clock=clock, config=ChainConfig(mid_stream="restart"))
    with pytest.raises(ProviderTimeoutError) as info:
        await read(await chain.stream(Request("hi", timeout=3.0)))
    assert info.value.limit == "deadline"
    assert isinstance(info.value.__cause__, ChainExhaustedError)


# --------------------------------------------------------------------------- last resort


async def test_the_last_resort_waits_out_a_long_retry_after(clock: ManualClock) -> None:
    """Retry-After 8 s is over max_retry_wait (5 s): a chain with a healthy backup moves
    on; a chain whose backup is benched waits the 8 s and retries the head."""
    limited = error(RateLimitError, retry_after=8.0)
    head = ScriptedModel("p/head", [limited, "head"], clock=clock)
    backup = ScriptedModel("p/backup", ["backup"], clock=clock)
    chain = make_chain(head, backup, clock=clock)
    assert (await chain.generate("hi")).text == "backup"
    assert clock.sleeps == []

    tracker = HealthTracker(HealthConfig(failure_threshold=2), clock=clock)
    await tracker.report_failure("p/backup")
    await tracker.report_failure("p/backup")  # benched for 1 s
    head = ScriptedModel("p/head", [limited, "head"], clock=clock)
    chain = make_chain(head, backup, clock=clock, tracker=tracker)
    response = await chain.generate("hi")
    assert response.text == "head"
    assert clock.sleeps == [8.0]


async def test_the_last_resort_waits_only_within_the_deadline(clock: ManualClock) -> None:
    limited = error(RateLimitError, retry_after=8.0)
    head = ScriptedModel("p/head", [limited, "head"], clock=clock)
    chain = make_chain(head, clock=clock)
    with pytest.raises(ChainExhaustedError):
        await chain.generate(Request("hi", timeout=6.0))
    assert clock.sleeps == []
    assert (await chain.generate(Request("hi", timeout=9.0))).text == "head"


def test_a_timeout_says_which_limit_ran_out_even_after_pickling() -> None:
    error = ProviderTimeoutError("late", limit="first_token", provider="p", model="m")
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.limit, copy.provider, str(copy)) == ("first_token", "p", str(error))


def test_timeouts_for_reasoning_models() -> None:
    assert Timeouts(first_token=5, reasoning_first_token=50).first_token_for(True) == 50
