"""The built-in `openai` provider: OpenAI Chat Completions, Azure OpenAI, and every
OpenAI-compatible server.

Wire format (providers.md 3): `POST {base}/chat/completions` with `Authorization: Bearer
KEY`; a stream is Server-Sent Events of `data:` lines only, ending with `data: [DONE]`;
errors carry `{"error": {"message", "type", "param", "code"}}`, both as HTTP bodies and
as in-band `data: {"error": ...}` events. Models: `GET {base}/models`.

Mapping from our types:

- `Request.system` -> a leading `system` message (not `developer`: compatible servers
  only know `system`, and OpenAI still accepts it).
- `max_tokens` -> `max_completion_tokens` for OpenAI and Azure (reasoning models reject
  `max_tokens`), `max_tokens` for every compatible server (Mistral rejects the other
  with a 422); see `Preset.max_tokens_field`.
- `ImagePart` -> an `image_url` content part: inline bytes as a `data:` URL, URLs as given.
- `ToolCallPart` -> `tool_calls` of an assistant message; `ToolResultPart` -> one `tool`
  message per result (`is_error` has no field on this wire, so only `content` is sent).
- `tool_choice`: "auto" / "none" / "required" as they are, a tool name as
  `{"type": "function", "function": {"name": ...}}`.
- `JSONMode` -> `{"type": "json_object"}`; `JSONSchema` -> `{"type": "json_schema", ...}`.
- Streams ask for usage with `stream_options: {"include_usage": true}` (unless the
  preset says the server rejects it): it arrives in one last chunk with empty `choices`.
- Prompt-cache breakpoints (`Request.cache_system`, `cache_tools`,
  `Message.cache_breakpoint`) are ignored: these servers cache prompts by themselves.

Reasoning (`Request.reasoning`), decided per server and per model family by data
(`Preset.reasoning`, `Preset.reasoning_models`, each a `ReasoningControl`), not branches:

- OpenAI and Azure: `reasoning_effort` = `Reasoning.level()`, clamped to what the model
  family takes (o-series: low/medium/high; GPT-5: minimal and up; GPT-5.1 and later:
  none and up; gpt-5-pro: high only; o1-mini / o1-preview: no field at all).
- Groq: `reasoning_effort` (gpt-oss: low/medium/high; Qwen3: "none" or "default", with
  `reasoning_format: "parsed"` so the reasoning comes apart from the answer; DeepSeek-R1
  distills: `reasoning_format` only); `summary=False` asks Groq to hide the reasoning.
- xAI: `reasoning_effort` (grok-3-mini: low/high; grok-4 and its fast variants take no
  field; later grok-4.x as asked). Mistral: `reasoning_effort` "high" or "none"
  (Magistral reasons always and takes no field). DeepSeek: `thinking: {"type":
  "enabled" | "disabled"}` with `reasoning_effort` low/high. OpenRouter: its
  `reasoning: {"effort": ...}` object (`{"max_tokens": n}` for a budget alone,
  `"exclude": true` for `summary=False`). Every other server: `reasoning_effort`.
- Replies: `reasoning_content` (DeepSeek, vLLM, xAI, many servers) or `reasoning` (Groq,
  OpenRouter, newer vLLM) on the message and on stream deltas, and Mistral's
  `{"type": "thinking"}` content parts, become `Response.reasoning` with one
  `ReasoningPart(provider="openai")`, and `ReasoningDelta` events (block 0) in streams.
  OpenAI's own chat completions never return reasoning text.
- History: a `ReasoningPart` of another wire family is dropped; an "openai" one is sent
  back only where the server wants it (`Preset.replay_reasoning`): DeepSeek requires the
  `reasoning_content` of an assistant turn that called tools, and ignores it elsewhere.

What comes back, beside text and tool calls:

- Usage: `prompt_tokens` / `completion_tokens` are totals already (cached input and
  reasoning included); `prompt_tokens_details.cached_tokens` (or DeepSeek's
  `prompt_cache_hit_tokens`) -> `cached_input_tokens`, `prompt_tokens_details.
  cache_write_tokens` -> `cache_write_tokens`, `completion_tokens_details.
  reasoning_tokens` -> `reasoning_tokens`; the same for a stream's usage chunk.
- The served model: the reply's `model` (a stream's first chunk that names one) ->
  `Response.served_model` / `StreamStart.served_model`. A stream's `StreamStart` waits
  for that chunk, or for the first chunk with anything to report (Azure's first chunk,
  its prompt filter results, names no model).
- Refusals (`message.refusal`, `delta.refusal` pieces) -> `Response.refusal` /
  `StreamEnd.refusal`; the finish reason is the wire's own.
- The finish reason: the wire's, except that an answer with tool calls that stopped
  naturally reports `TOOL_CALLS` (compatible servers say "stop"); `finish_with_tools`.

The end of a stream: it is complete at `data: [DONE]` (with no finish reason seen, the
finish is STOP), or when the body ends cleanly (the chunked terminator, Content-Length
reached, or the end of a close-delimited body) after a chunk carried a `finish_reason`:
several compatible servers send the finish chunk and the usage chunk, then end the body
without `[DONE]`. A body that ends cleanly before any finish reason, and a body cut by a
transport error (no chunked terminator, even after a finish reason: the usage may be
missing), raise `StreamTruncatedError`.

OpenAI-compatible servers differ mostly in base URL, key variable and error bodies
(providers.md 4); the differences that change the request are fields of `Preset`, and
`OPENAI_COMPATIBLE_PRESETS` holds one per known server.

Azure OpenAI (`azure://`, `AzureOpenAIProvider`): the same wire, with the key in an
`api-key` header (never `Authorization`) and two URL forms:

- `azure://KEY@RESOURCE.openai.azure.com` (or `.../openai/v1`): the v1 API,
  `POST https://RESOURCE.openai.azure.com/openai/v1/chat/completions` with the
  deployment name as the body's `model`, no api-version;
- `azure://KEY@RESOURCE.openai.azure.com?api-version=2024-10-21` (path `/openai` by
  default): the classic deployment URLs, `POST .../openai/deployments/{model}/chat/
  completions?api-version=2024-10-21`, where the spec's model id is the deployment name.

A path that ends in `/v1` always means the v1 API (an `api-version` then goes on its
URLs as a query, as the v1 preview wanted). The key comes from the DSN, else from
`AZURE_OPENAI_API_KEY`; the endpoint from the DSN's host, else from
`AZURE_OPENAI_ENDPOINT` (`https://RESOURCE.openai.azure.com/`). Azure's content-filter
chunks (a first chunk with `"choices": []` and `prompt_filter_results`, and
`content_filter_results` inside choices) carry nothing we report and are read past; its
error bodies go through the one error mapper (400 `code: "content_filter"` is a
`ContentPolicyError`, a 429's `retry-after` header is its `retry_after`).
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from functools import partial
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import quote, urlencode

import attrs

from .. import _json as fast_json
from .._events import (
    ReasoningDelta,
    StreamEnd,
    StreamEvent,
    StreamStart,
    TextDelta,
    ToolCallDelta,
    UsageUpdate,
)
from .._exceptions import (
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
    ContentPolicyError,
    ContextLengthError,
    ModelNotFoundError,
    OverloadedError,
    ProviderError,
    ProviderStatusError,
    QuotaExceededError,
    RateLimitError,
    ResponseFormatError,
    ServerError,
    StreamTruncatedError,
    UnsupportedRequestError,
)
from .._http import (
    MAX_ERROR_BODY,
    Timeouts,
    request_id_from,
)
from .._messages import (
    ImagePart,
    Message,
    Part,
    ReasoningPart,
    TextPart,
    Tool,
    ToolCall,
    ToolCallPart,
    ToolResultPart,
)
from .._request import JSONMode, JSONSchema, Request, ResponseFormat
from .._response import FinishReason, Response, Usage
from .._sse import ServerSentEvent, SSEDecoder
from ._base import HTTPModel, HTTPProvider
from ._common import (
    TIMEOUT_KEYS,
    body_summary,
    dsn_timeouts,
    finish_with_tools,
    json_or_none,
    key_from_env,
    status_error,
)
from .openai_presets import (
    AZURE_PRESET,
    DEFAULT_BASE_URL,
    GENERIC_PRESET,
    OPENAI_COMPATIBLE_PRESETS,
    OPENAI_PRESET,
    Preset,
    ReasoningControl,
)

if TYPE_CHECKING:
    import aiohttp

    from .._context import HTTPSessionHolder, ProviderContext, SchemeFactory
    from .._dsn import DSN
    from .._http import BodyReader

__all__ = [
    "AZURE_PRESET",
    "DEFAULT_BASE_URL",
    "OPENAI_COMPATIBLE_PRESETS",
    "OPENAI_PRESET",
    "AzureOpenAIProvider",
    "OpenAIModel",
    "OpenAIProvider",
    "Preset",
    "ReasoningControl",
    "azure_factory",
    "openai_compatible_factory",
    "openai_factory",
]


REQUEST_ID_HEADERS: Final = ("x-request-id", "apim-request-id")
"""Where OpenAI (and most compatible servers) put the request id (providers.md 1);
Azure's API Management gateway also sends `apim-request-id`."""

