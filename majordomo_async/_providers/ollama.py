"""The built-in Ollama provider: the native `POST /api/chat` API over aiohttp.

Wire format (providers.md section 7, checked against `ollama/ollama` docs/api.md and
api/types.go, and the official `ollama-python` client):

- Requests: `{"model", "messages", "tools", "format", "options", "stream"}`. The system
  prompt is the first message; sampling settings live under `options` (`num_predict` is
  the token cap). Images are raw base64 strings in a message's `images` list: inline
  bytes and `data:` URLs are sent, an http(s) URL raises `UnsupportedRequestError`
  (a chain never sends one: the capability table says Ollama takes images inline only,
  so the chain downloads the URL first). Tool-call arguments are JSON *objects* on
  the wire, so `ToolCall.arguments` text is parsed before it is replayed.
- Ollama has no `tool_choice`. "auto" sends the tools, "none" sends none, a tool name
  sends only that tool, and "required" sends them all: the model may still answer in
  text, because nothing on the wire can force a call.
- Replies: `message.content` (a text delta when streaming), `message.tool_calls` (whole
  calls, often without ids: `call_N` ids are made up, N counting calls in the reply),
  and a final object with `"done": true`, `done_reason` and the token counts
  `prompt_eval_count` / `eval_count`.
- The finish reason: `done_reason` "stop" (or none) is `STOP`, "length" `LENGTH`,
  anything else ("load", "unload") `OTHER`; then `finish_with_tools` applies the one
  tool-call rule: Ollama ends tool calls with "stop", so a natural stop with calls is
  `TOOL_CALLS`, while a "length" cut stays `LENGTH` (its calls may be incomplete).
- Usage: `prompt_eval_count` -> `input_tokens`, `eval_count` -> `output_tokens` (it
  counts the thinking too); missing counts are 0. Ollama reports no cached-prompt or
  reasoning counts, so `cached_input_tokens` and `reasoning_tokens` stay 0.
- The served model: the reply's `model` (a stream's first object that names one)
  becomes `Response.served_model` / `StreamStart.served_model`.
- No prompt-cache controls: the server reuses its KV cache for a repeated prefix by
  itself; `Request.cache_system`, `cache_tools` and `Message.cache_breakpoint` are ignored.

Thinking (`Request.reasoning`; docs/capabilities/thinking.mdx, docs/api.md):

- `"think": true | false` from `reasoning.enabled` (models that cannot turn thinking off
  may think anyway; a model that cannot think at all answers 400 "does not support
  thinking", an `UnsupportedRequestError`, but the chain only sends the option to
  models the capability table says can reason).
- gpt-oss models (ids starting "gpt-oss") take a level instead: `"think": "low" |
  "medium" | "high"` from `reasoning.level()`; "none" and "minimal" are "low", since
  gpt-oss cannot stop reasoning (and older servers ignore a boolean for it, falling back
  to its "medium" default).
- Replies: `message.thinking` (the whole trace, or a piece of it per stream object) ->
  `Response.reasoning`, one `ReasoningPart(provider="ollama")`, and
  `ReasoningDelta(provider="ollama")` pieces (block 0) in streams. Ollama has no switch
  for the trace apart from thinking itself: `reasoning(summary=False)` still gets it.
- Sent back: an assistant message's "ollama" `ReasoningPart`s become its `thinking`
  field (the texts joined), which Ollama accepts in history and some model templates
  render (gpt-oss's, before a tool call). Parts of other families are dropped.
- Streams are NDJSON and Ollama streams by default, so `"stream"` is always sent. The
  terminal signal is `"done": true`; a body that ends without it is truncated. An
  `{"error": "..."}` line (before or after content) raises the mapped, typed error.
- No credential locally. When `OLLAMA_API_KEY` or a DSN credential is set (ollama.com),
  it goes out as `Authorization: Bearer`; ollama.com without a key fails at call time
  with an `AuthenticationError` naming `OLLAMA_API_KEY`.

DSNs (`ollama_factory`):

```
ollama://[KEY@][host[:port]][/path][?connect=S&headers=S&first_token=S&idle=S...]
ollama+http://...   ollama+https://...
```

- No host: the server comes from `OLLAMA_HOST` (as the official clients read it: `host`,
  `host:port`, `:port` or a full `http(s)://host[:port][/path]` URL), else
  `http://127.0.0.1:11434`.
- `ollama://host` is plain HTTP on port 11434 unless a port is given, except
  `ollama://ollama.com`, which is `https://ollama.com`. `ollama+http://` and
  `ollama+https://` pick the transport explicitly (default ports 80 and 443).
- Query keys, each a positive number of seconds: the `Timeouts` fields (`connect`,
  `headers`, `generate`, `first_token`, `reasoning_first_token`, `idle`); the defaults
  are `ON_DEMAND_TIMEOUTS`'s (a cold model load happens before the headers: 300 s for them).
  Any other key is an error.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

import attrs

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
    AuthenticationError,
    ConfigurationError,
    ContentPolicyError,
    ContextLengthError,
    ModelNotFoundError,
    OverloadedError,
    ProviderConnectionError,
    ProviderError,
    ProviderTimeoutError,
    QuotaExceededError,
    ResponseFormatError,
    ServerError,
    StreamTruncatedError,
    UnsupportedRequestError,
)
from .._http import ON_DEMAND_TIMEOUTS, request_id_from
from .._messages import (
    ImagePart,
    Message,
    ReasoningPart,
    TextPart,
    Tool,
    ToolCall,
    ToolCallPart,
    ToolResultPart,
)
from .._reasoning import Reasoning
from .._request import JSONMode, JSONSchema, Request
from .._response import FinishReason, Response, Usage
from .._sse import NDJSONDecoder
from ._base import HTTPModel, HTTPProvider
from ._common import dsn_timeouts, finish_with_tools, json_or_none, status_error

if TYPE_CHECKING:
    import aiohttp

    from .._context import ProviderContext
    from .._dsn import DSN

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_TIMEOUTS",
    "OllamaModel",
    "OllamaProvider",
    "ollama_factory",
    "parse_ollama_host",
]

DEFAULT_BASE_URL: Final = "http://127.0.0.1:11434"
"""Where a local Ollama server listens unless `OLLAMA_HOST` says otherwise."""

_DEFAULT_PORT: Final = 11434
_CLOUD_HOST: Final = "ollama.com"
_KEY_ENV: Final = "OLLAMA_API_KEY"
_HOST_ENV: Final = "OLLAMA_HOST"
# Ollama documents no request id header; ollama.com and proxies in front of a local
# server may send the common one.
_REQUEST_ID_HEADERS: Final = ("x-request-id",)
_WIRE: Final = "ollama"
"""The wire family named in `ReasoningPart.provider` / `ReasoningDelta.provider`."""
_LEVEL_MODELS: Final = ("gpt-oss",)
"""Model-name prefixes whose `think` is a level ("low", "medium", "high"), not a boolean."""
_THINK_LEVELS: Final[Mapping[str, str]] = {
    "none": "low",
    "minimal": "low",
    "low": "low",
    "medium": "medium",
    "high": "high",
}
_LOCAL_HOSTS: Final = frozenset({"127.0.0.1", "localhost", "::1", "0.0.0.0"})
# The first request to a model loads it into memory, which takes from seconds to minutes
# for a large model: the time to the headers gets more room than a hosted API's.
DEFAULT_TIMEOUTS: Final = ON_DEMAND_TIMEOUTS

# Error texts (providers.md 7.5 and 8.1; server/routes.go, server/sched.go; Ollama
# cloud 429 bodies seen in issue threads). Matched case-insensitively.
# `model 'x' not found`, `model "x" not found, try pulling it first`, `model not found`.
_MODEL_NOT_FOUND: Final = re.compile(
    r"""\bmodel(?:\s+(?:'[^']*'|"[^"]*"|\S+))?\s+not found""", re.IGNORECASE
)
_CONTEXT_LENGTH: Final = re.compile(
    r"exceeds? the context length|context length exceeded|context window", re.IGNORECASE
)
_UNSUPPORTED: Final = re.compile(r"does not support (tools|thinking|vision|images)", re.IGNORECASE)
_BUSY: Final = re.compile(r"server busy|maximum pending requests", re.IGNORECASE)
# "you have reached your session/hourly/weekly usage limit, upgrade for higher limits":
# a plan's allowance, which clears in hours or days, not within a retry budget.
_USAGE_LIMIT: Final = re.compile(r"usage limit", re.IGNORECASE)
# Ollama itself has no moderation; this catches a moderating proxy or cloud front end.
_CONTENT_POLICY: Final = re.compile(r"content policy|content filter|moderation", re.IGNORECASE)
_UNAUTHORIZED: Final = re.compile(r"\bunauthori[sz]ed\b", re.IGNORECASE)


