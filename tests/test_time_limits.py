"""Time limits against real misbehaving servers, with the defaults and with the preset.

Every scenario runs a two-target chain (`head`, then `backup`, each its own OpenAI-
compatible fault server on 127.0.0.1) through the library exactly as a user would: a
`Registry` with the default `ChainConfig()` or `ChainConfig.interactive()`, a stream read
to its end (or a generate), and the real clock, because the limits under test are the
transport's own socket timers. Nothing here shortens a limit: a silent head costs the
real 15 s headers limit, a head that stalls costs the real idle limit.

So that the suite costs the longest scenario (about 30 s) rather than their sum, every
scenario runs concurrently once, in one event loop (`outcomes`), and each test asserts
one row: the outcome, the requests each server saw, and the elapsed time against the
limit that should have ended it. Elapsed-time checks have a floor at the limit (minus a
small margin for clock granularity) and a generous ceiling (a loaded CI machine).

Set `MAJORDOMO_SCENARIO_TABLE=path` to write the table of outcomes as Markdown.

The scenario of a provider that is down for a minute runs on the manual clock instead
(its faults are instant connection resets, so only the chain's clock matters), and the
no-network repro of the issue (the fake provider) too.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Final, Literal

import attrs
import pytest

from majordomo_async import (
    ChainConfig,
    ManualClock,
    ProviderTimeoutError,
    Registry,
    Request,
    StreamRestart,
    TextDelta,
)

from .helpers.fault_server import (
    Behaviour,
    FaultServer,
    answer,
    cut_without_finish,
    fault_server,
    headers_then_silence,
    no_done,
    rate_limited,
    silent,
    slow_first_token,
    stall_after,
)
from .helpers.servers import acquired_connections

pytestmark = pytest.mark.timeout(240)

Variant = Literal["defaults", "preset"]
CONFIGS: Final[dict[Variant, ChainConfig]] = {
    "defaults": ChainConfig(),
    "preset": ChainConfig.interactive(),
}
HEAD_TEXT: Final = "the head answers in full"
BACKUP_TEXT: Final = "the backup answers in full"
SPEC: Final = "head/gpt-4o-mini,backup/gpt-4o-mini"
ONE_TARGET: Final = "head/gpt-4o-mini"

# The limits the defaults and the preset promise (seconds), asserted against below.
HEADERS: Final = 15.0  # Timeouts.headers of a hosted or generic endpoint
FIRST_TOKEN: Final = 30.0  # Timeouts.first_token, defaults
PRESET_FIRST_TOKEN: Final = 10.0  # ChainConfig.interactive().first_token_timeout
IDLE: Final = 30.0  # Timeouts.idle
PRESET_IDLE: Final = 20.0  # ChainConfig.interactive().idle_timeout
EARLY: Final = 0.05
"""A limit never fires this much before its time (clock granularity)."""
LATE: Final = 4.0
"""Nor this much after it, however loaded the machine."""


@attrs.frozen
class Outcome:
    """What one scenario did."""

    result: str
    """"answer", or the error's class name."""
    answered_by: str | None
    text: str
    restarts: int
    head: int
    """Requests the head's server received."""
    backup: int
    elapsed: float
    limit: str | None = None
    """`ProviderTimeoutError.limit`, when that is the result."""
    held: int = 0
    """Connections still checked out of the pool once the call ended (a leak if not 0)."""


Call = Callable[[Registry], Awaitable[tuple[str, str | None, str, int, str | None]]]


def streamed(spec: str = SPEC, request: Request | str = "Tell me") -> Call:
    """Read a whole stream of `spec`: (result, answering key, text, restarts, limit)."""

    async def call(registry: Registry) -> tuple[str, str | None, str, int, str | None]:
        text: list[str] = []
        restarts = 0
        try:
            async with await registry.parse(spec).stream(request) as stream:
                async for event in stream:
                    if isinstance(event, StreamRestart):
                        restarts += 1
                        text.clear()
                    elif isinstance(event, TextDelta):
                        text.append(event.text)
        except Exception as exc:
            limit = exc.limit if isinstance(exc, ProviderTimeoutError) else None
            return type(exc).__name__, None, "".join(text), restarts, limit
        assert "".join(text) == stream.response.text
        return "answer", stream.response.model, "".join(text), restarts, None

    return call