REASONING_PROVIDER: Final = "openai"
"""The wire family on our `ReasoningDelta` / `ReasoningPart`: the one a replayed part
must name to be sent back to a server of this module."""

# --------------------------------------------------------------------------- request body


def _build_body(
    request: Request,
    model_id: str,
    *,
    stream: bool,
    preset: Preset = OPENAI_PRESET,
    provider: str = "",
) -> dict[str, Any]:
    """The JSON body of a chat completion request.

    Raises:
        UnsupportedRequestError: a message holds a part this wire format cannot carry
            (an image in an assistant turn, a tool call in a user turn, ...).
    """
    body: dict[str, Any] = {
        "model": model_id,
        "messages": _wire_messages(
            request, provider=provider, model=model_id, replay=preset.replay_reasoning
        ),
    }
    if request.temperature is not None:
        body["temperature"] = request.temperature
    if request.top_p is not None:
        body["top_p"] = request.top_p
    if request.max_tokens is not None:
        body[preset.max_tokens_field] = request.max_tokens
    if request.stop:
        body["stop"] = list(request.stop)
    if request.tools:
        body["tools"] = [_wire_tool(tool) for tool in request.tools]
    if request.tool_choice is not None:
        body["tool_choice"] = _wire_tool_choice(request.tool_choice)
    if request.response_format is not None:
        body["response_format"] = _wire_response_format(request.response_format)
    if request.reasoning is not None:
        # The chain's fitter already dropped the option for a model that cannot reason.
        body.update(preset.reasoning_for(model_id).fields(request.reasoning))
    if stream:
        body["stream"] = True
        if preset.stream_usage:
            body["stream_options"] = {"include_usage": True}
    return body


def _wire_messages(
    request: Request, *, provider: str, model: str, replay: bool = False
) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    if request.system:
        messages.append({"role": "system", "content": request.system})
    for message in request.messages:
        try:
            messages.extend(_wire_message(message, replay=replay))
        except _Unsupported as exc:
            raise UnsupportedRequestError(str(exc), provider=provider, model=model) from None
    return messages


class _Unsupported(Exception):
    """A part the wire format cannot carry; re-raised with the provider and model."""


def _wire_message(message: Message, *, replay: bool = False) -> list[dict[str, Any]]:
    """One of our messages as wire messages: tool results each become a `tool` message.

    `replay`: send an assistant turn's reasoning back (see `Preset.replay_reasoning`).
    """
    parts = message.parts
    if len(parts) == 1 and message.role == "user" and type(parts[0]) is TextPart:
        return [{"role": "user", "content": parts[0].text}]  # the usual prompt
    results = [part for part in message.parts if isinstance(part, ToolResultPart)]
    rest = [part for part in message.parts if not isinstance(part, ToolResultPart)]
    wire: list[dict[str, Any]] = [
        {"role": "tool", "tool_call_id": result.call_id, "content": result.content}
        for result in results
    ]
    if message.role == "assistant":
        if results:
            raise _Unsupported("an assistant message cannot hold a tool result")
        wire.append(_wire_assistant(rest, replay=replay))
    elif rest:
        if message.role == "tool":
            raise _Unsupported(
                "a tool message can only hold ToolResultParts "
                f"(got {', '.join(type(part).__name__ for part in rest)})"
            )
        wire.append({"role": "user", "content": _wire_user_content(rest)})
    return wire


def _wire_assistant(parts: Iterable[Part], *, replay: bool = False) -> dict[str, Any]:
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    reasoning: list[str] = []
    for part in parts:
        if isinstance(part, TextPart):
            texts.append(part.text)
        elif isinstance(part, ReasoningPart):
            # Reasoning goes back only to a server that wants it, and only reasoning
            # this wire family produced; any other part (another family's signature)
            # means nothing here and is dropped.
            if replay and part.provider == REASONING_PROVIDER and part.text:
                reasoning.append(part.text)
        elif isinstance(part, ToolCallPart):
            call = part.call
            calls.append(
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments},
                }
            )
        else:
            raise _Unsupported(f"an assistant message cannot hold a {type(part).__name__}")
    # `content: null` is how the API writes an assistant turn that only called tools.
    wire: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None}
    if calls:
        wire["tool_calls"] = calls
        if reasoning:
            # DeepSeek: "for turns that do perform tool calls, the reasoning_content must
            # be fully passed back"; for a turn without tool calls it is ignored, so it
            # is not sent (older deepseek-reasoner releases answered it with a 400).
            wire["reasoning_content"] = "".join(reasoning)
    return wire


