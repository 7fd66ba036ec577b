"""The built-in `openai` provider: OpenAI Chat Completions, and every OpenAI-compatible server.

Wire format (providers.md 3): `POST {base}/chat/completions` with `Authorization: Bearer
KEY`; a stream is Server-Sent Events of `data:` lines only, ending with `data: [DONE]`;
errors carry `{"error": {"message", "type", "param", "code"}}`, both as HTTP bodies and
as in-band `data: {"error": ...}` events. Models: `GET {base}/models`.

Mapping from our types:

- `Request.system` -> a leading `system` message (not `developer`: compatible servers
  only know `system`, and OpenAI still accepts it).
- `max_tokens` -> `max_completion_tokens` for OpenAI itself (reasoning models reject
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

The end of a stream: it is complete at `data: [DONE]` (with no finish reason seen, the
finish is STOP), or when the body ends cleanly (the chunked terminator, Content-Length
reached, or the end of a close-delimited body) after a chunk carried a `finish_reason`:
several compatible servers send the finish chunk and the usage chunk, then end the body
without `[DONE]`. A body that ends cleanly before any finish reason, and a body cut by a
transport error (no chunked terminator, even after a finish reason: the usage may be
missing), raise `StreamTruncatedError`.

OpenAI-compatible servers differ mostly in base URL, key variable and error bodies
(providers.md 4); the differences that change the request are flags of `Preset`, and
`OPENAI_COMPATIBLE_PRESETS` holds one per known server.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from functools import partial
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final, Literal, TypeAlias

import attrs

from .._events import StreamEnd, StreamEvent, StreamStart, TextDelta, ToolCallDelta, UsageUpdate
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
    HOSTED_TIMEOUTS,
    MAX_ERROR_BODY,
    ON_DEMAND_TIMEOUTS,
    SELF_HOSTED_TIMEOUTS,
    Timeouts,
    request_id_from,
)
from .._messages import (
    ImagePart,
    Message,
    Part,
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
    json_or_none,
    key_from_env,
    status_error,
)

if TYPE_CHECKING:
    import aiohttp

    from .._context import HTTPSessionHolder, ProviderContext, SchemeFactory
    from .._dsn import DSN
    from .._http import BodyReader

__all__ = [
    "DEFAULT_BASE_URL",
    "OPENAI_COMPATIBLE_PRESETS",
    "OPENAI_PRESET",
    "OpenAIModel",
    "OpenAIProvider",
    "Preset",
    "openai_compatible_factory",
    "openai_factory",
]

DEFAULT_BASE_URL: Final = "https://api.openai.com/v1"
"""OpenAI's API root (the SDK's default); `/chat/completions` and `/models` are appended."""

REQUEST_ID_HEADERS: Final = ("x-request-id",)
"""Where OpenAI (and most compatible servers) put the request id (providers.md 1)."""

MaxTokensField: TypeAlias = Literal["max_tokens", "max_completion_tokens"]


# --------------------------------------------------------------------------- presets


@attrs.frozen
class Preset:
    """An OpenAI-compatible server: where it lives, its key, and its wire quirks.

    Only quirks that change the request are flags here; differences in error bodies
    are handled by the one error mapper, which accepts every documented shape.
    """

    base_url: str
    """The default API root, used when the DSN names no host."""
    env_vars: tuple[str, ...] = ()
    """Environment variables read for the key, in order, when the DSN has none."""
    requires_key: bool = True
    """False for local servers, which run without a key unless started with one."""
    max_tokens_field: MaxTokensField = "max_tokens"
    """How `Request.max_tokens` is sent. OpenAI deprecated `max_tokens` (reasoning models
    reject it) for `max_completion_tokens`, which most compatible servers do not know
    (providers.md 3.2 and 4)."""
    stream_usage: bool = True
    """Send `stream_options: {"include_usage": true}` with streams. Mistral rejects the
    field with a 422 `extra_forbidden` and sends usage in its last chunk anyway."""
    family: str = "openai-compatible"
    """Where the built-in capability table looks its models up: "openai" for OpenAI, the
    scheme name for a known server ("groq"), "openai-compatible" for any other."""
    timeouts: Timeouts = HOSTED_TIMEOUTS
    """The time limits a DSN's query keys override: `HOSTED_TIMEOUTS` for hosted APIs
    and generic endpoints, `SELF_HOSTED_TIMEOUTS` for vllm and llamacpp,
    `ON_DEMAND_TIMEOUTS` for lmstudio (which loads a model on the first request)."""


OPENAI_PRESET: Final = Preset(
    DEFAULT_BASE_URL,
    ("OPENAI_API_KEY",),
    max_tokens_field="max_completion_tokens",
    family="openai",
)
"""OpenAI itself (the `openai://` scheme)."""

# `openai+http://host:port/v1` and `openai+https://...`: any compatible server. The key
# comes from the DSN only: OPENAI_API_KEY must never be sent to some other host.
_GENERIC_PRESET: Final = Preset("", (), requires_key=False)

_KNOWN_SERVERS: Final[Mapping[str, Preset]] = MappingProxyType(
    {
        # Base URLs per providers.md 4; key variables as each vendor's docs name them.
        "groq": Preset("https://api.groq.com/openai/v1", ("GROQ_API_KEY",)),
        "deepseek": Preset("https://api.deepseek.com", ("DEEPSEEK_API_KEY",)),
        "openrouter": Preset("https://openrouter.ai/api/v1", ("OPENROUTER_API_KEY",)),
        "together": Preset("https://api.together.xyz/v1", ("TOGETHER_API_KEY",)),
        "mistral": Preset("https://api.mistral.ai/v1", ("MISTRAL_API_KEY",), stream_usage=False),
        "xai": Preset("https://api.x.ai/v1", ("XAI_API_KEY",)),
        "fireworks": Preset("https://api.fireworks.ai/inference/v1", ("FIREWORKS_API_KEY",)),
        # Local servers: default ports, no key unless the server was started with one
        # (the variables are the ones each server itself reads its key from).
        "vllm": Preset(
            "http://127.0.0.1:8000/v1",
            ("VLLM_API_KEY",),
            requires_key=False,
            timeouts=SELF_HOSTED_TIMEOUTS,
        ),
        "llamacpp": Preset(
            "http://127.0.0.1:8080/v1",
            ("LLAMA_API_KEY",),
            requires_key=False,
            timeouts=SELF_HOSTED_TIMEOUTS,
        ),
        "lmstudio": Preset(
            "http://127.0.0.1:1234/v1",
            ("LM_API_TOKEN",),
            requires_key=False,
            timeouts=ON_DEMAND_TIMEOUTS,
        ),
    }
)

OPENAI_COMPATIBLE_PRESETS: Final[Mapping[str, Preset]] = MappingProxyType(
    # Each preset's capability family is its scheme name.
    {name: attrs.evolve(preset, family=name) for name, preset in _KNOWN_SERVERS.items()}
)
"""Known OpenAI-compatible servers by scheme name (`groq://`, `vllm://`, ...)."""


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
        "messages": _wire_messages(request, provider=provider, model=model_id),
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
    if stream:
        body["stream"] = True
        if preset.stream_usage:
            body["stream_options"] = {"include_usage": True}
    return body


def _wire_messages(request: Request, *, provider: str, model: str) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    if request.system:
        messages.append({"role": "system", "content": request.system})
    for message in request.messages:
        try:
            messages.extend(_wire_message(message))
        except _Unsupported as exc:
            raise UnsupportedRequestError(str(exc), provider=provider, model=model) from None
    return messages


class _Unsupported(Exception):
    """A part the wire format cannot carry; re-raised with the provider and model."""


def _wire_message(message: Message) -> list[dict[str, Any]]:
    """One of our messages as wire messages: tool results each become a `tool` message."""
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
        wire.append(_wire_assistant(rest))
    elif rest:
        if message.role == "tool":
            raise _Unsupported(
                "a tool message can only hold ToolResultParts "
                f"(got {', '.join(type(part).__name__ for part in rest)})"
            )
        wire.append({"role": "user", "content": _wire_user_content(rest)})
    return wire


def _wire_assistant(parts: Iterable[Part]) -> dict[str, Any]:
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for part in parts:
        if isinstance(part, TextPart):
            texts.append(part.text)
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
    """`usage` as our `Usage`, or None when the reply has none (`null` in stream chunks)."""
    if not isinstance(value, dict):
        return None
    return Usage(_count(value.get("prompt_tokens")), _count(value.get("completion_tokens")))


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _content_text(content: object) -> str:
    """`message.content` as text: a string, null, or (some servers) a list of text parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


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


