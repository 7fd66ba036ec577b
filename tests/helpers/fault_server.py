"""An OpenAI-compatible fault server: chat completions that misbehave on command.

A real `aiohttp.web` server on 127.0.0.1 (an ephemeral port, via `servers.serve`) that
speaks `POST /v1/chat/completions` as OpenAI does: Server-Sent Events for `"stream":
true` (a role chunk, content chunks, a `finish_reason` chunk, the usage chunk when
`stream_options.include_usage` asks for it, `data: [DONE]`), a `chat.completion` JSON
object otherwise, and OpenAI's error bodies and headers (`x-request-id`,
`x-ratelimit-*`, `retry-after` on a 429).

Each request gets one `Behaviour`: the next one of the script (`FaultServer.script`),
else the default. The behaviours are the ways real providers misbehave:

| behaviour                     | streamed request                                    |
|-------------------------------|-----------------------------------------------------|
| `answer(text, chunk_delay)`   | a healthy stream, `chunk_delay` s before each piece |
| `silent()`                    | no headers, ever                                    |
| `headers_then_silence()`      | 200 and the SSE headers, then nothing               |
| `slow_first_token(delay)`     | the headers, `delay` s of nothing, a healthy stream |
| `stall_after(n, "close")`     | n content chunks, then a cut body (a reset)         |
| `stall_after(n, "hang")`      | n content chunks, then nothing                      |
| `no_done()`                   | a whole stream without `data: [DONE]`               |
| `cut_without_finish(n)`       | n content chunks, then a clean end of the body      |
| `rate_limited(retry_after)`   | 429, `retry-after`, OpenAI's rate-limit error body  |
| `status(code)`                | `code` with OpenAI's error body for it              |
| `reset()`                     | the connection reset before any header              |

Each behaviour's docstring says what a non-streamed request gets. `FaultServer.down()`
makes every request get `reset()` until `FaultServer.up()`.

Every request is recorded (`FaultRequest`: arrival time, streamed or not, the behaviour
served, the parsed JSON body). Leaving `fault_server()` stops the server and cancels the
handlers still stalling, in well under a second.

```python
async with fault_server(default=answer("Hello there")) as server:
    server.script(rate_limited(retry_after=3), silent())
    async with Registry(env={"LLM_FAULT": server.dsn}) as registry:
        model = registry.parse("fault/gpt-4o-mini")
        ...
    assert server.count == 3
```
"""

from __future__ import annotations

import asyncio
import json
import secrets
import string
import time
from collections import deque
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, Final, Literal, TypeAlias, get_args
from urllib.parse import urlencode

import attrs
from aiohttp import web

from .servers import abort_connection, serve, sleep_forever

__all__ = [
    "CHAT_PATH",
    "DEFAULT_TEXT",
    "Behaviour",
    "FaultRequest",
    "FaultServer",
    "Kind",
    "Then",
    "answer",
    "cut_without_finish",
    "fault_server",
    "headers_then_silence",
    "no_done",
    "rate_limited",
    "reset",
    "silent",
    "slow_first_token",
    "split_text",
    "stall_after",
    "status",
]

CHAT_PATH: Final = "/v1/chat/completions"
"""The one endpoint the server speaks."""

DEFAULT_TEXT: Final = "one two three"
"""The answer's text unless a behaviour names another."""

Kind: TypeAlias = Literal[
    "answer",
    "silent",
    "headers_then_silence",
    "slow_first_token",
    "stall_after",
    "no_done",
    "cut_without_finish",
    "rate_limited",
    "status",
    "reset",
]
Then: TypeAlias = Literal["close", "hang"]

_KINDS: Final = frozenset(get_args(Kind))
_THENS: Final = frozenset(get_args(Then))


