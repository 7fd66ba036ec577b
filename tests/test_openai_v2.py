"""The `openai` provider's 2026 features, against a real local server: Mistral's list-form
content, refusals, reasoning (request fields per preset, reasoning text in replies and
streams, what goes back in history), detailed usage, the served model, the tool-call
finish rule, and Azure OpenAI (`azure://`).

Every body is shaped as the real provider shapes it; each says where its shape comes
from. Every stream is also replayed one byte at a time (`CHUNKS`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Final

import pytest

from majordomo_async import (
    DSN,
    AuthenticationError,
    ConfigurationError,
    ContentPolicyError,
    FinishReason,
    HTTPSessionHolder,
    Message,
    MonotonicClock,
    ProviderContext,
    RateLimitError,
    ReasoningDelta,
    ReasoningPart,
    Registry,
    Request,
    Response,
    StreamEnd,
    StreamStart,
    TextDelta,
    TextPart,
    ToolCall,
    ToolCallDelta,
    ToolCallPart,
    Usage,
    UsageUpdate,
    reasoning,
)
from majordomo_async._providers.openai import (
    AZURE_PRESET,
    OPENAI_COMPATIBLE_PRESETS,
    OPENAI_PRESET,
    AzureOpenAIProvider,
    OpenAIProvider,
    Preset,
    azure_factory,
    openai_compatible_factory,
)

from .helpers.servers import LocalServer, play, respond

KEY = "sk-test-0123456789abcdefSECRET"
AZURE_KEY = "0123456789abcdef0123456789abcdef"  # Azure keys: 32 hex characters
CHAT_PATH = "/v1/chat/completions"

CHUNKS = pytest.mark.parametrize("chunk", [1, 4096], ids=["byte-by-byte", "whole"])
"""Replay every stream one byte per write, and in one piece."""


# --------------------------------------------------------------------------- helpers


def sse(*events: str | Mapping[str, Any], done: bool = True) -> bytes:
    """An SSE body: each event as one `data:` line (raw text as given, a mapping as
    compact JSON, as the servers write it), then `data: [DONE]` if told."""
    lines = [
        event if isinstance(event, str) else json.dumps(event, separators=(",", ":"))
        for event in events
    ]
    if done:
        lines.append("[DONE]")
    return "".join(f"data: {line}\n\n" for line in lines).encode()


def provider_for(
    http: HTTPSessionHolder, server: LocalServer, preset: Preset, name: str = "p"
) -> OpenAIProvider:
    """A provider with `preset`'s quirks, on the local server."""
    return OpenAIProvider(name, api_key=KEY, base_url=server.url + "/v1", http=http, preset=preset)


def context(http: HTTPSessionHolder, env: Mapping[str, str] | None = None) -> ProviderContext:
    """A factory context with a fixed environment."""
    return ProviderContext(http=http, clock=MonotonicClock(), env=dict(env or {}).get)


async def collect(stream: Any) -> list[Any]:
    """Every event of `stream`, closing it."""
    async with stream:
        return [event async for event in stream]


def sent(server: LocalServer, index: int = -1) -> Any:
    """The JSON body of a request the server received (the last, by default)."""
    return server.requests[index].json()


async def generate_with(
    http: HTTPSessionHolder,
    server: LocalServer,
    preset: Preset,
    model: str,
    request: Request | str,
    *options: Any,
) -> Any:
    """The body `generate()` sends for `request` to a server of `preset`."""
    server.routes[CHAT_PATH] = respond(200, OPENAI_TEXT_REPLY)
    await provider_for(http, server, preset).model(model).generate(request, *options)
    return sent(server)


# A plain reply (openai-python's ChatCompletion shape, providers.md 3.3).
OPENAI_TEXT_REPLY: Final = {
    "id": "chatcmpl-a1",
    "object": "chat.completion",
    "created": 1767225600,
    "model": "gpt-4o-mini-2024-07-18",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Oslo.", "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11},
}


# --------------------------------------------------------------------------- Mistral

# A real magistral-medium-2509 reply (quoted in spring-ai's MistralAiReasoningContentTest):
# `content` is a [thinking, text] chunk list.
MAGISTRAL_REPLY: Final = (
    '{"id":"cmpl-test","created":1700000000,"model":"magistral-medium-2509",'
    '"usage":{"prompt_tokens":11,"total_tokens":48,"completion_tokens":37},'
    '"object":"chat.completion",'
    '"choices":[{"index":0,"finish_reason":"stop","message":{"role":"assistant",'
    '"tool_calls":null,"content":['
    '{"type":"thinking","thinking":[{"type":"text","text":"The user wants exactly READY."}],'
    '"closed":true},{"type":"text","text":"READY"}]}}]}'
)

# Magistral stream chunks as captured in the wild (a proxy's transformMistralThinkingChunks
# quotes one: `"delta":{"content":[{"type":"thinking","thinking":[{"type":"text",...}]}]}`);
# mistralai's reasoning_with_streaming example: thinking arrives as ThinkChunk lists, the
# answer as plain string fragments after it. Mistral sends usage on its last chunk
# (it takes no `stream_options`).
_MAGISTRAL_CHUNK = (
    '{"id":"426a1c8c62704d959621a94c1ff0cffb","object":"chat.completion.chunk",'
    '"created":1759752086,"model":"magistral-medium-latest","choices":[{"index":0,'
    '"delta":%s,"finish_reason":%s}]%s}'
)
MAGISTRAL_STREAM: Final = sse(
    _MAGISTRAL_CHUNK % ('{"role":"assistant","content":""}', "null", ""),
    _MAGISTRAL_CHUNK
    % (
        '{"content":[{"type":"thinking","thinking":[{"type":"text","text":"6 divided"}]}]}',
        "null",
        "",
    ),
    _MAGISTRAL_CHUNK
    % (
        '{"content":[{"type":"thinking","thinking":[{"type":"text","text":" by 2 is 3."}]}]}',
        "null",
        "",
    ),
    _MAGISTRAL_CHUNK % ('{"content":"The answer"}', "null", ""),
    _MAGISTRAL_CHUNK % ('{"content":[{"type":"text","text":" is 3."}]}', "null", ""),
    _MAGISTRAL_CHUNK
    % (
        '{"content":""}',
        '"stop"',
        ',"usage":{"prompt_tokens":12,"total_tokens":52,"completion_tokens":40}',
    ),
)


@CHUNKS
async def test_mistral_list_content_streams_reasoning_and_text(
    http: HTTPSessionHolder, server: LocalServer, chunk: int
) -> None:
    """Magistral's list-form `delta.content` gives reasoning and text, not an empty stop."""
    server.routes[CHAT_PATH] = play(MAGISTRAL_STREAM, chunk=chunk)
    dsn = DSN.parse(f"mistral+http://{KEY}@{server.url.partition('://')[2]}/v1")
    provider = openai_compatible_factory("mistral")("mistral", dsn, context(http))
    stream = await provider.model("magistral-medium-latest").stream("6 / 2?")
    events = await collect(stream)

    assert events == [
        StreamStart("mistral/magistral-medium-latest", None, "magistral-medium-latest"),
        ReasoningDelta("6 divided", provider="openai"),
        ReasoningDelta(" by 2 is 3.", provider="openai"),
        TextDelta("The answer"),
        TextDelta(" is 3."),
        UsageUpdate(Usage(12, 40)),
        StreamEnd(FinishReason.STOP),
    ]
    response = stream.response
    assert response.text == "The answer is 3."
    assert response.reasoning == "6 divided by 2 is 3."
    assert response.reasoning_parts == (ReasoningPart("6 divided by 2 is 3.", provider="openai"),)
    assert "stream_options" not in sent(server)  # Mistral rejects it (422)