def _parse_response(body: Any, key: str, headers: Mapping[str, str]) -> Response:
    """A chat completion reply as our `Response`.

    A refusal (`message.refusal`, sent when a structured-output request is declined)
    gives `FinishReason.CONTENT_FILTER`. An error it raises may echo the API key: the
    provider masks it (`_redact_error`) on its way out.

    Raises:
        ProviderStatusError: the body is an error (OpenRouter reports errors that happen
            after routing with HTTP 200), mapped like an error status.
        ResponseFormatError: the body is not a chat completion.
    """
    provider, _, model = key.partition("/")

    def where(problem: str) -> ResponseFormatError:
        return ResponseFormatError(
            f"unexpected chat completion reply: {problem}", provider=provider, model=model
        )

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
    finish = _finish_reason(choice.get("finish_reason"))
    if message.get("refusal"):
        finish = FinishReason.CONTENT_FILTER
    return Response(
        text=_content_text(message.get("content")),
        tool_calls=_parse_tool_calls(message.get("tool_calls"), where),
        finish_reason=finish,
        usage=_usage(body.get("usage")) or Usage(),
        model=key,
        request_id=request_id_from(headers, REQUEST_ID_HEADERS),
        raw=body,
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
    return _ErrorInfo(
        message=_message_text(message),
        code=(code if code and not code.isdigit() else None) or kind,
        tokens=frozenset(token.lower() for token in (code, kind) if token),
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

    `StreamStart` comes with the first chunk (the role chunk, usually). `StreamEnd` comes
    with `data: [DONE]`, or from `finish()` when the body ended cleanly after a finish
    reason; it carries the finish reason seen on the last choice chunk, and the usage
    chunk sits before it. An in-band error event raises the mapped error.

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
        "_refused",
        "_request_id",
        "done",
        "started",
    )

    def __init__(self, key: str, headers: Mapping[str, str], request_id: str | None) -> None:
        self._key = key
        self._provider, _, self._model = key.partition("/")
        self._headers = headers
        self._request_id = request_id
        self._finish: FinishReason | None = None
        self._refused = False
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
        chunk = json_or_none(data)
        if not isinstance(chunk, dict):
            raise ResponseFormatError(
                f"a stream event is not a JSON object: {data[:200]!r}",
                provider=self._provider,
                model=self._model,
            )
        if chunk.get("error"):
            raise _error_from_body(
                chunk, provider=self._provider, model=self._model, headers=self._headers
            )
        events: list[StreamEvent] = [] if self.started else self._start()
        choices = chunk.get("choices")
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
        return [self._end()]

    def _end(self) -> StreamEnd:
        """The terminal event (content_filter for a refusal; STOP when no reason came)."""
        self.done = True
        finish = FinishReason.CONTENT_FILTER if self._refused else self._finish
        return StreamEnd(finish or FinishReason.STOP)

    def _start(self) -> list[StreamEvent]:
        if self.started:
            return []
        self.started = True
        return [StreamStart(self._key, self._request_id)]

    def _choice(self, choice: dict[str, Any], events: list[StreamEvent]) -> None:
        delta = choice.get("delta")
        if isinstance(delta, dict):
            content = delta.get("content")
            if isinstance(content, str) and content:
                events.append(TextDelta(content))
            if delta.get("refusal"):
                self._refused = True
            tool_calls = delta.get("tool_calls")
            if isinstance(tool_calls, list):
                events.extend(_tool_call_deltas(tool_calls))
        if choice.get("finish_reason"):
            self._finish = _finish_reason(choice["finish_reason"])


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
        return self._provider._url("/chat/completions")

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
        body, _ = await self._request_json("GET", self._url("/models"), model_id="")
        return _model_ids(body, self._name)

    def _new_model(self, model_id: str) -> OpenAIModel:
        return OpenAIModel(self, model_id)

    def _key_required(self) -> bool:
        return self._preset.requires_key

    def _key_variables(self) -> tuple[str, ...]:
        return self._preset.env_vars

    def _map_error(
        self, model_id: str, status: int, headers: Mapping[str, str], body_text: str
    ) -> ProviderError:
        return _map_error(status, headers, body_text, provider=self._name, model=model_id)


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
    preset = OPENAI_PRESET if dsn.scheme == "openai" else _GENERIC_PRESET
    if preset is _GENERIC_PRESET and not dsn.host:
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
