"""The built-in `anthropic` provider: the Anthropic Messages API over aiohttp.

Wire format: `POST {base}/v1/messages` with `x-api-key` and `anthropic-version:
2023-06-01` headers (providers.md 5). Streams are Server-Sent Events with named
events, ending with `message_stop`; errors carry `{"type": "error", "error":
{"type", "message"}}`, both as HTTP bodies and as in-band `event: error` frames.

The end of a stream: it is complete at `message_stop`, or when the body ends cleanly
(the chunked terminator, Content-Length reached, or the end of a close-delimited body)
after a `message_delta` carried a `stop_reason` (with the final usage). A body that
ends cleanly before any `stop_reason`, and a body cut by a transport error (no chunked
terminator, even after the `message_delta`), raise `StreamTruncatedError`.

Mapping from our types:

- `Request.system` -> top-level `system`; `max_tokens` is required by the API, so
  a request without one gets the provider's default (`DEFAULT_MAX_TOKENS`, 4096,
  or the DSN's `max_tokens`).
- `tool` messages -> `user` messages of `tool_result` blocks (consecutive results
  share one message, and a user turn right after them joins it);
  `ToolCallPart` -> `tool_use` blocks in assistant turns.
- `ImagePart` -> `image` blocks: inline bytes as a `base64` source, `data:` URLs
  decoded to one, http(s) URLs as a `url` source.
- `tool_choice`: "auto" -> `auto`, "required" -> `any`, "none" -> `none`,
  a name -> `{"type": "tool", "name": ...}`.
- `JSONSchema` -> `output_config.format` (`{"type": "json_schema", "schema": ...}`;
  the schema's `name` and `strict` have no Anthropic field). Anthropic has no
  schema-less JSON mode, so `JSONMode` raises `UnsupportedRequestError`.

Extended thinking (`Request.reasoning`):

- enabled -> `"thinking": {"type": "enabled", "budget_tokens": B}` with
  `B = reasoning.tokens(minimum=1024)` (1024 is the API's smallest budget; an effort
  maps through `EFFORT_BUDGETS`). The budget counts toward `max_tokens`, which must
  exceed it, so `max_tokens` is sent as `B + (request.max_tokens or the default)`:
  the request's `max_tokens` stays the room left for the answer itself.
- The API refuses sampling changes with thinking: `temperature` is not sent at all
  (only its default, 1, is accepted) and `top_p` is raised to 0.95 when below it
  (0.95 to 1 is the accepted range). `top_k` is not a field of ours.
- Thinking cannot be combined with a forced tool (`tool_choice` "required" or a tool
  name: the API answers 400): such a request is sent without thinking, as a target
  that cannot reason gets it (reasoning is a way to answer, the forced tool is part of
  the question).
- `reasoning("none")` (or a budget of 0) sends no `thinking` field.
- Only the budget form is sent. Newer models (Claude Opus 4.6, Sonnet 4.6) prefer
  `{"type": "adaptive"}` with `output_config.effort`, and the newest accept only that;
  for them, `provider_options("anthropic", body={"thinking": {"type": "adaptive",
  "budget_tokens": None}, "output_config": {"effort": ...}})` replaces it.
- Replies: `thinking` blocks (`thinking` text + `signature`) and `redacted_thinking`
  blocks (`data`, opaque) become `Response.reasoning` (the thinking text joined) and
  `Response.reasoning_parts` (one `ReasoningPart(provider="anthropic")` per block, in
  order); streamed, `content_block_start` (thinking / redacted_thinking),
  `thinking_delta` and `signature_delta` become `ReasoningDelta`s indexed by the
  content block.
- Sent back: an assistant message's `ReasoningPart`s of provider "anthropic" go first
  in its turn, as `thinking` (text and signature, as received) or `redacted_thinking`
  (`data`) blocks: a multi-turn tool conversation with thinking requires them. Parts of
  other providers, and parts with neither a signature nor redacted data (the API
  rejects an unsigned thinking block), are dropped.

Prompt caching: `Request.cache_tools` puts `cache_control: {"type": "ephemeral"}` on the
last tool definition, `Request.cache_system` on the system prompt (then sent as a list
of one text block), and `Message.cache_breakpoint` on the last content block of that
message that can carry one (not a thinking block). The API takes at most 4 breakpoints
per request: when more are marked, the last 4 in the API's order (tools, system, then
messages) are kept, since each covers the prefixes of those before it.

Usage: `input_tokens` is the total input, `input_tokens + cache_read_input_tokens +
cache_creation_input_tokens`; `cached_input_tokens` is `cache_read_input_tokens`,
`cache_write_tokens` is `cache_creation_input_tokens`. `output_tokens` already counts
thinking; `reasoning_tokens` comes from `usage.output_tokens_details.thinking_tokens`
when the API sends it (newer API versions), 0 otherwise. In a stream, `message_start`
carries the input counts and `message_delta` cumulative counts that overwrite them.

The served model: the reply's `model` (generate) and `message_start.message.model`
(stream) become `Response.served_model` / `StreamStart.served_model`.

The finish reason: `stop_reason` is mapped, then `finish_with_tools` applies the one
tool-call rule (a natural stop with `tool_use` blocks is `TOOL_CALLS`).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlencode

from .. import _json as fast_json
from .._data_url import DataURLError, is_data_url, parse_data_url
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
    ConfigurationError,
    ContentPolicyError,
    ContextLengthError,
    ModelNotFoundError,
    ProviderStatusError,
    QuotaExceededError,
    ResponseFormatError,
    StreamTruncatedError,
    UnsupportedRequestError,
)
from .._http import Timeouts, request_id_from
from .._messages import (
    ImagePart,
    Message,
    Part,
    ReasoningPart,
    TextPart,
    Tool,
    ToolCall,
    ToolCallPart,
)
from .._request import JSONMode, JSONSchema, Request
from .._response import FinishReason, Response, Usage
from .._sse import ServerSentEvent, SSEDecoder
from ._base import HTTPModel, HTTPProvider
from ._common import (
    TIMEOUT_KEYS,
    dsn_timeouts,
    finish_with_tools,
    json_or_none,
    key_from_env,
    status_error,
)

if TYPE_CHECKING:
    from .._context import HTTPSessionHolder, ProviderContext
    from .._dsn import DSN

__all__ = [
    "API_KEY_ENV_VARS",
    "ANTHROPIC_VERSION",
    "DEFAULT_BASE_URL",
    "DEFAULT_MAX_TOKENS",
    "AnthropicModel",
    "AnthropicProvider",
    "anthropic_factory",
]

DEFAULT_BASE_URL: Final = "https://api.anthropic.com"
"""Where the Messages API lives (paths `/v1/...` are appended)."""
ANTHROPIC_VERSION: Final = "2023-06-01"
"""The `anthropic-version` header: required on every call (providers.md 5.1)."""
DEFAULT_MAX_TOKENS: Final = 4096
"""`max_tokens` sent when the request sets none: the API requires the field."""
API_KEY_ENV_VARS: Final = ("ANTHROPIC_API_KEY",)
"""Where `anthropic_factory` looks for a key the DSN does not carry."""

_REQUEST_ID_HEADERS: Final = ("request-id",)
_RESERVED_HEADERS: Final = frozenset({"x-api-key", "anthropic-version", "content-type"})
_IMAGE_MIME_TYPES: Final = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
_MODELS_PAGE_SIZE: Final = 1000  # the API's maximum `limit`
_WIRE_FAMILY: Final = "anthropic"
"""`ReasoningPart.provider` of the blocks this wire produces, and the only one sent back."""
_MIN_THINKING_BUDGET: Final = 1024  # the API's smallest `budget_tokens`
_THINKING_MIN_TOP_P: Final = 0.95  # with thinking, top_p must be within [0.95, 1]
_MAX_CACHE_BREAKPOINTS: Final = 4  # `cache_control` blocks the API takes per request
_THINKING_BLOCKS: Final = frozenset({"thinking", "redacted_thinking"})

# stop_reason -> ours (providers.md 5.3, `types/stop_reason.py`). `pause_turn` (a
# server-tool turn paused, to be resumed by the caller) fits none of ours: OTHER.
_FINISH_REASONS: Final[Mapping[str, FinishReason]] = {
    "end_turn": FinishReason.STOP,
    "stop_sequence": FinishReason.STOP,
    "max_tokens": FinishReason.LENGTH,
    "model_context_window_exceeded": FinishReason.LENGTH,
    "tool_use": FinishReason.TOOL_CALLS,
    "refusal": FinishReason.CONTENT_FILTER,
}

# error.type -> the HTTP status Anthropic pairs it with (providers.md 5.5). An in-band
# `event: error` arrives on a 200 stream, so its type is all there is to classify by.
_STATUS_OF_ERROR_TYPE: Final[Mapping[str, int]] = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "conflict_error": 409,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}
_UNKNOWN_IN_BAND_STATUS: Final = 500  # an unknown in-band error: the server failed

# Matchers on error.message (lower-cased). Anthropic's error types are coarse: these
# conditions all come as `invalid_request_error` (or `rate_limit_error`).
_CONTEXT_MARKERS: Final = ("prompt is too long", "exceed context limit")
_POLICY_MARKERS: Final = ("content filtering policy",)
# Prepaid credits spent, or a spend limit the organisation set: errors that will not
# clear by retrying (messages seen in issue threads, providers.md 8.1). Quota is decided
# from this wording alone: a 429 that says nothing of billing is a rate limit, whatever
# headers a gateway dropped on the way.
_QUOTA_MARKERS: Final = (
    "credit balance is too low",
    "reached your api usage limits",  # the monthly tier cap (a 429)
    "reached your specified api usage limits",
    "reached your specified workspace api usage limits",
    "spend limit",
    "purchase credits",
)
_SPEND_LIMIT_CODE: Final = "enforced_spend_limit_reached"


# --------------------------------------------------------------------------- request


def _build_body(
    request: Request,
    model_id: str,
    *,
    stream: bool,
    default_max_tokens: int = DEFAULT_MAX_TOKENS,
    provider: str = "anthropic",
) -> dict[str, Any]:
    """The JSON body of `POST /v1/messages` for `request`.

    Raises:
        UnsupportedRequestError: the request asks for something the Messages API
            cannot take (JSON mode without a schema, a temperature above 1, an
            image type it does not accept, tool-call arguments that are not a
            JSON object).
    """
    unsupported = functools.partial(_unsupported, provider=provider, model=model_id)
    budget = _thinking_budget(request)
    answer_tokens = request.max_tokens or default_max_tokens
    messages, message_marks = _messages(request.messages, unsupported)
    body: dict[str, Any] = {
        "model": model_id,
        # The thinking budget is part of `max_tokens` and must stay below it: the budget
        # is added, so that the request's `max_tokens` is still the answer's room.
        "max_tokens": budget + answer_tokens,
        "messages": messages,
    }
    if budget:
        body["thinking"] = {"type": "enabled", "budget_tokens": budget}
    system_block: dict[str, Any] | None = None
    if request.system:
        body["system"] = request.system
        if request.cache_system:
            system_block = {"type": "text", "text": request.system}
    if request.temperature is not None:
        if request.temperature > 1.0:
            raise unsupported(
                f"Anthropic accepts a temperature from 0 to 1, got {request.temperature:g}"
            )
        if not budget:  # with thinking only the default (1) is accepted: leave it out
            body["temperature"] = request.temperature
    if request.top_p is not None:
        # With thinking the API takes a top_p from 0.95 to 1: the closest allowed value.
        body["top_p"] = max(request.top_p, _THINKING_MIN_TOP_P) if budget else request.top_p
    if request.stop:
        body["stop_sequences"] = list(request.stop)
    tool_marks: list[dict[str, Any]] = []
    if request.tools:
        body["tools"] = [_tool(tool) for tool in request.tools]
        if request.cache_tools:
            tool_marks.append(body["tools"][-1])
    if request.tool_choice is not None:
        body["tool_choice"] = _tool_choice(request.tool_choice)
    if isinstance(request.response_format, JSONSchema):
        body["output_config"] = {
            "format": {"type": "json_schema", "schema": dict(request.response_format.schema)}
        }
    elif isinstance(request.response_format, JSONMode):
        raise unsupported(
            "Anthropic has no JSON mode without a schema: ask with json_schema(...) instead"
        )
    # The API reads the prompt as tools, then system, then messages, and takes at most 4
    # breakpoints: the last 4 are kept (each one's prefix holds the earlier ones).
    marks = [*tool_marks, *([system_block] if system_block else []), *message_marks]
    for block in marks[-_MAX_CACHE_BREAKPOINTS:]:
        block["cache_control"] = {"type": "ephemeral"}
    if system_block is not None and "cache_control" in system_block:
        body["system"] = [system_block]  # a breakpoint needs the block form
    _collapse_single_text(messages)
    if stream:
        body["stream"] = True
    return body


def _thinking_budget(request: Request) -> int:
    """The `budget_tokens` to send for `request`, or 0 for no `thinking` field."""
    reasoning = request.reasoning
    if reasoning is None or not reasoning.enabled:
        return 0
    if request.tool_choice is not None and request.tool_choice not in ("auto", "none"):
        # "Thinking may not be enabled when tool_choice forces tool use" (a 400): the
        # forced tool is part of the question, reasoning only a way to answer it.
        return 0
    return reasoning.tokens(minimum=_MIN_THINKING_BUDGET)


def _unsupported(message: str, *, provider: str, model: str) -> UnsupportedRequestError:
    return UnsupportedRequestError(message, provider=provider, model=model)


_Unsupported = Callable[[str], UnsupportedRequestError]


def _tool(tool: Tool) -> dict[str, Any]:
    definition: dict[str, Any] = {"name": tool.name}
    if tool.description:  # optional in the API; an empty one says nothing
        definition["description"] = tool.description
    definition["input_schema"] = dict(tool.parameters)
    return definition


def _tool_choice(choice: str) -> dict[str, str]:
    if choice == "auto":
        return {"type": "auto"}
    if choice == "required":
        return {"type": "any"}
    if choice == "none":
        return {"type": "none"}
    return {"type": "tool", "name": choice}


def _messages(
    messages: tuple[Message, ...], unsupported: _Unsupported
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Our messages as Anthropic turns, and the blocks that carry their cache breakpoints.

    `tool` messages become `user` turns of `tool_result` blocks. A turn next to a tool
    turn with the same wire role is merged into it: consecutive results then share one
    user message, as the API asks, and a user's text after them follows the results
    (which must come first in the turn). An assistant turn starts with its Anthropic
    reasoning blocks (see `_reasoning_block`).

    A message with `cache_breakpoint` marks its own last block that can carry
    `cache_control` (thinking blocks cannot); the caller sets the field, keeping the
    API's limit. One text block is not yet collapsed to a plain string: that is
    `_collapse_single_text`, once the breakpoints are set.
    """
    turns: list[dict[str, Any]] = []
    marks: list[dict[str, Any]] = []
    previous_was_tool = False
    for message in messages:
        role = "assistant" if message.role == "assistant" else "user"
        blocks = _message_blocks(message, unsupported)
        if message.cache_breakpoint:
            cacheable = [block for block in blocks if block["type"] not in _THINKING_BLOCKS]
            if cacheable:
                marks.append(cacheable[-1])
        is_tool = message.role == "tool"
        if turns and turns[-1]["role"] == role and (is_tool or previous_was_tool):
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
        previous_was_tool = is_tool
    return turns, marks