async def test_mistral_list_content_reply_reads_thinking_as_reasoning(
    http: HTTPSessionHolder, server: LocalServer
) -> None:
    """A reply's thinking part is reasoning; its text part is the text."""
    server.routes[CHAT_PATH] = respond(200, MAGISTRAL_REPLY)
    provider = provider_for(http, server, OPENAI_COMPATIBLE_PRESETS["mistral"], "mistral")
    response = await provider.model("magistral-medium-2509").generate("Say READY")

    assert response.text == "READY"
    assert response.reasoning == "The user wants exactly READY."
    assert response.reasoning_parts == (
        ReasoningPart("The user wants exactly READY.", provider="openai"),
    )
    assert response.served_model == "magistral-medium-2509"
    assert response.message.parts[0] == response.reasoning_parts[0]


@pytest.mark.parametrize(
    ("model", "effort", "fields"),
    [
        # docs.mistral.ai/capabilities/reasoning: "high" or "none" on mistral-small-latest.
        ("mistral-small-latest", "high", {"reasoning_effort": "high"}),
        ("mistral-small-latest", "low", {"reasoning_effort": "high"}),
        ("mistral-small-latest", "none", {"reasoning_effort": "none"}),
        ("mistral-medium-3-5", "medium", {"reasoning_effort": "high"}),
        # Magistral "always reasons; no parameter needed".
        ("magistral-medium-latest", "high", {}),
    ],
)
async def test_mistral_reasoning_effort(
    http: HTTPSessionHolder,
    server: LocalServer,
    model: str,
    effort: Any,
    fields: dict[str, Any],
) -> None:
    """Mistral gets `reasoning_effort` "high" / "none", Magistral no field."""
    body = await generate_with(
        http, server, OPENAI_COMPATIBLE_PRESETS["mistral"], model, "Hi", reasoning(effort)
    )
    assert {key: body[key] for key in ("reasoning_effort",) if key in body} == fields


# --------------------------------------------------------------------------- refusals

# openai-python's ChatCompletionMessage carries `refusal`; a declined structured-output
# request finishes "stop" with `content: null` (providers.md 3.3).
REFUSAL_REPLY: Final = {
    "id": "chatcmpl-r1",
    "object": "chat.completion",
    "created": 1767225600,
    "model": "gpt-4o-2024-08-06",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": None,
                "refusal": "I'm sorry, I can't assist with that request.",
                "annotations": [],
            },
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 31, "completion_tokens": 10, "total_tokens": 41},
}


def _openai_chunk(delta: Mapping[str, Any], finish: str | None = None) -> dict[str, Any]:
    """A chat.completion.chunk as OpenAI writes it (openai-python's ChatCompletionChunk)."""
    return {
        "id": "chatcmpl-r2",
        "object": "chat.completion.chunk",
        "created": 1767225600,
        "model": "gpt-4o-2024-08-06",
        "service_tier": "default",
        "system_fingerprint": "fp_f33640a400",
        "choices": [{"index": 0, "delta": dict(delta), "logprobs": None, "finish_reason": finish}],
        "usage": None,
    }


REFUSAL_STREAM: Final = sse(
    _openai_chunk({"role": "assistant", "content": None, "refusal": ""}),
    _openai_chunk({"refusal": "I'm sorry,"}),
    _openai_chunk({"refusal": " I can't assist with that."}),
    _openai_chunk({}, "stop"),
)


async def test_a_refusal_keeps_the_wire_finish(
    http: HTTPSessionHolder, server: LocalServer
) -> None:
    """`message.refusal` is the refusal; `finish_reason: "stop"` stays STOP."""
    server.routes[CHAT_PATH] = respond(200, REFUSAL_REPLY)
    response = await provider_for(http, server, OPENAI_PRESET).model("gpt-4o").generate("x")
    assert response.finish_reason is FinishReason.STOP
    assert response.refusal == "I'm sorry, I can't assist with that request."
    assert response.text == ""


@CHUNKS
async def test_a_streamed_refusal_keeps_the_wire_finish(
    http: HTTPSessionHolder, server: LocalServer, chunk: int
) -> None:
    """`delta.refusal` pieces join into `StreamEnd.refusal`; the finish is STOP."""
    server.routes[CHAT_PATH] = play(REFUSAL_STREAM, chunk=chunk)
    stream = await provider_for(http, server, OPENAI_PRESET).model("gpt-4o").stream("x")
    events = await collect(stream)
    assert events[-1] == StreamEnd(FinishReason.STOP, "I'm sorry, I can't assist with that.")
    assert stream.response.refusal == "I'm sorry, I can't assist with that."
    assert stream.response.finish_reason is FinishReason.STOP
    assert stream.response.text == ""


# --------------------------------------------------------------------------- DeepSeek

# Real deepseek-reasoner chunks (one quoted verbatim in a Java client's comments:
# `{"id":"ccf32be6-...","object":"chat.completion.chunk","created":1761725211,
# "model":"deepseek-reasoner","system_fingerprint":"fp_ffc7281d48_prod0820_fp8_kvcache",
# "choices":[{"index":0,"delta":{"content":null,"reasoning_content":"在"},...}]}`); the
# usage chunk carries DeepSeek's `prompt_cache_hit_tokens` / `prompt_cache_miss_tokens`
# (api-docs.deepseek.com, "Context Caching").
_DEEPSEEK_CHUNK = (
    '{"id":"ccf32be6-ad2f-4658-963a-fc3c22346e6b","object":"chat.completion.chunk",'
    '"created":1761725211,"model":"deepseek-reasoner",'
    '"system_fingerprint":"fp_ffc7281d48_prod0820_fp8_kvcache","choices":[%s]%s}'
)
_DEEPSEEK_USAGE = (
    ',"usage":{"prompt_tokens":20,"completion_tokens":30,"total_tokens":50,'
    '"prompt_tokens_details":{"cached_tokens":16},"completion_tokens_details":'
    '{"reasoning_tokens":24},"prompt_cache_hit_tokens":16,"prompt_cache_miss_tokens":4}'
)
DEEPSEEK_STREAM: Final = sse(
    _DEEPSEEK_CHUNK
    % (
        '{"index":0,"delta":{"role":"assistant","content":null,"reasoning_content":""},'
        '"logprobs":null,"finish_reason":null}',
        ',"usage":null',
    ),
    _DEEPSEEK_CHUNK
    % (
        '{"index":0,"delta":{"content":null,"reasoning_content":"在"},"logprobs":null,'
        '"finish_reason":null}',
        ',"usage":null',
    ),
    _DEEPSEEK_CHUNK
    % (
        '{"index":0,"delta":{"content":null,"reasoning_content":"比较 9.11 和 9.8"},'
        '"logprobs":null,"finish_reason":null}',
        ',"usage":null',
    ),
    _DEEPSEEK_CHUNK
    % (
        '{"index":0,"delta":{"content":"9.8 更大","reasoning_content":null},"logprobs":null,'
        '"finish_reason":null}',
        ',"usage":null',
    ),
    _DEEPSEEK_CHUNK
    % (
        '{"index":0,"delta":{"content":"","reasoning_content":null},"logprobs":null,'
        '"finish_reason":"stop"}',
        _DEEPSEEK_USAGE,
    ),
)
DEEPSEEK_USAGE: Final = Usage(
    20, 30, cached_input_tokens=16, cache_write_tokens=0, reasoning_tokens=24
)