# --------------------------------------------------------------------------- configuration


def parse_ollama_host(value: str | None) -> str:
    """The base URL an `OLLAMA_HOST` value names, read as the official clients read it.

    Args:
        value: `host`, `host:port`, `:port`, or `http(s)://host[:port][/path]`; quotes and
            surrounding spaces are ignored. None or "" is the default.

    Returns:
        A base URL without a trailing slash. Without a scheme the transport is HTTP and
        the port 11434; with one, the scheme's default port.

    Raises:
        ConfigurationError: the scheme is not http or https, or the port is invalid.

    Example:
        >>> parse_ollama_host("gpu-box")
        'http://gpu-box:11434'
        >>> parse_ollama_host("https://ollama.example.com/base/")
        'https://ollama.example.com/base'
    """
    text = (value or "").strip().strip("\"'").strip()
    if not text:
        return DEFAULT_BASE_URL
    scheme, sep, rest = text.partition("://")
    default_port: int | None = _DEFAULT_PORT
    if not sep:
        scheme, rest = "http", text
    elif scheme.lower() in ("http", "https"):
        scheme, default_port = scheme.lower(), None
    else:
        raise ConfigurationError(
            f"{_HOST_ENV} has an unsupported scheme {scheme!r}: use http:// or https://"
        )
    parts = urlsplit(f"{scheme}://{rest}")
    try:
        port = parts.port
    except ValueError:
        raise ConfigurationError(
            f"{_HOST_ENV} has an invalid port: expected host:port with a port from 1 to 65535"
        ) from None
    host = parts.hostname or "127.0.0.1"
    return _url(scheme, host, port or default_port, parts.path)