def _wire_user_content(parts: Sequence[Part]) -> str | list[dict[str, Any]]:
    """A lone text part as a plain string; anything else as a list of content parts."""
    if len(parts) == 1 and isinstance(parts[0], TextPart):
        return parts[0].text
    content: list[dict[str, Any]] = []
    for part in parts:
        if isinstance(part, TextPart):
            content.append({"type": "text", "text": part.text})
        elif isinstance(part, ImagePart):
            content.append({"type": "image_url", "image_url": {"url": _image_url(part)}})
        else:
            raise _Unsupported(f"a user message cannot hold a {type(part).__name__}")
    return content


def _image_url(image: ImagePart) -> str:
    """Inline bytes as a `data:` URL; a URL (http(s) or `data:`) as given."""
    if image.url is not None:
        return image.url
    return f"data:{image.mime_type};base64,{image.base64()}"


def _wire_tool(tool: Tool) -> dict[str, Any]:
    function: dict[str, Any] = {"name": tool.name}
    if tool.description:
        function["description"] = tool.description
    function["parameters"] = dict(tool.parameters)
    return {"type": "function", "function": function}


def _wire_tool_choice(choice: str) -> str | dict[str, Any]:
    if choice in ("auto", "none", "required"):
        return choice
    return {"type": "function", "function": {"name": choice}}


def _wire_response_format(response_format: ResponseFormat) -> dict[str, Any]:
    if isinstance(response_format, JSONMode):
        return {"type": "json_object"}
    if isinstance(response_format, JSONSchema):
        return {
            "type": "json_schema",
            "json_schema": {
                "name": response_format.name,
                "schema": dict(response_format.schema),
                "strict": response_format.strict,
            },
        }
    raise TypeError(f"unknown response format {response_format!r}")  # pragma: no cover


# --------------------------------------------------------------------------- replies

_FINISH_REASONS: Final[Mapping[str, FinishReason]] = MappingProxyType(
    {
        "stop": FinishReason.STOP,
        "length": FinishReason.LENGTH,
        "model_length": FinishReason.LENGTH,  # Mistral: the context window was reached
        "tool_calls": FinishReason.TOOL_CALLS,
        "function_call": FinishReason.TOOL_CALLS,  # the deprecated single-function form
        "content_filter": FinishReason.CONTENT_FILTER,
    }
)


def _finish_reason(value: object) -> FinishReason:
    """The normalised finish reason; a missing one is STOP, an unknown one OTHER."""
    if value is None or value == "":
        return FinishReason.STOP
    if isinstance(value, str):
        return _FINISH_REASONS.get(value, FinishReason.OTHER)
    return FinishReason.OTHER


def _usage(value: object) -> Usage | None:
    """`usage` as our `Usage`, or None when the reply has none (`null` in stream chunks).

    `prompt_tokens` counts cached input and `completion_tokens` reasoning already (OpenAI,
    DeepSeek: `prompt_cache_hit_tokens + prompt_cache_miss_tokens = prompt_tokens`; Groq):
    they are our totals as they are, and the details are parts of them.
    """
    if not isinstance(value, dict):
        return None
    prompt = value.get("prompt_tokens_details")
    completion = value.get("completion_tokens_details")
    cached = write = reasoning = 0
    if isinstance(prompt, dict):
        cached = _count(prompt.get("cached_tokens"))
        write = _count(prompt.get("cache_write_tokens"))
    if not cached:  # DeepSeek reports its cache hits at the top level (lately also in details)
        cached = _count(value.get("prompt_cache_hit_tokens"))
    if isinstance(completion, dict):
        reasoning = _count(completion.get("reasoning_tokens"))
    return Usage(
        _count(value.get("prompt_tokens")),
        _count(value.get("completion_tokens")),
        cached_input_tokens=cached,
        cache_write_tokens=write,
        reasoning_tokens=reasoning,
    )


def _count(value: object) -> int:
    """A token count: a positive JSON integer, else 0 (`type() is int` leaves out bools)."""
    return value if type(value) is int and value > 0 else 0


def _content_text(content: object) -> str:
    """`message.content` as text: a string, null, or (some servers) a list of text parts."""
    return _content_parts(content)[0]


def _content_parts(content: object) -> tuple[str, str]:
    """(text, reasoning) of a `content`: a string, null, or a list of parts.

    Mistral's reasoning models send the list form (docs.mistral.ai, reasoning):
    `[{"type": "thinking", "thinking": [{"type": "text", "text": ...}], "closed": true},
    {"type": "text", "text": ...}]`, in messages and in stream deltas alike.
    """
    if isinstance(content, str):
        return content, ""
    if not isinstance(content, list):
        return "", ""
    texts: list[str] = []
    thoughts: list[str] = []
    for part in content:
        if not isinstance(part, dict):
            continue
        if part.get("type") == "thinking":
            thoughts.append(_thinking_text(part.get("thinking")))
        elif isinstance(part.get("text"), str):
            texts.append(part["text"])
    return "".join(texts), "".join(thoughts)


def _thinking_text(thinking: object) -> str:
    """The text of a Mistral thinking part: a list of text chunks (or, leniently, a string)."""
    if isinstance(thinking, str):
        return thinking
    if not isinstance(thinking, list):
        return ""
    return "".join(
        chunk["text"]
        for chunk in thinking
        if isinstance(chunk, dict) and isinstance(chunk.get("text"), str)
    )


def _reasoning_field(holder: Mapping[str, Any]) -> str:
    """The reasoning text of a message or a delta: `reasoning_content` (DeepSeek, vLLM,
    xAI, llama.cpp), else `reasoning` (Groq, OpenRouter, newer vLLM). A server that sends
    both spells the same text twice: it is read once."""
    for key in ("reasoning_content", "reasoning"):
        value = holder.get(key)
        if isinstance(value, str) and value:
            return value
    return ""


def _served_model(body: Mapping[str, Any]) -> str | None:
    """The model id the server reports (`model`), or None when it names none ("")."""
    model = body.get("model")
    return model if isinstance(model, str) and model else None


def _arguments_text(arguments: object) -> str:
    """Tool-call arguments as JSON text; a few servers send an object instead of a string."""
    if isinstance(arguments, str):
        return arguments
    if arguments is None:
        return ""
    return json.dumps(arguments, separators=(",", ":"), ensure_ascii=False)