@CHUNKS
async def test_deepseek_reasoning_content_stream(
    http: HTTPSessionHolder, server: LocalServer, chunk: int
) -> None:
    """`delta.reasoning_content` streams as ReasoningDelta; usage details and the served
    model come along."""
    server.routes[CHAT_PATH] = play(DEEPSEEK_STREAM, chunk=chunk)
    provider = provider_for(http, server, OPENAI_COMPATIBLE_PRESETS["deepseek"], "deepseek")
    stream = await provider.model("deepseek-reasoner").stream("9.11 和 9.8 哪个大?")
    events = await collect(stream)

    assert events == [
        StreamStart("deepseek/deepseek-reasoner", None, "deepseek-reasoner"),
        ReasoningDelta("在", provider="openai"),
        ReasoningDelta("比较 9.11 和 9.8", provider="openai"),
        TextDelta("9.8 更大"),
        UsageUpdate(DEEPSEEK_USAGE),
        StreamEnd(FinishReason.STOP),
    ]
    response = stream.response
    assert (response.text, response.reasoning) == ("9.8 更大", "在比较 9.11 和 9.8")
    assert response.usage == DEEPSEEK_USAGE
    assert response.served_model == "deepseek-reasoner"


async def test_deepseek_reasoning_content_reply_and_cache_hits(
    http: HTTPSessionHolder, server: LocalServer
) -> None:
    """`message.reasoning_content` is the reasoning; `prompt_cache_hit_tokens` alone (the
    older usage shape, no details) is the cached input."""
    body = (
        '{"id":"930c60df-bf64-41c9-a88e-3ec75f81e00e","object":"chat.completion",'
        '"created":1738492867,"model":"deepseek-reasoner","choices":[{"index":0,'
        '"message":{"role":"assistant","content":"9.8 is greater.",'
        '"reasoning_content":"Compare the tenths: 8 > 1."},"logprobs":null,'
        '"finish_reason":"stop"}],"usage":{"prompt_tokens":15,"completion_tokens":60,'
        '"total_tokens":75,"prompt_cache_hit_tokens":0,"prompt_cache_miss_tokens":15,'
        '"completion_tokens_details":{"reasoning_tokens":51}},'
        '"system_fingerprint":"fp_7e73fd9a08"}'
    )
    server.routes[CHAT_PATH] = respond(200, body)
    provider = provider_for(http, server, OPENAI_COMPATIBLE_PRESETS["deepseek"], "deepseek")
    response = await provider.model("deepseek-reasoner").generate("9.11 or 9.8?")

    assert response.text == "9.8 is greater."
    assert response.reasoning == "Compare the tenths: 8 > 1."
    assert response.reasoning_parts == (ReasoningPart(response.reasoning, provider="openai"),)
    assert response.usage == Usage(15, 60, reasoning_tokens=51)

    server.routes[CHAT_PATH] = respond(
        200, body.replace('"prompt_cache_hit_tokens":0', '"prompt_cache_hit_tokens":12')
    )
    again = await provider.model("deepseek-reasoner").generate("9.11 or 9.8?")
    assert again.usage.cached_input_tokens == 12


@pytest.mark.parametrize(
    ("option", "fields"),
    [
        # api-docs.deepseek.com/guides/thinking_mode: `thinking` toggles, `reasoning_effort`
        # is low / high ("minimal -> low, medium -> high" on the server).
        (reasoning("high"), {"thinking": {"type": "enabled"}, "reasoning_effort": "high"}),
        (reasoning("medium"), {"thinking": {"type": "enabled"}, "reasoning_effort": "high"}),
        (reasoning("minimal"), {"thinking": {"type": "enabled"}, "reasoning_effort": "low"}),
        (reasoning("none"), {"thinking": {"type": "disabled"}}),
        (
            reasoning(budget_tokens=2000),
            {"thinking": {"type": "enabled"}, "reasoning_effort": "low"},
        ),
    ],
)
async def test_deepseek_thinking_toggle_and_effort(
    http: HTTPSessionHolder, server: LocalServer, option: Any, fields: dict[str, Any]
) -> None:
    """DeepSeek gets its thinking switch and a low / high effort."""
    body = await generate_with(
        http, server, OPENAI_COMPATIBLE_PRESETS["deepseek"], "deepseek-reasoner", "Hi", option
    )
    assert {key: body[key] for key in ("thinking", "reasoning_effort") if key in body} == fields


def _history(parts: Sequence[Any]) -> Request:
    return Request(
        messages=(
            Message.user("Weather in Paris?"),
            Message("assistant", tuple(parts)),
            Message.tool_result("call_1", '{"temp": 21}'),
        )
    )


async def test_deepseek_gets_the_reasoning_of_a_tool_call_turn_back(
    http: HTTPSessionHolder, server: LocalServer
) -> None:
    """DeepSeek requires the `reasoning_content` of an assistant turn that called tools
    (thinking_mode: "must be fully passed back ... the API will return a 400 error");
    another family's reasoning is dropped."""
    call = ToolCallPart(ToolCall("call_1", "weather", '{"city":"Paris"}'))
    parts = [
        ReasoningPart("Need the weather tool.", provider="openai"),
        ReasoningPart("signed", signature="sig", provider="anthropic"),
        call,
    ]
    body = await generate_with(
        http, server, OPENAI_COMPATIBLE_PRESETS["deepseek"], "deepseek-reasoner", _history(parts)
    )
    assistant = body["messages"][1]
    assert assistant["reasoning_content"] == "Need the weather tool."
    assert assistant["tool_calls"][0]["id"] == "call_1"
    assert assistant["content"] is None


async def test_reasoning_of_a_turn_without_tool_calls_is_not_sent_back(
    http: HTTPSessionHolder, server: LocalServer
) -> None:
    """Without tool calls DeepSeek ignores the reasoning (older releases rejected it)."""
    request = Request(
        messages=(
            Message.user("Hi"),
            Message.assistant(ReasoningPart("greet", provider="openai"), TextPart("Hello!")),
            Message.user("And again?"),
        )
    )
    body = await generate_with(
        http, server, OPENAI_COMPATIBLE_PRESETS["deepseek"], "deepseek-reasoner", request
    )
    assert body["messages"][1] == {"role": "assistant", "content": "Hello!"}


@pytest.mark.parametrize("preset", ["openai", "groq", "openrouter", "mistral"])
async def test_other_servers_never_get_reasoning_back(
    http: HTTPSessionHolder, server: LocalServer, preset: str
) -> None:
    """OpenAI never returns reasoning text and the others do not take it: a replayed
    `ReasoningPart` is dropped silently, whatever its family."""
    chosen = OPENAI_PRESET if preset == "openai" else OPENAI_COMPATIBLE_PRESETS[preset]
    call = ToolCallPart(ToolCall("call_1", "weather", '{"city":"Paris"}'))
    parts = [ReasoningPart("why", provider="openai"), ReasoningPart("x", provider="gemini"), call]
    body = await generate_with(http, server, chosen, "m", _history(parts))
    assert body["messages"][1] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "weather", "arguments": '{"city":"Paris"}'},
            }
        ],
    }


# --------------------------------------------------------------------------- Groq

# Verbatim frames of a live Groq openai/gpt-oss-20b stream (captured in a Rust client's
# test fixtures): reasoning in `delta.reasoning` with `channel: "analysis"`, the usage
# both on the finish chunk (and in `x_groq.usage`) and on the include_usage chunk.
_GROQ_ID = '"id":"chatcmpl-107bf530-0688-4a0e-b2a3-b21025c15124"'
_GROQ_HEAD = (
    f'{{{_GROQ_ID},"object":"chat.completion.chunk","created":1786530113,'
    '"model":"openai/gpt-oss-20b","system_fingerprint":"fp_ef00694abe",'
)
_GROQ_USAGE = (
    '{"queue_time":0.01628762,"prompt_tokens":73,"prompt_time":0.003557195,'
    '"completion_tokens":16,"completion_time":0.016187042,"total_tokens":89,'
    '"total_time":0.019744237,"completion_tokens_details":{"reasoning_tokens":14}}'
)


