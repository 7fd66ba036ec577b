"""OpenTelemetry spans for chains, following the GenAI semantic conventions.

Install the `otel` extra (`pip install majordomo_async[otel]`) and register the hooks:

```python
registry = Registry(hooks=[OpenTelemetryHooks()])
```

Each call gets an INTERNAL span ("chat {head model}") with one CLIENT child span per
attempt ("chat {model}"). Attributes follow the GenAI conventions: `gen_ai.operation.name`,
`gen_ai.provider.name` (and the older `gen_ai.system`), `gen_ai.request.model`,
`gen_ai.response.model`, `gen_ai.usage.input_tokens` / `output_tokens`, the request's
sampling settings, and `error.type` on failures. Nothing of the prompt or the answer is
recorded. `opentelemetry` is imported only when the hooks are created.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from ._hooks import CallInfo, Hooks
from ._response import Usage

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer, TracerProvider

__all__ = ["OpenTelemetryHooks"]

_CALL_SPAN = "majordomo.otel.call_span"
_ATTEMPT_SPANS = "majordomo.otel.attempt_spans"


class OpenTelemetryHooks(Hooks):
    """`Hooks` that trace every call and attempt with OpenTelemetry.

    Args:
        tracer_provider: where spans go (default: the global provider).
    """

    def __init__(self, tracer_provider: TracerProvider | None = None) -> None:
        try:
            from opentelemetry import trace
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError(
                "OpenTelemetryHooks needs opentelemetry-api: pip install 'majordomo_async[otel]'"
            ) from exc
        from ._version import __version__

        self._trace = trace
        self._tracer: Tracer = trace.get_tracer(
            "majordomo_async", __version__, tracer_provider=tracer_provider
        )

    def call_started(self, call: CallInfo) -> None:
        """Open the call's span."""
        _, _, model = call.targets[0].partition("/")
        span = self._tracer.start_span(
            f"chat {model}",
            kind=self._trace.SpanKind.INTERNAL,
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.request.model": model,
                "majordomo.targets": list(call.targets),
                "majordomo.streaming": call.streaming,
                **_request_attributes(call),
            },
        )
        call.state[_CALL_SPAN] = span
        call.state[_ATTEMPT_SPANS] = {}

    def attempt_started(self, call: CallInfo, key: str, attempt: int) -> None:
        """Open an attempt's span, a child of the call's."""
        parent: Span | None = call.state.get(_CALL_SPAN)
        if parent is None:
            return
        provider, _, model = key.partition("/")
        span = self._tracer.start_span(
            f"chat {model}",
            context=self._trace.set_span_in_context(parent),
            kind=self._trace.SpanKind.CLIENT,
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": provider,
                "gen_ai.system": provider,
                "gen_ai.request.model": model,
                "majordomo.target": key,
                "majordomo.attempt": attempt,
                **_request_attributes(call),
            },
        )
        call.state[_ATTEMPT_SPANS][(key, attempt)] = span

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
        """Close the attempt's span with its outcome."""
        spans: dict[tuple[str, int], Span] = call.state.get(_ATTEMPT_SPANS, {})
        span = spans.pop((key, attempt), None)
        if span is None:
            return
        if error is None:
            span.set_attribute("gen_ai.response.model", key.partition("/")[2])
        _finish(self._trace, span, usage, error)

    def target_benched(self, key: str, *, until: datetime | None, error: Exception) -> None:
        """Record the bench on the current span, if any."""
        span = self._trace.get_current_span()
        if span.is_recording():
            span.add_event("majordomo.target_benched", {"majordomo.target": key})

    def call_finished(
        self,
        call: CallInfo,
        *,
        model: str | None,
        usage: Usage | None,
        error: BaseException | None,
    ) -> None:
        """Close the call's span: who answered, what it cost, or why it failed."""
        span: Span | None = call.state.pop(_CALL_SPAN, None)
        if span is None:
            return
        for leftover in call.state.pop(_ATTEMPT_SPANS, {}).values():
            leftover.end()  # cancelled mid-attempt: the attempt never finished
        if model is not None and error is None:
            provider, _, model_id = model.partition("/")
            span.set_attribute("gen_ai.provider.name", provider)
            span.set_attribute("gen_ai.response.model", model_id)
            span.set_attribute("majordomo.answered_by", model)
        _finish(self._trace, span, usage, error)


def _request_attributes(call: CallInfo) -> dict[str, Any]:
    request = call.request
    attributes: dict[str, Any] = {}
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
    if error is not None:
        span.set_attribute("error.type", type(error).__qualname__)
        span.set_status(trace.Status(trace.StatusCode.ERROR, type(error).__name__))
    span.end()