def _url(scheme: str, host: str, port: int | None, path: str) -> str:
    host = f"[{host}]" if ":" in host else host
    path = path.rstrip("/")
    return f"{scheme}://{host}{f':{port}' if port is not None else ''}{path}"


def _dsn_base_url(dsn: DSN, env_host: str | None) -> str:
    """The server a DSN names: its host, else `OLLAMA_HOST`, else the local default."""
    if not dsn.host:
        return parse_ollama_host(env_host)
    if dsn.scheme.endswith("+https"):
        return _url("https", dsn.host, dsn.port, dsn.path)
    if dsn.scheme.endswith("+http"):
        return _url("http", dsn.host, dsn.port, dsn.path)
    if _is_cloud(dsn.host):
        return _url("https", dsn.host, dsn.port, dsn.path)
    # A bare host is a self-hosted server: plain HTTP on Ollama's port, as OLLAMA_HOST.
    return _url("http", dsn.host, dsn.port or _DEFAULT_PORT, dsn.path)


def _is_cloud(host: str) -> bool:
    host = host.lower()
    return host == _CLOUD_HOST or host.endswith("." + _CLOUD_HOST)


# --------------------------------------------------------------------------- request body


@attrs.frozen
class _Target:
    """Who a request is for: names the errors request building raises."""

    provider: str
    model: str

    def unsupported(self, message: str) -> UnsupportedRequestError:
        return UnsupportedRequestError(message, provider=self.provider, model=self.model)


def _build_body(
    request: Request, model_id: str, *, stream: bool, provider: str = "ollama"
) -> dict[str, Any]:
    """The `/api/chat` JSON body for `request` (pure: no I/O).

    Args:
        request: what to ask.
        model_id: the model, as the server names it ("llama3.2").
        stream: ask for an NDJSON stream (True) or one JSON reply (False).
        provider: the provider's registry name, for errors.

    Raises:
        UnsupportedRequestError: an image given by http(s) URL, tool-call arguments that
            are not a JSON object, or a `tool_choice` naming a tool that is not offered.
    """
    target = _Target(provider, model_id)
    body: dict[str, Any] = {"model": model_id, "messages": _build_messages(request, target)}
    tools = _offered_tools(request, target)
    if tools:
        body["tools"] = [_tool_definition(tool) for tool in tools]
    if isinstance(request.response_format, JSONMode):
        body["format"] = "json"
    elif isinstance(request.response_format, JSONSchema):
        body["format"] = dict(request.response_format.schema)
    options = _options(request)
    if options:
        body["options"] = options
    think = _think(request.reasoning, model_id)
    if think is not None:
        body["think"] = think
    # Ollama streams unless told otherwise, so the choice is always explicit.
    body["stream"] = stream
    return body


