"""OpenTelemetry spans and metrics for chains, following the GenAI semantic conventions.

Install the `otel` extra (`pip install majordomo_async[otel]`) and register the hooks:

```python
registry = Registry(hooks=[OpenTelemetryHooks()])
```

Spans. Each call gets an INTERNAL span with one CLIENT child span per attempt ("chat
{model}", the conventions' inference span). The call span starts as "chat {head model}"
and is renamed after the target that answered when the call ends ("chat {answering
model}"; a call that nothing answered keeps the head's name). Attributes follow the GenAI
conventions: `gen_ai.operation.name`, `gen_ai.provider.name` (and the older
`gen_ai.system` on attempts), `gen_ai.request.model`, `gen_ai.response.model`,
`gen_ai.request.stream`, `gen_ai.usage.input_tokens` / `output_tokens` and their cached
and reasoning parts (`gen_ai.usage.cache_read.input_tokens`,
`gen_ai.usage.cache_creation.input_tokens`, `gen_ai.usage.reasoning.output_tokens`), the
request's sampling settings, and `error.type` on failures. The call span also carries
`majordomo.targets` and `majordomo.answered_by`, and an event when a target is benched
(`majordomo.target_benched`) or recovers (`majordomo.target_recovered`) during the call.

Metrics, per operation (one attempt on one target: a request to one provider's model):

- `gen_ai.client.operation.duration` (histogram, s): from the request to the answer (a
  stream: to its end), with `error.type` when the attempt failed;
- `gen_ai.client.token.usage` (histogram, {token}), by `gen_ai.token.type` "input" and
  "output", when the provider reported usage;
- `gen_ai.client.inference.usage.cache_read.input_tokens`,
  `...cache_write.input_tokens` and `...reasoning.output_tokens` (counters, {token}):
  the cached and reasoning parts, by `gen_ai.token.modality` ("unknown": providers do
  not break them down).

Each with `gen_ai.operation.name`, `gen_ai.provider.name`, `gen_ai.request.model` and
(when it answered) `gen_ai.response.model`. An attempt cancelled before it answered (the
caller left) is not measured: it says nothing of the provider. A stream closed before
its end (its reader stopped, or was cancelled) is measured up to the close, as answered.

Nothing of the prompt or the answer is recorded. `opentelemetry` is imported only when
the hooks are created.
"""

from __future__ import annotations

from contextvars import ContextVar
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

from ._clock import Clock, MonotonicClock
from ._hooks import CallInfo, Hooks
from ._response import Usage

if TYPE_CHECKING:
    from opentelemetry.metrics import Counter, Histogram, MeterProvider
    from opentelemetry.trace import Span, Tracer, TracerProvider

    from ._redis_store import RedisStoreEvent

__all__ = ["OpenTelemetryHooks"]

_OPERATION: Final = "chat"

# The conventions' advice for the two histograms.
_TOKEN_BUCKETS: Final = (
    1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864
)  # fmt: skip
_DURATION_BUCKETS: Final = (
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92
)  # fmt: skip

_OTHER_ERROR: Final = "_OTHER"
"""The conventions' `error.type` when the error is not known: a stream that broke
mid-answer and was restarted on the next target (the hooks do not see its error)."""

_calls: ContextVar[CallInfo | None] = ContextVar("majordomo_otel_call", default=None)
"""The call whose hooks last ran in this context. A bench or a recovery is announced
with no call (`Hooks.target_benched`), right after the failure or success that caused
it and in the same task: this names the call it belongs to."""


class _Attempt:
    """One attempt being traced: its span and when it started (on the hooks' clock)."""

    __slots__ = ("key", "span", "started")

    def __init__(self, key: str, span: Span, started: float) -> None:
        self.key = key
        self.span = span
        self.started = started


class _Trace:
    """One call being traced: its span, its open attempts, and the established stream
    whose operation lasts until the stream ends."""

    __slots__ = ("attempts", "hedges", "span", "streaming")

    def __init__(self, span: Span) -> None:
        self.span = span
        self.attempts: dict[tuple[str, int], _Attempt] = {}
        self.streaming: _Attempt | None = None
        self.hedges = 0
        """Hedges started and not won (counted as lost when the call ends)."""


