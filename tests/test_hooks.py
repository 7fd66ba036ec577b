"""Hooks and logging: every call, attempt, bench and recovery is observable."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

import pytest

from majordomo_async import (
    CallInfo,
    ChainConfig,
    ChainExhaustedError,
    HealthConfig,
    HealthTracker,
    Hooks,
    ManualClock,
    OverloadedError,
    Registry,
    StreamEnd,
    StreamStart,
    TextDelta,
    Usage,
    UsageUpdate,
)
from majordomo_async._chain import Chain, Target
from tests.helpers.scripted import ScriptedModel


class Recorder(Hooks):
    """Records every callback as a tuple."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def call_started(self, call: CallInfo) -> None:
        self.events.append(("call_started", call.targets, call.streaming))

    def attempt_started(self, call: CallInfo, key: str, attempt: int) -> None:
        self.events.append(("attempt_started", key, attempt))

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
        self.events.append(("attempt_finished", key, attempt, type(error).__name__, usage))

    def target_benched(self, key: str, *, until: datetime | None, error: Exception) -> None:
        assert until is not None
        self.events.append(("target_benched", key, type(error).__name__))

    def target_recovered(self, key: str) -> None:
        self.events.append(("target_recovered", key))

    def chain_exhausted(self, call: CallInfo, error: ChainExhaustedError) -> None:
        self.events.append(("chain_exhausted", len(error.failures)))

    def call_finished(
        self,
        call: CallInfo,
        *,
        model: str | None,
        usage: Usage | None,
        error: BaseException | None,
    ) -> None:
        self.events.append(("call_finished", model, usage, type(error).__name__))


def overloaded() -> OverloadedError:
    return OverloadedError("busy", provider="a", model="m", status=503)


def chain_of(*models: ScriptedModel, clock: ManualClock, hooks: list[Hooks]) -> Chain:
    tracker = HealthTracker(HealthConfig(), clock=clock)
    return Chain(
        [Target(model.key, model) for model in models],
        tracker,
        ChainConfig(retry_backoff=0),
        hooks=hooks,
    )


async def test_failover_bench_and_recovery_are_reported_in_order(clock: ManualClock) -> None:
    recorder = Recorder()
    head = ScriptedModel("a/m", [overloaded(), overloaded(), "back"])
    chain = chain_of(head, ScriptedModel("b/m"), clock=clock, hooks=[recorder])

    await chain.generate("hi")
    clock.advance(1)
    await chain.generate("hi")

    usage = Usage(1, 1)
    assert recorder.events == [
        ("call_started", ("a/m", "b/m"), False),
        ("attempt_started", "a/m", 1),
        ("attempt_finished", "a/m", 1, "OverloadedError", None),
        ("attempt_started", "a/m", 2),
        ("attempt_finished", "a/m", 2, "OverloadedError", None),
        ("target_benched", "a/m", "OverloadedError"),
        ("attempt_started", "b/m", 1),
        ("attempt_finished", "b/m", 1, "NoneType", usage),
        ("call_finished", "b/m", usage, "NoneType"),
        ("call_started", ("a/m", "b/m"), False),
        ("attempt_started", "a/m", 1),
        ("attempt_finished", "a/m", 1, "NoneType", usage),
        ("target_recovered", "a/m"),
        ("call_finished", "a/m", usage, "NoneType"),
    ]


async def test_exhausted_call_reports_its_error(clock: ManualClock) -> None:
    recorder = Recorder()
    chain = chain_of(ScriptedModel("a/m", [overloaded()]), clock=clock, hooks=[recorder])
    with pytest.raises(ChainExhaustedError):
        await chain.generate("hi")
    assert recorder.events[-2:] == [
        ("chain_exhausted", 2),
        ("call_finished", None, None, "ChainExhaustedError"),
    ]