def _collapse_single_text(turns: list[dict[str, Any]]) -> None:
    """Send a turn of one plain text block as a string: the shorter form the docs use.

    A block with `cache_control` keeps the block form, which the field needs.
    """
    for turn in turns:
        content = turn["content"]
        if len(content) == 1 and content[0]["type"] == "text" and "cache_control" not in content[0]:
            turn["content"] = content[0]["text"]


def _message_blocks(message: Message, unsupported: _Unsupported) -> list[dict[str, Any]]:
    """The content blocks of one message; an assistant's reasoning blocks first."""
    reasoning: list[dict[str, Any]] = []
    blocks: list[dict[str, Any]] = []
    for part in message.parts:
        if isinstance(part, ReasoningPart):
            # Only an assistant turn holds reasoning, and only Anthropic's own is sent.
            if message.role == "assistant" and (block := _reasoning_block(part)):
                reasoning.append(block)
        elif block := _block(part, unsupported):
            blocks.append(block)
    return reasoning + blocks if reasoning else blocks


def _reasoning_block(part: ReasoningPart) -> dict[str, Any] | None:
    """A reasoning part as the block it was received as, or None when it is not sent.

    The API checks a thinking block's signature, so the text and signature go back
    unchanged; a redacted block is its opaque `data`. A part of another family means
    nothing here, and an unsigned one would be refused: both are dropped.
    """
    if part.provider != _WIRE_FAMILY:
        return None
    if part.redacted is not None:
        return {"type": "redacted_thinking", "data": part.redacted}
    if part.signature is None:
        return None
    return {"type": "thinking", "thinking": part.text, "signature": part.signature}


