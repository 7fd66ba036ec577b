"""The portable request options of 2026 models, before any provider: reasoning, prompt
cache breakpoints, the per-family escape hatch; and what comes back: detailed usage,
reasoning, the served model, refusals, gathered the same way from a stream."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from majordomo_async import (
    Capabilities,
    ConfigurationError,
    FinishReason,
    ImagePart,
    ManualClock,
    Message,
    ProviderOptions,
    Reasoning,
    ReasoningDelta,
    ReasoningPart,
    Request,
    Response,
    Stream,
    StreamEnd,
    StreamStart,
    TextDelta,
    TextPart,
    ToolCall,
    ToolCallDelta,
    ToolCallPart,
    Usage,
    UsageUpdate,
    cache,
    provider_options,
    reasoning,
)
from majordomo_async._fitting import RequestFitter
from majordomo_async._provider_options import merge_body

from .helpers.scripted import ScriptedModel, make_chain

# --------------------------------------------------------------------------- reasoning


def test_reasoning_converts_between_effort_and_budget() -> None:
    assert Reasoning("high").tokens() == 24576
    assert Reasoning("minimal").tokens(minimum=1024) == 1024
    assert Reasoning(budget_tokens=500).tokens(minimum=1024) == 1024  # Anthropic's floor
    assert Reasoning(budget_tokens=3000).level() == "medium"
    assert Reasoning(budget_tokens=100_000).level() == "high"
    assert Reasoning(budget_tokens=1024).level() == "minimal"
    assert Reasoning("low", budget_tokens=5000).tokens() == 5000  # the budget wins for budgets
    assert Reasoning("low", budget_tokens=5000).level() == "low"  # the effort for efforts


def test_reasoning_none_and_zero_budget_mean_off() -> None:
    assert not Reasoning("none").enabled
    assert not Reasoning(budget_tokens=0).enabled
    assert Reasoning(budget_tokens=0).tokens(minimum=1024) == 0
    assert Reasoning(budget_tokens=0).level() == "none"
    assert Reasoning("minimal").enabled


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"effort": "extreme"}, {"budget_tokens": -1}, {"budget_tokens": True}],
    ids=["nothing", "unknown-effort", "negative", "bool"],
)
def test_reasoning_is_validated(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError, match="reasoning"):
        Reasoning(**kwargs)


def test_the_reasoning_option() -> None:
    request = Request("hi").apply(reasoning("high"))
    assert request.reasoning == Reasoning("high")
    assert Request("hi").apply(reasoning(budget_tokens=2048, summary=False)).reasoning == (
        Reasoning(None, 2048, summary=False)
    )


async def test_a_target_that_cannot_reason_gets_the_request_without_the_option() -> None:
    request = Request("hi", reasoning=Reasoning("high"))
    fitter = RequestFitter(request, _no_download, max_download_bytes=1024, download_timeout=1.0)
    plain = await fitter.fit("p/old", Capabilities(), streaming=False)
    assert plain.reasoning is None and plain.messages == request.messages
    thinker = await fitter.fit("p/new", Capabilities(reasoning=True), streaming=False)
    assert thinker is request


async def _no_download(*args: object) -> ImagePart:
    raise AssertionError("no download expected")


# --------------------------------------------------------------------------- caching, extras


def test_cache_breakpoints() -> None:
    request = Request("hi").apply(cache(system=True), cache(tools=True))
    assert (request.cache_system, request.cache_tools) == (True, True)
    message = Message("user", "a long document", cache_breakpoint=True)
    assert message.cache_breakpoint and not Message.user("x").cache_breakpoint


def test_provider_options_merge_per_family_and_never_show_values() -> None:
    request = Request("hi").apply(
        provider_options("openai", body={"seed": 7, "logit_bias": {"1": -100}}),
        provider_options("openai", body={"logit_bias": {"2": 5}}, headers={"X-Key": "s3cret"}),
        provider_options("anthropic", body={"top_k": 5}),
    )
    openai = request.provider_options["openai"]
    assert openai.body == {"seed": 7, "logit_bias": {"1": -100, "2": 5}}
    assert openai.headers == {"X-Key": "s3cret"}
    assert request.provider_options["anthropic"].body == {"top_k": 5}
    shown = repr(request)
    assert "seed" in shown and "X-Key" in shown
    assert "s3cret" not in shown and "-100" not in shown


def test_provider_options_are_validated() -> None:
    with pytest.raises(ConfigurationError):
        provider_options("")
    with pytest.raises(ConfigurationError, match="headers"):
        ProviderOptions(headers={"X": 1})  # type: ignore[dict-item]
    with pytest.raises(ConfigurationError, match="body"):
        ProviderOptions(body=[("seed", 1)])  # type: ignore[arg-type]


def test_merge_body_merges_objects_replaces_the_rest_and_removes_on_none() -> None:
    body = {"generationConfig": {"temperature": 0.2, "topP": 0.9}, "stream": True, "n": 1}
    merged = merge_body(body, {"generationConfig": {"topK": 3, "topP": None}, "n": None})
    assert merged == {"generationConfig": {"temperature": 0.2, "topK": 3}, "stream": True}


# --------------------------------------------------------------------------- what comes back


def test_usage_details_add_up() -> None:
    first = Usage(100, 50, cached_input_tokens=80, cache_write_tokens=10, reasoning_tokens=30)
    second = Usage(10, 5, reasoning_tokens=2)
    assert first + second == Usage(110, 55, 80, 10, 32)
    assert sum([first, second]) == first + second
    assert Usage(1, 2).total_tokens == 3


def test_a_response_with_reasoning_carries_it_back_in_its_message() -> None:
    thought = ReasoningPart("let me think", signature="EuYBCkQYAiJA", provider="anthropic")
    call = ToolCall("call_1", "lookup", '{"q": 1}')
    response = Response(
        text="checking", tool_calls=(call,), reasoning="let me think", reasoning_parts=(thought,)
    )
    assert response.message.parts == (thought, TextPart("checking"), ToolCallPart(call))
    assert "EuYBCkQYAiJA" not in repr(thought)  # signatures are opaque
    stamped = response._restamped("p/m", ())
    assert (stamped.reasoning_parts, stamped.reasoning) == ((thought,), "let me think")


async def _events(events: list[Any]) -> Any:
    for event in events:
        yield event


async def test_a_stream_gathers_reasoning_served_model_and_refusal() -> None:
    stream = Stream(
        _events(
            [
                StreamStart("p/m", "req_1", served_model="m-2026-01-01"),
                ReasoningDelta("First, ", provider="anthropic"),
                ReasoningDelta("the facts.", provider="anthropic"),
                ReasoningDelta(signature="sig-1", provider="anthropic"),
                ReasoningDelta(index=1, redacted="opaque", provider="anthropic"),
                TextDelta("No."),
                ToolCallDelta(0, "call_1", "lookup", "{}"),
                UsageUpdate(Usage(10, 20, cached_input_tokens=4, reasoning_tokens=12)),
                StreamEnd(FinishReason.STOP, refusal="I can't help with that."),
            ]
        ),
        model="p/m",
    )
    response = await stream.collect()
    assert response.reasoning == "First, the facts."
    assert response.reasoning_parts == (
        ReasoningPart("First, the facts.", "sig-1", None, "anthropic"),
        ReasoningPart("", None, "opaque", "anthropic"),
    )
    assert response.served_model == "m-2026-01-01"
    assert response.refusal == "I can't help with that."
    assert response.finish_reason is FinishReason.STOP  # the wire's reason, not a guess
    assert response.usage.reasoning_tokens == 12


async def test_reasoning_commits_a_stream(clock: ManualClock) -> None:
    """A reasoning delta is content: a consumer may have shown it, so a failure after it
    is not replayed on the next target (in the default mid_stream="raise")."""
    from majordomo_async import ProviderConnectionError

    from .helpers.scripted import error

    head = ScriptedModel(
        "p/head",
        [[StreamStart("p/head"), ReasoningDelta("hmm"), error(ProviderConnectionError)]],
        clock=clock,
    )
    backup = ScriptedModel("p/backup", ["backup"], clock=clock)
    chain = make_chain(head, backup, clock=clock)
    stream = await chain.stream("hi")
    assert stream.model == "p/head"
    with pytest.raises(ProviderConnectionError):
        await stream.collect()
    assert backup.calls == 0


def test_provider_options_values_never_reach_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    request = Request("hi").apply(provider_options("openai", headers={"X-Secret": "tok-123"}))
    logging.getLogger("majordomo_async").debug("request %r", request)
    assert "tok-123" not in caplog.text
