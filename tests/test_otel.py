"""OpenTelemetry spans and metrics per call and per attempt, checked with the SDK's
in-memory span exporter and metric reader, on a manual clock."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    HistogramDataPoint,
    InMemoryMetricReader,
    NumberDataPoint,
)
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from majordomo_async import (
    ChainConfig,
    ChainExhaustedError,
    ManualClock,
    OpenTelemetryHooks,
    OverloadedError,
    Registry,
    StreamEnd,
    StreamStart,
    TextDelta,
    Usage,
    UsageUpdate,
    max_tokens,
    temperature,
)
from majordomo_async._chain import Chain, Target
from majordomo_async._health import HealthConfig, HealthTracker
from tests.helpers.scripted import ScriptedModel, error, make_chain

DURATION = "gen_ai.client.operation.duration"
TOKENS = "gen_ai.client.token.usage"
CACHE_READ = "gen_ai.client.inference.usage.cache_read.input_tokens"
CACHE_WRITE = "gen_ai.client.inference.usage.cache_write.input_tokens"
REASONING = "gen_ai.client.inference.usage.reasoning.output_tokens"


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    yield exporter
    exporter.shutdown()


@pytest.fixture
def reader() -> Iterator[InMemoryMetricReader]:
    reader = InMemoryMetricReader()
    yield reader


@pytest.fixture
def meters(reader: InMemoryMetricReader) -> Iterator[MeterProvider]:
    provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    yield provider
    provider.shutdown()


@pytest.fixture
def tracers(exporter: InMemorySpanExporter) -> TracerProvider:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


@pytest.fixture
def hooks(tracers: TracerProvider, meters: MeterProvider, clock: ManualClock) -> OpenTelemetryHooks:
    return OpenTelemetryHooks(tracer_provider=tracers, meter_provider=meters, clock=clock)


def by_name(spans: tuple[ReadableSpan, ...]) -> list[tuple[str, SpanKind]]:
    return [(span.name, span.kind) for span in spans]


def attributes(span: ReadableSpan) -> dict[str, Any]:
    assert span.attributes is not None
    return dict(span.attributes)


def measured(reader: InMemoryMetricReader, name: str) -> list[tuple[dict[str, Any], Any]]:
    """The data points of metric `name`: (attributes, (count, sum)) for a histogram,
    (attributes, value) for a counter."""
    data = reader.get_metrics_data()
    points: list[tuple[dict[str, Any], Any]] = []
    for resource in data.resource_metrics if data is not None else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name != name:
                    continue
                for point in metric.data.data_points:
                    labels = dict(point.attributes or {})
                    if isinstance(point, HistogramDataPoint):
                        points.append((labels, (point.count, point.sum)))
                    else:
                        assert isinstance(point, NumberDataPoint)
                        points.append((labels, point.value))
    return sorted(points, key=lambda point: sorted(point[0].items()))


def operation(provider: str, model: str, **more: Any) -> dict[str, Any]:
    """The attributes every measurement of one operation carries."""
    return {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": provider,
        "gen_ai.request.model": model,
        **more,
    }


# --------------------------------------------------------------------------- spans


async def test_the_call_span_is_named_after_the_target_that_answered(
    clock: ManualClock, hooks: OpenTelemetryHooks, exporter: InMemorySpanExporter
) -> None:
    """After a failover the call span says who answered: its name and response model
    are the backup's; its request model stays the head's (the call asked it first)."""
    head = ScriptedModel("openai/gpt-4o", [error(OverloadedError, status=503)])
    tail = ScriptedModel("anthropic/claude-sonnet-4-5")
    chain = Chain(
        [Target(head.key, head), Target(tail.key, tail)],
        HealthTracker(HealthConfig(), clock=clock),
        ChainConfig(retry_backoff=0, transient_retries=-1),
        hooks=[hooks],
    )
    await chain.generate("hi", temperature(0.3), max_tokens(50))

    spans = exporter.get_finished_spans()
    assert by_name(spans) == [
        ("chat gpt-4o", SpanKind.CLIENT),
        ("chat claude-sonnet-4-5", SpanKind.CLIENT),
        ("chat claude-sonnet-4-5", SpanKind.INTERNAL),
    ]
    failed, answered, call = spans
    assert failed.parent is not None and failed.parent.span_id == call.context.span_id
    assert answered.parent is not None and answered.parent.span_id == call.context.span_id
    assert attributes(failed)["error.type"] == "OverloadedError"
    assert failed.status.status_code is StatusCode.ERROR
    assert attributes(failed)["gen_ai.provider.name"] == "openai"
    assert attributes(answered)["gen_ai.response.model"] == "claude-sonnet-4-5"
    assert attributes(answered)["gen_ai.usage.input_tokens"] == 1
    assert attributes(answered)["gen_ai.request.temperature"] == 0.3
    assert "gen_ai.request.stream" not in attributes(answered)
    assert attributes(call) | {"majordomo.targets": None} == {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.response.model": "claude-sonnet-4-5",
        "gen_ai.provider.name": "anthropic",
        "gen_ai.request.max_tokens": 50,
        "gen_ai.request.temperature": 0.3,
        "gen_ai.usage.input_tokens": 1,
        "gen_ai.usage.output_tokens": 1,
        "majordomo.answered_by": "anthropic/claude-sonnet-4-5",
        "majordomo.streaming": False,
        "majordomo.targets": None,
    }
    assert attributes(call)["majordomo.targets"] == (head.key, tail.key)
    assert call.status.status_code is StatusCode.UNSET


async def test_an_exhausted_call_keeps_the_head_name_and_carries_the_error_type(
    clock: ManualClock, hooks: OpenTelemetryHooks, exporter: InMemorySpanExporter
) -> None:
    async with Registry(env={}, clock=clock, hooks=[hooks]) as registry:
        with pytest.raises(ChainExhaustedError):
            await registry.parse("fake/x?script=503").generate("hi")
    call = exporter.get_finished_spans()[-1]
    assert (call.name, call.kind) == ("chat x?script=503", SpanKind.INTERNAL)
    assert attributes(call)["error.type"] == "ChainExhaustedError"
    assert "gen_ai.response.model" not in attributes(call)


async def test_stream_call_span_ends_with_the_stream_and_its_usage(
    clock: ManualClock, hooks: OpenTelemetryHooks, exporter: InMemorySpanExporter
) -> None:
    usage = Usage(5, 6, cached_input_tokens=3, cache_write_tokens=1, reasoning_tokens=2)
    events = [StreamStart("p/m"), TextDelta("x"), UsageUpdate(usage), StreamEnd()]
    model = ScriptedModel("p/m", [events])
    chain = make_chain(model, clock=clock, hooks=[hooks])
    async with await chain.stream("hi") as stream:
        assert by_name(exporter.get_finished_spans()) == [("chat m", SpanKind.CLIENT)]
        await stream.collect()
    attempt, call = exporter.get_finished_spans()
    assert attributes(attempt)["gen_ai.request.stream"] is True
    assert attributes(call)["gen_ai.request.stream"] is True
    assert attributes(call)["majordomo.streaming"] is True
    assert {name: value for name, value in attributes(call).items() if "usage" in name} == {
        "gen_ai.usage.input_tokens": 5,
        "gen_ai.usage.output_tokens": 6,
        "gen_ai.usage.cache_read.input_tokens": 3,
        "gen_ai.usage.cache_creation.input_tokens": 1,
        "gen_ai.usage.reasoning.output_tokens": 2,
    }


async def test_a_dropped_stream_ends_its_call_span(
    clock: ManualClock, hooks: OpenTelemetryHooks, exporter: InMemorySpanExporter
) -> None:
    """A stream garbage-collected unclosed still ends the call's span, as an error."""
    model = ScriptedModel("p/m", [[StreamStart("p/m"), TextDelta("x"), StreamEnd()]])
    chain = make_chain(model, clock=clock, hooks=[hooks])
    stream = await chain.stream("hi")
    assert by_name(exporter.get_finished_spans()) == [("chat m", SpanKind.CLIENT)]
    with pytest.warns(ResourceWarning, match="p/m"):
        del stream
        gc.collect()
    call = exporter.get_finished_spans()[-1]
    assert call.kind is SpanKind.INTERNAL
    assert attributes(call)["error.type"] == "StreamClosedError"


