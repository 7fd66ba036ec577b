"""The built-in `gemini` provider (alias `google`): the Gemini Developer API over aiohttp.

Wire format (providers.md section 6; ai.google.dev):

- `POST {base}/models/{model}:generateContent`, and `:streamGenerateContent?alt=sse` for
  streams (without `alt=sse` a stream is one slowly sent JSON array). The default base is
  `https://generativelanguage.googleapis.com/v1beta`.
- The key travels in the `x-goog-api-key` header, never in the URL (`?key=` would put it
  into proxy logs and into aiohttp's error messages).
- Roles are `user` and `model`; the system prompt is the top-level `systemInstruction`;
  tool results are `functionResponse` parts of a `user` turn.
- A stream is SSE `data:` chunks with no sentinel: it is complete when a chunk carried a
  `finishReason`, and the server then ends the body. An error can arrive as a chunk whose
  JSON is `{"error": ...}`, with or without the `data:` prefix (providers.md 2.1).

Tool call ids. Gemini calls usually have no id, and a tool result is matched to its call
by the function's name. So:

- A call without an id gets a synthesized one, `call_<n>`, where `n` is the call's
  position in the reply (0, 1, ... for parallel calls). A call that has an id keeps it.
  The id never carries a thought signature (see Thinking): it stays short and plain, so
  the conversation can go on with any other provider.
- A `ToolResultPart` is sent as `functionResponse` named `ToolResultPart.name` when set,
  else by the name of the `ToolCallPart` with the same id earlier in the conversation.
  Ids other than the synthesized `call_<n>` are echoed as `functionCall.id` and
  `functionResponse.id`.
- `functionResponse.response` must be a JSON object: a result that is a JSON object is
  sent as it is; anything else is wrapped as `{"output": value}` (`{"error": value}` when
  `is_error`), the keys Gemini documents for function output and failures.

Thinking (`Request.reasoning`; ai.google.dev/gemini-api/docs/thinking, .../gemini-3):

- Gemini 2.5 and other budget models: `generationConfig.thinkingConfig` =
  `{"thinkingBudget": reasoning.tokens(), "includeThoughts": reasoning.summary}`;
  `reasoning("none")` (a budget of 0) is `thinkingBudget: 0`. The budget is kept within
  the range each model documents: 2.5 Pro 128-32768 (it cannot stop thinking: "none"
  becomes 128, its smallest budget), 2.5 Flash 1-24576 (0 turns thinking off), 2.5
  Flash-Lite 512-24576 (0 turns it off). Other models get the budget as asked.
  `includeThoughts` is false for "none" (also where the model thinks anyway: no summary
  was asked for).
- Gemini 3 (ids starting "gemini-3") takes `thinkingLevel` instead (a budget and a level
  together are a 400): `reasoning.level()` goes to the nearest level the model
  documents. 3 Pro: "low", "high"; other 3.x Pro models: "low", "medium", "high"; Flash
  and Flash-Lite models: "minimal", "low", "medium", "high". Gemini 3 cannot stop
  thinking: "none" is the model's lowest level, without `includeThoughts`. A level the
  model lacks rounds up ("medium" on 3 Pro is "high"; "minimal" on a Pro is "low").
- Replies: a part with `"thought": true` is a thought summary, never answer text. A run
  of consecutive thought parts is one reasoning block (`Response.reasoning`, one
  `ReasoningPart(provider="gemini")` per block; `ReasoningDelta(provider="gemini")`
  with the block's index in streams); a `thoughtSignature` on a thought part comes with
  that block and closes it.
- Thought signatures on other parts (Gemini puts one on the first `functionCall` of a
  step, on the last text part of an answer without calls, or, streamed, on a final
  part with empty text) are kept, in reply order, as text-less
  `ReasoningPart(signature=..., provider="gemini")`s: a block of their own each.
- Sent back (a replayed assistant turn; `Response.message` puts its reasoning parts
  first): Gemini parts only, other families' are dropped. A signed thought block goes
  first, as the thought part it was (`text`, `thought: true`, `thoughtSignature`); an
  unsigned summary is dropped (Gemini reads nothing from it). The text-less signatures
  go back onto the turn's parts by Gemini's own placement rules, since a `Message` keeps
  no positions: the first signature onto the first `functionCall` part, the next onto
  the next call (a turn that merges several steps), and any left over onto the turn's
  text parts, the last signature onto the last text part (an answer without calls).
  Gemini 3 validates exactly the first call of each step, which this restores; a 2.5 reply that
  signed a text part before its call gets the signature back on the call, which 2.5 does
  not check. A call that still has no signature after that gets, if it is the turn's
  first, the documented placeholder `skip_thought_signature_validator`
  (ai.google.dev/gemini-api/docs/thought-signatures, FAQ): a call another provider made.
- Ids of the older form `call_0__thought__<signature>` (this library's earlier way of
  carrying a signature) are still read on replay: the signature goes back on its call.

Usage: `input_tokens` is `promptTokenCount` (which already counts the cached part of the
prompt) plus `toolUsePromptTokenCount`; `cached_input_tokens` is
`cachedContentTokenCount`; `output_tokens` is `candidatesTokenCount` plus
`thoughtsTokenCount` (thinking is billed as output and is not part of
`candidatesTokenCount`: the counts add up to `totalTokenCount`); `reasoning_tokens` is
`thoughtsTokenCount`. Gemini reports no cache writes.

Caching: Gemini caches repeated prompt prefixes by itself (implicit caching) and reports
the hits in `cachedContentTokenCount`; the prompt-cache breakpoints
(`Request.cache_system`, `Request.cache_tools`, `Message.cache_breakpoint`) are
Anthropic's and are ignored here. An explicit cache (`cachedContent`) can be named with
`provider_options("gemini", body={"cachedContent": "cachedContents/..."})`.

The served model: the reply's `modelVersion` (generate; in a stream, the first chunk that
has one) becomes `Response.served_model` / `StreamStart.served_model`.

The finish reason: `finishReason` is mapped, then `finish_with_tools` applies the one
tool-call rule: Gemini has no tool-call reason and ends a reply with calls with STOP (or
no reason), which is `TOOL_CALLS`; MAX_TOKENS stays `LENGTH`, a safety stop
`CONTENT_FILTER`.

Images: inline bytes become `inlineData` (base64); a `data:` URL is decoded into
`inlineData` locally; an http(s) URL becomes `fileData.fileUri`, which the Developer API
fetches itself (public and signed URLs, and Files API URIs); other URL schemes raise
`UnsupportedRequestError`.
"""

from __future__ import annotations

import json
import mimetypes
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import quote, urlsplit