def _parse_tool_calls(value: object, where: Callable[[str], ResponseFormatError]) -> list[ToolCall]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise where("message.tool_calls is not a list")
    calls = []
    for index, item in enumerate(value):
        function = item.get("function") if isinstance(item, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise where(f"tool call {index} has no function name")
        call_id = item.get("id")
        calls.append(
            ToolCall(
                # Some local servers omit the id; a stable stand-in keeps follow-ups working.
                call_id if isinstance(call_id, str) and call_id else f"call_{index}",
                function["name"],
                _arguments_text(function.get("arguments")) or "{}",
            )
        )
    return calls


def _reply_error(provider: str, model: str, problem: str) -> ResponseFormatError:
    return ResponseFormatError(
        f"unexpected chat completion reply: {problem}", provider=provider, model=model
    )


def _parse_response(body: Any, key: str, headers: Mapping[str, str]) -> Response:
    """A chat completion reply as our `Response`.

    A refusal (`message.refusal`, sent when a structured-output request is declined) is
    `Response.refusal`; the finish reason stays the wire's ("stop", usually). Tool calls
    with a natural stop finish with TOOL_CALLS. An error it raises may echo the API key:
    the provider masks it (`_redact_error`) on its way out.

    Raises:
        ProviderStatusError: the body is an error (OpenRouter reports errors that happen
            after routing with HTTP 200), mapped like an error status.
        ResponseFormatError: the body is not a chat completion.
    """
    provider, _, model = key.partition("/")
    where = partial(_reply_error, provider, model)
    if not isinstance(body, dict):
        raise where(f"expected a JSON object, got {type(body).__name__}")
    if body.get("error"):
        raise _error_from_body(body, provider=provider, model=model, headers=headers)
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise where("no choices")
    choice = choices[0]
    message = choice.get("message")
    if not isinstance(message, dict):
        raise where("choices[0] has no message")
    tool_calls = _parse_tool_calls(message.get("tool_calls"), where)
    text, thoughts = _content_parts(message.get("content"))
    reasoning = _reasoning_field(message) + thoughts
    refusal = message.get("refusal")
    return Response(
        text=text,
        tool_calls=tool_calls,
        finish_reason=finish_with_tools(
            _finish_reason(choice.get("finish_reason")), bool(tool_calls)
        ),
        usage=_usage(body.get("usage")) or Usage(),
        model=key,
        request_id=request_id_from(headers, REQUEST_ID_HEADERS),
        raw=body,
        reasoning=reasoning,
        reasoning_parts=(ReasoningPart(reasoning, provider=REASONING_PROVIDER),)
        if reasoning
        else (),
        refusal=refusal if isinstance(refusal, str) and refusal else None,
        served_model=_served_model(body),
    )


def _model_ids(body: Any, provider: str) -> list[str]:
    """`GET /models` as ids: `{"data": [{"id": ...}]}`, or a bare list (Together)."""
    items = body.get("data") if isinstance(body, dict) else body
    if not isinstance(items, list):
        raise ResponseFormatError(
            "unexpected models reply: no data list", provider=provider, model=""
        )
    return [
        item["id"] for item in items if isinstance(item, dict) and isinstance(item.get("id"), str)
    ]


# --------------------------------------------------------------------------- errors

# Matched against `error.code` and `error.type` (lower case). Sources: providers.md 3.5,
# 4 and 8.1 unless noted.
_MODEL_NOT_FOUND_CODES: Final = frozenset({"model_not_found", "invalid_model"})
_QUOTA_CODES: Final = frozenset({"insufficient_quota", "credit_balance_exhausted"})
_CONTEXT_CODES: Final = frozenset({"context_length_exceeded", "exceed_context_size_error"})
_POLICY_CODES: Final = frozenset(
    {
        "invalid_prompt",  # OpenAI: the prompt was flagged by the safety system
        "content_policy_violation",  # OpenAI image requests flagged by the safety system
        "content_filter",  # Azure OpenAI's code for a filtered prompt
        "responsibleaipolicyviolation",  # ... and its `innererror.code` beside it
    }
)
_OVERLOADED_CODES: Final = frozenset({"capacity_exceeded"})  # Groq 498: flex tier full

# The model names itself missing in the message when the code does not say so: vLLM
# ("The model `x` does not exist."), DeepSeek (400 "Model Not Exist"), OpenRouter (400
# "x is not a valid model ID"). A bare "Not Found" is a wrong URL, not a missing model.
_MODEL_MISSING_TEXT: Final = re.compile(
    r"\bmodel\b.*\b(?:does not exist|not exist|not found)\b|\bnot a valid model id\b",
    re.IGNORECASE | re.DOTALL,
)
_CONTEXT_TEXT: Final = re.compile(r"maximum context length", re.IGNORECASE)

# An in-band error without a usable HTTP status: its type decides (unknown: server error).
_IN_BAND_KINDS: Final[Mapping[str, type[ProviderStatusError]]] = MappingProxyType(
    {
        "invalid_request_error": BadRequestError,
        "authentication_error": AuthenticationError,
        "rate_limit_exceeded": RateLimitError,
        "service_unavailable_error": OverloadedError,
        "server_error": ServerError,
    }
)

_MESSAGE_CHARS: Final = 500


@attrs.frozen
class _ErrorInfo:
    """What an error body says, whatever its shape."""

    message: str | None = None
    code: str | None = None
    """The provider's code, else its type: what `ProviderError.code` reports."""
    tokens: frozenset[str] = frozenset()
    """`code` and `type`, lower-cased, for matching."""
    status: int | None = None
    """An HTTP status the body itself names (OpenRouter, vLLM and llama.cpp put it in `code`)."""
    moderation: bool = False
    """OpenRouter's moderation metadata (`reasons` / `flagged_input`) is present."""


def _error_info(body: Any) -> _ErrorInfo:
    """Read any of the documented error shapes.

    `{"error": {"message", "type", "code", ...}}` (OpenAI and most servers), `{"error":
    "text"}`, the flat `{"object": "error", "message", "type", "code"}` (older vLLM,
    Mistral), `{"message": ...}` (Mistral 401) and FastAPI's `{"detail": ...}`.
    """
    if not isinstance(body, dict):
        return _ErrorInfo()
    error = body.get("error")
    if isinstance(error, str):
        return _ErrorInfo(message=_clip(error))
    fields = error if isinstance(error, dict) else body
    raw_code, raw_type = fields.get("code"), fields.get("type")
    message = fields.get("message")
    if message is None and "detail" in fields:
        message = fields["detail"]
    code = raw_code if isinstance(raw_code, str) and raw_code else None
    kind = raw_type if isinstance(raw_type, str) and raw_type else None
    status = raw_code if _is_status(raw_code) else None
    if (
        status is None
        and isinstance(raw_code, str)
        and len(raw_code) == 3
        and raw_code.isascii()
        and raw_code.isdigit()
    ):
        # Some servers send the status as a string ("404"); Mistral sends its own
        # four-digit codes ("1500"), which `_is_status` rejects.
        status = int(raw_code) if _is_status(int(raw_code)) else None
    metadata = fields.get("metadata")
    # Azure nests its own code: `innererror.code` ("ResponsibleAIPolicyViolation" beside
    # the content filter's verdict; `inner_error` in some of its APIs).
    inner = fields.get("innererror") or fields.get("inner_error")
    inner_code = inner.get("code") if isinstance(inner, dict) else None
    inner_code = inner_code if isinstance(inner_code, str) and inner_code else None
    return _ErrorInfo(
        message=_message_text(message),
        code=(code if code and not code.isdigit() else None) or kind,
        tokens=frozenset(token.lower() for token in (code, kind, inner_code) if token),
        status=status,
        moderation=isinstance(metadata, dict)
        and ("reasons" in metadata or "flagged_input" in metadata),
    )


def _is_status(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 400 <= value <= 599


def _message_text(message: object) -> str | None:
    if message is None or message == "":
        return None
    if isinstance(message, str):
        return _clip(message)
    # Mistral's 422 nests FastAPI's validation detail as the message: quote it compactly.
    return _clip(json.dumps(message, separators=(",", ":"), ensure_ascii=False, default=str))


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MESSAGE_CHARS else text[: _MESSAGE_CHARS - 1] + "…"


def _matched_kind(status: int | None, info: _ErrorInfo) -> type[ProviderStatusError] | None:
    """The error class the body decides, before the status rules (providers.md 8.4)."""
    tokens, message = info.tokens, info.message or ""
    if tokens & _MODEL_NOT_FOUND_CODES or (
        status in (None, 400, 404, 422) and _MODEL_MISSING_TEXT.search(message)
    ):
        return ModelNotFoundError
    if tokens & _QUOTA_CODES or status == 402:
        # 402: DeepSeek "Insufficient Balance", OpenRouter "insufficient credits".
        return QuotaExceededError
    if tokens & _CONTEXT_CODES or _CONTEXT_TEXT.search(message):
        return ContextLengthError
    if tokens & _POLICY_CODES or (status == 403 and info.moderation):
        return ContentPolicyError
    if tokens & _OVERLOADED_CODES or status == 498:
        return OverloadedError
    return None


def _map_error(
    status: int, headers: Mapping[str, str], body_text: str, *, provider: str, model: str
) -> ProviderError:
    """The error for an HTTP error reply: body matchers, then the status rules.

    The provider masks its key in `body_text` before calling this.
    """
    info = _error_info(json_or_none(body_text))
    return status_error(
        provider=provider,
        model=model,
        status=status,
        headers=headers,
        body_text=body_text,
        message=info.message,
        code=info.code,
        request_id=request_id_from(headers, REQUEST_ID_HEADERS),
        kind=_matched_kind(status, info),
    )


def _error_from_body(
    body: Any,
    *,
    provider: str,
    model: str,
    headers: Mapping[str, str],
) -> ProviderError:
    """The error for an error object that came with HTTP 200: in a stream, or a reply body.

    The status, when the body names one, decides as an HTTP status would; otherwise the
    error's type does, and an unknown error counts as a server error (transient). The
    error may quote the API key: the provider masks it (`_redact_error`) on its way out.
    """
    body_text = json.dumps(body, ensure_ascii=False, default=str)
    info = _error_info(body)
    kind = _matched_kind(info.status, info)
    if info.status is not None:
        return status_error(
            provider=provider,
            model=model,
            status=info.status,
            headers=headers,
            body_text=body_text,
            message=info.message,
            code=info.code,
            request_id=request_id_from(headers, REQUEST_ID_HEADERS),
            kind=kind,
        )
    if kind is None:
        kind = next(
            (_IN_BAND_KINDS[token] for token in info.tokens if token in _IN_BAND_KINDS),
            ServerError,
        )
    return kind(
        info.message or "the provider reported an error",
        provider=provider,
        model=model,
        code=info.code,
        request_id=request_id_from(headers, REQUEST_ID_HEADERS),
    )


# --------------------------------------------------------------------------- streams


class _StreamTranslator:
    """Turns chat completion chunks (decoded SSE events) into our stream events.

    `StreamStart` comes with the first chunk that names the served model (`model`) or
    has anything to report: Azure's first chunk (prompt filter results, no choices)
    names none, so the start waits for the next. `StreamEnd` comes with `data: [DONE]`,
    or from `finish()` when the body ended cleanly after a finish reason; it carries the
    finish reason seen on the last choice chunk (TOOL_CALLS for tool calls that stopped
    naturally) and the refusal pieces joined, and the usage chunk sits before it. An
    in-band error event raises the mapped error.

    Args:
        key: the target key ("provider/model-id").
        headers: the response headers (an in-band error reads its hints there).
        request_id: the request id from those headers (`REQUEST_ID_HEADERS`).
    """

    __slots__ = (
        "_finish",
        "_headers",
        "_key",
        "_model",
        "_provider",
        "_refusal",
        "_request_id",
        "_served",
        "_tool_calls",
        "done",
        "started",
    )

    def __init__(self, key: str, headers: Mapping[str, str], request_id: str | None) -> None:
        self._key = key
        self._provider, _, self._model = key.partition("/")
        self._headers = headers
        self._request_id = request_id
        self._finish: FinishReason | None = None
        self._refusal: list[str] = []
        self._served: str | None = None
        self._tool_calls = False  # a tool-call piece arrived
        self.started = False  # StreamStart was emitted
        self.done = False  # `[DONE]` arrived (or `finish()` ended it): the answer is complete

    def decoder(self) -> SSEDecoder:
        """A decoder for the body: Server-Sent Events."""
        return SSEDecoder(provider=self._provider, model=self._model)

    def feed(self, sse: ServerSentEvent) -> list[StreamEvent]:
        """The events one SSE event holds (none for keep-alives and empty chunks).

        Raises:
            ProviderError: the event is an in-band error (mapped like an HTTP error).
            ResponseFormatError: the event's data is not a JSON object.
        """
        if self.done:
            return []
        data = sse.data
        if data[:1] != "{":  # not the usual JSON chunk: `[DONE]`, blank, or malformed
            stripped = data.strip()
            if stripped == "[DONE]":
                return [*self._start(), self._end()]
            if not stripped:
                return []
        try:
            chunk = fast_json.loads(data)
        except (ValueError, RecursionError):  # not JSON (RecursionError: absurd nesting)
            chunk = None
        if type(chunk) is not dict:
            raise ResponseFormatError(
                f"a stream event is not a JSON object: {data[:200]!r}",
                provider=self._provider,
                model=self._model,
            )
        if chunk.get("error"):
            raise _error_from_body(
                chunk, provider=self._provider, model=self._model, headers=self._headers
            )
        if self._served is None:
            self._served = _served_model(chunk)
        choices = chunk.get("choices")
        if self.started and type(choices) is list and len(choices) == 1:
            # Nearly every chunk of an answer: one choice whose delta is content alone,
            # no finish reason, no usage (`_choice`'s own short path, without its call).
            choice = choices[0]
            delta = choice.get("delta") if type(choice) is dict else None
            if (
                type(delta) is dict
                and len(delta) == 1
                and type(content := delta.get("content")) is str
                and not choice.get("finish_reason")
                and choice.get("index", 0) == 0
                and not chunk.get("usage")
            ):
                return [TextDelta(content)] if content else []
        events: list[StreamEvent] = []
        if isinstance(choices, list):
            for choice in choices:
                # n > 1 is never requested: only the first choice is read.
                if isinstance(choice, dict) and choice.get("index", 0) == 0:
                    self._choice(choice, events)
        usage = chunk.get("usage")
        if usage:  # most chunks carry none, or `null`
            parsed = _usage(usage)
            if parsed is not None:
                events.append(UsageUpdate(parsed))
        if not self.started and (events or self._served is not None):
            events[:0] = self._start()
        return events

    def finish(self) -> list[StreamEvent]:
        """The body ended cleanly (its reader returned b""): the stream's last events.

        Nothing after `[DONE]`; `StreamEnd` when a chunk carried a `finish_reason` (some
        compatible servers end the body after the finish and usage chunks, without
        `[DONE]`). Call it only for a clean end: a body cut by a transport error raised
        `StreamTruncatedError` while it was read.

        Raises:
            StreamTruncatedError: the body ended before any finish reason and `[DONE]`.
        """
        if self.done:
            return []
        if self._finish is None:
            raise StreamTruncatedError(
                "the stream ended before a chunk with a `finish_reason` and before "
                "`data: [DONE]`: the answer is incomplete",
                provider=self._provider,
                model=self._model,
                request_id=self._request_id,
            )
        return [*self._start(), self._end()]

    def _end(self) -> StreamEnd:
        """The terminal event: the wire's finish reason (STOP when none came; TOOL_CALLS
        for tool calls that stopped naturally) and the refusal, if the model declined."""
        self.done = True
        finish = finish_with_tools(self._finish or FinishReason.STOP, self._tool_calls)
        return StreamEnd(finish, "".join(self._refusal) or None)

    def _start(self) -> list[StreamEvent]:
        if self.started:
            return []
        self.started = True
        return [StreamStart(self._key, self._request_id, self._served)]

    def _choice(self, choice: dict[str, Any], events: list[StreamEvent]) -> None:
        delta = choice.get("delta")
        if type(delta) is dict and len(delta) == 1 and type(delta.get("content")) is str:
            # Nearly every chunk of an answer: `"delta": {"content": "..."}` alone.
            if content := delta["content"]:
                events.append(TextDelta(content))
        elif isinstance(delta, dict):
            reasoning = _reasoning_field(delta)
            if reasoning:
                events.append(ReasoningDelta(reasoning, provider=REASONING_PROVIDER))
            content = delta.get("content")
            if isinstance(content, str):
                if content:
                    events.append(TextDelta(content))
            elif isinstance(content, list):
                events.extend(_content_deltas(content))
            refusal = delta.get("refusal")
            if isinstance(refusal, str) and refusal:
                self._refusal.append(refusal)
            tool_calls = delta.get("tool_calls")
            if isinstance(tool_calls, list):
                deltas = _tool_call_deltas(tool_calls)
                if deltas:
                    self._tool_calls = True
                    events.extend(deltas)
        # Azure's `content_filter_results` (and a choice with no delta at all, which its
        # asynchronous filter sends) carry nothing we report.
        if choice.get("finish_reason"):
            self._finish = _finish_reason(choice["finish_reason"])


def _content_deltas(parts: list[Any]) -> list[StreamEvent]:
    """The events of a list-form `delta.content` (Mistral's reasoning models): a thinking
    part's text as reasoning, a text part's as text, in order."""
    events: list[StreamEvent] = []
    for part in parts:
        if not isinstance(part, dict):
            continue
        if part.get("type") == "thinking":
            thought = _thinking_text(part.get("thinking"))
            if thought:
                events.append(ReasoningDelta(thought, provider=REASONING_PROVIDER))
        else:
            text = part.get("text")
            if isinstance(text, str) and text:
                events.append(TextDelta(text))
    return events


def _tool_call_deltas(items: list[Any]) -> list[StreamEvent]:
    """Tool-call fragments, keyed by `index`: id and name come first, arguments after."""
    deltas: list[StreamEvent] = []
    for position, item in enumerate(items):
        if not isinstance(item, dict):
            continue
        index = item.get("index")
        function = item.get("function")
        function = function if isinstance(function, dict) else {}
        call_id, name = item.get("id"), function.get("name")
        deltas.append(
            ToolCallDelta(
                # A server that omits `index` sends each call whole, in order.
                index if isinstance(index, int) else position,
                call_id if isinstance(call_id, str) and call_id else None,
                name if isinstance(name, str) and name else None,
                _arguments_text(function.get("arguments")),
            )
        )
    return deltas


# --------------------------------------------------------------------------- the provider


class OpenAIModel(HTTPModel["OpenAIProvider"]):
    """One model of an `OpenAIProvider`. Get it with `provider.model(model_id)`.

    `generate` sends one chat completion; `stream` ends with `data: [DONE]`, or with a
    clean end of the body after a finish reason. The `x-request-id` header is the
    request id.
    """

    __slots__ = ()

    _REQUEST_ID_HEADERS = REQUEST_ID_HEADERS

    def _body(self, request: Request, *, stream: bool) -> dict[str, Any]:
        provider = self._provider
        return _build_body(
            request, self._model_id, stream=stream, preset=provider.preset, provider=provider.name
        )

    def _endpoint(self, *, stream: bool) -> str:
        return self._provider._chat_url(self._model_id)

    def _parse(self, data: Any, headers: Mapping[str, str]) -> Response:
        return _parse_response(data, self._key, headers)

    def _translator(self, headers: Mapping[str, str], request_id: str | None) -> _StreamTranslator:
        return _StreamTranslator(self._key, headers, request_id)

    def _not_a_stream(
        self, response: aiohttp.ClientResponse
    ) -> Callable[[BodyReader], Awaitable[ProviderError]] | None:
        if response.content_type != "application/json":
            return None
        # A proxy (or a server ignoring `stream`) answered 200 with plain JSON.
        return partial(self._json_instead_of_stream, headers=response.headers)

    async def _json_instead_of_stream(
        self, chunks: AsyncIterator[bytes], *, headers: Mapping[str, str]
    ) -> ProviderError:
        data = bytearray()
        async for chunk in chunks:
            data += chunk
            if len(data) > MAX_ERROR_BODY:
                break
        text = data[:MAX_ERROR_BODY].decode("utf-8", errors="replace")
        body = json_or_none(text)
        provider, model = self._provider.name, self._model_id
        if isinstance(body, dict) and body.get("error"):
            return _error_from_body(body, provider=provider, model=model, headers=headers)
        return ResponseFormatError(
            f"expected an event stream, got a JSON reply: {body_summary(200, headers, text)}",
            provider=provider,
            model=model,
        )


class OpenAIProvider(HTTPProvider[OpenAIModel]):
    """OpenAI Chat Completions, or any OpenAI-compatible server, over aiohttp.

    Construction does no I/O and never fails for a missing key: a call without one
    raises `AuthenticationError` naming the variable to set. The key appears in no
    error, log line or repr.

    Args:
        name: the registry name (the first half of each target key).
        api_key: the API key, or None (fine for local servers that need none).
        base_url: the API root, such as "https://api.openai.com/v1".
        http: the Registry's session holder (`http.get()` is called at request time).
        timeouts: the time limits (default: the preset's, `HOSTED_TIMEOUTS` for OpenAI).
        extra_headers: more headers for every request (`OpenAI-Organization`, ...).
        preset: the server's key variables and wire quirks (default: OpenAI's own).

    Example:
        ```python
        provider = OpenAIProvider(
            "openai", api_key=key, base_url=DEFAULT_BASE_URL, http=HTTPSessionHolder()
        )
        response = await provider.model("gpt-4o-mini").generate("Hello")
        ```
    """

    __slots__ = ("_preset",)

    _WIRE = "openai"

    def __init__(
        self,
        name: str,
        *,
        api_key: str | None,
        base_url: str,
        http: HTTPSessionHolder,
        timeouts: Timeouts | None = None,
        extra_headers: Mapping[str, str] | None = None,
        preset: Preset | None = None,
    ) -> None:
        preset = preset if preset is not None else OPENAI_PRESET
        super().__init__(
            name,
            api_key=api_key,
            base_url=base_url,
            http=http,
            timeouts=timeouts if timeouts is not None else preset.timeouts,
            extra_headers=extra_headers,
        )
        self._preset = preset

    @property
    def preset(self) -> Preset:
        """The server's key variables and wire quirks."""
        return self._preset

    @property
    def family(self) -> str:
        """The preset's family: "openai", a preset's scheme name, or "openai-compatible"."""
        return self._preset.family

    async def list_models(self) -> list[str]:
        """The model ids the server lists (`GET {base}/models`).

        Raises:
            AuthenticationError: no API key is configured, or the server refused it.
            ProviderError: any other failure.
        """
        body, _ = await self._request_json("GET", self._models_url(), model_id="")
        return _model_ids(body, self._name)

    def _new_model(self, model_id: str) -> OpenAIModel:
        return OpenAIModel(self, model_id)

    def _chat_url(self, model_id: str) -> str:
        """Where a chat completion for `model_id` goes (`{base}/chat/completions`)."""
        del model_id  # the model goes in the body
        return self._url("/chat/completions")

    def _models_url(self) -> str:
        """Where the model list is (`{base}/models`)."""
        return self._url("/models")

    def _key_required(self) -> bool:
        return self._preset.requires_key

    def _key_variables(self) -> tuple[str, ...]:
        return self._preset.env_vars

    def _map_error(
        self, model_id: str, status: int, headers: Mapping[str, str], body_text: str
    ) -> ProviderError:
        return _map_error(status, headers, body_text, provider=self._name, model=model_id)


class AzureOpenAIProvider(OpenAIProvider):
    """Azure OpenAI: OpenAI's chat completions wire on a resource's endpoint.

    The key goes in an `api-key` header, never in `Authorization`. Two URL forms:

    - the v1 API (no `api_version`, or a base URL ending in `/v1`): `POST
      {base}/chat/completions`, the deployment name as the body's `model`;
    - deployment URLs (an `api_version` and a base URL not ending in `/v1`, such as
      `https://RESOURCE.openai.azure.com/openai`): `POST {base}/deployments/{model}/
      chat/completions?api-version=...`, where the model id is the deployment's name.

    Args:
        name: the registry name.
        api_key: the resource's key, or None (a call then fails naming
            `AZURE_OPENAI_API_KEY`).
        base_url: `https://RESOURCE.openai.azure.com/openai/v1`, or `.../openai` with an
            `api_version`.
        http: the Registry's session holder.
        api_version: the dated API version ("2024-10-21"), or None for the v1 API.
        timeouts: the time limits (default: the preset's, `HOSTED_TIMEOUTS`).
        extra_headers: more headers for every request.
        preset: the wire quirks (default: `AZURE_PRESET`).
    """

    __slots__ = ("_api_version", "_deployment_urls")

    _DSN_KEY_EXAMPLE = "azure://KEY@RESOURCE.openai.azure.com"

    def __init__(
        self,
        name: str,
        *,
        api_key: str | None,
        base_url: str,
        http: HTTPSessionHolder,
        api_version: str | None = None,
        timeouts: Timeouts | None = None,
        extra_headers: Mapping[str, str] | None = None,
        preset: Preset | None = None,
    ) -> None:
        super().__init__(
            name,
            api_key=api_key,
            base_url=base_url,
            http=http,
            timeouts=timeouts,
            extra_headers=extra_headers,
            preset=preset if preset is not None else AZURE_PRESET,
        )
        self._api_version = api_version or None
        self._deployment_urls = self._api_version is not None and not self._base_url.endswith("/v1")

    @property
    def api_version(self) -> str | None:
        """The dated API version sent as `api-version`, or None (the v1 API)."""
        return self._api_version

    def _auth_headers(self, api_key: str) -> dict[str, str]:
        # Azure's key header; `Authorization` carries Entra ID tokens, never the key.
        return {"api-key": api_key}

    def _chat_url(self, model_id: str) -> str:
        if self._deployment_urls:
            return self._with_version(
                self._url(f"/deployments/{quote(model_id, safe='')}/chat/completions")
            )
        return self._with_version(self._url("/chat/completions"))

    def _models_url(self) -> str:
        return self._with_version(self._url("/models"))

    def _with_version(self, url: str) -> str:
        if self._api_version is None:
            return url
        return f"{url}?{urlencode({'api-version': self._api_version})}"


# --------------------------------------------------------------------------- factories

_HEADER_KEYS: Final[Mapping[str, str]] = MappingProxyType(
    {"organization": "OpenAI-Organization", "project": "OpenAI-Project"}
)


def openai_factory(name: str, dsn: DSN, context: ProviderContext) -> OpenAIProvider:
    """The `openai://`, `openai+http://` and `openai+https://` scheme factory.

    - `openai://[KEY@][host[:port][/path]]`: OpenAI. The key comes from the DSN, else
      from `OPENAI_API_KEY`; the base URL is `https://host.../path`, or OpenAI's.
    - `openai+http://[KEY@]host:port/v1` (or `+https`): any OpenAI-compatible server.
      The key comes from the DSN only (none is fine), never from `OPENAI_API_KEY`, so
      an OpenAI key is not sent to another host; `max_tokens` is sent as `max_tokens`.

    A DSN with a host but no path gets the default path, `/v1`.

    Query keys (all optional): the `Timeouts` fields (`connect`, `headers`, `generate`,
    `first_token`, `reasoning_first_token`, `idle`: seconds, > 0), and `organization` /
    `project` (sent as `OpenAI-Organization` / `OpenAI-Project`).

    Raises:
        ConfigurationError: an unknown query key, a bad value, or `openai+http(s)://`
            without a host.
    """
    preset = OPENAI_PRESET if dsn.scheme == "openai" else GENERIC_PRESET
    if preset is GENERIC_PRESET and not dsn.host:
        raise ConfigurationError(
            f"provider {name!r}: a {dsn.scheme}:// DSN needs the server's address, "
            f"as in {dsn.scheme}://127.0.0.1:8000/v1"
        )
    return _build_provider(name, dsn, context, preset, default_path="/v1")


def openai_compatible_factory(preset_name: str) -> SchemeFactory:
    """The scheme factory of a known OpenAI-compatible server (`groq`, `vllm`, ...).

    The provider uses the preset's base URL unless the DSN names a host; the key comes
    from the DSN, else from the preset's variables (`GROQ_API_KEY`, ...). A DSN host
    keeps the preset's transport (http for local servers, https otherwise) unless the
    scheme says `+http` / `+https`, and gets the preset's path when it has none.
    Query keys are those of `openai_factory`.

    Raises:
        ConfigurationError: `preset_name` is not a key of `OPENAI_COMPATIBLE_PRESETS`.
    """
    preset = OPENAI_COMPATIBLE_PRESETS.get(preset_name)
    if preset is None:
        raise ConfigurationError(
            f"unknown OpenAI-compatible preset {preset_name!r} "
            f"(known: {', '.join(OPENAI_COMPATIBLE_PRESETS)})"
        )
    default_path = _path_of(preset.base_url)

    def factory(name: str, dsn: DSN, context: ProviderContext) -> OpenAIProvider:
        return _build_provider(name, dsn, context, preset, default_path=default_path)

    factory.__doc__ = f"The `{preset_name}://` scheme factory (an OpenAI-compatible preset)."
    return factory


def _build_provider(
    name: str, dsn: DSN, context: ProviderContext, preset: Preset, *, default_path: str
) -> OpenAIProvider:
    timeouts = dsn_timeouts(
        dsn.query,
        label=f"provider {name!r}",
        accepted=(*TIMEOUT_KEYS, *_HEADER_KEYS),
        base=preset.timeouts,
    )
    extra_headers = {
        header: dsn.query[key] for key, header in _HEADER_KEYS.items() if dsn.query.get(key)
    }
    return OpenAIProvider(
        name,
        api_key=dsn.credential or key_from_env(context.env, preset.env_vars),
        base_url=_base_url(dsn, preset, default_path),
        http=context.http,
        timeouts=timeouts,
        extra_headers=extra_headers,
        preset=preset,
    )


def _base_url(dsn: DSN, preset: Preset, default_path: str) -> str:
    if not dsn.host:
        return preset.base_url
    url = dsn.base_url
    if not dsn.scheme.endswith(("+http", "+https")) and preset.base_url.startswith("http://"):
        # `vllm://gpu-box:8000/v1`: a local server speaks plain HTTP unless told otherwise.
        url = "http://" + url.partition("://")[2]
    return url if dsn.path else url + default_path


def _path_of(url: str) -> str:
    """The path of an absolute URL ("https://api.groq.com/openai/v1" -> "/openai/v1")."""
    rest = url.partition("://")[2]
    slash = rest.find("/")
    return rest[slash:] if slash != -1 else ""


AZURE_ENDPOINT_VARIABLE: Final = "AZURE_OPENAI_ENDPOINT"
"""Where `azure://` finds the resource's endpoint when the DSN names no host (the
variable Azure's SDKs read)."""

_API_VERSION_KEY: Final = "api-version"


def azure_factory(name: str, dsn: DSN, context: ProviderContext) -> AzureOpenAIProvider:
    """The `azure://` (and `azure+http://`, `azure+https://`) scheme factory: Azure OpenAI.

    - `azure://KEY@RESOURCE.openai.azure.com[/openai/v1]`: the v1 API (the default
      path is `/openai/v1`).
    - `azure://KEY@RESOURCE.openai.azure.com[/openai]?api-version=2024-10-21`: the
      deployment URLs (the default path is `/openai`); model ids are deployment names.

    A path ending in `/v1` always speaks the v1 API (with `?api-version=` on its URLs
    when the DSN gives one). The key comes from the DSN, else from
    `AZURE_OPENAI_API_KEY`; the endpoint from the DSN's host, else from
    `AZURE_OPENAI_ENDPOINT` (`https://RESOURCE.openai.azure.com/`, optionally with its
    path). Query keys: `api-version` and the `Timeouts` fields.

    Raises:
        ConfigurationError: no host and no `AZURE_OPENAI_ENDPOINT`, an unknown query key,
            a bad value, or a path that names neither API (not ending in `/v1`, and no
            `api-version`).
    """
    label = f"provider {name!r}"
    timeouts = dsn_timeouts(
        dsn.query,
        label=label,
        accepted=(*TIMEOUT_KEYS, _API_VERSION_KEY),
        base=AZURE_PRESET.timeouts,
    )
    api_version = dsn.query.get(_API_VERSION_KEY, "").strip() or None
    if dsn.host:
        root = dsn.base_url[: len(dsn.base_url) - len(dsn.path)]
        path = dsn.path
    else:
        root, path = _azure_endpoint(context.env(AZURE_ENDPOINT_VARIABLE), label)
    if path == "/":
        path = ""  # the resource's root, as written
    elif not path:
        path = "/openai" if api_version else "/openai/v1"
    elif api_version is None and not path.endswith("/v1"):
        raise ConfigurationError(
            f"{label}: an azure:// DSN without api-version speaks the v1 API, whose path "
            f"ends in /v1 (/openai/v1); for the deployment URLs under {path} add "
            "?api-version=2024-10-21"
        )
    return AzureOpenAIProvider(
        name,
        api_key=dsn.credential or key_from_env(context.env, AZURE_PRESET.env_vars),
        base_url=root + path,
        http=context.http,
        api_version=api_version,
        timeouts=timeouts,
    )


def _azure_endpoint(value: str | None, label: str) -> tuple[str, str]:
    """(scheme://host[:port], path) of `AZURE_OPENAI_ENDPOINT`.

    Raises:
        ConfigurationError: the variable is unset, or not an http(s) URL.
    """
    endpoint = (value or "").strip()
    if not endpoint:
        raise ConfigurationError(
            f"{label}: an azure:// DSN needs the resource's endpoint: "
            f"azure://KEY@RESOURCE.openai.azure.com, or set {AZURE_ENDPOINT_VARIABLE}"
        )
    scheme, sep, rest = endpoint.partition("://")
    if not sep or scheme.lower() not in ("http", "https") or not rest.strip("/"):
        raise ConfigurationError(
            f"{label}: {AZURE_ENDPOINT_VARIABLE} must be an https URL such as "
            "https://RESOURCE.openai.azure.com/"
        )
    host, slash, path = rest.partition("/")
    path = ("/" + path).rstrip("/") if slash else ""
    return f"{scheme.lower()}://{host}", path