# --------------------------------------------------------------------------- health events


async def test_a_bench_lands_on_the_call_span_not_the_callers(
    clock: ManualClock,
    hooks: OpenTelemetryHooks,
    tracers: TracerProvider,
    exporter: InMemorySpanExporter,
) -> None:
    """The caller's own span is current while the chain runs; the bench of the head
    (its second failure) is an event of the call's span, not of the caller's."""
    head = ScriptedModel("p/head", [error(OverloadedError, status=503)])
    tail = ScriptedModel("p/tail")
    chain = make_chain(head, tail, clock=clock, hooks=[hooks])
    with tracers.get_tracer("app").start_as_current_span("caller"):
        await chain.generate("hi")

    spans = {span.name: span for span in exporter.get_finished_spans()}
    assert spans["caller"].events == ()
    (event,) = spans["chat tail"].events
    assert event.name == "majordomo.target_benched"
    assert event.attributes is not None
    assert dict(event.attributes) == {
        "majordomo.target": "p/head",
        "error.type": "OverloadedError",
        "majordomo.benched_until": clock.wall(clock.now() + 1.0).isoformat(),
    }


async def test_a_recovery_lands_on_the_span_of_the_call_that_probed(
    clock: ManualClock, hooks: OpenTelemetryHooks, exporter: InMemorySpanExporter
) -> None:
    head = ScriptedModel("p/head", [error(OverloadedError, status=503)] * 2 + ["ok"])
    chain = make_chain(head, ScriptedModel("p/tail"), clock=clock, hooks=[hooks])
    await chain.generate("first")  # the head is benched
    clock.advance(1.0)
    exporter.clear()
    await chain.generate("second")  # its probe answers
    call = exporter.get_finished_spans()[-1]
    assert call.name == "chat head"
    assert [event.name for event in call.events] == ["majordomo.target_recovered"]