def generated(spec: str = SPEC) -> Call:
    """One generate of `spec`."""

    async def call(registry: Registry) -> tuple[str, str | None, str, int, str | None]:
        try:
            response = await registry.parse(spec).generate("Tell me")
        except Exception as exc:
            limit = exc.limit if isinstance(exc, ProviderTimeoutError) else None
            return type(exc).__name__, None, "", 0, limit
        return "answer", response.model, response.text, 0, None

    return call


@attrs.frozen
class Scenario:
    name: str
    head: Behaviour
    call: Call = attrs.field(factory=streamed)
    query: str = ""
    """DSN query of the head (only where a scenario needs a provider limit changed)."""


SCENARIOS: Final = (
    Scenario("silent after accept", silent()),
    Scenario("headers, then no first token", headers_then_silence()),
    Scenario("first token after 12 s", slow_first_token(12.0, text=HEAD_TEXT)),
    Scenario("stall after 2 events, then close", stall_after(2, "close", text=HEAD_TEXT)),
    Scenario("stall after 2 events, never close", stall_after(2, "hang", text=HEAD_TEXT)),
    Scenario("finish and clean end, no [DONE]", no_done(text=HEAD_TEXT)),
    Scenario("cut without a finish reason", cut_without_finish(2, text=HEAD_TEXT)),
    Scenario("429 retry-after 3 s, one target", rate_limited(3), streamed(ONE_TARGET)),
    Scenario("429 retry-after 3 s, two targets", rate_limited(3)),
    Scenario(
        "deadline 2 s runs out mid-stream",
        answer(" ".join(["word"] * 40), chunk_delay=0.25),
        streamed(request=Request("Tell me", timeout=2.0)),
    ),
    Scenario("silent generate (generate limit 3 s)", silent(), generated(), "?generate=3"),
)


async def run(scenario: Scenario, variant: Variant) -> Outcome:
    """`scenario` with `variant`'s chain config, on two fresh fault servers."""
    async with AsyncExitStack() as stack:
        head = await stack.enter_async_context(fault_server(answer(HEAD_TEXT)))
        backup = await stack.enter_async_context(fault_server(answer(BACKUP_TEXT)))
        head.script(scenario.head)
        env = {"LLM_HEAD": head.dsn + scenario.query, "LLM_BACKUP": backup.dsn}
        registry = await stack.enter_async_context(Registry(env=env, chain=CONFIGS[variant]))
        started = time.monotonic()
        result, model, text, restarts, limit = await scenario.call(registry)
        elapsed = time.monotonic() - started
        held = acquired_connections(registry._http.get())
        return Outcome(
            result, model, text, restarts, head.count, backup.count, elapsed, limit, held
        )


@pytest.fixture(scope="module")
def outcomes() -> dict[tuple[str, Variant], Outcome]:
    """Every scenario with both variants, run concurrently in one event loop."""

    async def everything() -> dict[tuple[str, Variant], Outcome]:
        keys = [(s, v) for s in SCENARIOS for v in CONFIGS]
        results = await asyncio.gather(*(run(s, v) for s, v in keys))
        return {(s.name, v): outcome for (s, v), outcome in zip(keys, results, strict=True)}

    results = asyncio.run(everything())
    if path := os.environ.get("MAJORDOMO_SCENARIO_TABLE"):
        with open(path, "w", encoding="utf-8") as file:
            file.write(table(results))
    return results