from .. import _json as fast_json
from .._data_url import DataURLError, parse_data_url
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
    ProviderError,
    QuotaExceededError,
    ResponseFormatError,
    StreamTruncatedError,
    UnsupportedRequestError,
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
from .._reasoning import Reasoning, ReasoningEffort
from .._request import JSONMode, JSONSchema, Request
from .._response import FinishReason, Response, Usage
from .._retry_after import gemini_retry_delay
from .._sse import DEFAULT_MAX_LINE_BYTES, ServerSentEvent, SSEDecoder
from ._base import HTTPModel, HTTPProvider
from ._common import dsn_timeouts, finish_with_tools, json_or_none, key_from_env, status_error

if TYPE_CHECKING:
    from .._context import ProviderContext
    from .._dsn import DSN

__all__ = ["DEFAULT_BASE_URL", "GeminiModel", "GeminiProvider", "gemini_factory"]

DEFAULT_BASE_URL: Final = "https://generativelanguage.googleapis.com/v1beta"
"""The Gemini Developer API (Vertex AI is a different host and auth, out of scope)."""

KEY_ENV_VARS: Final = ("GEMINI_API_KEY", "GOOGLE_API_KEY")
"""Where the factory looks for a key when the DSN has none, in this order."""

_WIRE: Final = "gemini"
"""The wire family named in `ReasoningPart.provider` / `ReasoningDelta.provider`."""

_THOUGHT_SEP: Final = "__thought__"
"""Separates a tool call id from a thought signature in the ids this library made before
signatures became `ReasoningPart`s: still read on replay (see the module doc)."""

_SKIP_SIGNATURE: Final = "skip_thought_signature_validator"
"""Gemini's documented placeholder for a function call that has no real signature."""

_SYNTHESIZED_PREFIX: Final = "call_"

_LIST_PAGE_SIZE: Final = 1000  # the API's maximum page size
_LIST_MAX_PAGES: Final = 100  # a server that repeats its page token cannot loop us forever

_FINISH_REASONS: Final[Mapping[str, FinishReason]] = {
    "STOP": FinishReason.STOP,
    "MAX_TOKENS": FinishReason.LENGTH,
    # Output withheld on policy grounds (providers.md 8.1, "content filter (output)").
    "SAFETY": FinishReason.CONTENT_FILTER,
    "RECITATION": FinishReason.CONTENT_FILTER,
    "BLOCKLIST": FinishReason.CONTENT_FILTER,
    "PROHIBITED_CONTENT": FinishReason.CONTENT_FILTER,
    "SPII": FinishReason.CONTENT_FILTER,
    "IMAGE_SAFETY": FinishReason.CONTENT_FILTER,
    "IMAGE_PROHIBITED_CONTENT": FinishReason.CONTENT_FILTER,
    "IMAGE_RECITATION": FinishReason.CONTENT_FILTER,
}
"""Gemini `finishReason` -> ours; anything else (OTHER, LANGUAGE, MALFORMED_FUNCTION_CALL,
...) is `OTHER`. Gemini has no tool-call reason: a reply with calls usually says STOP."""

_TOOL_MODES: Final[Mapping[str, str]] = {"auto": "AUTO", "none": "NONE", "required": "ANY"}

_BUDGET_RANGES: Final[tuple[tuple[str, int, int, bool], ...]] = (
    # (model-name prefix, smallest budget, largest budget, can turn thinking off);
    # longer prefixes first. ai.google.dev/gemini-api/docs/thinking, "thinking budgets".
    ("gemini-2.5-flash-lite", 512, 24576, True),
    ("gemini-2.5-flash", 1, 24576, True),
    ("gemini-2.5-pro", 128, 32768, False),
)
"""The thinking budgets the 2.5 models take; other budget models get the budget as asked."""

_LEVEL_RANK: Final[Mapping[str, int]] = {
    level: rank for rank, level in enumerate(("none", "minimal", "low", "medium", "high"))
}
_GEMINI_3_PRO_LEVELS: Final[tuple[str, ...]] = ("low", "high")
_GEMINI_3X_PRO_LEVELS: Final[tuple[str, ...]] = ("low", "medium", "high")
_GEMINI_3_FLASH_LEVELS: Final[tuple[str, ...]] = ("minimal", "low", "medium", "high")
"""The `thinkingLevel`s Gemini 3 models document: 3 Pro, later 3.x Pro, Flash/Flash-Lite."""


# --------------------------------------------------------------------------- request body


def _build_body(
    request: Request, model_id: str, *, stream: bool, provider: str = "gemini"
) -> dict[str, Any]:
    """The `generateContent` JSON body for `request`.

    The model id and streaming live in the URL for Gemini, so the body is the same for
    both calls; `model_id` picks the thinking control (a budget or a level, and its
    range) and labels the errors, as `provider` does.

    Raises:
        UnsupportedRequestError: an image URL Gemini cannot take, or a tool result whose
            function name cannot be found.
        ConfigurationError: a malformed `data:` URL, or a `tool_choice` naming no tool.
    """
    del stream  # `:streamGenerateContent?alt=sse` is the only difference, in the URL
    body: dict[str, Any] = {"contents": _contents(request, provider, model_id)}
    if request.system:
        body["systemInstruction"] = {"parts": [{"text": request.system}]}
    if request.tools:
        body["tools"] = [{"functionDeclarations": [_declaration(t) for t in request.tools]}]
    tool_config = _tool_config(request)
    if tool_config is not None:
        body["toolConfig"] = tool_config
    config = _generation_config(request)
    thinking = _thinking_config(request.reasoning, model_id)
    if thinking is not None:
        config["thinkingConfig"] = thinking
    if config:
        body["generationConfig"] = config
    return body


def _generation_config(request: Request) -> dict[str, Any]:
    config: dict[str, Any] = {}
    if request.temperature is not None:
        config["temperature"] = request.temperature
    if request.top_p is not None:
        config["topP"] = request.top_p
    if request.max_tokens is not None:
        config["maxOutputTokens"] = request.max_tokens
    if request.stop:
        config["stopSequences"] = list(request.stop)
    fmt = request.response_format
    if isinstance(fmt, JSONMode | JSONSchema):
        config["responseMimeType"] = "application/json"
    if isinstance(fmt, JSONSchema):
        # `responseJsonSchema` takes full JSON Schema; `responseSchema` only an OpenAPI
        # subset that rejects common keywords. Gemini has no schema name or strict flag.
        config["responseJsonSchema"] = dict(fmt.schema)
    return config


def _model_name(model_id: str) -> str:
    """The bare, lower-case model name of an id ("models/Gemini-3-Pro" -> "gemini-3-pro")."""
    return model_id.strip().lower().rpartition("/")[2]