async def test_stream_call_finishes_when_the_stream_closes(clock: ManualClock) -> None:
    recorder = Recorder()
    events = [StreamStart("a/m"), TextDelta("x"), UsageUpdate(Usage(3, 4)), StreamEnd()]
    chain = chain_of(ScriptedModel("a/m", [events]), clock=clock, hooks=[recorder])
    async with await chain.stream("hi") as stream:
        assert recorder.events[-1] == ("attempt_finished", "a/m", 1, "NoneType", None)
        await stream.collect()
    assert recorder.events[-1] == ("call_finished", "a/m", Usage(3, 4), "NoneType")
    assert recorder.events[0] == ("call_started", ("a/m",), True)


async def test_stream_cut_short_reports_the_error_at_close(clock: ManualClock) -> None:
    recorder = Recorder()
    events = [StreamStart("a/m"), TextDelta("x")]  # no StreamEnd: truncated
    chain = chain_of(ScriptedModel("a/m", [events]), clock=clock, hooks=[recorder])
    with pytest.raises(Exception, match="terminal event"):
        async with await chain.stream("hi") as stream:
            await stream.collect()
    assert recorder.events[-1] == ("call_finished", "a/m", Usage(), "StreamTruncatedError")


class Broken(Hooks):
    def attempt_started(self, call: CallInfo, key: str, attempt: int) -> None:
        raise RuntimeError("metrics backend down")


async def test_a_failing_hook_never_breaks_a_call(
    clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    recorder = Recorder()
    chain = chain_of(ScriptedModel("a/m"), clock=clock, hooks=[Broken(), recorder])
    with caplog.at_level(logging.ERROR, logger="majordomo_async"):
        response = await chain.generate("hi")
    assert response.text == "ok"
    assert ("attempt_started", "a/m", 1) in recorder.events  # later hooks still run
    [record] = caplog.records
    assert "Broken.attempt_started failed" in record.getMessage()


async def test_registry_hooks_reach_parsed_chains(clock: ManualClock) -> None:
    first, second = Recorder(), Recorder()
    async with Registry(env={}, clock=clock, hooks=[first]) as registry:
        await registry.parse("fake/x").generate("hi")
        registry.add_hooks(second)
        await registry.parse("fake/x").generate("hi")
    assert [e[0] for e in first.events].count("call_finished") == 2
    assert [e[0] for e in second.events].count("call_finished") == 1


async def test_log_records_carry_structured_fields(
    clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    error = OverloadedError("busy", provider="a", model="m", status=503, retry_after=0.5)
    head = ScriptedModel("a/m", [error, error, "back"])
    chain = chain_of(head, ScriptedModel("b/m"), clock=clock, hooks=[])
    with caplog.at_level(logging.DEBUG, logger="majordomo_async"):
        await chain.generate("hi")
        clock.advance(5)
        await chain.generate("hi")
    failed = [
        r for r in caplog.records if "attempt" in r.getMessage() and r.levelno >= logging.INFO
    ]
    assert [r.levelno for r in failed] == [logging.INFO, logging.INFO]
    first = failed[0]
    assert first.majordomo_target == "a/m"  # type: ignore[attr-defined]
    assert first.majordomo_attempt == 1  # type: ignore[attr-defined]
    assert first.majordomo_status == 503  # type: ignore[attr-defined]
    assert first.majordomo_retry_after == 0.5  # type: ignore[attr-defined]
    assert first.majordomo_error_class == "transient"  # type: ignore[attr-defined]
    assert first.majordomo_elapsed == 0.0  # type: ignore[attr-defined]
    [benched] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert benched.getMessage().startswith("a/m benched until ")
    assert any(r.getMessage() == "a/m recovered" for r in caplog.records)


class Unprintable(OverloadedError):
    def __str__(self) -> str:
        raise AssertionError("formatted although logging is off")


async def test_disabled_logging_formats_nothing(
    clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    error = Unprintable("x", provider="a", model="m", status=503)
    chain = chain_of(ScriptedModel("a/m", [error, "ok"]), clock=clock, hooks=[])
    with caplog.at_level(logging.ERROR, logger="majordomo_async"):
        assert (await chain.generate("hi")).text == "ok"
    assert caplog.records == []


def test_library_logger_is_silent_by_default() -> None:
    handlers = logging.getLogger("majordomo_async").handlers
    assert any(isinstance(handler, logging.NullHandler) for handler in handlers)