def _think(reasoning: Reasoning | None, model_id: str) -> bool | str | None:
    """The `think` field for `reasoning` (None: not sent, the model's default).

    A boolean, or a level for the models that take one (see the module doc).
    """
    if reasoning is None:
        return None
    # "gpt-oss:20b", "library/gpt-oss:120b-cloud": the bare name decides.
    name = model_id.strip().lower().rpartition("/")[2]
    if name.startswith(_LEVEL_MODELS):
        return _THINK_LEVELS[reasoning.level()]
    return reasoning.enabled


def _options(request: Request) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if request.temperature is not None:
        options["temperature"] = request.temperature
    if request.top_p is not None:
        options["top_p"] = request.top_p
    if request.max_tokens is not None:
        options["num_predict"] = request.max_tokens
    if request.stop:
        options["stop"] = list(request.stop)
    return options


def _offered_tools(request: Request, target: _Target) -> tuple[Tool, ...]:
    """The tools to send: Ollama has no `tool_choice`, so the choice filters the list."""
    choice = request.tool_choice
    if choice is None or choice in ("auto", "required"):
        return request.tools
    if choice == "none":
        return ()
    chosen = tuple(tool for tool in request.tools if tool.name == choice)
    if not chosen:
        raise target.unsupported(
            f"tool_choice names {choice!r}, which is not among the request's tools"
        )
    return chosen


def _tool_definition(tool: Tool) -> dict[str, Any]:
    function: dict[str, Any] = {"name": tool.name}
    if tool.description:
        function["description"] = tool.description
    function["parameters"] = dict(tool.parameters)
    return {"type": "function", "function": function}


def _build_messages(request: Request, target: _Target) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    if request.system:
        messages.append({"role": "system", "content": request.system})
    # Tool results name their tool (`tool_name`); the name comes from the call they answer.
    names: dict[str, str] = {}
    for message in request.messages:
        for part in message.parts:
            if isinstance(part, ToolCallPart):
                names[part.call.id] = part.call.name
        messages.extend(_message_entries(message, names, target))
    return messages


def _message_entries(
    message: Message, names: Mapping[str, str], target: _Target
) -> Iterator[dict[str, Any]]:
    """One wire message for the text, images and tool calls; one per tool result."""
    text: list[str] = []
    thinking: list[str] = []
    images: list[str] = []
    calls: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    for part in message.parts:
        if isinstance(part, TextPart):
            text.append(part.text)
        elif isinstance(part, ReasoningPart):
            # Only Ollama's own trace goes back (another family's means nothing here),
            # and only in the model's own turns.
            if part.provider == _WIRE and part.text and message.role == "assistant":
                thinking.append(part.text)
        elif isinstance(part, ImagePart):
            images.append(_image_data(part, target))
        elif isinstance(part, ToolCallPart):
            calls.append(_tool_call_entry(part.call, target))
        elif isinstance(part, ToolResultPart):
            results.append(_tool_result_entry(part, names))
    if text or images or calls or thinking or not results:
        entry: dict[str, Any] = {"role": message.role, "content": "".join(text)}
        if thinking:
            entry["thinking"] = "".join(thinking)
        if images:
            entry["images"] = images
        if calls:
            entry["tool_calls"] = calls
        yield entry
    yield from results


def _image_data(part: ImagePart, target: _Target) -> str:
    """Raw base64 (no `data:` prefix), as Ollama's `images` list wants it."""
    if part.data is not None:
        return part.base64()
    url = part.url or ""
    if is_data_url(url):
        try:
            return parse_data_url(url).base64
        except DataURLError as exc:
            raise target.unsupported(f"the image data: URL {exc}") from None
    raise target.unsupported(
        "Ollama takes images only as inline data, not by URL: pass the bytes "
        "(ImagePart.from_bytes) or a data: URL"
    )


def _tool_call_entry(call: ToolCall, target: _Target) -> dict[str, Any]:
    try:
        arguments = json.loads(call.arguments or "{}")
    except (ValueError, RecursionError):
        arguments = None
    if not isinstance(arguments, dict):
        raise target.unsupported(
            f"Ollama needs tool-call arguments as a JSON object; the arguments of "
            f"call {call.id!r} ({call.name}) are not one"
        )
    return {"id": call.id, "function": {"name": call.name, "arguments": arguments}}


def _tool_result_entry(part: ToolResultPart, names: Mapping[str, str]) -> dict[str, Any]:
    # Ollama has no error flag for results: `is_error` content describes the failure.
    entry: dict[str, Any] = {"role": "tool", "content": part.content}
    name = part.name or names.get(part.call_id)
    if name:
        entry["tool_name"] = name
    # Newer servers read `tool_call_id`; older ones ignore fields they do not know.
    entry["tool_call_id"] = part.call_id
    return entry