def _groq_reasoning(text: str) -> str:
    piece = json.dumps(text)
    return (
        _GROQ_HEAD + '"choices":[{"index":0,"delta":{"reasoning":' + piece + ","
        '"channel":"analysis"},"logprobs":null,"finish_reason":null}]}'
    )


GROQ_STREAM: Final = sse(
    _GROQ_HEAD + '"choices":[{"index":0,"delta":{"role":"assistant","content":""},'
    '"logprobs":null,"finish_reason":null}],'
    '"x_groq":{"id":"req_01kztqwa7ke0s9kzg8qqda4hs5","seed":917241710}}',
    _groq_reasoning("The"),
    _groq_reasoning(" user says"),
    _groq_reasoning(' "Say OK".'),
    _GROQ_HEAD + '"choices":[{"index":0,"delta":{"content":"OK"},"logprobs":null,'
    '"finish_reason":null}]}',
    _GROQ_HEAD + '"choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}],'
    '"x_groq":{"id":"req_01kztqwa7ke0s9kzg8qqda4hs5","usage":' + _GROQ_USAGE + "},"
    '"usage":' + _GROQ_USAGE + "}",
    _GROQ_HEAD + '"choices":[],"usage":' + _GROQ_USAGE + ',"service_tier":"on_demand"}',
)
GROQ_USAGE: Final = Usage(73, 16, reasoning_tokens=14)


@CHUNKS
async def test_groq_reasoning_stream(
    http: HTTPSessionHolder, server: LocalServer, chunk: int
) -> None:
    """Groq's `delta.reasoning` streams as ReasoningDelta, before the answer."""
    server.routes[CHAT_PATH] = play(GROQ_STREAM, chunk=chunk)
    provider = provider_for(http, server, OPENAI_COMPATIBLE_PRESETS["groq"], "groq")
    stream = await provider.model("openai/gpt-oss-20b").stream("Say OK")
    events = await collect(stream)

    assert events == [
        StreamStart("groq/openai/gpt-oss-20b", None, "openai/gpt-oss-20b"),
        ReasoningDelta("The", provider="openai"),
        ReasoningDelta(" user says", provider="openai"),
        ReasoningDelta(' "Say OK".', provider="openai"),
        TextDelta("OK"),
        UsageUpdate(GROQ_USAGE),
        UsageUpdate(GROQ_USAGE),  # Groq states the usage twice; the last one wins
        StreamEnd(FinishReason.STOP),
    ]
    assert stream.response.reasoning == 'The user says "Say OK".'
    assert stream.response.usage == GROQ_USAGE


async def test_groq_reasoning_reply(http: HTTPSessionHolder, server: LocalServer) -> None:
    """`message.reasoning` (console.groq.com/docs/reasoning, "parsed") is the reasoning."""
    body = {
        "id": "chatcmpl-9f3a",
        "object": "chat.completion",
        "created": 1786530113,
        "model": "qwen/qwen3-32b",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Lift comes from the wings.",
                    "reasoning": "Explain lift briefly.",
                },
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "queue_time": 0.19,
            "prompt_tokens": 18,
            "prompt_time": 0.0003,
            "completion_tokens": 40,
            "completion_time": 0.1,
            "total_tokens": 58,
            "total_time": 0.1,
        },
        "system_fingerprint": "fp_d58dbe76cd",
        "x_groq": {"id": "req_01kz7bdsx2ewjbpzjmx50syk52"},
        "service_tier": "on_demand",
    }
    server.routes[CHAT_PATH] = respond(200, body)
    provider = provider_for(http, server, OPENAI_COMPATIBLE_PRESETS["groq"], "groq")
    response = await provider.model("qwen/qwen3-32b").generate("How do planes fly?")
    assert response.reasoning == "Explain lift briefly."
    assert response.text == "Lift comes from the wings."
    assert response.served_model == "qwen/qwen3-32b"


@pytest.mark.parametrize(
    ("model", "option", "fields"),
    [
        # console.groq.com/docs/reasoning: gpt-oss takes low / medium / high and no
        # reasoning_format (include_reasoning instead); Qwen3 takes none / default.
        ("openai/gpt-oss-20b", reasoning("high"), {"reasoning_effort": "high"}),
        ("openai/gpt-oss-120b", reasoning("minimal"), {"reasoning_effort": "low"}),
        (
            "openai/gpt-oss-20b",
            reasoning("low", summary=False),
            {"reasoning_effort": "low", "include_reasoning": False},
        ),
        (
            "qwen/qwen3-32b",
            reasoning("high"),
            {"reasoning_effort": "default", "reasoning_format": "parsed"},
        ),
        (
            "qwen/qwen3-32b",
            reasoning("medium", summary=False),
            {"reasoning_effort": "default", "reasoning_format": "hidden"},
        ),
        ("qwen/qwen3-32b", reasoning("none"), {"reasoning_effort": "none"}),
        ("deepseek-r1-distill-llama-70b", reasoning("high"), {"reasoning_format": "parsed"}),
    ],
)
async def test_groq_reasoning_fields(
    http: HTTPSessionHolder,
    server: LocalServer,
    model: str,
    option: Any,
    fields: dict[str, Any],
) -> None:
    """Groq's fields per model family, with `reasoning_format` where the model takes it."""
    body = await generate_with(http, server, OPENAI_COMPATIBLE_PRESETS["groq"], model, "Hi", option)
    keys = ("reasoning_effort", "reasoning_format", "include_reasoning")
    assert {key: body[key] for key in keys if key in body} == fields


# --------------------------------------------------------------------------- OpenAI

# openai-python's CompletionUsage with its details (providers.md 3.3), on an o-series
# reply: reasoning tokens are part of completion_tokens, cached ones of prompt_tokens.
O3_REPLY: Final = {
    "id": "chatcmpl-o3",
    "object": "chat.completion",
    "created": 1767225600,
    "model": "o3-2025-04-16",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "42", "refusal": None, "annotations": []},
            "finish_reason": "stop",
        }
    ],
    "usage": {
        "prompt_tokens": 1200,
        "completion_tokens": 300,
        "total_tokens": 1500,
        "prompt_tokens_details": {"cached_tokens": 1024, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 256,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    },
    "service_tier": "default",
    "system_fingerprint": None,
}
O3_USAGE: Final = Usage(1200, 300, cached_input_tokens=1024, reasoning_tokens=256)


async def test_openai_usage_details_and_served_model(
    http: HTTPSessionHolder, server: LocalServer
) -> None:
    """Cached and reasoning tokens come from the details; the served model from `model`."""
    server.routes[CHAT_PATH] = respond(200, O3_REPLY)
    response = await provider_for(http, server, OPENAI_PRESET, "openai").model("o3").generate("?")
    assert response.usage == O3_USAGE
    assert response.served_model == "o3-2025-04-16"
    assert response.model == "openai/o3"
    assert response.reasoning == "" and response.reasoning_parts == ()  # OpenAI shows none


@CHUNKS
async def test_openai_stream_usage_details_and_served_model(
    http: HTTPSessionHolder, server: LocalServer, chunk: int
) -> None:
    """The usage chunk's details, and the first chunk's `model`, reach the events."""
    usage_chunk = {
        **_openai_chunk({}),
        "model": "o3-2025-04-16",
        "choices": [],
        "usage": O3_REPLY["usage"],
    }
    body = sse(
        {**_openai_chunk({"role": "assistant", "content": ""}), "model": "o3-2025-04-16"},
        {**_openai_chunk({"content": "42"}), "model": "o3-2025-04-16"},
        {**_openai_chunk({}, "stop"), "model": "o3-2025-04-16"},
        usage_chunk,
    )
    server.routes[CHAT_PATH] = play(body, chunk=chunk)
    stream = await provider_for(http, server, OPENAI_PRESET, "openai").model("o3").stream("?")
    events = await collect(stream)
    assert events == [
        StreamStart("openai/o3", None, "o3-2025-04-16"),
        TextDelta("42"),
        UsageUpdate(O3_USAGE),
        StreamEnd(FinishReason.STOP),
    ]
    assert stream.response.served_model == "o3-2025-04-16"
    assert stream.response.usage == O3_USAGE