class OpenTelemetryHooks(Hooks):
    """`Hooks` that trace every call and attempt and measure every attempt with
    OpenTelemetry (see the module documentation for the spans and metrics).

    Args:
        tracer_provider: where spans go (default: the global provider).
        meter_provider: where metrics go (default: the global provider).
        clock: the clock operation durations are measured on (default: monotonic time;
            tests pass the registry's `ManualClock`).
    """

    def __init__(
        self,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        *,
        clock: Clock | None = None,
    ) -> None:
        try:
            from opentelemetry import metrics, trace
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError(
                "OpenTelemetryHooks needs opentelemetry-api: pip install 'majordomo_async[otel]'"
            ) from exc
        from ._version import __version__

        self._trace = trace
        self._tracer: Tracer = trace.get_tracer(
            "majordomo_async", __version__, tracer_provider=tracer_provider
        )
        meter = metrics.get_meter("majordomo_async", __version__, meter_provider=meter_provider)
        self._duration: Histogram = meter.create_histogram(
            "gen_ai.client.operation.duration",
            unit="s",
            description="GenAI operation duration.",
            explicit_bucket_boundaries_advisory=_DURATION_BUCKETS,
        )
        self._tokens: Histogram = meter.create_histogram(
            "gen_ai.client.token.usage",
            unit="{token}",
            description="Number of input and output tokens used.",
            explicit_bucket_boundaries_advisory=_TOKEN_BUCKETS,
        )
        self._token_parts: tuple[tuple[Counter, str], ...] = tuple(
            (meter.create_counter(name, unit="{token}", description=description), field)
            for name, description, field in (
                (
                    "gen_ai.client.inference.usage.cache_read.input_tokens",
                    "The number of input tokens served from a provider-managed cache.",
                    "cached_input_tokens",
                ),
                (
                    "gen_ai.client.inference.usage.cache_write.input_tokens",
                    "The number of input tokens written to a provider-managed cache.",
                    "cache_write_tokens",
                ),
                (
                    "gen_ai.client.inference.usage.reasoning.output_tokens",
                    "The number of output tokens used for reasoning.",
                    "reasoning_tokens",
                ),
            )
        )
        self._store_duration: Histogram = meter.create_histogram(
            "majordomo.health_store.operation.duration",
            unit="s",
            description="Round trips of the shared health store (one Lua script each).",
        )
        self._store_outages: Counter = meter.create_counter(
            "majordomo.health_store.outages",
            unit="{outage}",
            description="Times the shared health store fell back to in-process state.",
        )
        self._store_feed_lost: Counter = meter.create_counter(
            "majordomo.health_store.subscription.lost",
            unit="{loss}",
            description="Times the store lost its live feed of the fleet's changes.",
        )
        self._hedges: Counter = meter.create_counter(
            "majordomo.hedges",
            unit="{hedge}",
            description="Hedged attempts started (each a second request), by whether they won.",
        )
        self._clock: Clock = clock if clock is not None else MonotonicClock()
        # Per instance: two hooks (two providers) on one registry keep apart.
        self._state_key = f"majordomo.otel.{id(self)}"

    # ----------------------------------------------------------------- the call

    def call_started(self, call: CallInfo) -> None:
        """Open the call's span."""
        _calls.set(call)
        _, _, model = call.targets[0].partition("/")
        span = self._tracer.start_span(
            f"{_OPERATION} {model}",
            kind=self._trace.SpanKind.INTERNAL,
            attributes={
                "gen_ai.operation.name": _OPERATION,
                "gen_ai.request.model": model,
                "majordomo.targets": list(call.targets),
                "majordomo.streaming": call.streaming,
                **_request_attributes(call),
            },
        )
        call.state[self._state_key] = _Trace(span)

    def call_finished(
        self,
        call: CallInfo,
        *,
        model: str | None,
        usage: Usage | None,
        error: BaseException | None,
    ) -> None:
        """Close the call's span: who answered, what it cost, or why it failed; measure
        the stream that answered, which ends with the call."""
        if _calls.get() is call:
            _calls.set(None)
        trace: _Trace | None = call.state.pop(self._state_key, None)
        if trace is None:
            return
        for leftover in trace.attempts.values():
            # Cancelled mid-attempt: the attempt never finished (and is not measured).
            leftover.span.end()
        if trace.hedges:
            self._hedges.add(trace.hedges, {"majordomo.hedge.won": False})
        if trace.streaming is not None and (error is None or isinstance(error, Exception)):
            self._measure(trace.streaming, _error_type(error) if error else None, usage)
        span = trace.span
        if model is not None and error is None:
            provider, _, model_id = model.partition("/")
            # Named after the target that answered, which is not the head's after a
            # failover (the request model stays the head's: the call asked it first).
            span.update_name(f"{_OPERATION} {model_id}")
            span.set_attribute("gen_ai.provider.name", provider)
            span.set_attribute("gen_ai.response.model", model_id)
            span.set_attribute("majordomo.answered_by", model)
        _finish(self._trace, span, usage, error)

    # ----------------------------------------------------------------- attempts

    def attempt_started(self, call: CallInfo, key: str, attempt: int) -> None:
        """Open an attempt's span, a child of the call's."""
        _calls.set(call)
        trace: _Trace | None = call.state.get(self._state_key)
        if trace is None:
            return
        if trace.streaming is not None:
            # A new attempt after a stream was established: that stream broke mid-answer
            # and the answer restarts here (`mid_stream="restart"`).
            self._measure(trace.streaming, _OTHER_ERROR, None)
            trace.streaming = None
        provider, _, model = key.partition("/")
        span = self._tracer.start_span(
            f"{_OPERATION} {model}",
            context=self._trace.set_span_in_context(trace.span),
            kind=self._trace.SpanKind.CLIENT,
            attributes={
                "gen_ai.operation.name": _OPERATION,
                "gen_ai.provider.name": provider,
                "gen_ai.system": provider,
                "gen_ai.request.model": model,
                "majordomo.target": key,
                "majordomo.attempt": attempt,
                **_request_attributes(call),
            },
        )
        trace.attempts[key, attempt] = _Attempt(key, span, self._clock.now())

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
        """Close the attempt's span with its outcome, and measure it (an established
        stream: when it ends)."""
        _calls.set(call)
        trace: _Trace | None = call.state.get(self._state_key)
        if trace is None:
            return
        traced = trace.attempts.pop((key, attempt), None)
        if traced is None:
            return
        if error is None:
            traced.span.set_attribute("gen_ai.response.model", key.partition("/")[2])
            if call.streaming:
                trace.streaming = traced  # its operation ends with the stream
            else:
                self._measure(traced, None, usage)
        else:
            self._measure(traced, _error_type(error), None)
        _finish(self._trace, traced.span, usage, error)

    # ----------------------------------------------------------------- health

    def hedge_started(self, call: CallInfo, key: str, *, after: float) -> None:
        """An event on the call's span; the hedge is counted when the call ends (lost)
        or when it wins."""
        trace: _Trace | None = call.state.get(self._state_key)
        if trace is not None:
            trace.span.add_event(
                "majordomo.hedge_started", {"majordomo.target": key, "majordomo.hedge_after": after}
            )
            trace.hedges += 1

    def hedge_won(self, call: CallInfo, key: str, *, loser: str) -> None:
        """An event on the call's span, and the hedge counted as won."""
        trace: _Trace | None = call.state.get(self._state_key)
        if trace is not None:
            trace.span.add_event(
                "majordomo.hedge_won", {"majordomo.target": key, "majordomo.loser": loser}
            )
            trace.hedges -= 1
            self._hedges.add(1, {"majordomo.hedge.won": True})

    def target_benched(self, key: str, *, until: datetime | None, error: Exception) -> None:
        """Record the bench on the span of the call whose failure benched the target."""
        attributes: dict[str, Any] = {"majordomo.target": key, "error.type": _error_type(error)}
        if until is not None:
            attributes["majordomo.benched_until"] = until.isoformat()
        self._event(key, "majordomo.target_benched", attributes)

    def target_recovered(self, key: str) -> None:
        """Record the recovery on the span of the call whose probe answered."""
        self._event(key, "majordomo.target_recovered", {"majordomo.target": key})

    def _event(self, key: str, name: str, attributes: dict[str, Any]) -> None:
        # The hook has no call: it runs right after the call's own report, in its task,
        # where `_calls` names it. Never the caller's span: the event belongs to the call.
        call = _calls.get()
        if call is None or key not in call.targets:
            return
        trace: _Trace | None = call.state.get(self._state_key)
        if trace is not None:
            trace.span.add_event(name, attributes)

    def health_store_event(self, event: RedisStoreEvent) -> None:
        """The shared health store's state: round trips as a duration histogram, outages
        and lost feeds as counters, and an outage's start and end as events on the
        current span (the call that met it, if any)."""
        where = {"server.address": event.store}
        if event.kind == "round_trip" and event.seconds is not None:
            operation = {"majordomo.health_store.operation": event.operation or "", **where}
            self._store_duration.record(event.seconds, operation)
        elif event.kind == "degraded":
            self._store_outages.add(1, where)
            error = {"error.type": type(event.error).__name__} if event.error else {}
            self._trace.get_current_span().add_event(
                "majordomo.health_store.degraded", {**where, **error}
            )
        elif event.kind == "resynced":
            attributes: dict[str, Any] = {
                **where,
                "majordomo.health_store.written_back": event.written_back or 0,
            }
            if event.seconds is not None:
                attributes["majordomo.health_store.outage_seconds"] = event.seconds
            self._trace.get_current_span().add_event("majordomo.health_store.resynced", attributes)
        elif event.kind == "unsubscribed":
            self._store_feed_lost.add(1, where)

    # ----------------------------------------------------------------- metrics

    def _measure(self, attempt: _Attempt, error_type: str | None, usage: Usage | None) -> None:
        """Record one operation's duration and tokens."""
        provider, _, model = attempt.key.partition("/")
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": _OPERATION,
            "gen_ai.provider.name": provider,
            "gen_ai.request.model": model,
        }
        if error_type is None:
            attributes["gen_ai.response.model"] = model
        duration = dict(attributes)
        if error_type is not None:
            duration["error.type"] = error_type
        self._duration.record(max(self._clock.now() - attempt.started, 0.0), duration)
        if usage is not None and (usage.input_tokens or usage.output_tokens):
            # Only when the provider said: the conventions forbid guessing.
            self._tokens.record(usage.input_tokens, {**attributes, "gen_ai.token.type": "input"})
            self._tokens.record(usage.output_tokens, {**attributes, "gen_ai.token.type": "output"})
        # The conventions count the parts for every operation, 0 when none was reported.
        parts = {**attributes, "gen_ai.token.modality": "unknown"}
        for counter, field in self._token_parts:
            counter.add(getattr(usage, field) if usage is not None else 0, parts)