async def test_a_bench_goes_to_its_own_call_among_concurrent_calls(
    clock: ManualClock, hooks: OpenTelemetryHooks, exporter: InMemorySpanExporter
) -> None:
    """Another call in flight (in another task) at the moment of the bench gets nothing."""
    waiting = anyio.Event()

    async def hang() -> str:
        waiting.set()
        await anyio.sleep_forever()
        return "never"

    failing = make_chain(
        ScriptedModel("p/head", [error(OverloadedError, status=503)]),
        ScriptedModel("p/tail"),
        clock=clock,
        hooks=[hooks],
    )
    other = make_chain(ScriptedModel("p/slow", [hang]), clock=clock, hooks=[hooks])
    async with anyio.create_task_group() as group:
        group.start_soon(other.generate, "wait")
        await waiting.wait()
        await failing.generate("fail over")
        group.cancel_scope.cancel()

    calls = {span.name: span for span in exporter.get_finished_spans() if not span.parent}
    assert [event.name for event in calls["chat tail"].events] == ["majordomo.target_benched"]
    assert calls["chat slow"].events == ()


# --------------------------------------------------------------------------- metrics


async def test_each_attempt_is_measured_with_its_provider_and_model(
    clock: ManualClock, hooks: OpenTelemetryHooks, reader: InMemoryMetricReader
) -> None:
    """Durations on the hooks' clock (the fake waits on it), failures with their
    `error.type`; tokens of the answer by type; cached and reasoning parts counted."""
    spec = "fake/head?script=503&latency=0.25,fake/backup?latency=0.5&cached=2&reasoning=a%20b%20c"
    async with Registry(env={}, clock=clock, hooks=[hooks]) as registry:
        response = await registry.parse(spec).generate("What is two and two?")
    usage = response.usage
    head = operation("fake", "head?script=503&latency=0.25")
    backup = operation("fake", "backup?latency=0.5&cached=2&reasoning=a%20b%20c")
    answered = {**backup, "gen_ai.response.model": backup["gen_ai.request.model"]}

    assert measured(reader, DURATION) == [
        # the attempt and its retry (the points sort by their attributes: "error.type" first)
        ({**head, "error.type": "OverloadedError"}, (2, pytest.approx(0.5))),
        (answered, (1, pytest.approx(0.5))),
    ]
    assert measured(reader, TOKENS) == [
        ({**answered, "gen_ai.token.type": "input"}, (1, usage.input_tokens)),
        ({**answered, "gen_ai.token.type": "output"}, (1, usage.output_tokens)),
    ]
    assert (usage.cached_input_tokens, usage.reasoning_tokens) == (2, 3)
    for name, value in ((CACHE_READ, 2), (CACHE_WRITE, 0), (REASONING, 3)):
        # Every operation is counted, a failed one as 0 (as the conventions ask).
        assert measured(reader, name) == [
            ({**answered, "gen_ai.token.modality": "unknown"}, value),
            ({**head, "gen_ai.token.modality": "unknown"}, 0),
        ], name