@pytest.mark.parametrize(
    ("model", "option", "effort"),
    [
        # The API reference's reasoning_effort enum: o-series low/medium/high; "all models
        # before gpt-5.1 ... do not support none"; gpt-5.1 takes none/low/medium/high;
        # gpt-5-pro only high; o1-mini and o1-preview take no reasoning_effort.
        ("o3", reasoning("high"), "high"),
        ("o4-mini", reasoning("minimal"), "low"),
        ("o3-mini", reasoning("none"), "low"),
        ("o1-mini", reasoning("high"), None),
        ("gpt-5", reasoning("minimal"), "minimal"),
        ("gpt-5-mini", reasoning("none"), "minimal"),
        ("gpt-5.1", reasoning("none"), "none"),
        ("gpt-5.1", reasoning("minimal"), "low"),
        ("gpt-5-pro", reasoning("low"), "high"),
        ("gpt-5", reasoning(budget_tokens=3000), "medium"),  # a budget: its nearest effort
        ("gpt-5", reasoning(budget_tokens=0), "minimal"),
    ],
)
async def test_openai_reasoning_effort(
    http: HTTPSessionHolder, server: LocalServer, model: str, option: Any, effort: str | None
) -> None:
    """`reasoning_effort` is the level, clamped to what the model family takes."""
    body = await generate_with(http, server, OPENAI_PRESET, model, "Hi", option)
    assert body.get("reasoning_effort") == effort
    assert "reasoning" not in body and "thinking" not in body


async def test_no_reasoning_option_sends_no_reasoning_field(
    http: HTTPSessionHolder, server: LocalServer
) -> None:
    """Without `reasoning()` nothing is sent: the model's default applies."""
    for preset in (OPENAI_PRESET, *OPENAI_COMPATIBLE_PRESETS.values()):
        body = await generate_with(http, server, preset, "qwen/qwen3-32b", "Hi")
        assert not {"reasoning_effort", "reasoning", "thinking", "reasoning_format"} & set(body)


# --------------------------------------------------------------------------- other presets


@pytest.mark.parametrize(
    ("option", "fields"),
    [
        # openrouter.ai/docs/use-cases/reasoning-tokens: one `reasoning` object, "effort"
        # or "max_tokens" (not both), "exclude" to leave the text out.
        (reasoning("high"), {"reasoning": {"effort": "high"}}),
        (reasoning("none"), {"reasoning": {"effort": "none"}}),
        (reasoning(budget_tokens=2000), {"reasoning": {"max_tokens": 2000}}),
        (reasoning("low", summary=False), {"reasoning": {"effort": "low", "exclude": True}}),
    ],
)
async def test_openrouter_reasoning_object(
    http: HTTPSessionHolder, server: LocalServer, option: Any, fields: dict[str, Any]
) -> None:
    """OpenRouter gets its `reasoning` object, never `reasoning_effort`."""
    body = await generate_with(
        http,
        server,
        OPENAI_COMPATIBLE_PRESETS["openrouter"],
        "anthropic/claude-sonnet-4",
        "Hi",
        option,
    )
    assert {key: body[key] for key in ("reasoning", "reasoning_effort") if key in body} == fields


async def test_openrouter_reasoning_reply(http: HTTPSessionHolder, server: LocalServer) -> None:
    """OpenRouter's `message.reasoning` is the reasoning (`reasoning_details` is not read)."""
    body = {
        "id": "gen-1767225600-abc",
        "provider": "DeepInfra",
        "model": "deepseek/deepseek-r1",
        "object": "chat.completion",
        "created": 1767225600,
        "choices": [
            {
                "logprobs": None,
                "finish_reason": "stop",
                "native_finish_reason": "stop",
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Paris.",
                    "refusal": None,
                    "reasoning": "The capital of France is Paris.",
                    "reasoning_details": [
                        {
                            "type": "reasoning.text",
                            "text": "The capital of France is Paris.",
                            "format": "unknown",
                            "index": 0,
                        }
                    ],
                },
            }
        ],
        "usage": {
            "prompt_tokens": 10,
            "completion_tokens": 30,
            "total_tokens": 40,
            "prompt_tokens_details": {"cached_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 25},
        },
    }
    server.routes[CHAT_PATH] = respond(200, body)
    provider = provider_for(http, server, OPENAI_COMPATIBLE_PRESETS["openrouter"], "or")
    response = await provider.model("deepseek/deepseek-r1").generate("Capital of France?")
    assert response.reasoning == "The capital of France is Paris."
    assert response.usage == Usage(10, 30, reasoning_tokens=25)
    assert response.served_model == "deepseek/deepseek-r1"


@pytest.mark.parametrize(
    ("model", "option", "effort"),
    [
        # docs.x.ai: grok-3-mini takes low / high; grok-4 rejects the field.
        ("grok-3-mini", reasoning("medium"), "high"),
        ("grok-3-mini", reasoning("low"), "low"),
        ("grok-4", reasoning("high"), None),
        ("grok-4-fast-reasoning", reasoning("high"), None),
        ("grok-4.3", reasoning("none"), "none"),
        ("grok-4.5", reasoning("minimal"), "low"),
    ],
)
async def test_xai_reasoning_effort(
    http: HTTPSessionHolder, server: LocalServer, model: str, option: Any, effort: str | None
) -> None:
    """xAI's efforts per model family."""
    body = await generate_with(http, server, OPENAI_COMPATIBLE_PRESETS["xai"], model, "Hi", option)
    assert body.get("reasoning_effort") == effort


@pytest.mark.parametrize("preset", ["vllm", "together", "fireworks", "llamacpp", "lmstudio"])
async def test_other_servers_get_reasoning_effort(
    http: HTTPSessionHolder, server: LocalServer, preset: str
) -> None:
    """Every other server gets `reasoning_effort` (low / medium / high as asked)."""
    chosen = OPENAI_COMPATIBLE_PRESETS[preset]
    body = await generate_with(http, server, chosen, "gpt-oss-20b", "Hi", reasoning("medium"))
    assert body["reasoning_effort"] == "medium"
    body = await generate_with(http, server, chosen, "gpt-oss-20b", "Hi", reasoning("minimal"))
    assert body["reasoning_effort"] == "low"


