"""Emulators of the four LLM wire formats: small programmable servers on 127.0.0.1.

Each emulator speaks one provider's HTTP API as providers.md describes it (paths, auth
headers, JSON replies, stream framing, error bodies), on `servers.serve`:

| emulator        | endpoint (POST)                                   | stream framing          |
|-----------------|---------------------------------------------------|-------------------------|
| `OpenAIWire`    | `/v1/chat/completions`                            | SSE `data:`, `[DONE]`   |
| `AnthropicWire` | `/v1/messages`                                    | SSE events, message_stop|
| `GeminiWire`    | `/v1beta/models/{m}:generateContent`, and         | SSE, CRLF, ends with a  |
|                 | `:streamGenerateContent?alt=sse`                  | `finishReason` chunk    |
| `OllamaWire`    | `/api/chat` (streams unless `"stream": false`)    | NDJSON, `"done": true`  |

An emulator follows a script: request N gets behaviour N (the last one repeats). A
behaviour is format-agnostic (`Reply`, `CallTool`, `Fail`, `ErrorEvent`, `Truncate`,
`Drop`, `Stall`); each format renders it in its own wire shape, so one script drives
any of the four. Every request is recorded (`Recorded`: parsed JSON body, lower-cased
headers) for assertions. Streamed bodies go out in small pieces cut at awkward places:
inside lines, inside frames, and inside every multi-byte UTF-8 character.

```python
wire = OpenAIWire([Fail(503), Reply("Héllo")], key="sk-test")
async with wire.running() as dsn:          # "openai+http://sk-test@127.0.0.1:PORT/v1"
    async with Registry(env={"LLM_A": dsn}) as registry:
        ...
assert len(wire.requests) == 2
```
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, ClassVar, TypeAlias
from urllib.parse import quote

import anyio.lowlevel
import attrs
from aiohttp import web

from .servers import abort_connection, serve, sleep_forever

__all__ = [
    "AnthropicWire",
    "Behaviour",
    "CallTool",
    "Drop",
    "ErrorEvent",
    "Fail",
    "GeminiWire",
    "OllamaWire",
    "OpenAIWire",
    "Recorded",
    "Reply",
    "Stall",
    "Truncate",
    "Wire",
    "awkward_chunks",
    "split_text",
]

# --------------------------------------------------------------------------- behaviours

DEFAULT_TEXT = "Grüße aus Zürich — naïve café ✓"
"""Served text: multi-byte characters (2, 3 bytes) for the mid-character cuts to split."""


@attrs.frozen
class Reply:
    """Answer with `text`; a stream sends it as `pieces` text deltas (cut between words)."""

    text: str = DEFAULT_TEXT
    input_tokens: int = 12
    output_tokens: int = 7
    pieces: int = 3


@attrs.frozen
class CallTool:
    """Answer with one tool call.

    Streamed, OpenAI and Anthropic send the JSON arguments in several deltas; Gemini and
    Ollama send a call whole, as the real APIs do. `call_id` is sent where the wire has
    call ids (OpenAI, Anthropic); Gemini and Ollama calls carry none.
    """

    name: str = "lookup_city"
    arguments: Mapping[str, Any] = attrs.field(factory=lambda: {"q": "Zürich", "limit": 3})
    call_id: str = "call_7Qx"
    input_tokens: int = 21
    output_tokens: int = 9


@attrs.frozen
class Fail:
    """Answer with HTTP `status` and the provider's own error body for it.

    `retry_after` (seconds) is sent as a `Retry-After` header.
    """

    status: int
    retry_after: float | None = None


@attrs.frozen
class ErrorEvent:
    """Stream: 200, the preamble, `text` deltas, then an in-band error event of the kind
    `Fail(status)` would answer, and the end of the body. Generate: `Fail(status)`."""

    status: int
    text: str = ""


@attrs.frozen
class Truncate:
    """Stream: 200, the preamble and `text` deltas, then the end of the body without the
    terminal signal. Generate: 200 and half of the JSON body, then a reset."""

    text: str = ""


@attrs.frozen
class Drop:
    """Reset the connection before any header is sent."""


@attrs.frozen
class Stall:
    """Stream: 200, the preamble and `text` deltas, then silence until the server stops.
    Generate: no headers until the server stops."""

    text: str = ""


Behaviour: TypeAlias = Reply | CallTool | Fail | ErrorEvent | Truncate | Drop | Stall


@attrs.frozen
class Recorded:
    """One request an emulator received."""

    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    """Lower-cased names."""
    body: Any
    """The decoded JSON body (None when empty)."""
    model: str
    """The model the request named (in the body, or in Gemini's path)."""
    request_id: str
    """The id the emulator gave its reply (sent only where the wire has one)."""


# --------------------------------------------------------------------------- byte helpers

# Piece sizes cycle through these: small and co-prime-ish, so cuts drift across lines.
_CUT_SIZES = (5, 1, 9, 2, 13, 3, 7)


def awkward_chunks(data: bytes) -> list[bytes]:
    """`data` in small pieces of varying size, cut inside every multi-byte UTF-8 character."""
    cuts: set[int] = set(
        itertools.accumulate(itertools.islice(itertools.cycle(_CUT_SIZES), len(data)))
    )
    # Right after a lead byte (0b11xxxxxx) is the middle of a character.
    cuts.update(index + 1 for index, byte in enumerate(data) if byte >= 0xC0)
    bounds = [0, *sorted(cut for cut in cuts if 0 < cut < len(data)), len(data)]
    return [data[start:end] for start, end in itertools.pairwise(bounds) if end > start]


def split_text(text: str, pieces: int) -> list[str]:
    """`text` in at most `pieces` non-empty pieces, cut between words, joining back exactly."""
    words = re.findall(r"\s*\S+\s*", text) or ([text] if text else [])
    if not words:
        return []
    count = max(1, min(pieces, len(words)))
    size, extra = divmod(len(words), count)
    result, start = [], 0
    for index in range(count):
        end = start + size + (1 if index < extra else 0)
        result.append("".join(words[start:end]))
        start = end
    return result


def _thirds(text: str) -> list[str]:
    """`text` in three nearly equal pieces (for argument deltas)."""
    step = max(1, -(-len(text) // 3))
    return [text[i : i + step] for i in range(0, len(text), step)]


def _sse(data: Any, *, event: str | None = None, eol: str = "\n") -> bytes:
    payload = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    head = f"event: {event}{eol}" if event else ""
    return f"{head}data: {payload}{eol}{eol}".encode()


def _ndjson(data: Any) -> bytes:
    return (json.dumps(data, ensure_ascii=False) + "\n").encode()


# --------------------------------------------------------------------------- the shared core


@attrs.frozen
class _Call:
    """What a format needs to render one reply."""

    number: int
    """0 for the first request the emulator got."""
    model: str
    request_id: str
    body: Any


class Wire:
    """The shared core: script, recording, dispatch by behaviour. One subclass per format.

    Args:
        script: behaviours of successive requests; the last one repeats.
        key: the credential the emulator expects; a request without it gets the
            provider's real answer to a bad key. None accepts any request.
    """

    name: ClassVar[str]
    route: ClassVar[str]
    """The aiohttp route (path pattern) of the chat endpoint."""
    scheme: ClassVar[str]
    base_path: ClassVar[str] = ""
    stream_content_type: ClassVar[str] = "text/event-stream"

    def __init__(self, script: Sequence[Behaviour] = (Reply(),), *, key: str | None = None) -> None:
        self.key = key
        self.requests: list[Recorded] = []
        self._script: list[Behaviour] = []
        self._served = 0
        self.program(*script)

    def program(self, *script: Behaviour) -> None:
        """Replace the script; the next request gets its first behaviour."""
        if not script:
            raise ValueError("a script needs at least one behaviour")
        self._script = list(script)
        self._served = 0

    @asynccontextmanager
    async def running(self) -> AsyncIterator[str]:
        """Serve on 127.0.0.1 and yield the DSN of a provider pointed at this emulator."""
        async with serve({self.route: self._handle}) as base:
            credential = f"{quote(self.key, safe='')}@" if self.key else ""
            host = base.partition("://")[2]
            yield f"{self.scheme}://{credential}{host}{self.base_path}"

    # ----------------------------------------------------------------- dispatch

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        call = await self._record(request)
        if self.key is not None and not self._authorised(self.requests[-1]):
            # Answered as the real server answers a bad key; the script does not advance.
            return self._error_response(self._bad_key_status, call, body=self._bad_key(call))
        behaviour = self._script[min(self._served, len(self._script) - 1)]
        self._served += 1
        if isinstance(behaviour, Drop):
            abort_connection(request)
            # Nothing can be sent now; returning (not stalling) ends the handler's task,
            # which the server would not cancel: the connection is no longer its own.
            return web.Response()
        if isinstance(behaviour, Fail):
            return self._error_response(behaviour.status, call, retry_after=behaviour.retry_after)
        if not self._is_stream(request, call.body):
            return await self._json_reply(request, behaviour, call)
        return await self._stream_reply(request, behaviour, call)

    async def _record(self, request: web.Request) -> _Call:
        """Append the request to `requests`; what its reply needs to know."""
        raw = await request.read()
        body = json.loads(raw) if raw else None
        number = len(self.requests)
        call = _Call(number, self._model(request, body), f"req_{self.name}_{number + 1}", body)
        self.requests.append(
            Recorded(
                request.method,
                request.path,
                dict(request.query),
                {name.lower(): value for name, value in request.headers.items()},
                body,
                call.model,
                call.request_id,
            )
        )
        return call

    def _error_response(
        self,
        status: int,
        call: _Call,
        *,
        retry_after: float | None = None,
        body: Any = None,
    ) -> web.Response:
        headers = dict(self._reply_headers(call))
        if retry_after is not None:
            headers["Retry-After"] = f"{retry_after:g}"
        return web.json_response(
            body if body is not None else self._error_body(status, call),
            status=status,
            headers=headers,
        )

    async def _json_reply(
        self, request: web.Request, behaviour: Behaviour, call: _Call
    ) -> web.StreamResponse:
        if isinstance(behaviour, Reply | CallTool):
            return web.json_response(
                self._reply_body(behaviour, call), headers=self._reply_headers(call)
            )
        if isinstance(behaviour, ErrorEvent):
            return self._error_response(behaviour.status, call)
        if isinstance(behaviour, Truncate):
            return await self._cut_json(request, behaviour, call)
        await sleep_forever()  # Stall: no headers, ever
        raise AssertionError("unreachable")

    async def _cut_json(
        self, request: web.Request, behaviour: Truncate, call: _Call
    ) -> web.StreamResponse:
        """Promise the whole JSON reply (Content-Length), send half of it, reset."""
        body = json.dumps(self._reply_body(Reply(behaviour.text or DEFAULT_TEXT), call)).encode()
        response = web.StreamResponse(
            headers={"Content-Type": "application/json", **self._reply_headers(call)}
        )
        response.content_length = len(body)
        await response.prepare(request)
        await response.write(body[: len(body) // 2])
        abort_connection(request)
        return response  # the handler must end: see Drop

    async def _stream_reply(
        self, request: web.Request, behaviour: Behaviour, call: _Call
    ) -> web.StreamResponse:
        frames = self._stream_frames(behaviour, call)
        response = web.StreamResponse(
            headers={"Content-Type": self.stream_content_type, **self._reply_headers(call)}
        )
        await response.prepare(request)
        for piece in awkward_chunks(b"".join(frames)):
            await response.write(piece)
            # Let the client read between pieces, so it sees them apart.
            await anyio.lowlevel.checkpoint()
        if isinstance(behaviour, Stall):
            await sleep_forever()
        await response.write_eof()
        return response

    def _stream_frames(self, behaviour: Behaviour, call: _Call) -> list[bytes]:
        frames = self._preamble(behaviour, call)
        if isinstance(behaviour, Reply):
            frames += self._text(split_text(behaviour.text, behaviour.pieces), call)
            frames += self._ending(behaviour, call)
        elif isinstance(behaviour, CallTool):
            frames += self._tool(behaviour, call)
            frames += self._ending(behaviour, call)
        elif isinstance(behaviour, Truncate | Stall | ErrorEvent):
            frames += self._text(split_text(behaviour.text, 3), call)
            if isinstance(behaviour, ErrorEvent):
                frames += self._error_event(behaviour.status, call)
        return frames

    # ----------------------------------------------------------------- per format
    # A format renders replies (`_reply_body`), error bodies (`_error_body`) and stream
    # frames: `_preamble` (before any content), `_text` (one frame per piece), `_tool`,
    # `_ending` (finish reason, usage, the terminal signal) and `_error_event`.

    _bad_key_status: ClassVar[int] = 401
    """The status the real server answers a missing or wrong key with."""

    def _model(self, request: web.Request, body: Any) -> str:
        return str(body.get("model", "")) if isinstance(body, dict) else ""

    def _is_stream(self, request: web.Request, body: Any) -> bool:
        return isinstance(body, dict) and body.get("stream") is True

    def _authorised(self, recorded: Recorded) -> bool:
        return recorded.headers.get("authorization") == f"Bearer {self.key}"

    def _bad_key(self, call: _Call) -> Any:
        return self._error_body(401, call)

    def _reply_headers(self, call: _Call) -> Mapping[str, str]:
        return {}

    def prompt(self, recorded: Recorded) -> str:
        """The text of the last user message of a recorded request."""
        raise NotImplementedError

    def _error_body(self, status: int, call: _Call) -> Any:
        raise NotImplementedError

    def _reply_body(self, behaviour: Reply | CallTool, call: _Call) -> Any:
        raise NotImplementedError

    def _preamble(self, behaviour: Behaviour, call: _Call) -> list[bytes]:
        return []

    def _text(self, pieces: list[str], call: _Call) -> list[bytes]:
        raise NotImplementedError

    def _tool(self, behaviour: CallTool, call: _Call) -> list[bytes]:
        raise NotImplementedError

    def _ending(self, behaviour: Reply | CallTool, call: _Call) -> list[bytes]:
        raise NotImplementedError

    def _error_event(self, status: int, call: _Call) -> list[bytes]:
        raise NotImplementedError


def _tokens(behaviour: Behaviour) -> tuple[int, int]:
    """(input, output) tokens a behaviour reports; partial answers report their input."""
    if isinstance(behaviour, Reply | CallTool):
        return behaviour.input_tokens, behaviour.output_tokens
    return Reply().input_tokens, 0


# --------------------------------------------------------------------------- OpenAI

# status -> (message, type, code), as OpenAI sends them (providers.md 3.5).
_OPENAI_ERRORS: Mapping[int, tuple[str, str, str | None]] = {
    400: ("Invalid value for 'temperature'.", "invalid_request_error", "invalid_value"),
    401: (
        "Incorrect API key provided: sk-****. You can find your API key at "
        "https://platform.openai.com/account/api-keys.",
        "invalid_request_error",
        "invalid_api_key",
    ),
    404: (
        "The model `{model}` does not exist or you do not have access to it.",
        "invalid_request_error",
        "model_not_found",
    ),
    429: ("Rate limit reached for requests per min (RPM).", "requests", "rate_limit_exceeded"),
    500: (
        "The server had an error while processing your request. Sorry about that!",
        "server_error",
        None,
    ),
    503: (
        "The engine is currently overloaded, please try again later.",
        "service_unavailable_error",
        "server_is_overloaded",
    ),
}


class OpenAIWire(Wire):
    """OpenAI chat completions: Bearer auth, `x-request-id`, SSE ending in `[DONE]`."""

    name = "openai"
    route = "/v1/chat/completions"
    scheme = "openai+http"
    base_path = "/v1"

    def prompt(self, recorded: Recorded) -> str:
        """The last message's content (a plain string for a one-part prompt)."""
        return str(recorded.body["messages"][-1]["content"])

    def _reply_headers(self, call: _Call) -> Mapping[str, str]:
        return {"x-request-id": call.request_id}

    def _error_body(self, status: int, call: _Call) -> Any:
        message, kind, code = _OPENAI_ERRORS.get(status, _OPENAI_ERRORS[500])
        return {
            "error": {
                "message": message.format(model=call.model),
                "type": kind,
                "param": None,
                "code": code,
            }
        }

    def _reply_body(self, behaviour: Reply | CallTool, call: _Call) -> Any:
        message: dict[str, Any] = {"role": "assistant", "content": None, "refusal": None}
        if isinstance(behaviour, Reply):
            message["content"] = behaviour.text
        else:
            message["tool_calls"] = [self._wire_call(behaviour)]
        return {
            "id": f"chatcmpl-{call.number}",
            "object": "chat.completion",
            "created": 1_900_000_000,
            "model": call.model,
            "choices": [{"index": 0, "message": message, "finish_reason": self._finish(behaviour)}],
            "usage": self._usage(behaviour),
        }

    @staticmethod
    def _wire_call(behaviour: CallTool) -> dict[str, Any]:
        return {
            "id": behaviour.call_id,
            "type": "function",
            "function": {
                "name": behaviour.name,
                "arguments": json.dumps(behaviour.arguments, ensure_ascii=False),
            },
        }

    @staticmethod
    def _finish(behaviour: Behaviour) -> str:
        return "tool_calls" if isinstance(behaviour, CallTool) else "stop"

    @staticmethod
    def _usage(behaviour: Behaviour) -> dict[str, int]:
        prompt, completion = _tokens(behaviour)
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }

    def _chunk(self, call: _Call, delta: dict[str, Any], finish: str | None = None) -> bytes:
        chunk: dict[str, Any] = {
            "id": f"chatcmpl-{call.number}",
            "object": "chat.completion.chunk",
            "created": 1_900_000_000,
            "model": call.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        if self._wants_usage(call):
            chunk["usage"] = None  # every chunk but the usage chunk says null
        return _sse(chunk)

    @staticmethod
    def _wants_usage(call: _Call) -> bool:
        options = call.body.get("stream_options") if isinstance(call.body, dict) else None
        return isinstance(options, dict) and options.get("include_usage") is True

    def _preamble(self, behaviour: Behaviour, call: _Call) -> list[bytes]:
        return [self._chunk(call, {"role": "assistant", "content": ""})]

    def _text(self, pieces: list[str], call: _Call) -> list[bytes]:
        return [self._chunk(call, {"content": piece}) for piece in pieces]

    def _tool(self, behaviour: CallTool, call: _Call) -> list[bytes]:
        first = {
            "index": 0,
            "id": behaviour.call_id,
            "type": "function",
            "function": {"name": behaviour.name, "arguments": ""},
        }
        frames = [self._chunk(call, {"tool_calls": [first]})]
        for piece in _thirds(json.dumps(behaviour.arguments, ensure_ascii=False)):
            delta = {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}
            frames.append(self._chunk(call, delta))
        return frames

    def _ending(self, behaviour: Reply | CallTool, call: _Call) -> list[bytes]:
        frames = [self._chunk(call, {}, self._finish(behaviour))]
        if self._wants_usage(call):
            usage = {
                "id": f"chatcmpl-{call.number}",
                "object": "chat.completion.chunk",
                "created": 1_900_000_000,
                "model": call.model,
                "choices": [],
                "usage": self._usage(behaviour),
            }
            frames.append(_sse(usage))
        frames.append(_sse("[DONE]"))
        return frames

    def _error_event(self, status: int, call: _Call) -> list[bytes]:
        return [_sse(self._error_body(status, call))]


# --------------------------------------------------------------------------- Anthropic

# status -> (error.type, message), as Anthropic sends them (providers.md 5.5).
_ANTHROPIC_ERRORS: Mapping[int, tuple[str, str]] = {
    400: ("invalid_request_error", "max_tokens: Field required"),
    401: ("authentication_error", "invalid x-api-key"),
    404: ("not_found_error", "model: {model}"),
    429: (
        "rate_limit_error",
        "This request would exceed the rate limit for your organization of 50 requests per minute.",
    ),
    500: ("api_error", "Internal server error"),
    503: ("api_error", "Service unavailable"),
    529: ("overloaded_error", "Overloaded"),
}


class AnthropicWire(Wire):
    """Anthropic messages: `x-api-key` + `anthropic-version`, `request-id`, SSE events."""

    name = "anthropic"
    route = "/v1/messages"
    scheme = "anthropic+http"

    def prompt(self, recorded: Recorded) -> str:
        """The last message's text (a string, or the text of its blocks)."""
        content = recorded.body["messages"][-1]["content"]
        if isinstance(content, str):
            return content
        return "".join(block.get("text", "") for block in content)

    def _authorised(self, recorded: Recorded) -> bool:
        return recorded.headers.get("x-api-key") == self.key

    def _reply_headers(self, call: _Call) -> Mapping[str, str]:
        return {"request-id": call.request_id}

    def _error_body(self, status: int, call: _Call) -> Any:
        kind, message = _ANTHROPIC_ERRORS.get(status, _ANTHROPIC_ERRORS[500])
        return {
            "type": "error",
            "error": {"type": kind, "message": message.format(model=call.model)},
            "request_id": call.request_id,
        }

    @staticmethod
    def _usage(input_tokens: int, output_tokens: int) -> dict[str, int]:
        return {
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        }

    @staticmethod
    def _stop_reason(behaviour: Behaviour) -> str:
        return "tool_use" if isinstance(behaviour, CallTool) else "end_turn"

    def _reply_body(self, behaviour: Reply | CallTool, call: _Call) -> Any:
        block: dict[str, Any]
        if isinstance(behaviour, Reply):
            block = {"type": "text", "text": behaviour.text}
        else:
            block = {
                "type": "tool_use",
                "id": behaviour.call_id,
                "name": behaviour.name,
                "input": dict(behaviour.arguments),
            }
        return {
            "id": f"msg_{call.number}",
            "type": "message",
            "role": "assistant",
            "model": call.model,
            "content": [block],
            "stop_reason": self._stop_reason(behaviour),
            "stop_sequence": None,
            "usage": self._usage(*_tokens(behaviour)),
        }

    def _preamble(self, behaviour: Behaviour, call: _Call) -> list[bytes]:
        message: dict[str, Any] = {
            "id": f"msg_{call.number}",
            "type": "message",
            "role": "assistant",
            "content": [],
            "model": call.model,
            "stop_reason": None,
            "stop_sequence": None,
            "usage": self._usage(_tokens(behaviour)[0], 1),
        }
        return [
            _sse({"type": "message_start", "message": message}, event="message_start"),
            _sse({"type": "ping"}, event="ping"),
        ]

    def _text(self, pieces: list[str], call: _Call) -> list[bytes]:
        if not pieces:
            return []
        start = {
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "text", "text": ""},
        }
        frames = [_sse(start, event="content_block_start")]
        for piece in pieces:
            delta = {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": piece},
            }
            frames.append(_sse(delta, event="content_block_delta"))
        frames.append(_sse({"type": "content_block_stop", "index": 0}, event="content_block_stop"))
        return frames

    def _tool(self, behaviour: CallTool, call: _Call) -> list[bytes]:
        block = {"type": "tool_use", "id": behaviour.call_id, "name": behaviour.name, "input": {}}
        start = {"type": "content_block_start", "index": 0, "content_block": block}
        frames = [_sse(start, event="content_block_start")]
        for piece in _thirds(json.dumps(behaviour.arguments, ensure_ascii=False)):
            delta = {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "input_json_delta", "partial_json": piece},
            }
            frames.append(_sse(delta, event="content_block_delta"))
        frames.append(_sse({"type": "content_block_stop", "index": 0}, event="content_block_stop"))
        return frames

    def _ending(self, behaviour: Reply | CallTool, call: _Call) -> list[bytes]:
        delta = {
            "type": "message_delta",
            "delta": {"stop_reason": self._stop_reason(behaviour), "stop_sequence": None},
            "usage": {"output_tokens": behaviour.output_tokens},
        }
        return [
            _sse(delta, event="message_delta"),
            _sse({"type": "message_stop"}, event="message_stop"),
        ]

    def _error_event(self, status: int, call: _Call) -> list[bytes]:
        return [_sse(self._error_body(status, call), event="error")]


# --------------------------------------------------------------------------- Gemini

# status -> (google.rpc status, message), as the Gemini API sends them (providers.md 6.5).
_GEMINI_ERRORS: Mapping[int, tuple[str, str]] = {
    400: ("INVALID_ARGUMENT", "Request contains an invalid argument."),
    401: (
        "UNAUTHENTICATED",
        "Request had invalid authentication credentials. Expected OAuth 2 access token, "
        "login cookie or other valid authentication credential.",
    ),
    403: ("PERMISSION_DENIED", "The caller does not have permission"),
    404: (
        "NOT_FOUND",
        "models/{model} is not found for API version v1beta, or is not supported for "
        "generateContent. Call ListModels to see the list of available models and their "
        "supported methods.",
    ),
    429: ("RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota)."),
    500: (
        "INTERNAL",
        "An internal error has occurred. Please retry or report in "
        "https://developers.generativeai.google/guide/troubleshooting",
    ),
    503: ("UNAVAILABLE", "The model is overloaded. Please try again later."),
    504: ("DEADLINE_EXCEEDED", "Deadline expired before operation could complete."),
}


class GeminiWire(Wire):
    """Gemini: model and method in the path, `x-goog-api-key`, SSE with CRLF, no sentinel.

    A bad key is answered as Gemini does: 400 INVALID_ARGUMENT with `API_KEY_INVALID`.
    """

    name = "gemini"
    route = "/v1beta/models/{target}"
    scheme = "gemini+http"
    base_path = "/v1beta"
    _bad_key_status = 400

    def prompt(self, recorded: Recorded) -> str:
        """The text parts of the last content."""
        parts = recorded.body["contents"][-1]["parts"]
        return "".join(part.get("text", "") for part in parts)

    def _model(self, request: web.Request, body: Any) -> str:
        return request.match_info["target"].partition(":")[0]

    def _is_stream(self, request: web.Request, body: Any) -> bool:
        return request.match_info["target"].endswith(":streamGenerateContent")

    def _authorised(self, recorded: Recorded) -> bool:
        # The key belongs in the header; `?key=` would leak it into logs.
        return recorded.headers.get("x-goog-api-key") == self.key and "key" not in recorded.query

    def _bad_key(self, call: _Call) -> Any:
        return {
            "error": {
                "code": 400,
                "message": "API key not valid. Please pass a valid API key.",
                "status": "INVALID_ARGUMENT",
                "details": [
                    {
                        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                        "reason": "API_KEY_INVALID",
                        "domain": "googleapis.com",
                        "metadata": {"service": "generativelanguage.googleapis.com"},
                    }
                ],
            }
        }

    def _error_body(self, status: int, call: _Call) -> Any:
        rpc, message = _GEMINI_ERRORS.get(status, _GEMINI_ERRORS[500])
        return {
            "error": {"code": status, "message": message.format(model=call.model), "status": rpc}
        }

    def _usage(self, behaviour: Behaviour) -> dict[str, int]:
        prompt, candidates = _tokens(behaviour)
        return {
            "promptTokenCount": prompt,
            "candidatesTokenCount": candidates,
            "totalTokenCount": prompt + candidates,
        }

    def _chunk(self, call: _Call, parts: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
        if "finishReason" in extra:
            candidate["finishReason"] = extra.pop("finishReason")
        return {
            "candidates": [candidate],
            **extra,
            "modelVersion": call.model,
            "responseId": call.request_id,
        }

    @staticmethod
    def _parts(behaviour: Reply | CallTool) -> list[dict[str, Any]]:
        if isinstance(behaviour, Reply):
            return [{"text": behaviour.text}]
        return [{"functionCall": {"name": behaviour.name, "args": dict(behaviour.arguments)}}]

    def _reply_body(self, behaviour: Reply | CallTool, call: _Call) -> Any:
        # Gemini has no tool-call finish reason: a reply that calls a tool ends with STOP.
        return self._chunk(
            call,
            self._parts(behaviour),
            finishReason="STOP",
            usageMetadata=self._usage(behaviour),
        )

    def _text(self, pieces: list[str], call: _Call) -> list[bytes]:
        return [_sse(self._chunk(call, [{"text": piece}]), eol="\r\n") for piece in pieces]

    def _tool(self, behaviour: CallTool, call: _Call) -> list[bytes]:
        # The Developer API sends a function call whole, in one chunk.
        return [_sse(self._chunk(call, self._parts(behaviour)), eol="\r\n")]

    def _ending(self, behaviour: Reply | CallTool, call: _Call) -> list[bytes]:
        last = self._chunk(
            call, [{"text": ""}], finishReason="STOP", usageMetadata=self._usage(behaviour)
        )
        return [_sse(last, eol="\r\n")]

    def _error_event(self, status: int, call: _Call) -> list[bytes]:
        return [_sse(self._error_body(status, call), eol="\r\n")]


# --------------------------------------------------------------------------- Ollama

# status -> the `error` text Ollama sends (providers.md 7.5; server/routes.go, sched.go).
_OLLAMA_ERRORS: Mapping[int, str] = {
    400: "invalid options: temperature",
    401: "unauthorized",
    404: "model '{model}' not found",
    429: "too many requests, please retry later",
    500: "llama runner process has terminated: exit status 2",
    502: "bad gateway: the cloud model is unreachable",
    503: "server busy, please try again.  maximum pending requests exceeded",
}

_CREATED_AT = "2030-01-01T00:00:00.000Z"


class OllamaWire(Wire):
    """Ollama's native `/api/chat`: streams by default, NDJSON ending with `"done": true`."""

    name = "ollama"
    route = "/api/chat"
    scheme = "ollama+http"
    stream_content_type = "application/x-ndjson"

    def prompt(self, recorded: Recorded) -> str:
        """The last message's content."""
        return str(recorded.body["messages"][-1]["content"])

    def _is_stream(self, request: web.Request, body: Any) -> bool:
        # Ollama streams unless told `"stream": false`.
        return not (isinstance(body, dict) and body.get("stream") is False)

    def _error_body(self, status: int, call: _Call) -> Any:
        return {"error": _OLLAMA_ERRORS.get(status, _OLLAMA_ERRORS[500]).format(model=call.model)}

    @staticmethod
    def _message(content: str, behaviour: Behaviour | None = None) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": content}
        if isinstance(behaviour, CallTool):
            call = {"function": {"name": behaviour.name, "arguments": dict(behaviour.arguments)}}
            message["tool_calls"] = [call]
        return message

    def _final(self, behaviour: Behaviour, call: _Call, message: dict[str, Any]) -> dict[str, Any]:
        prompt, output = _tokens(behaviour)
        return {
            "model": call.model,
            "created_at": _CREATED_AT,
            "message": message,
            "done": True,
            "done_reason": "stop",  # tool calls end with "stop" too
            "total_duration": 812_000_000,
            "prompt_eval_count": prompt,
            "eval_count": output,
        }

    def _reply_body(self, behaviour: Reply | CallTool, call: _Call) -> Any:
        text = behaviour.text if isinstance(behaviour, Reply) else ""
        return self._final(behaviour, call, self._message(text, behaviour))

    def _line(self, call: _Call, message: dict[str, Any]) -> bytes:
        return _ndjson(
            {"model": call.model, "created_at": _CREATED_AT, "message": message, "done": False}
        )

    def _text(self, pieces: list[str], call: _Call) -> list[bytes]:
        return [self._line(call, self._message(piece)) for piece in pieces]

    def _tool(self, behaviour: CallTool, call: _Call) -> list[bytes]:
        return [self._line(call, self._message("", behaviour))]

    def _ending(self, behaviour: Reply | CallTool, call: _Call) -> list[bytes]:
        return [_ndjson(self._final(behaviour, call, self._message("")))]

    def _error_event(self, status: int, call: _Call) -> list[bytes]:
        return [_ndjson(self._error_body(status, call))]