async def test_a_streams_operation_lasts_until_the_stream_ends(
    clock: ManualClock, hooks: OpenTelemetryHooks, reader: InMemoryMetricReader
) -> None:
    async with Registry(env={}, clock=clock, hooks=[hooks]) as registry:
        started = clock.now()
        spec = "fake/m?reply=one%20two%20three&latency=0.25&chunk_delay=0.125"
        async with await registry.parse(spec).stream("Count") as stream:
            response = await stream.collect()
        elapsed = clock.now() - started
    assert elapsed > 0.25  # the chunk delays, after the stream was established
    answered = operation("fake", spec.removeprefix("fake/"))
    answered["gen_ai.response.model"] = answered["gen_ai.request.model"]
    assert measured(reader, DURATION) == [(answered, (1, pytest.approx(elapsed)))]
    assert measured(reader, TOKENS) == [
        ({**answered, "gen_ai.token.type": "input"}, (1, response.usage.input_tokens)),
        ({**answered, "gen_ai.token.type": "output"}, (1, response.usage.output_tokens)),
    ]


async def test_a_stream_that_broke_mid_answer_is_measured_as_failed(
    clock: ManualClock, hooks: OpenTelemetryHooks, reader: InMemoryMetricReader
) -> None:
    """With restarts, the broken stream's operation fails ("_OTHER": the hooks are not
    told its error) and the one that answered succeeds."""
    first = "fake/first?reply=one%20two%20three&break_after=2"
    config = ChainConfig(mid_stream="restart")
    async with (
        Registry(env={}, clock=clock, hooks=[hooks], chain=config) as registry,
        await registry.parse(f"{first},fake/second").stream("Count") as stream,
    ):
        await stream.collect()
    durations = [
        (labels.get("error.type"), labels["gen_ai.request.model"])
        for labels, _ in measured(reader, DURATION)
    ]
    assert sorted(durations, key=str) == [("_OTHER", first.removeprefix("fake/")), (None, "second")]


async def test_an_attempt_cut_short_by_a_cancellation_is_not_measured(
    clock: ManualClock,
    hooks: OpenTelemetryHooks,
    reader: InMemoryMetricReader,
    exporter: InMemorySpanExporter,
) -> None:
    """The caller left: that says nothing of the provider. The spans still end."""
    waiting = anyio.Event()

    async def hang() -> str:
        waiting.set()
        await anyio.sleep_forever()
        return "never"

    chain = make_chain(ScriptedModel("p/m", [hang]), clock=clock, hooks=[hooks])
    async with anyio.create_task_group() as group:
        group.start_soon(chain.generate, "hi")
        await waiting.wait()
        group.cancel_scope.cancel()

    assert measured(reader, DURATION) == []
    assert by_name(exporter.get_finished_spans()) == [
        ("chat m", SpanKind.CLIENT),
        ("chat m", SpanKind.INTERNAL),
    ]
    assert attributes(exporter.get_finished_spans()[-1])["error.type"] == "CancelledError"