def table(results: dict[tuple[str, Variant], Outcome]) -> str:
    """The outcomes as a Markdown table (scenario x variant)."""
    lines = [
        "| scenario | config | outcome | answered by | restarts | head / backup requests "
        "| elapsed |",
        "|---|---|---|---|---|---|---|",
    ]
    for (name, variant), o in results.items():
        result = f"{o.result} ({o.limit})" if o.limit else o.result
        lines.append(
            f"| {name} | {variant} | {result} | {o.answered_by or '-'} | {o.restarts} "
            f"| {o.head} / {o.backup} | {o.elapsed:.2f} s |"
        )
    return "\n".join(lines) + "\n"


def within(elapsed: float, limit: float) -> bool:
    return limit - EARLY <= elapsed <= limit + LATE


def answered(outcome: Outcome, key: str, text: str) -> None:
    assert (outcome.result, outcome.answered_by, outcome.text) == ("answer", key, text)


def test_no_scenario_leaves_a_connection_checked_out(
    outcomes: dict[tuple[str, Variant], Outcome],
) -> None:
    """Whatever ended a call (a limit, a cut, a restart, the deadline), its connections
    went back to the pool or were closed."""
    assert {key: o.held for key, o in outcomes.items() if o.held} == {}


HEAD, BACKUP = "head/gpt-4o-mini", "backup/gpt-4o-mini"


# --------------------------------------------------------------------------- scenarios


@pytest.mark.parametrize("variant", ["defaults", "preset"])
def test_a_silent_head_costs_one_header_limit_then_the_backup_answers(
    outcomes: dict[tuple[str, Variant], Outcome], variant: Variant
) -> None:
    """Accepts and never sends headers: the backup answers after the headers limit
    (15 s; the preset's 10 s first-token limit is shorter), and the timed-out head is
    not retried."""
    outcome = outcomes["silent after accept", variant]
    answered(outcome, BACKUP, BACKUP_TEXT)
    assert (outcome.head, outcome.backup) == (1, 1)
    assert within(outcome.elapsed, HEADERS if variant == "defaults" else PRESET_FIRST_TOKEN)


@pytest.mark.parametrize("variant", ["defaults", "preset"])
def test_headers_then_no_first_token_fails_over_at_the_first_token_limit(
    outcomes: dict[tuple[str, Variant], Outcome], variant: Variant
) -> None:
    outcome = outcomes["headers, then no first token", variant]
    answered(outcome, BACKUP, BACKUP_TEXT)
    assert (outcome.head, outcome.backup) == (1, 1)
    assert within(outcome.elapsed, FIRST_TOKEN if variant == "defaults" else PRESET_FIRST_TOKEN)


def test_a_first_token_within_the_default_limit_is_waited_for(
    outcomes: dict[tuple[str, Variant], Outcome],
) -> None:
    """12 s to the first token: within the default 30 s, so the head answers."""
    outcome = outcomes["first token after 12 s", "defaults"]
    answered(outcome, HEAD, HEAD_TEXT)
    assert (outcome.head, outcome.backup) == (1, 0)
    assert within(outcome.elapsed, 12.0)


def test_a_first_token_slower_than_the_preset_limit_fails_over(
    outcomes: dict[tuple[str, Variant], Outcome],
) -> None:
    """12 s to the first token: over the preset's 10 s, so the backup answers at 10 s."""
    outcome = outcomes["first token after 12 s", "preset"]
    answered(outcome, BACKUP, BACKUP_TEXT)
    assert (outcome.head, outcome.backup) == (1, 1)
    assert within(outcome.elapsed, PRESET_FIRST_TOKEN)


def test_a_stream_cut_mid_answer_raises_by_default_and_restarts_with_the_preset(
    outcomes: dict[tuple[str, Variant], Outcome],
) -> None:
    default = outcomes["stall after 2 events, then close", "defaults"]
    assert default.result == "StreamTruncatedError"
    assert default.text == "the head"  # what was delivered before the cut
    assert (default.head, default.backup) == (1, 0)
    assert default.elapsed < LATE
    preset = outcomes["stall after 2 events, then close", "preset"]
    answered(preset, BACKUP, BACKUP_TEXT)
    assert (preset.restarts, preset.head, preset.backup) == (1, 1, 1)
    assert preset.elapsed < LATE