def _block(part: Part, unsupported: _Unsupported) -> dict[str, Any] | None:
    if isinstance(part, ReasoningPart):
        return None  # see `_message_blocks`
    if isinstance(part, TextPart):
        # The API rejects empty text blocks; an empty part carries nothing anyway.
        return {"type": "text", "text": part.text} if part.text else None
    if isinstance(part, ImagePart):
        return {"type": "image", "source": _image_source(part, unsupported)}
    if isinstance(part, ToolCallPart):
        return {
            "type": "tool_use",
            "id": part.call.id,
            "name": part.call.name,
            "input": _tool_input(part.call, unsupported),
        }
    result: dict[str, Any] = {
        "type": "tool_result",
        "tool_use_id": part.call_id,
        "content": part.content,
    }
    if part.is_error:
        result["is_error"] = True
    return result


def _tool_input(call: ToolCall, unsupported: _Unsupported) -> dict[str, Any]:
    # Anthropic wants the arguments as an object, not as the text the model wrote.
    try:
        return call.parse_arguments()
    except ResponseFormatError:
        raise unsupported(
            f"tool call {call.id!r} ({call.name}) has arguments that are not a JSON object; "
            "Anthropic needs them as one to replay the call"
        ) from None


def _image_source(image: ImagePart, unsupported: _Unsupported) -> dict[str, str]:
    if image.data is not None:
        return _base64_source(image.mime_type or "", image.base64(), unsupported)
    url = image.url or ""
    if is_data_url(url):
        try:
            mime_type, data = parse_data_url(url)
        except DataURLError as exc:
            raise unsupported(f"the image data: URL {exc}") from None
        return _base64_source(mime_type or image.mime_type or "", data, unsupported)
    if url.startswith(("https://", "http://")):
        return {"type": "url", "url": url}
    raise unsupported(f"Anthropic takes images inline or by http(s) URL, not {url[:40]!r}")


