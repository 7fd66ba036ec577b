"""The public API from a user's point of view, type-checked with `mypy --strict` in CI.

Everything here is written the way a user writes it, with only public names, and the
annotations state what the API must give back. `.ci/run` runs mypy on this file, so a
signature that loses its precise type (an `Any` leaking out, an Optional where a value is
promised) fails CI; pytest runs it too, against the fake provider.
"""

from __future__ import annotations

import majordomo_async as md
from majordomo_async import (
    AsyncModel,
    Capabilities,
    ChainConfig,
    ChainExhaustedError,
    FinishReason,
    HealthConfig,
    Hooks,
    ImagePart,
    Message,
    ProviderError,
    Registry,
    Request,
    Response,
    Stream,
    StreamEvent,
    TargetFailure,
    TextDelta,
    Tool,
    ToolCall,
    Usage,
)


class CountingHooks(Hooks):
    """A metrics hook, typed as a user would write it."""

    def __init__(self) -> None:
        self.answered: dict[str, int] = {}

    def call_finished(
        self,
        call: md.CallInfo,
        *,
        model: str | None,
        usage: Usage | None,
        error: BaseException | None,
    ) -> None:
        if model is not None:
            self.answered[model] = self.answered.get(model, 0) + 1


async def generate_and_stream(registry: Registry) -> tuple[str, str]:
    model: AsyncModel = registry.parse("fake/head?script=503,fake/backup")
    capabilities: Capabilities = model.capabilities
    assert capabilities.vision

    request = Request(
        [Message.user("describe", ImagePart.from_bytes(b"\x89PNG\r\n\x1a\n", "image/png"))],
        system="Be brief.",
        tools=[Tool("lookup", "find a city", {"type": "object", "properties": {}})],
    ).apply(md.temperature(0.2), md.max_tokens(64))
    response: Response = await model.generate(request)
    text: str = response.text
    answered_by: str = response.model
    failures: tuple[TargetFailure, ...] = response.failed_attempts
    usage: Usage = response.usage + Usage(1, 1)
    finish: FinishReason = response.finish_reason
    calls: tuple[ToolCall, ...] = response.tool_calls
    assert failures and usage.input_tokens >= 1 and finish is FinishReason.STOP and not calls

    pieces: list[str] = []
    stream: Stream = await model.stream("stream me")
    async with stream:
        event: StreamEvent
        async for event in stream:
            if isinstance(event, TextDelta):
                pieces.append(event.text)
    streamed: Response = stream.response
    assert "".join(pieces) == streamed.text
    return text, answered_by


async def handle_errors(registry: Registry) -> list[str]:
    reasons: list[str] = []
    try:
        await registry.parse("fake/a?script=503,fake/b?script=503").generate("hi")
    except ChainExhaustedError as exc:
        for failure in exc.failures:
            error: Exception = failure.error
            if isinstance(error, ProviderError):
                status: int | None = error.status
                retry_after: float | None = error.retry_after
                reasons.append(f"{failure.key} {status} {retry_after}")
    return reasons


async def test_typed_usage_runs_against_the_fake_provider() -> None:
    hooks = CountingHooks()
    config = ChainConfig(retry_backoff=0, max_retry_wait=0)
    async with Registry(
        env={}, chain=config, health=HealthConfig(failure_threshold=5), hooks=[hooks]
    ) as registry:
        text, answered_by = await generate_and_stream(registry)
        reasons = await handle_errors(registry)
    assert answered_by == "fake/backup"
    assert text == "describe"
    assert reasons and all(reason.endswith("503 None") for reason in reasons)
    assert hooks.answered["fake/backup"] == 2