def _thinking_config(reasoning: Reasoning | None, model_id: str) -> dict[str, Any] | None:
    """`generationConfig.thinkingConfig` for `reasoning` (None: the model's default).

    Gemini 3 takes a `thinkingLevel`, earlier models a `thinkingBudget` (see the module
    doc); each is kept to what the model documents, since anything else is a 400.
    """
    if reasoning is None:
        return None
    name = _model_name(model_id)
    if name.startswith("gemini-3"):
        return {
            "thinkingLevel": _thinking_level(name, reasoning.level()),
            "includeThoughts": reasoning.summary and reasoning.enabled,
        }
    budget = reasoning.tokens()
    for prefix, smallest, largest, can_stop in _BUDGET_RANGES:
        if name.startswith(prefix):
            if budget > 0 or not can_stop:
                budget = min(max(budget, smallest), largest)
            break
    # A model that cannot stop thinking still thinks for "none": its summary was not asked for.
    summary = reasoning.summary and reasoning.enabled and budget > 0
    return {"thinkingBudget": budget, "includeThoughts": summary}


def _thinking_level(name: str, wanted: ReasoningEffort) -> str:
    """The Gemini 3 `thinkingLevel` nearest `wanted` that model `name` takes.

    A level the model lacks rounds up to the next one it has (the request asked for at
    least that much thought); "none" is the lowest, since Gemini 3 always thinks.
    """
    if "pro" not in name:
        levels = _GEMINI_3_FLASH_LEVELS
    elif name.startswith(("gemini-3-pro", "gemini-3.0-pro")):
        levels = _GEMINI_3_PRO_LEVELS
    else:
        levels = _GEMINI_3X_PRO_LEVELS
    rank = _LEVEL_RANK[wanted]
    for level in levels:
        if _LEVEL_RANK[level] >= rank:
            return level
    return levels[-1]


def _declaration(tool: Tool) -> dict[str, Any]:
    # `parametersJsonSchema` (full JSON Schema) rather than `parameters` (an OpenAPI
    # subset that refuses e.g. `additionalProperties` and empty object properties).
    declaration: dict[str, Any] = {"name": tool.name}
    if tool.description:
        declaration["description"] = tool.description
    declaration["parametersJsonSchema"] = dict(tool.parameters)
    return declaration