# --------------------------------------------------------------------------- replies


def _parse_response(
    body: Any, key: str, headers: Mapping[str, str], *, request_id: str | None = None
) -> Response:
    """A `Response` from a non-streamed `/api/chat` reply.

    Args:
        body: the decoded JSON reply.
        key: the "provider/model-id" key of the target that answered.
        headers: the reply's headers (for the request id).
        request_id: overrides the request id found in `headers`.

    Raises:
        ProviderError: the reply is an `{"error": ...}` object (the mapped, typed error).
        ResponseFormatError: the reply is not a chat response.
    """
    provider, _, model = key.partition("/")
    if request_id is None:
        request_id = request_id_from(headers, _REQUEST_ID_HEADERS)
    if isinstance(body, dict) and "error" in body:
        raise _in_band_error(body["error"], provider, model, request_id)
    message = body.get("message") if isinstance(body, dict) else None
    if not isinstance(message, dict):
        raise ResponseFormatError(
            "the Ollama reply has no message object", provider=provider, model=model
        )
    text = _content(message, provider, model)
    calls = _tool_calls(message, 0, provider, model)
    thinking = _thinking(message, provider, model)
    return Response(
        text=text,
        tool_calls=calls,
        finish_reason=_finish_reason(body.get("done_reason"), has_tool_calls=bool(calls)),
        usage=_usage(body),
        model=key,
        request_id=request_id,
        raw=body,
        reasoning=thinking,
        reasoning_parts=(ReasoningPart(thinking, provider=_WIRE),) if thinking else (),
        served_model=_served_model(body),
    )


def _served_model(body: Mapping[str, Any]) -> str | None:
    """The model the server says answered (`model`, "qwen3:8b")."""
    value = body.get("model")
    return value if isinstance(value, str) and value else None


def _thinking(message: Mapping[str, Any], provider: str, model: str) -> str:
    """`message.thinking`: the model's reasoning trace (a piece of it, in a stream)."""
    thinking = message.get("thinking")
    if thinking is None:
        return ""
    if not isinstance(thinking, str):
        raise ResponseFormatError(
            "the Ollama reply's message.thinking is not a string", provider=provider, model=model
        )
    return thinking


def _content(message: Mapping[str, Any], provider: str, model: str) -> str:
    content = message.get("content")
    if content is None:
        return ""
    if not isinstance(content, str):
        raise ResponseFormatError(
            "the Ollama reply's message.content is not a string", provider=provider, model=model
        )
    return content


def _tool_calls(
    message: Mapping[str, Any], first_index: int, provider: str, model: str
) -> list[ToolCall]:
    """The message's tool calls; calls without an id get `call_<index>`."""
    raw = message.get("tool_calls") or []
    if not isinstance(raw, list):
        raise ResponseFormatError(
            "the Ollama reply's message.tool_calls is not a list", provider=provider, model=model
        )
    calls: list[ToolCall] = []
    for offset, item in enumerate(raw):
        function = item.get("function") if isinstance(item, dict) else None
        name = function.get("name") if isinstance(function, dict) else None
        if not isinstance(function, dict) or not isinstance(name, str) or not name:
            raise ResponseFormatError(
                "an Ollama tool call has no function name", provider=provider, model=model
            )
        call_id = item.get("id")
        if not isinstance(call_id, str) or not call_id:
            call_id = f"call_{first_index + offset}"
        calls.append(ToolCall(call_id, name, _arguments_text(function.get("arguments"))))
    return calls


def _arguments_text(arguments: Any) -> str:
    """Ollama sends arguments as a JSON object; `ToolCall.arguments` is JSON text."""
    if arguments is None:
        return "{}"
    if isinstance(arguments, str):  # already text (OpenAI-style), kept as written
        return arguments
    return json.dumps(arguments, ensure_ascii=False)


def _finish_reason(done_reason: Any, *, has_tool_calls: bool) -> FinishReason:
    if done_reason is None or done_reason == "stop":
        reason = FinishReason.STOP
    elif done_reason == "length":
        reason = FinishReason.LENGTH
    else:
        reason = FinishReason.OTHER  # "load", "unload", or something newer
    # Ollama ends tool calls with "stop" (providers.md 7.3): the calls decide then.
    return finish_with_tools(reason, has_tool_calls)


def _usage(body: Mapping[str, Any]) -> Usage:
    # Counts may be missing (e.g. a cached prompt): zero, as `Usage` promises.
    return Usage(
        input_tokens=_count(body.get("prompt_eval_count")),
        output_tokens=_count(body.get("eval_count")),
    )


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