def _error_type(error: BaseException) -> str:
    return type(error).__qualname__


def _request_attributes(call: CallInfo) -> dict[str, Any]:
    request = call.request
    attributes: dict[str, Any] = {}
    if call.streaming:
        attributes["gen_ai.request.stream"] = True
    if request.temperature is not None:
        attributes["gen_ai.request.temperature"] = request.temperature
    if request.top_p is not None:
        attributes["gen_ai.request.top_p"] = request.top_p
    if request.max_tokens is not None:
        attributes["gen_ai.request.max_tokens"] = request.max_tokens
    if request.stop:
        attributes["gen_ai.request.stop_sequences"] = list(request.stop)
    return attributes


def _finish(trace: Any, span: Span, usage: Usage | None, error: BaseException | None) -> None:
    if usage is not None and (usage.input_tokens or usage.output_tokens):
        span.set_attribute("gen_ai.usage.input_tokens", usage.input_tokens)
        span.set_attribute("gen_ai.usage.output_tokens", usage.output_tokens)
        # The parts, when the provider reported any (each is part of the totals above).
        if usage.cached_input_tokens:
            span.set_attribute("gen_ai.usage.cache_read.input_tokens", usage.cached_input_tokens)
        if usage.cache_write_tokens:
            span.set_attribute("gen_ai.usage.cache_creation.input_tokens", usage.cache_write_tokens)
        if usage.reasoning_tokens:
            span.set_attribute("gen_ai.usage.reasoning.output_tokens", usage.reasoning_tokens)
    if error is not None:
        span.set_attribute("error.type", _error_type(error))
        span.set_status(trace.Status(trace.StatusCode.ERROR, type(error).__name__))
    span.end()