async def test_two_hooks_on_one_registry_keep_apart(
    clock: ManualClock, hooks: OpenTelemetryHooks, exporter: InMemorySpanExporter
) -> None:
    """Each keeps its own state on a call: both trace it whole."""
    other_exporter = InMemorySpanExporter()
    other_provider = TracerProvider()
    other_provider.add_span_processor(SimpleSpanProcessor(other_exporter))
    other = OpenTelemetryHooks(tracer_provider=other_provider, clock=clock)
    chain = make_chain(ScriptedModel("p/m"), clock=clock, hooks=[hooks, other])
    await chain.generate("hi")
    expected = [("chat m", SpanKind.CLIENT), ("chat m", SpanKind.INTERNAL)]
    assert by_name(exporter.get_finished_spans()) == expected
    assert by_name(other_exporter.get_finished_spans()) == expected
    other_exporter.shutdown()


def test_health_store_events_become_metrics_and_span_events(
    hooks: OpenTelemetryHooks, reader: InMemoryMetricReader
) -> None:
    """Round trips are a duration histogram per operation; an outage counts once and is
    an event on the current span; a lost live feed counts too."""
    from majordomo_async import RedisStoreEvent

    where = "redis://127.0.0.1:6379/0"
    hooks.health_store_event(RedisStoreEvent("round_trip", where, "fail", 0.002))
    hooks.health_store_event(RedisStoreEvent("round_trip", where, "fail", 0.004))
    hooks.health_store_event(RedisStoreEvent("degraded", where, error=TimeoutError()))
    hooks.health_store_event(RedisStoreEvent("resynced", where, seconds=3.0, written_back=2))
    hooks.health_store_event(RedisStoreEvent("unsubscribed", where))
    labels = {"server.address": where}
    [(attrs, (count, total))] = measured(reader, "majordomo.health_store.operation.duration")
    assert attrs == {**labels, "majordomo.health_store.operation": "fail"}
    assert count == 2 and total == pytest.approx(0.006)
    assert measured(reader, "majordomo.health_store.outages") == [(labels, 1)]
    assert measured(reader, "majordomo.health_store.subscription.lost") == [(labels, 1)]


async def test_hedges_are_span_events_and_counted_by_whether_they_won(
    clock: ManualClock,
    hooks: OpenTelemetryHooks,
    exporter: InMemorySpanExporter,
    reader: InMemoryMetricReader,
) -> None:
    """A hedge that won and one that lost: both on their call's span, and counted."""
    import anyio
    from anyio import wait_all_tasks_blocked

    from majordomo_async import ChainConfig

    from .helpers.scripted import HANG, Sleep

    head = ScriptedModel("p/head", [HANG, Sleep(1.5, "late")], clock=clock)
    backup = ScriptedModel("p/backup", ["ok", HANG])
    chain = make_chain(
        head, backup, clock=clock, config=ChainConfig(hedge_after=1.0), hooks=[hooks]
    )
    async with anyio.create_task_group() as group:
        group.start_soon(chain.generate, "hi")  # the hedge on p/backup wins
        await wait_all_tasks_blocked()
        clock.advance(1.0)
    await chain.generate("hi")  # p/head answers at 1.5 s: the hedge started at 1 s lost

    calls = [span for span in exporter.get_finished_spans() if not span.parent]
    names = [[event.name for event in span.events] for span in calls]
    assert names == [
        ["majordomo.hedge_started", "majordomo.hedge_won"],
        ["majordomo.hedge_started"],
    ]
    assert measured(reader, "majordomo.hedges") == [
        ({"majordomo.hedge.won": False}, 1),
        ({"majordomo.hedge.won": True}, 1),
    ]