class _StreamTranslator:
    """Turns decoded NDJSON objects of a `/api/chat` stream into our events.

    Feed objects in order; `done` turns True at the terminal object (`"done": true`),
    after which nothing more is fed. `finish()` raises if it never came: without it
    the answer is incomplete. `StreamStart` goes out with the first object that names
    the served model (`model`: every object of Ollama's own does) or has anything to
    report.
    """

    __slots__ = ("_calls", "_key", "_model", "_provider", "_request_id", "_started", "done")

    def __init__(self, key: str, request_id: str | None) -> None:
        self._key = key
        self._provider, _, self._model = key.partition("/")
        self._request_id = request_id
        self._started = False
        self._calls = 0  # tool calls seen so far: the next call's index
        self.done = False

    def decoder(self) -> NDJSONDecoder:
        """A decoder for the body: one JSON object per line."""
        return NDJSONDecoder(provider=self._provider, model=self._model)

    def feed(self, obj: Any) -> list[StreamEvent]:
        """The events one stream object makes.

        Raises:
            ProviderError: the object is an in-band `{"error": ...}` (mapped, typed).
            ResponseFormatError: the object is not a chat stream object.
        """
        if not isinstance(obj, dict):
            raise ResponseFormatError(
                f"an Ollama stream line is not a JSON object: {str(obj)[:200]!r}",
                provider=self._provider,
                model=self._model,
            )
        if "error" in obj:
            raise _in_band_error(obj["error"], self._provider, self._model, self._request_id)
        events: list[StreamEvent] = []
        message = obj.get("message")
        if isinstance(message, dict):
            thinking = _thinking(message, self._provider, self._model)
            if thinking:
                # Ollama's trace is one block: every piece has index 0.
                events.append(ReasoningDelta(thinking, provider=_WIRE))
            text = _content(message, self._provider, self._model)
            if text:
                events.append(TextDelta(text))
            for call in _tool_calls(message, self._calls, self._provider, self._model):
                events.append(ToolCallDelta(self._calls, call.id, call.name, call.arguments))
                self._calls += 1
        if obj.get("done") is True:
            self.done = True
            events.append(UsageUpdate(_usage(obj)))
            reason = _finish_reason(obj.get("done_reason"), has_tool_calls=self._calls > 0)
            events.append(StreamEnd(reason))
        if not self._started:
            served = _served_model(obj)
            if events or served:
                self._started = True
                events.insert(0, StreamStart(self._key, self._request_id, served))
        return events

    def finish(self) -> list[StreamEvent]:
        """The body ended cleanly: nothing more after the terminal object.

        Raises:
            StreamTruncatedError: the terminal `"done": true` object never came.
        """
        if self.done:
            return []
        raise StreamTruncatedError(
            'the Ollama stream ended before its final object ("done": true)',
            provider=self._provider,
            model=self._model,
            request_id=self._request_id,
        )


# --------------------------------------------------------------------------- errors


def _error_text(body_text: str) -> str | None:
    """The `error` string of an Ollama error body (`{"error": "..."}`), if it is one."""
    body = json_or_none(body_text)
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):  # OpenAI-shaped, from a proxy in front of the server
        error = error.get("message")
    return error if isinstance(error, str) and error.strip() else None


def _with_pull_hint(text: str, model: str) -> str:
    return f"{text} (run `ollama pull {model}` on the server to download it)"


def _in_band_error(error: Any, provider: str, model: str, request_id: str | None) -> ProviderError:
    """The error for an `{"error": ...}` object in a 200 reply (no status of its own)."""
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        error = error["message"]  # OpenAI-shaped, from a proxy in front of the server
    text = error if isinstance(error, str) and error else json.dumps(error)
    ctx: dict[str, Any] = {"provider": provider, "model": model, "request_id": request_id}
    if _MODEL_NOT_FOUND.search(text):
        return ModelNotFoundError(_with_pull_hint(text, model), **ctx)
    if _CONTEXT_LENGTH.search(text):
        return ContextLengthError(text, **ctx)
    if _UNSUPPORTED.search(text):
        return UnsupportedRequestError(text, **ctx)
    if _USAGE_LIMIT.search(text):
        return QuotaExceededError(text, **ctx)
    if _BUSY.search(text):
        return OverloadedError(text, **ctx)
    if _CONTENT_POLICY.search(text):
        return ContentPolicyError(text, **ctx)
    if _UNAUTHORIZED.search(text):
        return AuthenticationError(text, **ctx)
    # The model runner failed mid-answer: a server fault, worth one retry.
    return ServerError(text, **ctx)


