"""OpenTelemetry spans per call and per attempt, checked with the SDK's in-memory exporter."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from majordomo_async import (
    ChainExhaustedError,
    ManualClock,
    OpenTelemetryHooks,
    Registry,
    StreamEnd,
    StreamStart,
    TextDelta,
    Usage,
    UsageUpdate,
    max_tokens,
    temperature,
)
from majordomo_async._chain import Chain, ChainConfig, Target
from majordomo_async._health import HealthConfig, HealthTracker
from tests.helpers.scripted import ScriptedModel, error


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    yield exporter
    exporter.shutdown()


@pytest.fixture
def hooks(exporter: InMemorySpanExporter) -> OpenTelemetryHooks:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return OpenTelemetryHooks(tracer_provider=provider)


def by_name(spans: tuple[ReadableSpan, ...]) -> list[tuple[str, SpanKind]]:
    return [(span.name, span.kind) for span in spans]


async def test_failover_call_has_one_span_per_attempt_under_the_call_span(
    clock: ManualClock, hooks: OpenTelemetryHooks, exporter: InMemorySpanExporter
) -> None:
    from majordomo_async import OverloadedError

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
        ("chat gpt-4o", SpanKind.INTERNAL),
    ]
    failed, answered, call = spans
    assert failed.parent is not None and failed.parent.span_id == call.context.span_id
    assert answered.parent is not None and answered.parent.span_id == call.context.span_id
    assert failed.attributes is not None and answered.attributes is not None
    assert failed.attributes["error.type"] == "OverloadedError"
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.attributes["gen_ai.provider.name"] == "openai"
    assert answered.attributes["gen_ai.response.model"] == "claude-sonnet-4-5"
    assert answered.attributes["gen_ai.usage.input_tokens"] == 1
    assert answered.attributes["gen_ai.request.temperature"] == 0.3
    assert call.attributes is not None
    assert call.attributes["gen_ai.operation.name"] == "chat"
    assert call.attributes["gen_ai.request.model"] == "gpt-4o"
    assert call.attributes["gen_ai.response.model"] == "claude-sonnet-4-5"
    assert call.attributes["gen_ai.provider.name"] == "anthropic"
    assert call.attributes["gen_ai.request.max_tokens"] == 50
    assert "error.type" not in call.attributes
    assert call.status.status_code is StatusCode.UNSET


async def test_exhausted_call_span_carries_the_error_type(
    clock: ManualClock, hooks: OpenTelemetryHooks, exporter: InMemorySpanExporter
) -> None:
    async with Registry(env={}, clock=clock, hooks=[hooks]) as registry:
        with pytest.raises(ChainExhaustedError):
            await registry.parse("fake/x?script=503").generate("hi")
    call = exporter.get_finished_spans()[-1]
    assert call.kind is SpanKind.INTERNAL
    assert call.attributes is not None
    assert call.attributes["error.type"] == "ChainExhaustedError"


async def test_stream_call_span_ends_with_the_stream_and_its_usage(
    clock: ManualClock, hooks: OpenTelemetryHooks, exporter: InMemorySpanExporter
) -> None:
    events = [StreamStart("p/m"), TextDelta("x"), UsageUpdate(Usage(5, 6)), StreamEnd()]
    model = ScriptedModel("p/m", [events])
    chain = Chain(
        [Target(model.key, model)],
        HealthTracker(HealthConfig(), clock=clock),
        ChainConfig(),
        hooks=[hooks],
    )
    async with await chain.stream("hi") as stream:
        assert by_name(exporter.get_finished_spans()) == [("chat m", SpanKind.CLIENT)]
        await stream.collect()
    call = exporter.get_finished_spans()[-1]
    assert call.attributes is not None
    assert call.attributes["gen_ai.usage.output_tokens"] == 6
    assert call.attributes["majordomo.streaming"] is True


async def test_a_dropped_stream_ends_its_call_span(
    clock: ManualClock, hooks: OpenTelemetryHooks, exporter: InMemorySpanExporter
) -> None:
    """A stream garbage-collected unclosed still ends the call's span, as an error."""
    import gc

    model = ScriptedModel("p/m", [[StreamStart("p/m"), TextDelta("x"), StreamEnd()]])
    chain = Chain(
        [Target(model.key, model)],
        HealthTracker(HealthConfig(), clock=clock),
        ChainConfig(),
        hooks=[hooks],
    )
    stream = await chain.stream("hi")
    assert by_name(exporter.get_finished_spans()) == [("chat m", SpanKind.CLIENT)]
    with pytest.warns(ResourceWarning, match="p/m"):
        del stream
        gc.collect()
    call = exporter.get_finished_spans()[-1]
    assert call.kind is SpanKind.INTERNAL
    assert call.attributes is not None
    assert call.attributes["error.type"] == "StreamClosedError"