@CHUNKS
async def test_vllm_reasoning_in_both_spellings_is_read_once(
    http: HTTPSessionHolder, server: LocalServer, chunk: int
) -> None:
    """A server that sends `reasoning` and `reasoning_content` with the same text (vLLM
    during the rename) gives the text once."""
    head = {"id": "chatcmpl-v1", "object": "chat.completion.chunk", "created": 1767225600}
    model = {"model": "Qwen/Qwen3-8B"}
    body = sse(
        {
            **head,
            **model,
            "choices": [
                {
                    "index": 0,
                    "delta": {"role": "assistant", "content": ""},
                    "logprobs": None,
                    "finish_reason": None,
                }
            ],
        },
        {
            **head,
            **model,
            "choices": [
                {
                    "index": 0,
                    "delta": {"reasoning": "Think.", "reasoning_content": "Think."},
                    "logprobs": None,
                    "finish_reason": None,
                }
            ],
        },
        {
            **head,
            **model,
            "choices": [
                {
                    "index": 0,
                    "delta": {"content": "Done."},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
        },
    )
    server.routes[CHAT_PATH] = play(body, chunk=chunk)
    provider = provider_for(http, server, OPENAI_COMPATIBLE_PRESETS["vllm"], "vllm")
    stream = await provider.model("Qwen/Qwen3-8B").stream("Hi")
    events = await collect(stream)
    assert [e for e in events if isinstance(e, ReasoningDelta)] == [
        ReasoningDelta("Think.", provider="openai")
    ]
    assert stream.response.reasoning == "Think."


# --------------------------------------------------------------------------- tool calls


# A compatible server (vLLM with a tool parser, Ollama's /v1, llama.cpp) finishing a tool
# call with "stop" (issue reports of `finish_reason: "stop"` beside `tool_calls`).
def _tool_reply(finish: str | None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-tc",
        "object": "chat.completion",
        "created": 1767225600,
        "model": "qwen2.5:7b",
        "system_fingerprint": "fp_ollama",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "",
                    "tool_calls": [
                        {
                            "id": "call_ab12",
                            "index": 0,
                            "type": "function",
                            "function": {"name": "weather", "arguments": '{"city":"Oslo"}'},
                        }
                    ],
                },
                "finish_reason": finish,
            }
        ],
        "usage": {"prompt_tokens": 80, "completion_tokens": 20, "total_tokens": 100},
    }


@pytest.mark.parametrize(
    ("finish", "expected"),
    [
        ("stop", FinishReason.TOOL_CALLS),
        ("tool_calls", FinishReason.TOOL_CALLS),
        (None, FinishReason.TOOL_CALLS),
        ("length", FinishReason.LENGTH),
        ("content_filter", FinishReason.CONTENT_FILTER),
    ],
)
async def test_tool_calls_with_a_natural_stop_finish_with_tool_calls(
    http: HTTPSessionHolder, server: LocalServer, finish: str | None, expected: FinishReason
) -> None:
    """Tool calls that stopped naturally are TOOL_CALLS; a cut or a filter stays."""
    server.routes[CHAT_PATH] = respond(200, _tool_reply(finish))
    provider = provider_for(http, server, OPENAI_COMPATIBLE_PRESETS["vllm"], "vllm")
    response = await provider.model("qwen2.5:7b").generate("Weather in Oslo?")
    assert response.finish_reason is expected
    assert response.tool_calls == (ToolCall("call_ab12", "weather", '{"city":"Oslo"}'),)