def _tool_config(request: Request) -> dict[str, Any] | None:
    choice = request.tool_choice
    if choice is None:
        return None
    mode = _TOOL_MODES.get(choice)
    if mode is not None:
        return {"functionCallingConfig": {"mode": mode}}
    if not any(tool.name == choice for tool in request.tools):
        raise ConfigurationError(
            f"tool_choice names {choice!r}, which is not one of the request's tools "
            f"({', '.join(repr(tool.name) for tool in request.tools) or 'none'})"
        )
    # ANY with one allowed name forces that function (providers.md 6.2).
    return {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": [choice]}}


def _contents(request: Request, provider: str, model: str) -> list[dict[str, Any]]:
    """`contents`: one entry per message; consecutive tool messages share one user turn."""
    names = _call_names(request.messages)
    contents: list[dict[str, Any]] = []
    previous_role = ""
    for message in request.messages:
        if message.role == "assistant":
            parts = _model_turn(message, names, provider, model)
        else:
            parts = [
                _part(part, names, provider, model)
                for part in message.parts
                if not isinstance(part, ReasoningPart)  # reasoning is the model's own
            ]
        if not parts:
            continue  # Gemini rejects a turn without parts
        # Parallel results answer one model turn: Gemini wants them in one content.
        if message.role == "tool" and previous_role == "tool":
            contents[-1]["parts"].extend(parts)
            continue
        contents.append(
            {"role": "model" if message.role == "assistant" else "user", "parts": parts}
        )
        previous_role = message.role
    return contents


def _model_turn(
    message: Message, names: Mapping[str, str], provider: str, model: str
) -> list[dict[str, Any]]:
    """The parts of a replayed assistant turn, its Gemini thought signatures put back.

    Signed thought blocks go first, as the thought parts they were; text-less signatures
    go back by Gemini's placement rules (see the module doc): in order onto the turn's
    function calls, then any left over onto its text parts, aligned to the last one.
    """
    thoughts: list[dict[str, Any]] = []
    signatures: list[str] = []
    parts: list[dict[str, Any]] = []
    for part in message.parts:
        if not isinstance(part, ReasoningPart):
            parts.append(_part(part, names, provider, model))
        elif part.provider != _WIRE or not part.signature:
            continue  # another family's (meaningless here), or an unsigned summary
        elif part.text:
            thoughts.append(
                {"text": part.text, "thought": True, "thoughtSignature": part.signature}
            )
        else:
            signatures.append(part.signature)
    if signatures:
        left = iter(signatures)
        for call in (p for p in parts if "functionCall" in p and "thoughtSignature" not in p):
            signature = next(left, None)
            if signature is None:
                break
            call["thoughtSignature"] = signature
        rest = list(left)
        texts = [p for p in parts if "text" in p and "thoughtSignature" not in p]
        # Gemini signs the last part of an answer without calls: align to the end.
        for text, signature in zip(texts[::-1], rest[::-1], strict=False):
            text["thoughtSignature"] = signature
    _sign_first_call(parts)
    return thoughts + parts


def _call_names(messages: tuple[Message, ...]) -> dict[str, str]:
    """Tool call id -> function name, from the `ToolCallPart`s of the conversation."""
    return {
        part.call.id: part.call.name
        for message in messages
        for part in message.parts
        if isinstance(part, ToolCallPart)
    }


def _part(part: Part, names: Mapping[str, str], provider: str, model: str) -> dict[str, Any]:
    if isinstance(part, TextPart):
        return {"text": part.text}
    if isinstance(part, ImagePart):
        return _image(part, provider, model)
    if isinstance(part, ToolCallPart):
        return _function_call(part.call)
    if isinstance(part, ToolResultPart):
        return _function_response(part, names, provider, model)
    raise TypeError(f"no Gemini part for {type(part).__name__}")  # the caller filters it


def _split_id(call_id: str) -> tuple[str, str | None]:
    """`(id, thought signature or None)` of a call id; the signature is only in ids of the
    older `<id>__thought__<signature>` form (see the module doc)."""
    base, sep, signature = call_id.partition(_THOUGHT_SEP)
    return base, (signature or None) if sep else None


def _call_id(index: int, given: object) -> str:
    """The `ToolCall.id` of Gemini's call number `index`: its own id, else `call_<index>`."""
    return given if isinstance(given, str) and given else f"{_SYNTHESIZED_PREFIX}{index}"


def _echoed_id(base: str) -> str | None:
    """The id to send back as `functionCall.id`/`functionResponse.id`: not our own `call_<n>`."""
    suffix = base.removeprefix(_SYNTHESIZED_PREFIX)
    if base.startswith(_SYNTHESIZED_PREFIX) and suffix.isascii() and suffix.isdigit():
        return None
    return base or None


def _function_call(call: ToolCall) -> dict[str, Any]:
    base, signature = _split_id(call.id)
    function: dict[str, Any] = {"name": call.name, "args": _arguments(call)}
    echoed = _echoed_id(base)
    if echoed is not None:
        function["id"] = echoed
    part: dict[str, Any] = {"functionCall": function}
    if signature is not None:
        part["thoughtSignature"] = signature
    return part


def _arguments(call: ToolCall) -> dict[str, Any]:
    try:
        return call.parse_arguments()
    except ProviderError as exc:
        # A replayed call whose arguments are not a JSON object is the caller's input.
        raise ConfigurationError(
            f"cannot replay tool call {call.name!r}: {exc.message} (Gemini needs an object)"
        ) from None


def _sign_first_call(parts: list[dict[str, Any]]) -> None:
    """Give the turn's first function call the placeholder signature if it has none.

    Gemini 3 validates the first call of each model step of the current turn; a call
    without a real signature (made by another provider or model) passes with the
    documented placeholder, which older models ignore.
    """
    for part in parts:
        if "functionCall" in part:
            part.setdefault("thoughtSignature", _SKIP_SIGNATURE)
            return


def _function_response(
    part: ToolResultPart, names: Mapping[str, str], provider: str, model: str
) -> dict[str, Any]:
    name = part.name or names.get(part.call_id)
    if not name:
        raise UnsupportedRequestError(
            f"Gemini matches tool results to calls by function name: the result for call id "
            f"{_split_id(part.call_id)[0]!r} has no name and no ToolCallPart with that id "
            "precedes it (set ToolResultPart.name, or keep the assistant's tool calls in "
            "the conversation)",
            provider=provider,
            model=model,
        )
    response: dict[str, Any] = {"name": name, "response": _result_object(part)}
    echoed = _echoed_id(_split_id(part.call_id)[0])
    if echoed is not None:
        response["id"] = echoed
    return {"functionResponse": response}


def _result_object(part: ToolResultPart) -> dict[str, Any]:
    """`functionResponse.response`: a JSON object (Gemini's `output`/`error` convention)."""
    value = json_or_none(part.content)
    if value is None and part.content.strip() != "null":
        value = part.content  # not JSON: send the text itself
    if part.is_error:
        return {"error": value}
    if isinstance(value, dict):
        return value
    return {"output": value}


def _image(image: ImagePart, provider: str, model: str) -> dict[str, Any]:
    if image.data is not None:
        return {"inlineData": {"mimeType": image.mime_type, "data": image.base64()}}
    url = image.url or ""
    scheme = urlsplit(url).scheme.lower()
    if scheme == "data":
        data_mime, data = _decode_data_url(url, image.mime_type)
        return {"inlineData": {"mimeType": data_mime, "data": data}}
    if scheme in ("http", "https"):
        # The Developer API fetches public and signed http(s) URLs itself (Google's
        # "expanded inputs" announcement; file-input-methods guide). The MIME type is
        # optional on the wire; send it when we know it.
        mime_type = image.mime_type or mimetypes.guess_type(urlsplit(url).path)[0]
        if mime_type:
            return {"fileData": {"mimeType": mime_type, "fileUri": url}}
        return {"fileData": {"fileUri": url}}
    raise UnsupportedRequestError(
        f"Gemini takes images inline, as data: URLs or as http(s) URLs, not {scheme or 'a'}: "
        "URLs (gs:// objects must first be registered with the Files API)",
        provider=provider,
        model=model,
    )


def _decode_data_url(url: str, fallback_mime: str | None) -> tuple[str, str]:
    """`(MIME type, base64 data)` of a `data:` URL (RFC 2397), decoded locally."""
    try:
        mime_type, data = parse_data_url(url)
    except DataURLError as exc:
        raise ConfigurationError(f"the image data: URL {exc}") from None
    mime_type = mime_type or fallback_mime
    if not mime_type:
        raise ConfigurationError("the data: URL of an ImagePart names no MIME type")
    return mime_type, data


# --------------------------------------------------------------------------- replies


def _parse_response(body: object, key: str, headers: Mapping[str, str]) -> Response:
    """A `generateContent` reply as our `Response`.

    Its parts go through the same `_PartReader` a stream's chunks do, so that a reply
    and the same reply streamed give the same answer, reasoning blocks included.

    Args:
        body: the decoded JSON reply.
        key: the "provider/model-id" key of the target that answered.
        headers: the reply's headers.

    Raises:
        ContentPolicyError: the prompt was blocked (`promptFeedback.blockReason`).
        ResponseFormatError: the reply has no usable candidate.
        ProviderStatusError: the reply is an `{"error": ...}` object.
    """
    provider, _, model = key.partition("/")
    if not isinstance(body, dict):
        raise ResponseFormatError(
            f"expected a JSON object from generateContent, got {type(body).__name__}",
            provider=provider,
            model=model,
        )
    if "error" in body:
        raise _map_error(provider, model, _status_of(body), headers, json.dumps(body))
    candidate = _first_candidate(body, provider, model)
    reader = _PartReader(provider, model)
    text: list[str] = []
    calls: list[ToolCall] = []
    blocks: dict[int, list[ReasoningDelta]] = {}
    for part in _parts(candidate):
        for event in reader.events(part):
            if isinstance(event, TextDelta):
                text.append(event.text)
            elif isinstance(event, ToolCallDelta):
                calls.append(ToolCall(event.id or "", event.name or "", event.arguments))
            elif isinstance(event, ReasoningDelta):
                blocks.setdefault(event.index, []).append(event)
    reasoning = tuple(_reasoning_part(blocks[index]) for index in sorted(blocks))
    return Response(
        text="".join(text),
        tool_calls=calls,
        finish_reason=_finish_reason(candidate.get("finishReason"), bool(calls)),
        usage=_usage(body.get("usageMetadata")) or Usage(),
        model=key,
        request_id=_response_id(body),
        raw=body,
        reasoning="".join(part.text for part in reasoning),
        reasoning_parts=reasoning,
        served_model=_served_model(body),
    )


def _reasoning_part(pieces: list[ReasoningDelta]) -> ReasoningPart:
    """One reasoning block from its pieces, as `Stream.response` assembles them."""
    signature = None
    for piece in pieces:
        signature = piece.signature if piece.signature is not None else signature
    return ReasoningPart("".join(piece.text for piece in pieces), signature, provider=_WIRE)


def _first_candidate(body: dict[str, Any], provider: str, model: str) -> dict[str, Any]:
    candidates = body.get("candidates")
    if isinstance(candidates, list) and candidates and isinstance(candidates[0], dict):
        return candidates[0]
    _raise_if_blocked(body, provider, model)
    raise ResponseFormatError(
        "the reply has no candidates (and no promptFeedback.blockReason)",
        provider=provider,
        model=model,
    )


def _raise_if_blocked(body: dict[str, Any], provider: str, model: str) -> None:
    """A blocked prompt is a 200 with `promptFeedback.blockReason` and no candidates."""
    feedback = body.get("promptFeedback")
    reason = feedback.get("blockReason") if isinstance(feedback, dict) else None
    if isinstance(reason, str) and reason:
        raise ContentPolicyError(
            f"Gemini blocked the prompt (promptFeedback.blockReason={reason})",
            provider=provider,
            model=model,
            code=reason,
            request_id=_response_id(body),
        )


def _parts(candidate: dict[str, Any]) -> list[dict[str, Any]]:
    content = candidate.get("content")
    parts = content.get("parts") if isinstance(content, dict) else None
    if not isinstance(parts, list):
        return []  # a candidate stopped for SAFETY often has no content at all
    return [part for part in parts if isinstance(part, dict)]


class _PartReader:
    """Turns a reply's parts, in order, into content events: one per text part, function
    call, thought piece and signature (see the module doc for the reasoning blocks).

    One reader per reply, fed every part of its first candidate in order (a stream's
    parts across its chunks): it numbers the tool calls and the reasoning blocks.
    """

    __slots__ = ("_blocks", "_model", "_open", "_provider", "calls")

    def __init__(self, provider: str, model: str) -> None:
        self._provider = provider
        self._model = model
        self.calls = 0
        """Function calls so far: the next call's index."""
        self._blocks = 0  # reasoning blocks started so far: the next block's index
        self._open = False  # the last block is a run of thought parts that may go on

    def events(self, part: dict[str, Any]) -> list[StreamEvent]:
        """The events of one part.

        Raises:
            ResponseFormatError: a `functionCall` without a name.
        """
        signature = part.get("thoughtSignature")
        if not isinstance(signature, str) or not signature:
            signature = None
        text = part.get("text")
        if not isinstance(text, str):
            text = ""
        call = part.get("functionCall")
        if part.get("thought") is True and not isinstance(call, dict):
            # A thought summary: never answer text. Consecutive thought parts are one
            # block, which its signature (if the thought part carries one) closes.
            if not text and signature is None:
                return []
            if not self._open:
                self._blocks += 1
                self._open = True
            index = self._blocks - 1
            if signature is not None:
                self._open = False
            return [ReasoningDelta(text, index, signature, provider=_WIRE)]
        self._open = False
        events: list[StreamEvent] = []
        if text:
            events.append(TextDelta(text))
        if isinstance(call, dict):
            tool_call = _tool_call(self.calls, call, self._provider, self._model)
            events.append(
                ToolCallDelta(self.calls, tool_call.id, tool_call.name, tool_call.arguments)
            )
            self.calls += 1
        if signature is not None:
            # A signature on an answer part or a call: a text-less block of its own,
            # in reply order, which a replayed turn puts back (`_model_turn`).
            events.append(ReasoningDelta("", self._blocks, signature, provider=_WIRE))
            self._blocks += 1
        return events


def _tool_call(index: int, call: dict[str, Any], provider: str, model: str) -> ToolCall:
    name = call.get("name")
    if not isinstance(name, str) or not name:
        raise ResponseFormatError(
            "a functionCall in the reply has no name", provider=provider, model=model
        )
    args = call.get("args")
    arguments = json.dumps(args if isinstance(args, dict) else {}, ensure_ascii=False)
    return ToolCall(_call_id(index, call.get("id")), name, arguments)


def _finish_reason(value: object, has_calls: bool) -> FinishReason:
    reason = _FINISH_REASONS.get(value, FinishReason.OTHER) if isinstance(value, str) else None
    # Gemini has no tool-call reason: a reply with calls says STOP (or nothing).
    return finish_with_tools(reason or FinishReason.STOP, has_calls)


def _count(metadata: dict[str, Any], name: str) -> int:
    value = metadata.get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _usage(metadata: object) -> Usage | None:
    """Our totals from `usageMetadata` (see the module doc: thoughts are added to the
    output; the prompt count already holds the cached part)."""
    if not isinstance(metadata, dict):
        return None
    thoughts = _count(metadata, "thoughtsTokenCount")
    return Usage(
        input_tokens=_count(metadata, "promptTokenCount")
        + _count(metadata, "toolUsePromptTokenCount"),
        output_tokens=_count(metadata, "candidatesTokenCount") + thoughts,
        cached_input_tokens=_count(metadata, "cachedContentTokenCount"),
        reasoning_tokens=thoughts,
    )


def _response_id(body: dict[str, Any]) -> str | None:
    value = body.get("responseId")
    return value if isinstance(value, str) and value else None


def _served_model(body: dict[str, Any]) -> str | None:
    """The model Gemini says answered (`modelVersion`, "gemini-2.5-flash")."""
    value = body.get("modelVersion")
    return value if isinstance(value, str) and value else None


# --------------------------------------------------------------------------- errors


def _status_of(body: dict[str, Any]) -> int:
    """The HTTP status an in-band `{"error": {"code": ...}}` stands for (500 if unsaid)."""
    error = body.get("error")
    code = error.get("code") if isinstance(error, dict) else None
    return code if isinstance(code, int) and not isinstance(code, bool) and code >= 400 else 500


def _error_fields(body: object) -> tuple[str | None, str | None, list[dict[str, Any]]]:
    """`(message, status, details)` of a Google RPC error body, each None/[] if absent."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return None, None, []
    message = error.get("message")
    status = error.get("status")
    details = error.get("details")
    return (
        message if isinstance(message, str) else None,
        status if isinstance(status, str) else None,
        [d for d in details if isinstance(d, dict)] if isinstance(details, list) else [],
    )


def _detail_reasons(details: list[dict[str, Any]]) -> set[str]:
    """The `reason`s of `google.rpc.ErrorInfo` details ("API_KEY_INVALID", ...)."""
    return {d["reason"] for d in details if isinstance(d.get("reason"), str)}


def _quota_ids(details: list[dict[str, Any]]) -> list[str]:
    """The `quotaId`s (and metrics) of `google.rpc.QuotaFailure` violations."""
    ids: list[str] = []
    for detail in details:
        violations = detail.get("violations")
        if not isinstance(violations, list):
            continue
        for violation in violations:
            if isinstance(violation, dict):
                ids.extend(
                    v for k in ("quotaId", "quotaMetric") if isinstance(v := violation.get(k), str)
                )
    return ids


def _map_error(
    provider: str, model: str, status: int, headers: Mapping[str, str], body_text: str
) -> ProviderError:
    """Our error for a Gemini error reply (an HTTP error, or an in-band error chunk).

    Gemini-specific matchers first (providers.md 6.5 and 8.1), then the generic status
    rules of `status_error`.
    """
    body = json_or_none(body_text)
    message, rpc_status, details = _error_fields(body)
    text = (message or "").lower()
    common: dict[str, Any] = {
        "provider": provider,
        "model": model,
        "status": status,
        "headers": headers,
        "body_text": body_text,
        "message": message,
        "code": rpc_status,
    }
    reasons = _detail_reasons(details)
    if "API_KEY_INVALID" in reasons or "api key not valid" in text:
        # Gemini answers a bad key with 400 INVALID_ARGUMENT, not 401.
        return status_error(**{**common, "code": "API_KEY_INVALID"}, kind=AuthenticationError)
    if status == 404 and ("models/" in text or ("model" in text and "not found" in text)):
        return status_error(**common, kind=ModelNotFoundError)
    if status == 404 and rpc_status == "NOT_FOUND":
        # The API itself answered (a missing file, say): not a wrong base URL.
        return status_error(**common, kind=BadRequestError)
    if "input token count" in text and "exceed" in text:
        return status_error(**common, kind=ContextLengthError)
    if status == 429 or rpc_status == "RESOURCE_EXHAUSTED":
        return _rate_limit_error(common, body, headers, details)
    return status_error(**common)


def _rate_limit_error(
    common: dict[str, Any], body: object, headers: Mapping[str, str], details: list[dict[str, Any]]
) -> ProviderError:
    """429 RESOURCE_EXHAUSTED: a per-minute limit clears, a per-day quota does not soon."""
    if any("perday" in quota.lower().replace("_", "") for quota in _quota_ids(details)):
        return status_error(**common, kind=QuotaExceededError)
    error = status_error(**common)
    # Gemini is not known to send Retry-After (which status_error reads); its hint is
    # RetryInfo.retryDelay in the body.
    delay = gemini_retry_delay(body) if error.retry_after is None else None
    if delay is None:
        return error
    return type(error)(
        error.message,
        provider=error.provider,
        model=error.model,
        status=error.status,
        code=error.code,
        retry_after=delay,
        request_id=error.request_id,
        should_retry=error.should_retry,
    )


# --------------------------------------------------------------------------- streams


class _StreamTranslator:
    """Turns decoded `streamGenerateContent` chunks into our stream events.

    States: before the start (`StreamStart` not sent yet); streaming; terminal (a chunk
    carried `finishReason`: `StreamEnd` was produced, `done`). `StreamStart` goes out
    with the first chunk that names the served model (`modelVersion`) or has anything
    to report, with the request id (`responseId`) and served model seen by then. A body
    that ends before the terminal state is truncated (`finish()` raises). The decoder
    (`_GeminiDecoder`) hands an error JSON sent without `data:` over as one more event.
    """

    __slots__ = (
        "_headers",
        "_key",
        "_model",
        "_provider",
        "_reader",
        "_request_id",
        "_served",
        "_started",
        "done",
    )

    def __init__(self, *, key: str, headers: Mapping[str, str]) -> None:
        self._key = key
        self._provider, _, self._model = key.partition("/")
        self._headers = headers
        self._started = False
        self._request_id: str | None = None
        self._served: str | None = None
        self._reader = _PartReader(self._provider, self._model)
        self.done = False  # a chunk carried a finishReason: the answer is complete

    def decoder(self) -> _GeminiDecoder:
        """A decoder for the body: Server-Sent Events, and an error JSON without `data:`."""
        return _GeminiDecoder(provider=self._provider, model=self._model)

    def feed(self, sse: ServerSentEvent) -> list[StreamEvent]:
        """Translate one SSE event (its `data` is one JSON chunk).

        Raises:
            ResponseFormatError: the data is not JSON.
            ProviderStatusError: see `chunk()`.
        """
        if not sse.data.strip():
            return []
        try:
            chunk = fast_json.loads(sse.data)
        except (ValueError, RecursionError) as exc:
            raise ResponseFormatError(
                f"a stream chunk is not JSON: {sse.data[:200]!r}",
                provider=self._provider,
                model=self._model,
            ) from exc
        return self.chunk(chunk)

    def chunk(self, chunk: object) -> list[StreamEvent]:
        """Translate one decoded chunk (a `GenerateContentResponse`).

        Raises:
            ProviderStatusError: the chunk is an `{"error": ...}` object (mapped by code).
            ContentPolicyError: the prompt was blocked.
        """
        if not isinstance(chunk, dict):
            raise ResponseFormatError(
                f"a stream chunk is not a JSON object: {type(chunk).__name__}",
                provider=self._provider,
                model=self._model,
            )
        if "error" in chunk:
            raise _map_error(
                self._provider, self._model, _status_of(chunk), self._headers, json.dumps(chunk)
            )
        if not self._started:
            self._request_id = self._request_id or _response_id(chunk)
            self._served = self._served or _served_model(chunk)
        events: list[StreamEvent] = []
        candidates = chunk.get("candidates")
        candidate = candidates[0] if isinstance(candidates, list) and candidates else None
        if not isinstance(candidate, dict):
            _raise_if_blocked(chunk, self._provider, self._model)
            candidate = {}
        # Gemini (Developer API) sends each call whole in one chunk: one delta per call.
        reader = self._reader
        for part in _parts(candidate):
            events.extend(reader.events(part))
        usage = _usage(chunk.get("usageMetadata"))
        if usage is not None:
            events.append(UsageUpdate(usage))
        reason = candidate.get("finishReason")
        if isinstance(reason, str) and reason and not self.done:
            self.done = True
            events.append(StreamEnd(_finish_reason(reason, reader.calls > 0)))
        if not self._started and (events or self._served):
            self._started = True
            start = StreamStart(self._key, self._request_id, self._served)
            events.insert(0, start)
        return events

    def finish(self) -> list[StreamEvent]:
        """The body ended cleanly: nothing more if the terminal chunk arrived.

        (An error JSON at the end of the body came as an event before this: see
        `_GeminiDecoder`.)

        Raises:
            StreamTruncatedError: no chunk carried a finishReason.
        """
        if self.done:
            return []
        raise StreamTruncatedError(
            "the Gemini stream ended before a chunk with a finishReason",
            provider=self._provider,
            model=self._model,
        )


_SSE_FIELDS: Final = frozenset({b"data", b"event", b"id", b"retry"})
"""The fields the SSE rules act on: a line naming any other is a stray line."""
_BOM: Final = b"\xef\xbb\xbf"
_WINDOW_SLACK: Final = 64 * 1024
"""Bytes kept beyond `max_line_bytes` after the last event before giving up on a tail."""
_ERROR_STARTS: Final = 8
"""How many of the run's last top-level `{` lines are tried as the start of the error."""


class _GeminiDecoder:
    """Gemini's body decoder: Server-Sent Events, plus an error JSON sent without `data:`.

    Gemini sometimes writes an `{"error": ...}` object as plain lines, without the
    `data:` prefix (providers.md 2.1): after some events, or as the whole body (with
    HTTP 200), on one line or pretty-printed over several. The SSE rules ignore such
    lines, so `SSEDecoder` decodes the events and this wrapper keeps what can hold the
    error: the bytes since the last chunk that completed an event. At the clean end of
    the body, when the trailing run of stray lines there ends with a JSON object with an
    `error`, `close()` returns that object's text as one more event, which the
    translator maps like any in-band error chunk. The object may follow other stray
    JSON in the run (python-genai's own test body: a chunk, then the error, neither
    with `data:`): it is the last value that starts at a line's first column.

    Stray lines are neither `data`/`event`/`id`/`retry` fields nor comments. The
    trailing run is the last run of consecutive stray lines, with only blank lines
    after it; a field line or a comment after it ends it, and a run inside a block that
    has a data line belongs to that block's event and does not count. At most
    `max_line_bytes` bytes of it count: its last whole lines. A body that goes on for
    more than `max_line_bytes` + 64 KiB after its last event without one is not read
    for a tail any more (no Gemini error is that long): memory stays bounded.

    The per-chunk cost is one frame, and a list append for a chunk that completes no
    event (a part of a long line).

    Args:
        max_line_bytes: the SSE decoder's line cap, which also bounds the run.
        provider: provider name, for the errors raised.
        model: model id, for the errors raised.
    """

    __slots__ = ("_before", "_cap", "_kept", "_last", "_max", "_sse", "_tail")

    def __init__(
        self, *, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES, provider: str = "", model: str = ""
    ) -> None:
        self._sse = SSEDecoder(max_line_bytes=max_line_bytes, provider=provider, model=model)
        self._max = max_line_bytes
        self._cap = max_line_bytes + _WINDOW_SLACK
        # The window: the chunks from the last one that completed an event (else from
        # the start of the body). `_kept` counts the bytes after its first chunk.
        self._tail: list[bytes] = []
        self._kept = 0
        # The chunk before the window ("" when the window starts the body): whether the
        # window's first line starts there, or is the rest of a line.
        self._before = b""
        self._last = b""  # the last chunk fed

    @property
    def stray_tail(self) -> str:
        """The trailing run of stray lines, joined with "\\n" ("" if none).

        Meant to be read after `close()`, when the body's last line is complete.
        """
        if self._kept > self._cap:
            return ""
        return _stray_run(b"".join(self._tail), self._before[-1:], limit=self._max)

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        """Take the next chunk of the body; return the events it completes, in order.

        Raises:
            ResponseFormatError: as `SSEDecoder.feed()` raises.
        """
        events = self._sse.feed(chunk)
        if events:
            # Lines before this chunk's events cannot be the tail any more; lines after
            # them, in this same chunk, still can.
            self._tail = [chunk]
            self._kept = 0
            self._before = self._last
        elif self._kept <= self._cap:
            self._tail.append(chunk)
            self._kept += len(chunk)
        self._last = chunk or self._last
        return events

    def close(self) -> list[ServerSentEvent]:
        """Mark the end of the body: the SSE decoder's last event, or the error JSON that
        the trailing stray lines end with (as an event whose data is that JSON), or nothing.

        Raises:
            ResponseFormatError: as `SSEDecoder.close()` raises.
        """
        events = self._sse.close()
        if events:  # the last block was an event: any stray line in it belongs to it
            return events
        error = _last_error_object(self.stray_tail)
        return [] if error is None else [ServerSentEvent(data=error)]


def _stray_run(body: bytes, before: bytes, *, limit: int) -> str:
    """The trailing run of stray lines of a window of the body (see `_GeminiDecoder`).

    Args:
        body: the window: the body from its start, or from a chunk that completed an
            event.
        before: the last byte before the window (b"" at the start of the body).
        limit: the most bytes of the run kept (its last whole lines).
    """
    if not before:
        body = body.removeprefix(_BOM)
    elif before == b"\r" and body.startswith(b"\n"):
        body = body[1:]  # the LF of a CRLF split across chunks: no line of its own
    if b"\r" in body:
        body = body.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    lines = body.split(b"\n")
    # The window's first line is the rest of a line when the chunk before it ended
    # mid-line: it cannot be read, so the walks below stop before it.
    first = 1 if before and before not in (b"\n", b"\r") else 0
    end = len(lines)
    while end > first and not lines[end - 1]:  # blank lines may follow the run
        end -= 1
    start = end
    while start > first and _is_stray(lines[start - 1]):
        start -= 1
    if start == end:
        return ""
    # The run's block, back to its blank line: with a data line, it is an event.
    previous = start - 1
    while previous >= first and lines[previous]:
        if _field_name(lines[previous]) == b"data":
            return ""
        previous -= 1
    if previous < first and before:
        # The block began before the window's first chunk, which completed an event:
        # with no blank line since, that event was this very block.
        return ""
    # Its last whole lines within `limit` bytes (joined by one byte each).
    size = -1
    keep = end
    while keep > start and size + len(lines[keep - 1]) + 1 <= limit:
        keep -= 1
        size += len(lines[keep]) + 1
    return b"\n".join(lines[keep:end]).decode("utf-8", errors="replace")


def _last_error_object(run: str) -> str | None:
    """The text of the `{"error": ...}` object that ends `run`, if it ends with one.

    It starts at one of the last lines that begin with `{` (a top-level value: nested
    lines of a pretty-printed object are indented).
    """
    if not run.startswith("{") and "\n{" not in run:
        return None
    starts = [0] if run.startswith("{") else []
    starts += [at + 1 for at in _occurrences(run, "\n{")]
    for start in reversed(starts[-_ERROR_STARTS:]):
        text = run[start:]
        value = json_or_none(text)
        if isinstance(value, dict):
            return text if "error" in value else None
    return None


def _occurrences(text: str, needle: str) -> list[int]:
    """Every index where `needle` occurs in `text`."""
    found: list[int] = []
    at = text.find(needle)
    while at >= 0:
        found.append(at)
        at = text.find(needle, at + 1)
    return found


def _field_name(line: bytes) -> bytes:
    """The field name of a non-blank SSE line (b"" for a comment)."""
    colon = line.find(b":")
    return line if colon < 0 else line[:colon]


def _is_stray(line: bytes) -> bool:
    """A line that is neither blank, nor a field the SSE rules act on, nor a comment."""
    if not line:
        return False
    name = _field_name(line)
    return bool(name) and name not in _SSE_FIELDS


# --------------------------------------------------------------------------- model, provider


class GeminiModel(HTTPModel["GeminiProvider"]):
    """One Gemini model. Get it with `GeminiProvider.model(model_id)`; no I/O until called.

    `generate` calls `:generateContent`, `stream` calls `:streamGenerateContent?alt=sse`,
    which is complete once a chunk carries a `finishReason`. Gemini's `responseId` is the
    request id.
    """

    __slots__ = ("_path",)

    def __init__(self, provider: GeminiProvider, model_id: str) -> None:
        super().__init__(provider, model_id)
        self._path = _model_path(model_id)

    def _body(self, request: Request, *, stream: bool) -> dict[str, Any]:
        return _build_body(request, self._model_id, stream=stream, provider=self._provider.name)

    def _endpoint(self, *, stream: bool) -> str:
        method = ":streamGenerateContent?alt=sse" if stream else ":generateContent"
        return f"{self._provider.base_url}/{self._path}{method}"

    def _parse(self, data: Any, headers: Mapping[str, str]) -> Response:
        return _parse_response(data, self._key, headers)

    def _translator(self, headers: Mapping[str, str], request_id: str | None) -> _StreamTranslator:
        # Gemini sends no request id header: its `responseId` comes in the first chunk.
        return _StreamTranslator(key=self._key, headers=headers)


def _model_path(model_id: str) -> str:
    """The URL path of a model: `models/<id>` (tuned models: `tunedModels/<id>`)."""
    for collection in ("models/", "tunedModels/"):
        if model_id.startswith(collection):
            return collection + quote(model_id[len(collection) :], safe="")
    return "models/" + quote(model_id, safe="")


class GeminiProvider(HTTPProvider[GeminiModel]):
    """The Gemini Developer API, with one API key.

    Construction does no I/O and never fails for a missing key: calls then raise
    `AuthenticationError` naming `GEMINI_API_KEY` / `GOOGLE_API_KEY`.

    Args:
        name: the registry name (the first half of each target key).
        api_key: the API key, or None.
        base_url: the API root, e.g. `https://generativelanguage.googleapis.com/v1beta`.
        http: the Registry's session holder (its session is fetched at call time).
        timeouts: the time limits (default `HOSTED_TIMEOUTS`).
        extra_headers: sent with every request (a proxy's headers, say); the key header
            always wins.

    `model("")` (or a blank id) raises `ConfigurationError`.

    Example:
        ```python
        provider = GeminiProvider("gemini", api_key=key, base_url=DEFAULT_BASE_URL,
                                  http=HTTPSessionHolder())
        response = await provider.model("gemini-2.5-flash").generate("Hello")
        ```
    """

    __slots__ = ()

    _FAMILY = _WIRE = "gemini"
    _KEY_ENV_VARS = KEY_ENV_VARS
    _DSN_KEY_EXAMPLE = "gemini://KEY@"

    async def list_models(self) -> list[str]:
        """The ids of the models that can `generateContent` with this key.

        Follows `nextPageToken` across pages; ids lose their `models/` prefix.

        Raises:
            AuthenticationError: no API key is configured, or Gemini refused it.
            ProviderError: the mapped HTTP, transport or reply error.
        """
        ids: list[str] = []
        token: str | None = None
        for _ in range(_LIST_MAX_PAGES):
            url = f"{self._base_url}/models?pageSize={_LIST_PAGE_SIZE}"
            if token:
                url += f"&pageToken={quote(token, safe='')}"
            data, _headers = await self._request_json("GET", url, model_id="")
            ids.extend(_model_ids(data, self._name))
            next_token = data.get("nextPageToken") if isinstance(data, dict) else None
            if not isinstance(next_token, str) or not next_token or next_token == token:
                break
            token = next_token
        return ids

    def _new_model(self, model_id: str) -> GeminiModel:
        if not model_id.strip():
            raise ConfigurationError(f"empty model id for the Gemini provider {self._name!r}")
        return GeminiModel(self, model_id)

    def _auth_headers(self, api_key: str) -> dict[str, str]:
        return {"x-goog-api-key": api_key}

    def _map_error(
        self, model_id: str, status: int, headers: Mapping[str, str], body_text: str
    ) -> ProviderError:
        return _map_error(self._name, model_id, status, headers, body_text)


def _model_ids(data: object, provider: str) -> list[str]:
    if not isinstance(data, dict) or not isinstance(data.get("models", []), list):
        raise ResponseFormatError(
            "expected {'models': [...]} from the models list", provider=provider
        )
    ids: list[str] = []
    for entry in data.get("models", []):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            continue
        methods = entry.get("supportedGenerationMethods")
        # Embedding-only and other models that cannot answer a chat are left out.
        if isinstance(methods, list) and "generateContent" not in methods:
            continue
        ids.append(entry["name"].removeprefix("models/"))
    return ids


def gemini_factory(name: str, dsn: DSN, context: ProviderContext) -> GeminiProvider:
    """The `gemini://` (and `google://`) scheme factory.

    - Key: the DSN's credential, else `GEMINI_API_KEY`, else `GOOGLE_API_KEY`. A missing
      key is reported when a call is made, not here.
    - Base URL: the DSN's (`gemini://KEY@host/v1beta`, `gemini+http://127.0.0.1:8080/v1beta`)
      when it names a host, else `DEFAULT_BASE_URL`. Give the full API root, version included.
    - Query: the `Timeouts` fields set the time limits in seconds
      (`gemini://KEY@?first_token=60`); any other key is an error.

    Raises:
        ConfigurationError: an unknown query key or a bad number of seconds.
    """
    api_key = dsn.credential
    if not api_key:
        api_key = key_from_env(context.env, KEY_ENV_VARS)
    return GeminiProvider(
        name,
        api_key=api_key,
        base_url=dsn.base_url if dsn.host else DEFAULT_BASE_URL,
        http=context.http,
        timeouts=dsn_timeouts(dsn.query, label=f"Gemini provider {name!r}"),
    )