def _base64_source(mime_type: str, data: str, unsupported: _Unsupported) -> dict[str, str]:
    if mime_type not in _IMAGE_MIME_TYPES:
        raise unsupported(
            f"Anthropic accepts {', '.join(sorted(_IMAGE_MIME_TYPES))} images, not {mime_type!r}"
        )
    return {"type": "base64", "media_type": mime_type, "data": data}


# --------------------------------------------------------------------------- response


def _parse_response(body: object, key: str, headers: Mapping[str, str]) -> Response:
    """A decoded `/v1/messages` reply as a `Response` answered by `key`.

    Raises:
        ResponseFormatError: the reply is not a message object.
    """
    provider, _, model = key.partition("/")
    if isinstance(body, dict) and body.get("type") == "error":
        # An error object with a success status (a proxy could do that): still an error.
        raise _in_band_error(
            body,
            provider=provider,
            model=model,
            request_id=request_id_from(headers, _REQUEST_ID_HEADERS),
        )
    content = body.get("content") if isinstance(body, dict) else None
    if not isinstance(body, dict) or not isinstance(content, list):
        raise ResponseFormatError(
            f"expected a message object with a content list, got {_preview(body)}",
            provider=provider,
            model=model,
            request_id=request_id_from(headers, _REQUEST_ID_HEADERS),
        )
    text: list[str] = []
    calls: list[ToolCall] = []
    reasoning: list[ReasoningPart] = []
    for block in content:
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "text":
            text.append(str(block.get("text", "")))
        elif kind == "tool_use":
            calls.append(
                ToolCall(
                    str(block.get("id", "")),
                    str(block.get("name", "")),
                    json.dumps(block.get("input") or {}, ensure_ascii=False),
                )
            )
        elif kind == "thinking":
            reasoning.append(
                ReasoningPart(
                    _text(block.get("thinking")),
                    signature=_text(block.get("signature")) or None,
                    provider=_WIRE_FAMILY,
                )
            )
        elif kind == "redacted_thinking":
            # Encrypted reasoning: no text, only `data`, sent back as it came.
            reasoning.append(
                ReasoningPart(redacted=_text(block.get("data")), provider=_WIRE_FAMILY)
            )
        # server-tool and other blocks carry no answer text.
    model_id = body.get("model")
    return Response(
        text="".join(text),
        tool_calls=calls,
        finish_reason=finish_with_tools(_finish_reason(body.get("stop_reason")), bool(calls)),
        usage=_UsageCounter().update(body.get("usage")).usage,
        model=key,
        request_id=request_id_from(headers, _REQUEST_ID_HEADERS),
        raw=body,
        reasoning="".join(part.text for part in reasoning),
        reasoning_parts=tuple(reasoning),
        served_model=model_id if isinstance(model_id, str) and model_id else None,
    )