def test_a_stream_that_stalls_for_good_ends_at_the_idle_limit(
    outcomes: dict[tuple[str, Variant], Outcome],
) -> None:
    """Defaults: the provider's 30 s idle limit raises to the consumer. The preset: its
    20 s idle limit restarts the answer on the backup, which completes it."""
    default = outcomes["stall after 2 events, never close", "defaults"]
    assert (default.result, default.limit) == ("ProviderTimeoutError", "idle")
    assert (default.head, default.backup) == (1, 0)
    assert within(default.elapsed, IDLE)
    preset = outcomes["stall after 2 events, never close", "preset"]
    answered(preset, BACKUP, BACKUP_TEXT)
    assert (preset.restarts, preset.head, preset.backup) == (1, 1, 1)
    assert within(preset.elapsed, PRESET_IDLE)


@pytest.mark.parametrize("variant", ["defaults", "preset"])
def test_a_finished_stream_without_done_is_finished(
    outcomes: dict[tuple[str, Variant], Outcome], variant: Variant
) -> None:
    """finish_reason, usage and a clean end: a complete answer, no replay, no backup."""
    outcome = outcomes["finish and clean end, no [DONE]", variant]
    answered(outcome, HEAD, HEAD_TEXT)
    assert (outcome.restarts, outcome.head, outcome.backup) == (0, 1, 0)
    assert outcome.elapsed < LATE


def test_a_body_cut_without_a_finish_reason_is_truncated(
    outcomes: dict[tuple[str, Variant], Outcome],
) -> None:
    default = outcomes["cut without a finish reason", "defaults"]
    assert (default.result, default.text) == ("StreamTruncatedError", "the head")
    assert (default.head, default.backup) == (1, 0)
    preset = outcomes["cut without a finish reason", "preset"]
    answered(preset, BACKUP, BACKUP_TEXT)
    assert (preset.restarts, preset.head, preset.backup) == (1, 1, 1)


@pytest.mark.parametrize("variant", ["defaults", "preset"])
def test_a_one_target_chain_waits_out_retry_after(
    outcomes: dict[tuple[str, Variant], Outcome], variant: Variant
) -> None:
    """Nowhere to fail over: the head is retried after its 3 s Retry-After (the preset's
    1 s max_retry_wait does not apply to the last resort)."""
    outcome = outcomes["429 retry-after 3 s, one target", variant]
    answered(outcome, HEAD, HEAD_TEXT)
    assert (outcome.head, outcome.backup) == (2, 0)
    assert within(outcome.elapsed, 3.0)


def test_retry_after_3_s_is_waited_for_by_default_and_failed_over_by_the_preset(
    outcomes: dict[tuple[str, Variant], Outcome],
) -> None:
    default = outcomes["429 retry-after 3 s, two targets", "defaults"]
    answered(default, HEAD, HEAD_TEXT)  # 3 s is within the default 5 s max_retry_wait
    assert (default.head, default.backup) == (2, 0)
    assert within(default.elapsed, 3.0)
    preset = outcomes["429 retry-after 3 s, two targets", "preset"]
    answered(preset, BACKUP, BACKUP_TEXT)  # a person should not wait: the backup, at once
    assert (preset.head, preset.backup) == (1, 1)
    assert preset.elapsed < 1.0 + LATE


@pytest.mark.parametrize("variant", ["defaults", "preset"])
def test_the_call_deadline_holds_on_an_established_stream(
    outcomes: dict[tuple[str, Variant], Outcome], variant: Variant
) -> None:
    """A 2 s deadline, a stream that needs 10 s: ProviderTimeoutError(limit="deadline")
    at 2 s, in plain and restart mode alike, and no restart on the backup."""
    outcome = outcomes["deadline 2 s runs out mid-stream", variant]
    assert (outcome.result, outcome.limit) == ("ProviderTimeoutError", "deadline")
    assert outcome.text.startswith("word")
    assert (outcome.restarts, outcome.head, outcome.backup) == (0, 1, 0)
    assert within(outcome.elapsed, 2.0)