def _non_negative(_instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if value < 0:
        raise ValueError(f"{attribute.name} must be >= 0, got {value!r}")


def _one_of(allowed: frozenset[str]) -> Any:
    def check(_instance: object, attribute: attrs.Attribute[Any], value: str) -> None:
        if value not in allowed:
            raise ValueError(f"{attribute.name} must be one of {sorted(allowed)}, got {value!r}")

    return check


# --------------------------------------------------------------------------- behaviours


@attrs.frozen
class Behaviour:
    """What ONE request gets. Build it with the functions below (`answer()`, ...)."""

    kind: Kind = attrs.field(validator=_one_of(_KINDS))
    text: str = DEFAULT_TEXT
    """The answer's text, split on spaces into content chunks (see `split_text`)."""
    chunk_delay: float = attrs.field(default=0.0, validator=_non_negative)
    """Seconds of nothing before each content chunk."""
    delay: float = attrs.field(default=0.0, validator=_non_negative)
    """`slow_first_token`: seconds of nothing after the headers."""
    events: int = attrs.field(default=0, validator=_non_negative)
    """`stall_after`, `cut_without_finish`: content chunks sent before the fault."""
    then: Then = attrs.field(default="close", validator=_one_of(_THENS))
    """`stall_after`: "close" (a reset) or "hang" (silence) after the chunks."""
    status: int = 200
    """`status`, `rate_limited`: the HTTP status of the error."""
    retry_after: float | None = None
    """`rate_limited`: the `retry-after` header, in seconds."""
    message: str | None = None
    """`status`: the error message (default: OpenAI's for the status)."""
    error_type: str | None = None
    """`status`: the error's `type` (default: OpenAI's for the status)."""
    error_code: str | None = None
    """`status`: the error's `code` (default: OpenAI's for the status)."""

    @property
    def pieces(self) -> list[str]:
        """The content chunks of `text`."""
        return split_text(self.text)


def split_text(text: str) -> list[str]:
    """`text` as OpenAI-like content pieces: split on spaces, each later piece keeps its
    leading space ("one two" -> ["one", " two"]), so the pieces join back to `text`."""
    if not text:
        return []
    first, *rest = text.split(" ")
    return [first, *(" " + word for word in rest)]


def answer(text: str = DEFAULT_TEXT, chunk_delay: float = 0.0) -> Behaviour:
    """A healthy reply.

    Streamed: the role chunk at once, then one content chunk per piece of `text`, each
    after `chunk_delay` seconds, the finish chunk, the usage chunk (if asked), `[DONE]`.
    Non-streamed: the `chat.completion` after `chunk_delay` seconds per piece.
    """
    return Behaviour("answer", text=text, chunk_delay=chunk_delay)


def silent() -> Behaviour:
    """Accept the connection and the request, then send nothing, not even headers."""
    return Behaviour("silent")


def headers_then_silence() -> Behaviour:
    """Streamed: 200 and the SSE headers (flushed), then nothing. Non-streamed: as
    `silent()` (a JSON reply's headers come with its body)."""
    return Behaviour("headers_then_silence")


def slow_first_token(
    delay: float, *, text: str = DEFAULT_TEXT, chunk_delay: float = 0.0
) -> Behaviour:
    """Streamed: the headers at once, nothing for `delay` seconds (OpenAI sends the role
    chunk only when generation starts), then a healthy stream as `answer()`.
    Non-streamed: `answer()`, `delay` seconds late."""
    return Behaviour("slow_first_token", text=text, chunk_delay=chunk_delay, delay=delay)


def stall_after(
    events: int,
    then: Then = "close",
    *,
    text: str = DEFAULT_TEXT,
    chunk_delay: float = 0.0,
) -> Behaviour:
    """A healthy stream that stops after `events` content chunks (at most every piece of
    `text`), before any finish_reason.

    `then="close"`: the connection is reset without the chunked body's terminator (the
    client gets `aiohttp.ClientPayloadError`; what was sent reaches it first).
    `then="hang"`: the connection stays open, silent, until the server stops.
    Non-streamed: the headers (with the whole body's Content-Length) and half of the
    JSON body, then the same reset or silence.
    """
    return Behaviour("stall_after", text=text, chunk_delay=chunk_delay, events=events, then=then)


def no_done(*, text: str = DEFAULT_TEXT, chunk_delay: float = 0.0) -> Behaviour:
    """Streamed: the whole stream, finish_reason "stop" and the usage chunk (if asked)
    included, then a clean end of the body without `data: [DONE]`. Non-streamed: as
    `answer()` (a JSON reply has no sentinel)."""
    return Behaviour("no_done", text=text, chunk_delay=chunk_delay)


def cut_without_finish(events: int, *, text: str = DEFAULT_TEXT) -> Behaviour:
    """Streamed: the role chunk and `events` content chunks, then a clean end of the body
    (no finish_reason, no usage, no `[DONE]`). Non-streamed: a `chat.completion` of the
    first `events` pieces with `finish_reason: null`."""
    return Behaviour("cut_without_finish", text=text, events=events)


def rate_limited(retry_after: float = 3) -> Behaviour:
    """429 with `retry-after: <retry_after>` (seconds), exhausted `x-ratelimit-*` headers
    and OpenAI's request rate-limit body (`type: "requests"`, `code:
    "rate_limit_exceeded"`), whether streamed or not."""
    return Behaviour("rate_limited", status=429, retry_after=retry_after)


def status(
    code: int,
    message: str | None = None,
    *,
    error_type: str | None = None,
    error_code: str | None = None,
) -> Behaviour:
    """HTTP `code` with an OpenAI error body, whether streamed or not. The message, type
    and code default to what OpenAI sends with that status (503: "The engine is currently
    overloaded...", `server_is_overloaded`); with a `message` of its own, the code is
    `error_code` (default null)."""
    if not 400 <= code <= 599:
        raise ValueError(f"status() takes an error status (400-599), got {code}")
    return Behaviour(
        "status", status=code, message=message, error_type=error_type, error_code=error_code
    )


def reset() -> Behaviour:
    """Reset the TCP connection (RST) once the request arrived, before any header."""
    return Behaviour("reset")


# --------------------------------------------------------------------------- records


@attrs.frozen
class FaultRequest:
    """One request the server received."""

    at: float
    """Arrival (`time.monotonic()`), before the body was read."""
    stream: bool
    """The body asked for a stream (`"stream": true`)."""
    behaviour: Behaviour
    """What the request got (`reset()` while the server was down)."""
    body: Any
    """The parsed JSON body (None if it was empty or not JSON)."""
    path: str = CHAT_PATH
    headers: Mapping[str, str] = attrs.field(factory=dict)
    """The request headers, names lower-cased."""


# --------------------------------------------------------------------------- the wire

_FINGERPRINT: Final = "fp_f4ae844694"
_ALPHANUM: Final = string.ascii_letters + string.digits
_DEFAULT_MODEL: Final = "gpt-4o-mini"

_JSON: Final = "application/json"
_SSE: Final = "text/event-stream; charset=utf-8"

# OpenAI's error (message, type, code) by status; "{model}" is the requested model.
_ERRORS: Final[Mapping[int, tuple[str, str, str | None]]] = {
    400: (
        "Invalid value for 'temperature': expected a number between 0 and 2.",
        "invalid_request_error",
        "invalid_value",
    ),
    401: (
        "Incorrect API key provided: sk-fault****. You can find your API key at "
        "https://platform.openai.com/account/api-keys.",
        "invalid_request_error",
        "invalid_api_key",
    ),
    403: (
        "Country, region, or territory not supported",
        "request_forbidden",
        "unsupported_country_region_territory",
    ),
    404: (
        "The model `{model}` does not exist or you do not have access to it.",
        "invalid_request_error",
        "model_not_found",
    ),
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
_BAD_JSON: Final = (
    "We could not parse the JSON body of your request. (HINT: This likely means you "
    "aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, "
    "but what was sent was not valid JSON. If you have trouble figuring out how to fix "
    "this, please contact us through our help center at help.openai.com.)"
)


def _random(length: int) -> str:
    return "".join(secrets.choice(_ALPHANUM) for _ in range(length))


def _prompt_tokens(body: Mapping[str, Any]) -> int:
    """A rough token count of the messages: their words, plus 4 per message."""
    messages = body.get("messages")
    if not isinstance(messages, list):
        return 1
    words = 0
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            words += len(content.split())
        elif isinstance(content, list):
            words += sum(
                len(str(part.get("text", "")).split()) for part in content if isinstance(part, dict)
            )
    return words + 4 * len(messages) or 1


def _encode(data: Any) -> bytes:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()


async def _settle() -> None:
    """Let a client on this loop (or another process) take in what was written so far.

    A client that sees a reset (or an unfinished body) raises at once and drops the
    bytes it had received but not handed out; so before cutting a connection, the server
    lets the loop turn and waits a few milliseconds.
    """
    for _ in range(8):
        await asyncio.sleep(0)
    await asyncio.sleep(0.01)


@attrs.define
class _Exchange:
    """One request being answered: what its reply must say, and how to say it."""

    request: web.Request
    body: Mapping[str, Any]
    stream: bool
    model: str
    include_usage: bool
    prompt_tokens: int
    completion_id: str = attrs.Factory(lambda: "chatcmpl-" + _random(29))
    request_id: str = attrs.Factory(lambda: "req_" + secrets.token_hex(16))
    created: int = attrs.Factory(lambda: int(time.time()))

    @classmethod
    def of(cls, request: web.Request, body: Any) -> _Exchange:
        fields: Mapping[str, Any] = body if isinstance(body, dict) else {}
        options = fields.get("stream_options")
        model = fields.get("model")
        return cls(
            request,
            fields,
            stream=fields.get("stream") is True,
            model=model if isinstance(model, str) and model else _DEFAULT_MODEL,
            include_usage=isinstance(options, dict) and options.get("include_usage") is True,
            prompt_tokens=_prompt_tokens(fields),
        )

    # ------------------------------------------------------------- headers

    def headers(self, content_type: str, **extra: str) -> dict[str, str]:
        """OpenAI's response headers (with healthy rate-limit counters unless `extra`
        says otherwise)."""
        return {
            "Content-Type": content_type,
            "x-request-id": self.request_id,
            "openai-version": "2020-10-01",
            "openai-organization": "user-fault",
            "openai-processing-ms": "12",
            "access-control-expose-headers": "X-Request-ID",
            "x-ratelimit-limit-requests": "10000",
            "x-ratelimit-limit-tokens": "200000",
            "x-ratelimit-remaining-requests": "9999",
            "x-ratelimit-remaining-tokens": str(200000 - self.prompt_tokens),
            "x-ratelimit-reset-requests": "6ms",
            "x-ratelimit-reset-tokens": "3ms",
            **extra,
        }

    # ------------------------------------------------------------- bodies

    def chunk(self, delta: Mapping[str, Any], finish_reason: str | None = None) -> bytes:
        """One `chat.completion.chunk` SSE event."""
        data: dict[str, Any] = {
            "id": self.completion_id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "service_tier": "default",
            "system_fingerprint": _FINGERPRINT,
            "choices": [
                {"index": 0, "delta": dict(delta), "logprobs": None, "finish_reason": finish_reason}
            ],
        }
        if self.include_usage:
            data["usage"] = None
        return b"data: " + _encode(data) + b"\n\n"

    def usage_chunk(self, completion_tokens: int) -> bytes:
        """The last chunk of a stream that asked for usage: no choices, the usage."""
        data = {
            "id": self.completion_id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "service_tier": "default",
            "system_fingerprint": _FINGERPRINT,
            "choices": [],
            "usage": self.usage(completion_tokens),
        }
        return b"data: " + _encode(data) + b"\n\n"

    def usage(self, completion_tokens: int) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": self.prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }

    def completion(self, pieces: Sequence[str], finish_reason: str | None) -> bytes:
        """A non-streamed `chat.completion` of `pieces`."""
        message: dict[str, Any] = {
            "role": "assistant",
            "content": "".join(pieces),
            "refusal": None,
            "annotations": [],
        }
        return _encode(
            {
                "id": self.completion_id,
                "object": "chat.completion",
                "created": self.created,
                "model": self.model,
                "choices": [
                    {
                        "index": 0,
                        "message": message,
                        "logprobs": None,
                        "finish_reason": finish_reason,
                    }
                ],
                "usage": self.usage(len(pieces)),
                "service_tier": "default",
                "system_fingerprint": _FINGERPRINT,
            }
        )

    def error(
        self,
        status: int,
        message: str,
        error_type: str,
        code: str | None,
        **headers: str,
    ) -> web.Response:
        """An OpenAI error response."""
        body = {"error": {"message": message, "type": error_type, "param": None, "code": code}}
        return web.Response(
            status=status,
            body=_encode(body),
            headers=self.headers("application/json; charset=utf-8", **headers),
        )


# --------------------------------------------------------------------------- the server


class FaultServer:
    """A running fault server; see `fault_server()`.

    Args:
        default: what a request gets when the script is empty.
    """

    def __init__(self, default: Behaviour | None = None) -> None:
        self._default = default if default is not None else answer()
        self._script: deque[Behaviour] = deque()
        self._down = False
        self._url: str | None = None
        self.requests: list[FaultRequest] = []
        """Every request received, in order of arrival."""
        # Handlers still running: aiohttp does not cancel a handler whose client left,
        # so the ones that stall are cancelled when the server stops.
        self._handlers: set[asyncio.Task[Any]] = set()

    # ------------------------------------------------------------- control

    @property
    def url(self) -> str:
        """The base URL, "http://127.0.0.1:PORT" (only while the server runs)."""
        if self._url is None:
            raise RuntimeError("the fault server is not running")
        return self._url

    @property
    def dsn(self) -> str:
        """The library's DSN for this server, "openai+http://127.0.0.1:PORT" (the provider
        adds the `/v1` path): `Registry(env={"LLM_FAULT": server.dsn})`."""
        return "openai+http://" + self.url.partition("://")[2]

    def dsn_with(self, **query: float | str) -> str:
        """`dsn` with query keys, such as the provider's timeouts:
        `server.dsn_with(headers=0.2, idle=0.2)`."""
        return f"{self.dsn}?{urlencode(query)}" if query else self.dsn

    @property
    def default(self) -> Behaviour:
        """What a request gets when the script is empty."""
        return self._default

    def set_default(self, behaviour: Behaviour) -> None:
        """Serve `behaviour` to every request the script does not cover."""
        self._default = behaviour

    def script(self, *behaviours: Behaviour) -> None:
        """The next requests get `behaviours`, in order, then the default. Replaces what
        was left of an earlier script."""
        self._script = deque(behaviours)

    @property
    def pending(self) -> tuple[Behaviour, ...]:
        """What is left of the script."""
        return tuple(self._script)

    @property
    def count(self) -> int:
        """The number of requests received."""
        return len(self.requests)

    def down(self) -> None:
        """Reset every connection that brings a request, until `up()`. Requests are still
        recorded (with `reset()` as their behaviour); the script does not advance."""
        self._down = True

    def up(self) -> None:
        """Serve requests again (after `down()`)."""
        self._down = False

    @property
    def is_down(self) -> bool:
        """True between `down()` and `up()`."""
        return self._down

    # ------------------------------------------------------------- lifetime

    @asynccontextmanager
    async def running(self) -> AsyncIterator[FaultServer]:
        """Serve on 127.0.0.1 until the block ends; then cancel the stalled handlers."""
        if self._url is not None:
            raise RuntimeError("the fault server is already running")
        try:
            routes = {CHAT_PATH: self._handle, "/{tail:.*}": self._handle}
            async with serve(routes) as url:
                self._url = url
                yield self
        finally:
            self._url = None
            await self._stop_handlers()

    async def _stop_handlers(self) -> None:
        handlers = list(self._handlers)
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)

    # ------------------------------------------------------------- dispatch

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            return await self._dispatch(request)
        finally:
            self._handlers.discard(task)

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        arrived = time.monotonic()
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        exchange = _Exchange.of(request, body)
        if self._down:
            behaviour = reset()
        elif request.method != "POST" or request.path != CHAT_PATH:
            behaviour = status(
                404, f"Invalid URL ({request.method} {request.path})", error_code=None
            )
        elif not isinstance(body, dict):
            behaviour = status(400, _BAD_JSON, error_code=None)
        else:
            behaviour = self._script.popleft() if self._script else self._default
        self.requests.append(
            FaultRequest(
                arrived,
                exchange.stream,
                behaviour,
                body,
                request.path,
                {name.lower(): value for name, value in request.headers.items()},
            )
        )
        return await _serve(exchange, behaviour)


async def _serve(exchange: _Exchange, behaviour: Behaviour) -> web.StreamResponse:
    """Answer `exchange` as `behaviour` says."""
    kind = behaviour.kind
    if kind == "reset":
        abort_connection(exchange.request)
        # Nothing can be sent now; the handler must end (the server would not cancel it:
        # the connection is no longer its own).
        return web.Response()
    if kind == "silent" or (kind == "headers_then_silence" and not exchange.stream):
        await sleep_forever()
    if kind == "rate_limited":
        return _rate_limited(exchange, behaviour)
    if kind == "status":
        return _status(exchange, behaviour)
    if exchange.stream:
        return await _stream(exchange, behaviour)
    return await _json(exchange, behaviour)


def _rate_limited(exchange: _Exchange, behaviour: Behaviour) -> web.Response:
    retry_after = behaviour.retry_after if behaviour.retry_after is not None else 0.0
    seconds = f"{retry_after:g}"
    message = (
        f"Rate limit reached for {exchange.model} in organization org-fault on requests per "
        f"min (RPM): Limit 500, Used 500, Requested 1. Please try again in {seconds}s. Visit "
        "https://platform.openai.com/account/rate-limits to learn more."
    )
    return exchange.error(
        429,
        message,
        "requests",
        "rate_limit_exceeded",
        **{
            "retry-after": seconds,
            "x-ratelimit-limit-requests": "500",
            "x-ratelimit-remaining-requests": "0",
            "x-ratelimit-reset-requests": f"{seconds}s",
        },
    )


def _status(exchange: _Exchange, behaviour: Behaviour) -> web.Response:
    code = behaviour.status
    default_message, default_type, default_code = _ERRORS.get(
        code,
        (
            f"HTTP {code}",
            "server_error" if code >= 500 else "invalid_request_error",
            None,
        ),
    )
    return exchange.error(
        code,
        behaviour.message or default_message.format(model=exchange.model),
        behaviour.error_type or default_type,
        behaviour.error_code if behaviour.message or behaviour.error_code else default_code,
    )


async def _stream(exchange: _Exchange, behaviour: Behaviour) -> web.StreamResponse:
    """A streamed reply: SSE chunks as `behaviour` says."""
    request, kind = exchange.request, behaviour.kind
    response = web.StreamResponse(status=200, headers=exchange.headers(_SSE))
    await response.prepare(request)  # a StreamResponse sends its headers here
    if kind == "headers_then_silence":
        await sleep_forever()
    if kind == "slow_first_token":
        await asyncio.sleep(behaviour.delay)
    pieces = behaviour.pieces
    if kind in ("stall_after", "cut_without_finish"):
        pieces = pieces[: behaviour.events]
    await response.write(exchange.chunk({"role": "assistant", "content": ""}))
    for piece in pieces:
        if behaviour.chunk_delay:
            await asyncio.sleep(behaviour.chunk_delay)
        await response.write(exchange.chunk({"content": piece}))
    if kind == "stall_after":
        return await _end_badly(response, request, behaviour.then)
    if kind != "cut_without_finish":
        await response.write(exchange.chunk({}, "stop"))
        if exchange.include_usage:
            await response.write(exchange.usage_chunk(len(pieces)))
        if kind != "no_done":
            await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    return response


async def _json(exchange: _Exchange, behaviour: Behaviour) -> web.StreamResponse:
    """A non-streamed reply: a `chat.completion` as `behaviour` says."""
    kind, pieces = behaviour.kind, behaviour.pieces
    if kind == "cut_without_finish":
        return _json_response(exchange, exchange.completion(pieces[: behaviour.events], None))
    await asyncio.sleep(behaviour.delay + behaviour.chunk_delay * len(pieces))
    data = exchange.completion(pieces, "stop")
    if kind != "stall_after":
        return _json_response(exchange, data)
    response = web.StreamResponse(status=200, headers=exchange.headers(_JSON))
    response.content_length = len(data)
    await response.prepare(exchange.request)
    await response.write(data[: len(data) // 2])
    return await _end_badly(response, exchange.request, behaviour.then)


def _json_response(exchange: _Exchange, data: bytes) -> web.Response:
    return web.Response(status=200, body=data, headers=exchange.headers(_JSON))


async def _end_badly(
    response: web.StreamResponse, request: web.Request, then: Then
) -> web.StreamResponse:
    """Leave a body unfinished: reset the connection, or hang until the server stops."""
    if then == "hang":
        await sleep_forever()
    await _settle()
    abort_connection(request)
    return response  # the handler must end: see `reset()` in `_serve`


@asynccontextmanager
async def fault_server(default: Behaviour | None = None) -> AsyncIterator[FaultServer]:
    """A `FaultServer` on 127.0.0.1 for the block; `default` (else `answer()`) is what a
    request gets when the script is empty. Leaving the block stops the server and cancels
    every handler still stalling."""
    server = FaultServer(default)
    async with server.running():
        yield server