def _text(value: object) -> str:
    """A string field of a block ("" when it is missing or not a string)."""
    return value if isinstance(value, str) else ""


def _finish_reason(stop_reason: object) -> FinishReason:
    if not isinstance(stop_reason, str):
        return FinishReason.OTHER
    return _FINISH_REASONS.get(stop_reason, FinishReason.OTHER)


def _preview(value: object) -> str:
    text = json.dumps(value, ensure_ascii=False) if value is not None else "nothing"
    return text if len(text) <= 200 else text[:200] + "..."


class _UsageCounter:
    """Token counts; every update overwrites the counts it carries.

    `message_delta.usage` is cumulative (providers.md 5.4), so it replaces, and a count
    it leaves out (the input counts, often) keeps its `message_start` value. Input is
    `input_tokens` plus both cache counts: Anthropic reports cached tokens apart from its
    `input_tokens`, and ours is the total (5.3). `output_tokens` already counts thinking;
    `output_tokens_details.thinking_tokens`, when sent, is the part spent reasoning.
    """

    __slots__ = ("_counts",)

    _FIELDS = (
        "input_tokens",
        "cache_creation_input_tokens",
        "cache_read_input_tokens",
        "output_tokens",
    )
    _THINKING = "thinking_tokens"

    def __init__(self) -> None:
        self._counts = dict.fromkeys((*self._FIELDS, self._THINKING), 0)

    def update(self, usage: object) -> _UsageCounter:
        """Take the counts `usage` (a wire `usage` object) carries; return self."""
        if isinstance(usage, dict):
            for name in self._FIELDS:
                self._take(name, usage.get(name))
            details = usage.get("output_tokens_details")
            if isinstance(details, dict):
                self._take(self._THINKING, details.get(self._THINKING))
        return self

    def _take(self, name: str, value: object) -> None:
        # null (a count the event does not carry) and anything odd keep the last value.
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            self._counts[name] = value

    @property
    def usage(self) -> Usage:
        """The counts as our totals."""
        counts = self._counts
        cache_read = counts["cache_read_input_tokens"]
        cache_write = counts["cache_creation_input_tokens"]
        return Usage(
            input_tokens=counts["input_tokens"] + cache_read + cache_write,
            output_tokens=counts["output_tokens"],
            cached_input_tokens=cache_read,
            cache_write_tokens=cache_write,
            reasoning_tokens=counts[self._THINKING],
        )


# --------------------------------------------------------------------------- errors


def _map_http_error(
    status: int, headers: Mapping[str, str], body_text: str, *, provider: str, model: str
) -> ProviderStatusError:
    """The typed error for an HTTP error reply (the `error_mapper` of every call)."""
    return _map_error(status, headers, json_or_none(body_text), body_text, provider, model)


def _map_error(
    status: int,
    headers: Mapping[str, str],
    body: object,
    body_text: str,
    provider: str,
    model: str,
    *,
    in_band: bool = False,
) -> ProviderStatusError:
    """Anthropic's own conditions first (providers.md 8.4), then the generic status rules.

    `in_band` marks an error event read from a 200 stream (or a 200 reply), whose
    `status` is the one Anthropic pairs with its `error.type`.
    """
    error = body.get("error") if isinstance(body, dict) else None
    error = error if isinstance(error, dict) else {}
    error_type = error.get("type") if isinstance(error.get("type"), str) else None
    message = error.get("message") if isinstance(error.get("message"), str) else None
    request_id = request_id_from(headers, _REQUEST_ID_HEADERS)
    if request_id is None and isinstance(body, dict) and isinstance(body.get("request_id"), str):
        request_id = body["request_id"]
    text = (message or "").lower()
    kind: type[ProviderStatusError] | None = None
    if status == 404 and error_type == "not_found_error" and text.startswith("model:"):
        # "model: claude-x"; a wrong path is a 404 "Not Found" and stays generic.
        kind = ModelNotFoundError
    elif status == 402 or _is_quota(status, error_type, error, text, headers, in_band):
        kind = QuotaExceededError
    elif any(marker in text for marker in _CONTEXT_MARKERS):
        kind = ContextLengthError
    elif any(marker in text for marker in _POLICY_MARKERS):
        kind = ContentPolicyError
    if in_band and message is not None:
        message += " (an error inside a successful response)"
    return status_error(
        provider=provider,
        model=model,
        status=status,
        headers=headers,
        body_text=body_text,
        message=message,
        code=error_type,
        request_id=request_id,
        kind=kind,
    )


def _is_quota(
    status: int,
    error_type: str | None,
    error: Mapping[str, Any],
    text: str,
    headers: Mapping[str, str],
    in_band: bool,
) -> bool:
    if any(marker in text for marker in _QUOTA_MARKERS):
        return True
    if status != 429:
        return False
    details = error.get("details")
    # A 429 without `retry-after` used to count as the spend cap here; but a real rate
    # limit recorded in Anthropic's own SDK tests carries only `x-should-retry: true`, and
    # a gateway may drop that too. The body decides (the markers above, or the code).
    return isinstance(details, dict) and details.get("error_code") == _SPEND_LIMIT_CODE