@attrs.frozen
class _ErrorMapper:
    """`ErrorMapper` for Ollama: its own matchers first, then `status_error()`."""

    provider: str
    model: str
    has_key: bool

    def __call__(self, status: int, headers: Mapping[str, str], body_text: str) -> ProviderError:
        text = _error_text(body_text)
        request_id = request_id_from(headers, _REQUEST_ID_HEADERS)
        common: dict[str, Any] = {
            "provider": self.provider,
            "model": self.model,
            "status": status,
            "headers": headers,
            "body_text": body_text,
            "request_id": request_id,
        }
        if text is not None:
            special = self._special(status, text, common)
            if special is not None:
                return special
        if status in (401, 403):
            return status_error(message=self._auth_message(text), **common)
        return status_error(message=text, **common)

    def _special(self, status: int, text: str, common: dict[str, Any]) -> ProviderError | None:
        """Matchers on the body text, in providers.md 8.4 order; None when none fits."""
        if status == 404 and _MODEL_NOT_FOUND.search(text):
            return status_error(
                message=_with_pull_hint(text, self.model), kind=ModelNotFoundError, **common
            )
        if status == 429 and _USAGE_LIMIT.search(text):
            return status_error(message=text, kind=QuotaExceededError, **common)
        if status in (400, 413, 422) and _CONTEXT_LENGTH.search(text):
            return status_error(message=text, kind=ContextLengthError, **common)
        if status in (400, 403) and _CONTENT_POLICY.search(text):
            return status_error(message=text, kind=ContentPolicyError, **common)
        if status == 400 and _UNSUPPORTED.search(text):
            # "x does not support tools": another model may; no penalty for this one.
            return UnsupportedRequestError(
                text,
                provider=self.provider,
                model=self.model,
                status=status,
                request_id=common["request_id"],
            )
        if status == 503 and _BUSY.search(text):
            return status_error(message=text, kind=OverloadedError, **common)
        return None

    def _auth_message(self, text: str | None) -> str:
        said = text or "unauthorized"
        if self.has_key:
            return f"{said}: the server rejected the API key (check {_KEY_ENV} or the DSN key)"
        return f"{said}: this server needs an API key; set {_KEY_ENV} or put it in the DSN"


@contextlib.contextmanager
def _not_running_hint(base_url: str) -> Iterator[None]:
    """Say plainly that Ollama is not running when its host refuses the connection."""
    try:
        yield
    except ProviderConnectionError as exc:
        if isinstance(exc, ProviderTimeoutError) or not _refused(exc):
            raise
        host = urlsplit(base_url).hostname or ""
        hint = (
            "start it with `ollama serve`, or point OLLAMA_HOST at the right server"
            if host in _LOCAL_HOSTS
            else "check the host and port, or point OLLAMA_HOST at the right server"
        )
        raise ProviderConnectionError(
            f"Ollama does not seem to be running at {base_url} (connection refused): {hint}",
            provider=exc.provider,
            model=exc.model,
        ) from exc.__cause__


def _refused(exc: BaseException) -> bool:
    cause = exc.__cause__
    return isinstance(getattr(cause, "os_error", None), ConnectionRefusedError) or isinstance(
        cause, ConnectionRefusedError
    )


# --------------------------------------------------------------------------- provider


class OllamaModel(HTTPModel["OllamaProvider"]):
    """One Ollama model. Get it with `OllamaProvider.model(model_id)`.

    Both calls go to `/api/chat`; a stream is NDJSON, complete at `"done": true`.
    """

    __slots__ = ()

    _REQUEST_ID_HEADERS = _REQUEST_ID_HEADERS

    def _body(self, request: Request, *, stream: bool) -> dict[str, Any]:
        return _build_body(request, self._model_id, stream=stream, provider=self._provider.name)

    def _endpoint(self, *, stream: bool) -> str:
        return self._provider._url("/api/chat")

    def _parse(self, data: Any, headers: Mapping[str, str]) -> Response:
        return _parse_response(data, self._key, headers)

    def _translator(self, headers: Mapping[str, str], request_id: str | None) -> _StreamTranslator:
        return _StreamTranslator(self._key, request_id)