@CHUNKS
@pytest.mark.parametrize(
    ("finish", "expected"),
    [("stop", FinishReason.TOOL_CALLS), ("length", FinishReason.LENGTH)],
)
async def test_streamed_tool_calls_with_stop_finish_with_tool_calls(
    http: HTTPSessionHolder,
    server: LocalServer,
    chunk: int,
    finish: str,
    expected: FinishReason,
) -> None:
    """The rule holds for streams too (Ollama's /v1 and llama.cpp say "stop")."""
    head = {
        "id": "chatcmpl-tc",
        "object": "chat.completion.chunk",
        "created": 1767225600,
        "model": "qwen2.5:7b",
        "system_fingerprint": "fp_ollama",
    }
    body = sse(
        {
            **head,
            "choices": [
                {
                    "index": 0,
                    "delta": {
                        "role": "assistant",
                        "content": "",
                        "tool_calls": [
                            {
                                "id": "call_ab12",
                                "index": 0,
                                "type": "function",
                                "function": {"name": "weather", "arguments": '{"city":'},
                            }
                        ],
                    },
                    "finish_reason": None,
                }
            ],
        },
        {
            **head,
            "choices": [
                {
                    "index": 0,
                    "delta": {"tool_calls": [{"index": 0, "function": {"arguments": '"Oslo"}'}}]},
                    "finish_reason": None,
                }
            ],
        },
        {
            **head,
            "choices": [
                {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": finish}
            ],
        },
    )
    server.routes[CHAT_PATH] = play(body, chunk=chunk)
    provider = provider_for(http, server, OPENAI_COMPATIBLE_PRESETS["vllm"], "vllm")
    stream = await provider.model("qwen2.5:7b").stream("Weather in Oslo?")
    events = await collect(stream)
    assert events[1] == ToolCallDelta(0, "call_ab12", "weather", '{"city":')
    assert events[-1] == StreamEnd(expected)
    assert stream.response.tool_calls == (ToolCall("call_ab12", "weather", '{"city":"Oslo"}'),)


# --------------------------------------------------------------------------- Azure

AZURE_VERSION = "2024-10-21"
DEPLOYMENT = "gpt-4o-prod"

# Azure's chat completion: OpenAI's, with keys sorted, `prompt_filter_results` beside the
# choices and `content_filter_results` in each (Azure OpenAI REST reference, 2024-10-21).
_SAFE = {"filtered": False, "severity": "safe"}
_FILTERS = {"hate": _SAFE, "self_harm": _SAFE, "sexual": _SAFE, "violence": _SAFE}
AZURE_REPLY: Final = {
    "choices": [
        {
            "content_filter_results": _FILTERS,
            "finish_reason": "stop",
            "index": 0,
            "logprobs": None,
            "message": {
                "annotations": [],
                "content": "Hello!",
                "refusal": None,
                "role": "assistant",
            },
        }
    ],
    "created": 1767225600,
    "id": "chatcmpl-AZ1",
    "model": "gpt-4o-2024-11-20",
    "object": "chat.completion",
    "prompt_filter_results": [
        {
            "prompt_index": 0,
            "content_filter_results": {
                **_FILTERS,
                "jailbreak": {"filtered": False, "detected": False},
            },
        }
    ],
    "system_fingerprint": "fp_ee1d74bde0",
    "usage": {
        "completion_tokens": 3,
        "completion_tokens_details": {
            "accepted_prediction_tokens": 0,
            "audio_tokens": 0,
            "reasoning_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
        "prompt_tokens": 9,
        "prompt_tokens_details": {"audio_tokens": 0, "cached_tokens": 0},
        "total_tokens": 12,
    },
}

# Azure's stream (several clients' fixtures record it, e.g. vercel/ai's azure tests and
# LobeChat's): a first chunk with no choices, its prompt filter results and `"model": ""`;
# then OpenAI's chunks with `content_filter_results` in each choice; a chunk with the
# output filter's verdict and no delta; the usage chunk.
AZURE_STREAM: Final = sse(
    '{"choices":[],"created":0,"id":"","model":"","object":"","prompt_filter_results":'
    '[{"prompt_index":0,"content_filter_results":{"hate":{"filtered":false,"severity":"safe"},'
    '"self_harm":{"filtered":false,"severity":"safe"},"sexual":{"filtered":false,'
    '"severity":"safe"},"violence":{"filtered":false,"severity":"safe"}}}]}',
    '{"choices":[{"content_filter_results":{},"delta":{"content":"","refusal":null,'
    '"role":"assistant"},"finish_reason":null,"index":0,"logprobs":null}],'
    '"created":1767225600,"id":"chatcmpl-AZ2","model":"gpt-4o-2024-11-20",'
    '"obfuscation":"x","object":"chat.completion.chunk","system_fingerprint":"fp_ee1d74bde0",'
    '"usage":null}',
    '{"choices":[{"content_filter_results":{"hate":{"filtered":false,"severity":"safe"},'
    '"self_harm":{"filtered":false,"severity":"safe"},"sexual":{"filtered":false,'
    '"severity":"safe"},"violence":{"filtered":false,"severity":"safe"}},'
    '"delta":{"content":"Hel"},"finish_reason":null,"index":0,"logprobs":null}],'
    '"created":1767225600,"id":"chatcmpl-AZ2","model":"gpt-4o-2024-11-20",'
    '"object":"chat.completion.chunk","system_fingerprint":"fp_ee1d74bde0","usage":null}',
    '{"choices":[{"content_filter_results":{},"delta":{"content":"lo!"},"finish_reason":null,'
    '"index":0,"logprobs":null}],"created":1767225600,"id":"chatcmpl-AZ2",'
    '"model":"gpt-4o-2024-11-20","object":"chat.completion.chunk",'
    '"system_fingerprint":"fp_ee1d74bde0","usage":null}',
    '{"choices":[{"content_filter_results":{},"delta":{},"finish_reason":"stop","index":0,'
    '"logprobs":null}],"created":1767225600,"id":"chatcmpl-AZ2","model":"gpt-4o-2024-11-20",'
    '"object":"chat.completion.chunk","system_fingerprint":"fp_ee1d74bde0","usage":null}',
    '{"choices":[{"content_filter_offsets":{"check_offset":0,"start_offset":0,"end_offset":6},'
    '"content_filter_results":{"hate":{"filtered":false,"severity":"safe"},'
    '"self_harm":{"filtered":false,"severity":"safe"},"sexual":{"filtered":false,'
    '"severity":"safe"},"violence":{"filtered":false,"severity":"safe"}},'
    '"finish_reason":null,"index":0}],"created":0,"id":"","model":"","object":""}',
    '{"choices":[],"created":1767225600,"id":"chatcmpl-AZ2","model":"gpt-4o-2024-11-20",'
    '"object":"chat.completion.chunk","system_fingerprint":"fp_ee1d74bde0",'
    '"usage":{"completion_tokens":3,"completion_tokens_details":{"accepted_prediction_tokens":0,'
    '"audio_tokens":0,"reasoning_tokens":0,"rejected_prediction_tokens":0},'
    '"prompt_tokens":9,"prompt_tokens_details":{"audio_tokens":0,"cached_tokens":0},'
    '"total_tokens":12}}',
)

# A prompt blocked by Azure's content filter (vercel/ai's azure test records it verbatim).
AZURE_FILTERED: Final = (
    '{"error":{"message":"The response was filtered due to the prompt triggering Azure '
    "OpenAI's content management policy. Please modify your prompt and retry. To learn "
    "more about our content filtering policies please read our documentation: "
    'https://go.microsoft.com/fwlink/?linkid=2198766","type":null,"param":"prompt",'
    '"code":"content_filter","status":400,"innererror":{"code":"ResponsibleAIPolicyViolation",'
    '"content_filter_result":{"hate":{"filtered":false,"severity":"safe"},"jailbreak":'
    '{"filtered":true,"detected":true},"self_harm":{"filtered":false,"severity":"safe"},'
    '"sexual":{"filtered":false,"severity":"safe"},"violence":{"filtered":false,'
    '"severity":"safe"}}}}}'
)

# Azure's rate limit (quoted in issue reports, e.g. openai-node#1108, dify#12709).
AZURE_RATE_LIMITED: Final = (
    '{"error":{"code":"429","message":"Requests to the ChatCompletions_Create Operation '
    "under Azure OpenAI API version 2024-10-21 have exceeded token rate limit of your "
    "current OpenAI S0 pricing tier. Please retry after 6 seconds. Please go here: "
    "https://aka.ms/oai/quotaincrease if you would like to further increase the default "
    'rate limit."}}'
)


def azure_dsn(server: LocalServer, tail: str = "", key: str | None = AZURE_KEY) -> DSN:
    """An `azure+http://` DSN for the local server."""
    credential = f"{key}@" if key else ""
    return DSN.parse(f"azure+http://{credential}{server.url.partition('://')[2]}{tail}")


async def test_azure_deployment_urls(http: HTTPSessionHolder, server: LocalServer) -> None:
    """With an api-version: `/openai/deployments/{deployment}/chat/completions?api-version=`,
    the key in `api-key`, never in `Authorization`."""
    path = f"/openai/deployments/{DEPLOYMENT}/chat/completions"
    server.routes[path] = respond(200, AZURE_REPLY, headers={"apim-request-id": "apim-1"})
    provider = azure_factory(
        "az", azure_dsn(server, f"?api-version={AZURE_VERSION}"), context(http)
    )
    assert isinstance(provider, AzureOpenAIProvider)
    response = await provider.model(DEPLOYMENT).generate("Hi", reasoning("low"))

    request = server.requests[0]
    assert (request.path, request.query) == (path, f"api-version={AZURE_VERSION}")
    assert request.headers["api-key"] == AZURE_KEY
    assert "Authorization" not in request.headers
    assert request.json()["reasoning_effort"] == "low"
    assert response.text == "Hello!"
    assert response.served_model == "gpt-4o-2024-11-20"
    assert response.request_id == "apim-1"
    assert response.usage == Usage(9, 3)
    assert response.model == f"az/{DEPLOYMENT}"


async def test_azure_v1_urls(http: HTTPSessionHolder, server: LocalServer) -> None:
    """Without an api-version: `/openai/v1/chat/completions`, the deployment in `model`."""
    server.routes["/openai/v1/chat/completions"] = respond(200, AZURE_REPLY)
    provider = azure_factory("az", azure_dsn(server), context(http))
    response = await provider.model(DEPLOYMENT).generate("Hi")

    request = server.requests[0]
    assert (request.path, request.query) == ("/openai/v1/chat/completions", "")
    body = request.json()
    assert body["model"] == DEPLOYMENT
    assert request.headers["api-key"] == AZURE_KEY
    assert "Authorization" not in request.headers
    assert response.text == "Hello!"


async def test_azure_v1_path_with_a_preview_version(
    http: HTTPSessionHolder, server: LocalServer
) -> None:
    """A path ending in /v1 is the v1 API even with an api-version (the v1 preview's
    `?api-version=preview`), which then goes on the URL."""
    server.routes["/openai/v1/chat/completions"] = respond(200, AZURE_REPLY)
    provider = azure_factory(
        "az", azure_dsn(server, "/openai/v1?api-version=preview"), context(http)
    )
    await provider.model(DEPLOYMENT).generate("Hi")
    assert (server.requests[0].path, server.requests[0].query) == (
        "/openai/v1/chat/completions",
        "api-version=preview",
    )


@CHUNKS
async def test_azure_content_filter_chunks_are_read_past(
    http: HTTPSessionHolder, server: LocalServer, chunk: int
) -> None:
    """Azure's prompt-filter chunk (no choices, `"model": ""`) and its filter results
    give no events; the served model comes from the first chunk that names one."""
    path = f"/openai/deployments/{DEPLOYMENT}/chat/completions"
    server.routes[path] = play(AZURE_STREAM, chunk=chunk)
    provider = azure_factory(
        "az", azure_dsn(server, f"?api-version={AZURE_VERSION}"), context(http)
    )
    stream = await provider.model(DEPLOYMENT).stream("Hi")
    events = await collect(stream)

    assert events == [
        StreamStart(f"az/{DEPLOYMENT}", None, "gpt-4o-2024-11-20"),
        TextDelta("Hel"),
        TextDelta("lo!"),
        UsageUpdate(Usage(9, 3)),
        StreamEnd(FinishReason.STOP),
    ]
    request = server.requests[0]
    assert request.json()["stream_options"] == {"include_usage": True}
    assert request.headers["api-key"] == AZURE_KEY
    assert "Authorization" not in request.headers


@CHUNKS
async def test_azure_output_filter_finishes_content_filter(
    http: HTTPSessionHolder, server: LocalServer, chunk: int
) -> None:
    """An output the filter stopped finishes `content_filter` (Azure's finish reason)."""
    filtered = {"filtered": True, "severity": "high"}
    body = sse(
        '{"choices":[],"created":0,"id":"","model":"","object":"","prompt_filter_results":'
        '[{"prompt_index":0,"content_filter_results":{}}]}',
        {
            "choices": [
                {
                    "content_filter_results": {},
                    "delta": {"content": "Once", "role": "assistant"},
                    "finish_reason": None,
                    "index": 0,
                    "logprobs": None,
                }
            ],
            "created": 1767225600,
            "id": "chatcmpl-AZ3",
            "model": "gpt-4o-2024-11-20",
            "object": "chat.completion.chunk",
            "system_fingerprint": "fp_ee1d74bde0",
        },
        {
            "choices": [
                {
                    "content_filter_results": {**_FILTERS, "violence": filtered},
                    "delta": {},
                    "finish_reason": "content_filter",
                    "index": 0,
                    "logprobs": None,
                }
            ],
            "created": 1767225600,
            "id": "chatcmpl-AZ3",
            "model": "gpt-4o-2024-11-20",
            "object": "chat.completion.chunk",
            "system_fingerprint": "fp_ee1d74bde0",
        },
    )
    server.routes["/openai/v1/chat/completions"] = play(body, chunk=chunk)
    provider = azure_factory("az", azure_dsn(server), context(http))
    events = await collect(await provider.model(DEPLOYMENT).stream("Tell a story"))
    assert events[-1] == StreamEnd(FinishReason.CONTENT_FILTER)


async def test_azure_filtered_prompt_is_a_content_policy_error(
    http: HTTPSessionHolder, server: LocalServer
) -> None:
    """400 `code: "content_filter"` (with `innererror`) raises ContentPolicyError, for a
    generate and a stream alike."""
    server.routes["/openai/v1/chat/completions"] = respond(400, AZURE_FILTERED)
    provider = azure_factory("az", azure_dsn(server), context(http))
    with pytest.raises(ContentPolicyError) as caught:
        await provider.model(DEPLOYMENT).generate("...")
    assert caught.value.status == 400
    assert caught.value.code == "content_filter"
    assert "content management policy" in caught.value.message
    with pytest.raises(ContentPolicyError):
        await provider.model(DEPLOYMENT).stream("...")


async def test_azure_inner_code_alone_is_a_content_policy_error(
    http: HTTPSessionHolder, server: LocalServer
) -> None:
    """The DALL-E style body, with only `inner_error.code`, is read the same way."""
    body = {
        "error": {
            "code": "contentFilter",
            "message": "Your task failed as a result of our safety system.",
            "inner_error": {"code": "ResponsibleAIPolicyViolation"},
        }
    }
    server.routes["/openai/v1/chat/completions"] = respond(400, body)
    provider = azure_factory("az", azure_dsn(server), context(http))
    with pytest.raises(ContentPolicyError):
        await provider.model(DEPLOYMENT).generate("...")


async def test_azure_rate_limit_reads_retry_after(
    http: HTTPSessionHolder, server: LocalServer
) -> None:
    """Azure's 429 (`code: "429"`) is a RateLimitError with the `retry-after` seconds."""
    server.routes["/openai/v1/chat/completions"] = respond(
        429, AZURE_RATE_LIMITED, headers={"retry-after": "6", "x-ms-region": "Sweden Central"}
    )
    provider = azure_factory("az", azure_dsn(server), context(http))
    with pytest.raises(RateLimitError) as caught:
        await provider.model(DEPLOYMENT).generate("Hi")
    assert caught.value.retry_after == 6
    assert "exceeded token rate limit" in caught.value.message


async def test_azure_key_and_endpoint_from_the_environment(
    http: HTTPSessionHolder, server: LocalServer
) -> None:
    """`azure://` alone reads AZURE_OPENAI_ENDPOINT and AZURE_OPENAI_API_KEY."""
    server.routes["/openai/v1/chat/completions"] = respond(200, AZURE_REPLY)
    env = {"AZURE_OPENAI_ENDPOINT": server.url + "/", "AZURE_OPENAI_API_KEY": AZURE_KEY}
    provider = azure_factory("az", DSN.parse("azure://"), context(http, env))
    assert provider.base_url == server.url + "/openai/v1"
    await provider.model(DEPLOYMENT).generate("Hi")
    assert server.requests[0].headers["api-key"] == AZURE_KEY

    versioned = azure_factory(
        "az", DSN.parse(f"azure://?api-version={AZURE_VERSION}"), context(http, env)
    )
    assert versioned.base_url == server.url + "/openai"
    assert versioned.api_version == AZURE_VERSION


async def test_azure_through_a_registry(http: HTTPSessionHolder, server: LocalServer) -> None:
    """`LLM_AZ=azure+http://KEY@host?api-version=...` is a registered scheme."""
    path = f"/openai/deployments/{DEPLOYMENT}/chat/completions"
    server.routes[path] = respond(200, AZURE_REPLY)
    dsn = f"azure+http://{AZURE_KEY}@{server.url.partition('://')[2]}?api-version={AZURE_VERSION}"
    async with Registry(env={"LLM_AZ": dsn}) as registry:
        provider = registry.provider("az")
        assert isinstance(provider, AzureOpenAIProvider)
        assert provider.family == "azure"
        response = await registry.parse(f"az/{DEPLOYMENT}").generate("Hi")
    assert isinstance(response, Response) and response.text == "Hello!"
    assert server.requests[0].path == path


async def test_azure_missing_key_names_the_variable(http: HTTPSessionHolder) -> None:
    """No key anywhere: the call fails before any I/O, naming AZURE_OPENAI_API_KEY."""
    provider = azure_factory("az", DSN.parse("azure://res.openai.azure.com"), context(http))
    assert provider.base_url == "https://res.openai.azure.com/openai/v1"
    with pytest.raises(AuthenticationError, match="AZURE_OPENAI_API_KEY"):
        await provider.model(DEPLOYMENT).generate("Hi")


@pytest.mark.parametrize(
    ("dsn", "env", "message"),
    [
        ("azure://", {}, "AZURE_OPENAI_ENDPOINT"),
        ("azure://", {"AZURE_OPENAI_ENDPOINT": "res.openai.azure.com"}, "https URL"),
        ("azure://k@res.openai.azure.com/openai", {}, "api-version"),
        ("azure://k@res.openai.azure.com?organization=x", {}, "unknown DSN query key"),
    ],
)
def test_bad_azure_dsns(
    http: HTTPSessionHolder, dsn: str, env: dict[str, str], message: str
) -> None:
    """A DSN that names no endpoint, or neither API, is a ConfigurationError."""
    with pytest.raises(ConfigurationError, match=message):
        azure_factory("az", DSN.parse(dsn), context(http, env))


async def test_azure_lists_models_with_its_key_header(
    http: HTTPSessionHolder, server: LocalServer
) -> None:
    """`GET {base}/models` (with the api-version, when there is one), `api-key` header."""
    server.routes["/openai/models"] = respond(
        200, {"data": [{"id": "gpt-4o", "object": "model"}], "object": "list"}
    )
    provider = azure_factory(
        "az", azure_dsn(server, f"?api-version={AZURE_VERSION}"), context(http)
    )
    assert await provider.list_models() == ["gpt-4o"]
    assert server.requests[0].query == f"api-version={AZURE_VERSION}"
    assert server.requests[0].headers["api-key"] == AZURE_KEY
    assert "Authorization" not in server.requests[0].headers


def test_azure_preset_is_openai_like() -> None:
    """Azure takes OpenAI's `max_completion_tokens` and reasoning rules, its own family."""
    assert AZURE_PRESET.max_tokens_field == "max_completion_tokens"
    assert AZURE_PRESET.env_vars == ("AZURE_OPENAI_API_KEY",)
    assert AZURE_PRESET.family == "azure"
    assert AZURE_PRESET.reasoning_for("o3-mini") == OPENAI_PRESET.reasoning_for("o3-mini")