def _in_band_error(
    data: Mapping[str, Any], *, provider: str, model: str, request_id: str | None
) -> ProviderStatusError:
    """The typed error for an `event: error` frame (on a 200 stream).

    The SDK raises these with the stream's 200 status; we classify by `error.type`
    instead, through the status Anthropic pairs with it (529 for `overloaded_error`),
    so that the same rules as for HTTP errors apply.
    """
    error = data.get("error")
    error_type = error.get("type") if isinstance(error, dict) else None
    status = _STATUS_OF_ERROR_TYPE.get(str(error_type), _UNKNOWN_IN_BAND_STATUS)
    headers = {_REQUEST_ID_HEADERS[0]: request_id} if request_id else {}
    return _map_error(status, headers, data, json.dumps(data), provider, model, in_band=True)


# --------------------------------------------------------------------------- streams


class _StreamTranslator:
    """Turns Anthropic's SSE events into ours.

    Event order (providers.md 5.4): `message_start`, then per content block
    `content_block_start`, `content_block_delta`*, `content_block_stop`, then
    `message_delta` and `message_stop`; `ping` anywhere. Unknown events are ignored,
    as the docs ask. `StreamEnd` comes with `message_stop`, or from `finish()` when the
    body ended cleanly after a `message_delta` with a `stop_reason`.

    Thinking blocks become `ReasoningDelta`s indexed by their content block: the start
    of a `thinking` block (its text, normally empty), each `thinking_delta`, then the
    block's `signature_delta` (its last piece); a `redacted_thinking` block arrives
    whole in its `content_block_start` (`data`, opaque). `message_start` names the
    served model (`StreamStart.served_model`).
    """

    __slots__ = (
        "_finish",
        "_key",
        "_model",
        "_provider",
        "_request_id",
        "_stopped",
        "_tools",
        "_usage",
        "done",
    )

    def __init__(self, *, key: str, request_id: str | None) -> None:
        self._key = key
        self._provider, _, self._model = key.partition("/")
        self._request_id = request_id
        self._tools: dict[int, int] = {}  # content block index -> our tool-call index
        self._usage = _UsageCounter()
        self._finish = FinishReason.OTHER
        self._stopped = False  # a `message_delta` carried a `stop_reason`
        self.done = False
        """True once `message_stop` arrived (or `finish()` ended it): the answer is complete."""

    def decoder(self) -> SSEDecoder:
        """A decoder for the body: Server-Sent Events."""
        return SSEDecoder(provider=self._provider, model=self._model)

    def feed(self, event: ServerSentEvent) -> list[StreamEvent]:
        """Our events for one SSE event (none for pings and unknown events).

        Raises:
            ProviderStatusError: an in-band `error` event, typed by its `error.type`.
            ResponseFormatError: the event's data is not a JSON object.
        """
        name = event.event
        # Unknown event types are skipped unread: the docs promise new ones may appear.
        if self.done or (name != "message" and name not in self._HANDLERS):
            return []
        data = self._decode(event)
        if name == "message":  # no `event:` line (a proxy dropped it): the JSON says
            name = str(data.get("type"))
        handler = self._HANDLERS.get(name)
        return handler(self, data) if handler is not None else []

    def _decode(self, event: ServerSentEvent) -> dict[str, Any]:
        try:
            data = fast_json.loads(event.data)
        except (ValueError, RecursionError) as exc:
            raise ResponseFormatError(
                f"the {event.event!r} event's data is not JSON: {event.data[:200]!r}",
                provider=self._provider,
                model=self._model,
                request_id=self._request_id,
            ) from exc
        if not isinstance(data, dict):
            raise ResponseFormatError(
                f"the {event.event!r} event's data is not a JSON object: {event.data[:200]!r}",
                provider=self._provider,
                model=self._model,
                request_id=self._request_id,
            )
        return data

    def _message_start(self, data: dict[str, Any]) -> list[StreamEvent]:
        message = data.get("message")
        if not isinstance(message, dict):
            message = {}
        self._usage.update(message.get("usage"))
        served = message.get("model")
        return [
            StreamStart(
                model=self._key,
                request_id=self._request_id,
                served_model=served if isinstance(served, str) and served else None,
            ),
            UsageUpdate(self._usage.usage),
        ]

    def _block_start(self, data: dict[str, Any]) -> list[StreamEvent]:
        block = data.get("content_block")
        if not isinstance(block, dict):
            return []
        kind = block.get("type")
        if kind == "text" and block.get("text"):
            return [TextDelta(str(block["text"]))]
        if kind == "thinking":
            # Normally `{"thinking": "", "signature": ""}`: the pieces follow as deltas.
            return self._reasoning(
                data, text=_text(block.get("thinking")), signature=_text(block.get("signature"))
            )
        if kind == "redacted_thinking":
            return self._reasoning(data, redacted=_text(block.get("data")))
        if kind != "tool_use":
            return []
        index = self._tools[_index(data)] = len(self._tools)
        # The input is normally `{}` here and arrives as `input_json_delta` pieces.
        initial = block.get("input")
        return [
            ToolCallDelta(
                index,
                id=str(block.get("id", "")),
                name=str(block.get("name", "")),
                arguments=json.dumps(initial, ensure_ascii=False) if initial else "",
            )
        ]

    def _block_delta(self, data: dict[str, Any]) -> list[StreamEvent]:
        delta = data.get("delta")
        if not isinstance(delta, dict):
            return []
        kind = delta.get("type")
        if kind == "text_delta" and delta.get("text"):
            return [TextDelta(str(delta["text"]))]
        if kind == "input_json_delta" and delta.get("partial_json"):
            index = self._tools.get(_index(data))
            if index is not None:
                return [ToolCallDelta(index, arguments=str(delta["partial_json"]))]
        elif kind == "thinking_delta":
            return self._reasoning(data, text=_text(delta.get("thinking")))
        elif kind == "signature_delta":
            return self._reasoning(data, signature=_text(delta.get("signature")))
        # citations_delta and unknown deltas: not part of the answer.
        return []

    def _reasoning(
        self, data: Mapping[str, Any], *, text: str = "", signature: str = "", redacted: str = ""
    ) -> list[StreamEvent]:
        """A `ReasoningDelta` for the block at `data["index"]`; none when it carries nothing
        (an empty start would commit the stream with no content)."""
        if not (text or signature or redacted):
            return []
        return [
            ReasoningDelta(
                text,
                index=_index(data),
                signature=signature or None,
                redacted=redacted or None,
                provider=_WIRE_FAMILY,
            )
        ]

    def _message_delta(self, data: dict[str, Any]) -> list[StreamEvent]:
        delta = data.get("delta")
        if isinstance(delta, dict) and "stop_reason" in delta:
            self._finish = _finish_reason(delta["stop_reason"])
            if isinstance(delta["stop_reason"], str) and delta["stop_reason"]:
                self._stopped = True
        if not isinstance(data.get("usage"), dict):
            return []
        return [UsageUpdate(self._usage.update(data["usage"]).usage)]

    def _message_stop(self, data: dict[str, Any]) -> list[StreamEvent]:
        self.done = True
        return [self._end()]

    def _end(self) -> StreamEnd:
        # The one tool-call rule: `end_turn` with tool_use blocks stopped to call them.
        return StreamEnd(finish_with_tools(self._finish, bool(self._tools)))

    def finish(self) -> list[StreamEvent]:
        """The body ended cleanly (its reader returned b""): the stream's last events.

        Nothing after `message_stop`; `StreamEnd` when a `message_delta` carried a
        `stop_reason` (its usage was already reported). Call it only for a clean end: a
        body cut by a transport error raised `StreamTruncatedError` while it was read.

        Raises:
            StreamTruncatedError: the body ended before any `stop_reason` and before
                `message_stop`.
        """
        if self.done:
            return []
        if not self._stopped:
            raise StreamTruncatedError(
                "the Anthropic stream ended before message_stop, and no message_delta "
                "carried a stop_reason: the answer is incomplete",
                provider=self._provider,
                model=self._model,
                request_id=self._request_id,
            )
        self.done = True
        return [self._end()]

    def _error(self, data: dict[str, Any]) -> list[StreamEvent]:
        raise _in_band_error(
            data, provider=self._provider, model=self._model, request_id=self._request_id
        )

    _HANDLERS: Final[
        Mapping[str, Callable[[_StreamTranslator, dict[str, Any]], list[StreamEvent]]]
    ] = {
        "message_start": _message_start,
        "content_block_start": _block_start,
        "content_block_delta": _block_delta,
        "message_delta": _message_delta,
        "message_stop": _message_stop,
        "error": _error,
    }