class OllamaProvider(HTTPProvider[OllamaModel]):
    """The Ollama native API (`/api/chat`) at one base URL.

    Construction does no I/O and never fails for a missing key: a local server needs
    none; ollama.com without one fails at call time with an `AuthenticationError`.

    Args:
        name: the registry name (the first half of each target key).
        api_key: sent as `Authorization: Bearer` when set (ollama.com); never shown.
        base_url: the server, e.g. "http://127.0.0.1:11434" (no `/api` suffix).
        http: the Registry's session holder; the session is fetched at call time.
        timeouts: the time limits (default `DEFAULT_TIMEOUTS`, i.e. `ON_DEMAND_TIMEOUTS`: 300 s
            for the headers, which wait for a cold model load).
        extra_headers: added to every request (a proxy's auth, for instance); never shown.

    Example:
        ```python
        provider = OllamaProvider(
            "ollama", api_key=None, base_url="http://127.0.0.1:11434", http=HTTPSessionHolder()
        )
        reply = await provider.model("llama3.2").generate("Why is the sky blue?")
        ```
    """

    __slots__ = ()

    _FAMILY = _WIRE = "ollama"
    _KEY_ENV_VARS = (_KEY_ENV,)
    _DEFAULT_TIMEOUTS = DEFAULT_TIMEOUTS

    async def list_models(self) -> list[str]:
        """The models the server has (`GET /api/tags`), as `name:tag` strings.

        Raises:
            ProviderError: the server failed or is unreachable.
            ResponseFormatError: the reply is not a model list.
        """
        reply, _ = await self._request_json("GET", self._url("/api/tags"), model_id="")
        models = reply.get("models") if isinstance(reply, dict) else None
        if not isinstance(models, list):
            raise ResponseFormatError(
                "the Ollama /api/tags reply has no models list", provider=self._name
            )
        names: list[str] = []
        for entry in models:
            name = (entry.get("name") or entry.get("model")) if isinstance(entry, dict) else None
            if isinstance(name, str) and name:
                names.append(name)
        return names

    def _new_model(self, model_id: str) -> OllamaModel:
        return OllamaModel(self, model_id)

    async def _request_json(
        self,
        method: str,
        url: str,
        *,
        model_id: str,
        body: Any = None,
        extra_headers: Mapping[str, str] | None = None,
    ) -> tuple[Any, Mapping[str, str]]:
        with _not_running_hint(self._base_url):
            return await super()._request_json(
                method, url, model_id=model_id, body=body, extra_headers=extra_headers
            )

    async def _open_stream(
        self,
        url: str,
        *,
        model_id: str,
        body: Any,
        extra_headers: Mapping[str, str] | None = None,
    ) -> aiohttp.ClientResponse:
        with _not_running_hint(self._base_url):
            return await super()._open_stream(
                url, model_id=model_id, body=body, extra_headers=extra_headers
            )

    def _key_required(self) -> bool:
        # A local server runs without a key; ollama.com refuses every call without one.
        return _is_cloud(urlsplit(self._base_url).hostname or "")

    def _missing_key_message(self) -> str:
        return (
            f"{self._base_url} needs an API key: set {_KEY_ENV} "
            "(create one at https://ollama.com/settings/keys) or put it in the DSN"
        )

    def _headers(
        self, model_id: str, *, stream: bool = False, extra: Mapping[str, str] | None = None
    ) -> dict[str, str]:
        accept = "application/x-ndjson" if stream else "application/json"
        return {"Accept": accept, **super()._headers(model_id, extra=extra)}

    def _map_error(
        self, model_id: str, status: int, headers: Mapping[str, str], body_text: str
    ) -> ProviderError:
        return _ErrorMapper(self._name, model_id, has_key=self._api_key is not None)(
            status, headers, body_text
        )


def ollama_factory(name: str, dsn: DSN, context: ProviderContext) -> OllamaProvider:
    """The `ollama://` (and `ollama+http://`, `ollama+https://`) scheme factory.

    The key is the DSN's credential, else `OLLAMA_API_KEY` (optional: only ollama.com
    needs one). The server is the DSN's host, else `OLLAMA_HOST`, else
    `http://127.0.0.1:11434`. The query may set the `Timeouts` fields in seconds (see
    the module docstring).

    Raises:
        ConfigurationError: an unknown query key, a bad timeout, or a bad `OLLAMA_HOST`.
    """
    api_key = dsn.credential or context.env(_KEY_ENV) or None
    base_url = _dsn_base_url(dsn, context.env(_HOST_ENV))
    return OllamaProvider(
        name,
        api_key=api_key,
        base_url=base_url,
        http=context.http,
        timeouts=dsn_timeouts(dsn.query, label=f"ollama provider {name!r}", base=DEFAULT_TIMEOUTS),
    )