@pytest.mark.parametrize("variant", ["defaults", "preset"])
def test_a_silent_generate_costs_its_generate_limit_once(
    outcomes: dict[tuple[str, Variant], Outcome], variant: Variant
) -> None:
    """A generate's headers come with its answer, so its limit is the long `generate`
    (600 s by default: here the head's DSN sets 3 s); then the backup, no retry."""
    outcome = outcomes["silent generate (generate limit 3 s)", variant]
    answered(outcome, BACKUP, BACKUP_TEXT)
    assert (outcome.head, outcome.backup) == (1, 1)
    assert within(outcome.elapsed, 3.0)


# --------------------------------------------------------------------------- on the manual clock


@asynccontextmanager
async def servers() -> AsyncIterator[tuple[FaultServer, FaultServer]]:
    async with (
        fault_server(answer(HEAD_TEXT)) as head,
        fault_server(answer(BACKUP_TEXT)) as backup,
    ):
        yield head, backup


@pytest.mark.parametrize("variant", ["defaults", "preset"])
async def test_a_head_down_for_a_minute_is_back_in_use_within_30_s_of_recovery(
    variant: Variant,
) -> None:
    """Calls every 3 s; the head resets every connection for 60 s. Every call is
    answered in full (by the backup while the head is down), the head costs a few probes
    while it is down, and within 30 s of its recovery the head answers again."""
    clock = ManualClock()
    async with servers() as (head, backup):
        env = {"LLM_HEAD": head.dsn, "LLM_BACKUP": backup.dsn}
        async with Registry(env=env, chain=CONFIGS[variant], clock=clock) as registry:
            model = registry.parse(SPEC)
            answers: list[tuple[float, str]] = []

            async def call() -> None:
                async with await model.stream("Tell me") as stream:
                    response = await stream.collect()
                assert response.text in (HEAD_TEXT, BACKUP_TEXT)
                answers.append((clock.now(), response.model))
                clock.advance(3.0)

            for _ in range(3):
                await call()
            head.down()
            down_at, requests_before = clock.now(), head.count
            while clock.now() < down_at + 60:
                await call()
            head.up()
            up_at, probes = clock.now(), head.count - requests_before
            while clock.now() < up_at + 45:
                await call()
    assert all(model == HEAD for at, model in answers if at < down_at)
    assert all(model == BACKUP for at, model in answers if down_at <= at < up_at)
    # 20 calls while down; the bench (1, 2, 4, 8, 16, 20 s) lets through a handful of
    # probes, each tried once (a reset is retried once before the first bench).
    assert 3 <= probes <= 10
    back = min(at for at, model in answers if at >= up_at and model == HEAD)
    assert back - up_at <= 30
    assert all(model == HEAD for at, model in answers if at >= back)


async def test_the_deadline_bounds_a_slow_fake_stream() -> None:
    """The issue's repro, no network: five words 1.5 s apart with a 2 s deadline used
    to finish at 6 s. Now: ProviderTimeoutError(limit="deadline") at 2 s."""
    clock = ManualClock()
    async with Registry(env={}, clock=clock) as registry:
        model = registry.parse("fake/slow?reply=one two three four five&chunk_delay=1.5")
        text: list[str] = []
        with pytest.raises(ProviderTimeoutError) as info:
            async with await model.stream(Request("hi", timeout=2.0)) as stream:
                async for event in stream:
                    if isinstance(event, TextDelta):
                        text.append(event.text)
        assert info.value.limit == "deadline"
        # The manual clock jumps a whole chunk delay: the third word was due at 3 s.
        assert clock.now() == pytest.approx(3.0)
        assert "".join(text).split() == ["one", "two"]
        assert await registry.health.snapshot() == {}  # the caller's budget: no penalty