def _index(data: Mapping[str, Any]) -> int:
    index = data.get("index")
    return index if isinstance(index, int) else -1


# --------------------------------------------------------------------------- provider


class AnthropicModel(HTTPModel["AnthropicProvider"]):
    """One Anthropic model. Get it with `AnthropicProvider.model(model_id)`.

    Calls go to `/v1/messages`; a stream is complete at `message_stop`, or at a clean end
    of the body after a `message_delta` with a `stop_reason`. The `request-id` header is
    the request id.
    """

    __slots__ = ()

    _REQUEST_ID_HEADERS = _REQUEST_ID_HEADERS

    def _endpoint(self, *, stream: bool) -> str:
        return self._provider._url("/v1/messages")

    def _parse(self, data: Any, headers: Mapping[str, str]) -> Response:
        return _parse_response(data, self._key, headers)

    def _body(self, request: Request, *, stream: bool) -> dict[str, Any]:
        return _build_body(
            request,
            self._model_id,
            stream=stream,
            default_max_tokens=self._provider._default_max_tokens,
            provider=self._provider.name,
        )

    def _translator(self, headers: Mapping[str, str], request_id: str | None) -> _StreamTranslator:
        return _StreamTranslator(key=self._key, request_id=request_id)


class AnthropicProvider(HTTPProvider[AnthropicModel]):
    """The Anthropic Messages API. Construction does no I/O and never fails for a missing key.

    A call without a key raises `AuthenticationError` naming `ANTHROPIC_API_KEY`.

    Args:
        name: the registry name (the first half of each target key).
        api_key: the API key, sent as `x-api-key`; None defers the error to the first call.
        base_url: the API root without `/v1` (default `https://api.anthropic.com`);
            a trailing `/v1` is tolerated.
        http: the Registry's session holder; the session is fetched at call time.
        timeouts: the time limits (default `HOSTED_TIMEOUTS`).
        extra_headers: sent with every call (`anthropic-beta`, a proxy's own headers);
            they cannot replace `x-api-key`, `anthropic-version` or `content-type`.
        default_max_tokens: `max_tokens` for requests that set none (the API requires it).

    Example:
        ```python
        provider = AnthropicProvider(
            "anthropic", api_key=key, base_url=DEFAULT_BASE_URL, http=HTTPSessionHolder()
        )
        response = await provider.model("claude-sonnet-4-5").generate("Hello")
        ```
    """

    __slots__ = ("_default_max_tokens",)

    _FAMILY = _WIRE = "anthropic"
    _KEY_ENV_VARS = API_KEY_ENV_VARS
    _DSN_KEY_EXAMPLE = "anthropic://KEY@"

    def __init__(
        self,
        name: str,
        *,
        api_key: str | None,
        base_url: str = DEFAULT_BASE_URL,
        http: HTTPSessionHolder,
        timeouts: Timeouts | None = None,
        extra_headers: Mapping[str, str] | None = None,
        default_max_tokens: int = DEFAULT_MAX_TOKENS,
    ) -> None:
        if default_max_tokens < 1:
            raise ConfigurationError(
                f"anthropic provider {name!r}: max_tokens must be at least 1, "
                f"got {default_max_tokens}"
            )
        super().__init__(
            name,
            api_key=api_key,
            # `.../v1` is a common way to write an API root; the paths add it again.
            base_url=base_url.rstrip("/").removesuffix("/v1"),
            http=http,
            timeouts=timeouts,
            # Case-insensitively, the auth headers are ours: a second `X-Api-Key` would be
            # sent alongside ours rather than replace it.
            extra_headers={
                header: value
                for header, value in (extra_headers or {}).items()
                if header.lower() not in _RESERVED_HEADERS
            },
        )
        self._default_max_tokens = default_max_tokens

    async def list_models(self) -> list[str]:
        """The model ids this key can use (`GET /v1/models`, every page), newest first.

        Raises:
            AuthenticationError: no API key is configured, or Anthropic refused it.
            ProviderError: the call failed; the subclass says how.
        """
        ids: list[str] = []
        after: str | None = None
        while True:
            query: dict[str, str | int] = {"limit": _MODELS_PAGE_SIZE}
            if after:
                query["after_id"] = after
            data, _ = await self._request_json(
                "GET", self._url("/v1/models?" + urlencode(query)), model_id=""
            )
            page = data.get("data") if isinstance(data, dict) else None
            if not isinstance(page, list):
                raise ResponseFormatError(
                    f"expected a model list, got {_preview(data)}", provider=self._name
                )
            ids.extend(str(item["id"]) for item in page if isinstance(item, dict) and "id" in item)
            last = data.get("last_id")
            # Stop when the server says so, or would hand out the same page again.
            if not data.get("has_more") or not isinstance(last, str) or last == after:
                return ids
            after = last

    def _new_model(self, model_id: str) -> AnthropicModel:
        return AnthropicModel(self, model_id)

    def _auth_headers(self, api_key: str) -> dict[str, str]:
        # No content-type here: the transport adds it to requests that have a JSON body.
        return {"x-api-key": api_key, "anthropic-version": ANTHROPIC_VERSION}

    def _map_error(
        self, model_id: str, status: int, headers: Mapping[str, str], body_text: str
    ) -> ProviderStatusError:
        return _map_http_error(status, headers, body_text, provider=self._name, model=model_id)


# --------------------------------------------------------------------------- factory


def anthropic_factory(name: str, dsn: DSN, context: ProviderContext) -> AnthropicProvider:
    """The `anthropic://` scheme factory.

    - Key: the DSN's credential, else `ANTHROPIC_API_KEY` from the Registry's env.
      None is fine here: the first call raises `AuthenticationError`.
    - Base URL: the DSN's (`anthropic+http://127.0.0.1:8080` for a local proxy) when
      it names a host, else `https://api.anthropic.com`.
    - Query keys: the `Timeouts` fields (`connect`, `headers`, `generate`, `first_token`,
      `reasoning_first_token`, `idle`: seconds, > 0) and
      `max_tokens` (the default for requests that set none, a whole number >= 1).

    Example: `anthropic://sk-ant-...@?idle=60&max_tokens=8192`.

    Raises:
        ConfigurationError: an unknown query key or a bad value.
    """
    api_key = dsn.credential or key_from_env(context.env, API_KEY_ENV_VARS)
    timeouts = dsn_timeouts(
        dsn.query, label=f"anthropic provider {name!r}", accepted=(*TIMEOUT_KEYS, "max_tokens")
    )
    max_tokens = DEFAULT_MAX_TOKENS
    if "max_tokens" in dsn.query:
        max_tokens = _whole_number(name, "max_tokens", dsn.query["max_tokens"])
    return AnthropicProvider(
        name,
        api_key=api_key or None,
        base_url=dsn.base_url if dsn.host else DEFAULT_BASE_URL,
        http=context.http,
        timeouts=timeouts,
        default_max_tokens=max_tokens,
    )


def _whole_number(name: str, key: str, value: str) -> int:
    text = value.strip()
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise ConfigurationError(
            f"anthropic provider {name!r}: DSN key {key!r} needs a whole number >= 1, got {value!r}"
        )
    return int(text)
