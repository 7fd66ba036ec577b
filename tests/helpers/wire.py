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
`Drop`, `Stall`, and the faults below); each format renders it in its own wire shape, so
one script drives any of the four.

Faults, for the fault matrix (`tests/test_fault_matrix.py`); generate / stream:

- `Quota`, `ContextTooLong`: the provider's own 429 quota (spend cap) or 400
  context-length body.
- `Blocked`: the provider's content-policy refusal (Gemini: a 200 with `blockReason`).
- `HTMLError`: a proxy's HTML error page, padded to `size` bytes if asked.
- `Reset`: half the JSON body / text deltas, then a reset (or, `graceful`, a FIN).
- `Silence`: the headers, then nothing. `Slow`: the answer after a delay.
- `Malformed`: a body that is not JSON / text deltas, then an event that is not JSON.
- `NoSentinel`: the reply / the whole answer without its terminal signal.
- `BadUTF8`: invalid UTF-8 in the reply's text / in a text event.
- `Huge`: a reply / one text event of `size` bytes.
- `DoneThenSilence`: the reply / the whole stream, then the body stays open.
- `InBandError`: a 200 whose body is an error object / an error event in the stream.
- `Fail(429, retry_after=2, as_date=True)`: Retry-After as an HTTP-date.

Every request is recorded (`Recorded`: parsed JSON body, lower-cased
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

import asyncio
import email.utils
import itertools
import json
import math
import re
import ssl
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, ClassVar, Literal, TypeAlias
from urllib.parse import quote

import anyio.lowlevel
import attrs
from aiohttp import web

from .servers import abort_connection, serve, sleep_forever

__all__ = [
    "AnthropicWire",
    "BadUTF8",
    "Behaviour",
    "Blocked",
    "CallTool",
    "ContextTooLong",
    "DoneThenSilence",
    "Drop",
    "ErrorEvent",
    "Fail",
    "GeminiWire",
    "HTMLError",
    "Huge",
    "InBandError",
    "Malformed",
    "NoSentinel",
    "OllamaWire",
    "OpenAIWire",
    "Quota",
    "Recorded",
    "Reply",
    "Reset",
    "Silence",
    "Slow",
    "Stall",
    "Truncate",
    "Wire",
    "awkward_chunks",
    "http_date",
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

    `retry_after` (seconds) is sent as a `Retry-After` header: as a number, or with
    `as_date` as the HTTP-date that many seconds from now, rounded up to a whole second
    (so the wait a client reads from it is at most one second longer).
    """

    status: int
    retry_after: float | None = None
    as_date: bool = False


@attrs.frozen
class ErrorEvent:
    """Stream: 200, the preamble, `text` deltas, then an in-band error event of the kind
    `Fail(status)` would answer, and the end of the body. Generate: `Fail(status)`."""

    status: int
    text: str = ""


@attrs.frozen
class InBandError:
    """An error inside a successful reply. Generate: 200 with the provider's error object
    (the one `Fail(status)` would send) as the whole JSON body. Stream: as `ErrorEvent`."""

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
    Generate: no headers until the server stops; with `partial_body`, the headers and
    half of the JSON body, then silence."""

    text: str = ""
    partial_body: bool = False


@attrs.frozen
class Quota:
    """429 meaning the quota or spend cap is exhausted (not a rate limit), in the
    provider's own words: OpenAI `insufficient_quota`, Anthropic's spend limit, a Gemini
    per-day quota, Ollama's usage limit."""


@attrs.frozen
class ContextTooLong:
    """400: the prompt does not fit the model's context window, in the provider's words."""


@attrs.frozen
class Blocked:
    """The prompt refused on content-policy grounds, the provider's way: a 400 (OpenAI
    `invalid_prompt`, Anthropic's content filtering policy, a moderating proxy in front
    of Ollama), or Gemini's 200 reply (or stream chunk) with `promptFeedback.blockReason`."""


@attrs.frozen
class HTMLError:
    """`status` with an HTML page for a body, as a proxy or load balancer sends it.

    `size` pads the page to at least that many bytes (a huge error body).
    """

    status: int = 502
    size: int = 0


@attrs.frozen
class Reset:
    """Stream: 200, the preamble and `text` deltas, then the connection is reset.
    Generate: 200 and half of the JSON body (Content-Length promises all of it), then
    the reset. With `graceful` the server closes the connection (a FIN) instead: the
    body just stops short, with no chunked terminator."""

    text: str = ""
    graceful: bool = False


@attrs.frozen
class Silence:
    """200 headers, then nothing at all until the server stops (both modes)."""


@attrs.frozen
class Slow:
    """Answer `reply` late: stream, the headers at once and the first body bytes after
    `delay` seconds; generate, the whole reply after `delay` seconds."""

    delay: float
    reply: Reply = Reply()


@attrs.frozen
class Malformed:
    """Stream: 200, the preamble and `text` deltas, then an event whose data is not
    JSON, then the normal ending. Generate: 200 with a body that is not JSON."""

    text: str = ""


@attrs.frozen
class NoSentinel:
    """Stream: the whole answer (text, finish reason, usage) and a clean end of the body,
    but without the terminal signal (`[DONE]`, `message_stop`, Gemini's `finishReason`,
    Ollama's `"done": true`). Generate: `reply`, normally."""

    reply: Reply = Reply()


@attrs.frozen
class BadUTF8:
    """Stream: 200, the preamble, then a text event with bytes that are not UTF-8, then
    the normal ending. Generate: 200 with a reply whose text holds those bytes."""


@attrs.frozen
class Huge:
    """Answer with `size` characters of text (a little more in bytes): one reply, or
    one stream event."""

    size: int = 2 * 1024 * 1024
    input_tokens: int = 12
    output_tokens: int = 500_000

    @property
    def text(self) -> str:
        """The served text: ASCII with a multi-byte character every kilobyte."""
        block = "z" * 1021 + "é"  # 1,023 bytes: the 2-byte character drifts across pieces
        return (block * (self.size // len(block.encode()) + 1))[: self.size]

    @property
    def reply(self) -> Reply:
        """The answer as a `Reply` (one piece)."""
        return Reply(self.text, self.input_tokens, self.output_tokens, pieces=1)


@attrs.frozen
class DoneThenSilence:
    """Stream: the whole answer with its terminal signal, then the body stays open
    (no end of body, no more bytes) until the server stops. Generate: `reply`."""

    reply: Reply = Reply()


Behaviour: TypeAlias = (
    Reply
    | CallTool
    | Fail
    | ErrorEvent
    | InBandError
    | Truncate
    | Drop
    | Stall
    | Quota
    | ContextTooLong
    | Blocked
    | HTMLError
    | Reset
    | Silence
    | Slow
    | Malformed
    | NoSentinel
    | BadUTF8
    | Huge
    | DoneThenSilence
)


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


def http_date(seconds: float) -> str:
    """The HTTP-date (IMF-fixdate) `seconds` from now, rounded up to a whole second."""
    return email.utils.formatdate(math.ceil(time.time() + seconds), usegmt=True)


def _retry_after_header(fail: Fail) -> str | None:
    if fail.retry_after is None:
        return None
    return http_date(fail.retry_after) if fail.as_date else f"{fail.retry_after:g}"


_HTML_PAGE = (
    "<html>\r\n<head><title>{status} {reason}</title></head>\r\n<body>\r\n"
    "<center><h1>{status} {reason}</h1></center>\r\n<hr><center>nginx</center>\r\n"
    "{padding}</body>\r\n</html>\r\n"
)


def _html_page(error: HTMLError) -> web.Response:
    """A proxy's error page (nginx's shape), padded with a comment to `error.size` bytes."""
    reason = {502: "Bad Gateway", 503: "Service Temporarily Unavailable"}.get(
        error.status, "Internal Server Error"
    )
    page = _HTML_PAGE.format(status=error.status, reason=reason, padding="")
    missing = error.size - len(page)
    if missing > 0:
        page = _HTML_PAGE.format(
            status=error.status, reason=reason, padding=f"<!-- {'x' * missing} -->\r\n"
        )
    return web.Response(status=error.status, text=page, content_type="text/html")


# Marks where invalid UTF-8 goes: JSON-encoded text cannot hold such bytes, so they are
# swapped in after encoding. 0xFF never occurs in UTF-8; 0xC3 0x28 is a lead byte
# followed by a byte that cannot continue it.
_BAD_BYTES_MARK = "@@not-utf-8@@"
_BAD_UTF8_TEXT = f"Grüße {_BAD_BYTES_MARK} aus Zürich"


def _echo(body: Any, key: str) -> Any:
    """A copy of an error body whose messages (`message`, or a string `error`) quote `key`."""
    if isinstance(body, list):
        return [_echo(item, key) for item in body]
    if not isinstance(body, dict):
        return body
    echoed: dict[str, Any] = {}
    for name, value in body.items():
        if name in ("message", "error") and isinstance(value, str):
            echoed[name] = f"{value} (key used: {key})"
        else:
            echoed[name] = _echo(value, key)
    return echoed


def _with_bad_bytes(data: str | bytes) -> bytes:
    encoded = data.encode() if isinstance(data, str) else data
    return encoded.replace(_BAD_BYTES_MARK.encode(), b"\xff\xfe\xc3(")


# A TLS server's handlers that stall forever are cancelled this long after it stops.
_SHUTDOWN_TIMEOUT = 0.05

# Bodies at least this long are written in `_BIG`-byte pieces, not `awkward_chunks`.
_BIG = 64 * 1024


def _big_pieces(data: bytes) -> list[bytes]:
    return [data[start : start + _BIG] for start in range(0, len(data), _BIG)]


async def _settle() -> None:
    """Let the client (in this process, on this loop) read what was written so far.

    A reset makes aiohttp drop bytes it received but had not handed out yet, so the
    server lets the loop turn a few times before it resets a connection mid-body.
    """
    for _ in range(8):
        await asyncio.sleep(0)


def _end_connection(request: web.Request, *, graceful: bool) -> None:
    """Close the connection mid-body: a FIN (`graceful`) or a reset."""
    if graceful:
        assert request.transport is not None
        request.transport.close()
    else:
        abort_connection(request)


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
        echo_key: quote `key` in every error message it sends, as some servers and
            proxies do (a client must mask it before showing the message).
    """

    name: ClassVar[str]
    route: ClassVar[str]
    """The aiohttp route (path pattern) of the chat endpoint."""
    scheme: ClassVar[str]
    base_path: ClassVar[str] = ""
    stream_content_type: ClassVar[str] = "text/event-stream"

    def __init__(
        self,
        script: Sequence[Behaviour] = (Reply(),),
        *,
        key: str | None = None,
        echo_key: bool = False,
    ) -> None:
        self.key = key
        self.echo_key = echo_key
        self.requests: list[Recorded] = []
        # Handlers still running: one that stalls outlives its connection (aiohttp does
        # not cancel a handler whose client left), so `serving()` cancels it at the end.
        self._handlers: set[asyncio.Task[Any]] = set()
        self._script: list[Behaviour] = []
        self._served = 0
        self.program(*script)

    def program(self, *script: Behaviour) -> None:
        """Replace the script; the next request gets its first behaviour."""
        if not script:
            raise ValueError("a script needs at least one behaviour")
        self._script = list(script)
        self._served = 0

    def dsn(self, base: str, *, scheme: str | None = None, with_key: bool = True) -> str:
        """The DSN of a provider at `base` ("http://127.0.0.1:PORT"): this format's
        `+http` scheme unless `scheme` says otherwise, the key (unless `with_key` is
        false), and the API's base path. `base` may be a closed port (connection refused).
        """
        credential = f"{quote(self.key, safe='')}@" if self.key and with_key else ""
        host = base.partition("://")[2]
        return f"{scheme or self.scheme}://{credential}{host}{self.base_path}"

    @asynccontextmanager
    async def running(self) -> AsyncIterator[str]:
        """Serve on 127.0.0.1 and yield the DSN of a provider pointed at this emulator."""
        async with self.serving() as base:
            yield self.dsn(base)

    @asynccontextmanager
    async def serving(self, *, tls: ssl.SSLContext | None = None) -> AsyncIterator[str]:
        """Serve on 127.0.0.1 (over TLS with `tls`) and yield the base URL."""
        try:
            if tls is None:
                async with serve({self.route: self._handle}) as base:
                    yield base
                return
            app = web.Application()
            app.router.add_route("*", self.route, self._handle)
            runner = web.AppRunner(app, shutdown_timeout=_SHUTDOWN_TIMEOUT, access_log=None)
            await runner.setup()
            try:
                site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls)
                await site.start()
                host, port = runner.addresses[0][:2]
                yield f"https://{host}:{port}"
            finally:
                await runner.cleanup()
        finally:
            await self._stop_handlers()

    async def _stop_handlers(self) -> None:
        """Cancel the handlers still running (stalled ones whose client went away)."""
        handlers = list(self._handlers)
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)

    # ----------------------------------------------------------------- dispatch

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            return await self._answer(request)
        finally:
            self._handlers.discard(task)

    async def _answer(self, request: web.Request) -> web.StreamResponse:
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
            return self._error_response(
                behaviour.status, call, retry_after=_retry_after_header(behaviour)
            )
        if isinstance(behaviour, Quota | ContextTooLong):
            special = self._quota if isinstance(behaviour, Quota) else self._context_too_long
            status, body = special(call)
            return self._error_response(status, call, body=body)
        if isinstance(behaviour, HTMLError):
            return _html_page(behaviour)
        stream = self._is_stream(request, call.body)
        if isinstance(behaviour, Blocked):
            return self._refuse(call, stream=stream)
        if isinstance(behaviour, Silence):
            return await self._silence(request, call)
        if not stream:
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
        retry_after: str | None = None,
        body: Any = None,
    ) -> web.Response:
        headers = dict(self._reply_headers(call))
        if retry_after is not None:
            headers["Retry-After"] = retry_after
        return web.json_response(
            self._echoed(body if body is not None else self._error_body(status, call)),
            status=status,
            headers=headers,
        )

    def _error_payload(self, status: int, call: _Call) -> Any:
        """The error body for `status` (for in-band error events), the key echoed if asked."""
        return self._echoed(self._error_body(status, call))

    def _echoed(self, body: Any) -> Any:
        """`body` with the key appended to its messages, when `echo_key` is set."""
        if not self.echo_key or not self.key:
            return body
        return _echo(body, self.key)

    def _refuse(self, call: _Call, *, stream: bool) -> web.Response:
        """`Blocked`: the provider's refusal, an error status or (Gemini) a 200 reply."""
        status, body = self._blocked(call)
        if status < 300 and stream:
            frame = _sse(body, eol="\r\n")
            return web.Response(
                body=frame, content_type=self.stream_content_type, headers=self._reply_headers(call)
            )
        if status < 300:
            return web.json_response(body, headers=self._reply_headers(call))
        return self._error_response(status, call, body=body)

    async def _silence(self, request: web.Request, call: _Call) -> web.StreamResponse:
        """`Silence`: the headers of a success, then nothing until the server stops."""
        response = web.StreamResponse(
            headers={"Content-Type": "application/json", **self._reply_headers(call)}
        )
        await response.prepare(request)
        await sleep_forever()
        raise AssertionError("unreachable")

    async def _json_reply(
        self, request: web.Request, behaviour: Behaviour, call: _Call
    ) -> web.StreamResponse:
        if isinstance(behaviour, Slow):
            await anyio.sleep(behaviour.delay)
            behaviour = behaviour.reply
        elif isinstance(behaviour, NoSentinel | DoneThenSilence | Huge):
            behaviour = behaviour.reply
        if isinstance(behaviour, Reply | CallTool):
            return web.json_response(
                self._reply_body(behaviour, call), headers=self._reply_headers(call)
            )
        if isinstance(behaviour, ErrorEvent):
            return self._error_response(behaviour.status, call)
        if isinstance(behaviour, InBandError):
            body = self._error_payload(behaviour.status, call)
            return web.json_response(body, headers=self._reply_headers(call))
        if isinstance(behaviour, Truncate):
            return await self._cut_json(request, behaviour.text, call)
        if isinstance(behaviour, Reset):
            return await self._cut_json(
                request, behaviour.text, call, end="close" if behaviour.graceful else "abort"
            )
        if isinstance(behaviour, Malformed | BadUTF8):
            return self._bad_json(behaviour, call)
        if isinstance(behaviour, Stall) and behaviour.partial_body:
            return await self._cut_json(request, behaviour.text, call, end="stall")
        await sleep_forever()  # Stall: no headers, ever
        raise AssertionError("unreachable")

    async def _cut_json(
        self,
        request: web.Request,
        text: str,
        call: _Call,
        *,
        end: Literal["abort", "close", "stall"] = "abort",
    ) -> web.StreamResponse:
        """Promise the whole JSON reply (Content-Length), send half of it, then `end`:
        reset the connection, close it (a FIN), or stall until the server stops."""
        body = json.dumps(self._reply_body(Reply(text or DEFAULT_TEXT), call)).encode()
        response = web.StreamResponse(
            headers={"Content-Type": "application/json", **self._reply_headers(call)}
        )
        response.content_length = len(body)
        await response.prepare(request)
        await response.write(body[: len(body) // 2])
        if end == "stall":
            await sleep_forever()
        _end_connection(request, graceful=end == "close")
        return response  # the handler must end: see Drop

    def _bad_json(self, behaviour: Malformed | BadUTF8, call: _Call) -> web.Response:
        """A complete 200 reply whose body is cut JSON, or JSON with bytes that are not UTF-8."""
        if isinstance(behaviour, Malformed):
            body = json.dumps(self._reply_body(Reply(behaviour.text or DEFAULT_TEXT), call))
            data = body[: len(body) // 2].encode()
        else:
            data = _with_bad_bytes(
                json.dumps(self._reply_body(Reply(_BAD_UTF8_TEXT), call), ensure_ascii=False)
            )
        return web.Response(
            body=data,
            headers={"Content-Type": "application/json", **self._reply_headers(call)},
        )

    async def _stream_reply(
        self, request: web.Request, behaviour: Behaviour, call: _Call
    ) -> web.StreamResponse:
        frames = self._stream_frames(behaviour, call)
        response = web.StreamResponse(
            headers={"Content-Type": self.stream_content_type, **self._reply_headers(call)}
        )
        await response.prepare(request)
        if isinstance(behaviour, Slow):
            await anyio.sleep(behaviour.delay)
        data = b"".join(frames)
        # A huge body goes out in big pieces: cutting megabytes into bytes would take ages.
        pieces = awkward_chunks(data) if len(data) < _BIG else _big_pieces(data)
        for piece in pieces:
            await response.write(piece)
            # Let the client read between pieces, so it sees them apart.
            await anyio.lowlevel.checkpoint()
        if isinstance(behaviour, Reset):
            await _settle()
            _end_connection(request, graceful=behaviour.graceful)
            return response  # the handler must end: see Drop
        if isinstance(behaviour, Stall | DoneThenSilence):
            await sleep_forever()
        await response.write_eof()
        return response

    def _stream_frames(self, behaviour: Behaviour, call: _Call) -> list[bytes]:
        if isinstance(behaviour, Slow | Huge | DoneThenSilence):
            behaviour = behaviour.reply
        if isinstance(behaviour, NoSentinel):
            reply = behaviour.reply
            frames = self._preamble(reply, call)
            frames += self._text(split_text(reply.text, reply.pieces), call)
            return frames + self._unterminated_ending(reply, call)
        frames = self._preamble(behaviour, call)
        if isinstance(behaviour, Reply):
            frames += self._text(split_text(behaviour.text, behaviour.pieces), call)
            frames += self._ending(behaviour, call)
        elif isinstance(behaviour, CallTool):
            frames += self._tool(behaviour, call)
            frames += self._ending(behaviour, call)
        elif isinstance(behaviour, Truncate | Stall | ErrorEvent | InBandError | Reset | Malformed):
            frames += self._text(split_text(behaviour.text, 3), call)
            if isinstance(behaviour, ErrorEvent | InBandError):
                frames += self._error_event(behaviour.status, call)
            elif isinstance(behaviour, Malformed):
                frames.append(self._malformed(call))
                frames += self._ending(Reply(behaviour.text), call)
        elif isinstance(behaviour, BadUTF8):
            frames += [_with_bad_bytes(frame) for frame in self._text([_BAD_UTF8_TEXT], call)]
            frames += self._ending(Reply(_BAD_UTF8_TEXT), call)
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

    def _unterminated_ending(self, behaviour: Reply, call: _Call) -> list[bytes]:
        """`_ending` without its terminal signal (by default: without its last frame)."""
        return self._ending(behaviour, call)[:-1]

    def _malformed(self, call: _Call) -> bytes:
        """A content frame whose data is cut short: not JSON."""
        raise NotImplementedError

    def _quota(self, call: _Call) -> tuple[int, Any]:
        """(status, body) of the provider's quota or spend-cap error."""
        raise NotImplementedError

    def _context_too_long(self, call: _Call) -> tuple[int, Any]:
        """(status, body) of the provider's context-length error."""
        raise NotImplementedError

    def _blocked(self, call: _Call) -> tuple[int, Any]:
        """(status, body) of the provider's content-policy refusal of a prompt."""
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
        return [_sse(self._error_payload(status, call))]

    def _malformed(self, call: _Call) -> bytes:
        return _sse(f'{{"id": "chatcmpl-{call.number}", "choices": [{{"delta": {{"content": "Grü')

    @staticmethod
    def _openai_error(message: str, kind: str, code: str, param: str | None = None) -> Any:
        return {"error": {"message": message, "type": kind, "param": param, "code": code}}

    def _quota(self, call: _Call) -> tuple[int, Any]:
        message = "You exceeded your current quota, please check your plan and billing details."
        return 429, self._openai_error(message, "insufficient_quota", "insufficient_quota")

    def _context_too_long(self, call: _Call) -> tuple[int, Any]:
        message = (
            "This model's maximum context length is 128000 tokens. However, your messages "
            "resulted in 131072 tokens. Please reduce the length of the messages."
        )
        body = self._openai_error(
            message, "invalid_request_error", "context_length_exceeded", "messages"
        )
        return 400, body

    def _blocked(self, call: _Call) -> tuple[int, Any]:
        message = (
            "Invalid prompt: your prompt was flagged as potentially violating our usage policy."
        )
        return 400, self._openai_error(message, "invalid_request_error", "invalid_prompt")


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
        return [_sse(self._error_payload(status, call), event="error")]

    def _malformed(self, call: _Call) -> bytes:
        data = '{"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "te'
        return _sse(data, event="content_block_delta")

    def _anthropic_error(self, call: _Call, kind: str, message: str, **extra: Any) -> Any:
        error = {"type": kind, "message": message, **extra}
        return {"type": "error", "error": error, "request_id": call.request_id}

    def _quota(self, call: _Call) -> tuple[int, Any]:
        # The monthly spend cap: a 429 `rate_limit_error`, without Retry-After, that names
        # the spend limit in `error.details` (providers.md 5.5).
        message = (
            "You have reached your specified API usage limits. You will regain access on "
            "2030-02-01 at 00:00 UTC."
        )
        details = {"error_code": "enforced_spend_limit_reached"}
        return 429, self._anthropic_error(call, "rate_limit_error", message, details=details)

    def _context_too_long(self, call: _Call) -> tuple[int, Any]:
        message = "prompt is too long: 208656 tokens > 200000 maximum"
        return 400, self._anthropic_error(call, "invalid_request_error", message)

    def _blocked(self, call: _Call) -> tuple[int, Any]:
        message = "Output blocked by content filtering policy"
        return 400, self._anthropic_error(call, "invalid_request_error", message)


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
        return [_sse(self._error_payload(status, call), eol="\r\n")]

    def _unterminated_ending(self, behaviour: Reply, call: _Call) -> list[bytes]:
        # Gemini's terminal signal is the `finishReason`: the usage comes, the reason not.
        last = self._chunk(call, [{"text": ""}], usageMetadata=self._usage(behaviour))
        return [_sse(last, eol="\r\n")]

    def _malformed(self, call: _Call) -> bytes:
        data = '{"candidates": [{"content": {"role": "model", "parts": [{"text": "Grü'
        return _sse(data, eol="\r\n")

    def _quota(self, call: _Call) -> tuple[int, Any]:
        # A per-day quota: it will not clear within any retry budget.
        violation = {
            "quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
            "quotaId": "GenerateRequestsPerDayPerProjectPerModel-FreeTier",
            "quotaDimensions": {"model": call.model, "location": "global"},
            "quotaValue": "50",
        }
        details = [
            {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [violation]},
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "36s"},
        ]
        message = "You exceeded your current quota, please check your plan and billing details."
        error = {"code": 429, "message": message, "status": "RESOURCE_EXHAUSTED"}
        return 429, {"error": {**error, "details": details}}

    def _context_too_long(self, call: _Call) -> tuple[int, Any]:
        message = (
            "The input token count (1210431) exceeds the maximum number of tokens allowed "
            "(1048576)."
        )
        return 400, {"error": {"code": 400, "message": message, "status": "INVALID_ARGUMENT"}}

    def _blocked(self, call: _Call) -> tuple[int, Any]:
        # Gemini refuses a prompt with a 200 whose `promptFeedback` names the reason.
        feedback = {
            "blockReason": "PROHIBITED_CONTENT",
            "safetyRatings": [
                {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH"}
            ],
        }
        usage = {"promptTokenCount": 9, "totalTokenCount": 9}
        body = {
            "promptFeedback": feedback,
            "usageMetadata": usage,
            "modelVersion": call.model,
            "responseId": call.request_id,
        }
        return 200, body


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
        return [_ndjson(self._error_payload(status, call))]

    def _malformed(self, call: _Call) -> bytes:
        head = f'{{"model": "{call.model}", "message": '
        return (head + '{"role": "assistant", "content": "Grü\n').encode()

    def _quota(self, call: _Call) -> tuple[int, Any]:
        # ollama.com's plan allowance (cloud models).
        return 429, {"error": "you have reached your weekly usage limit, upgrade for higher limits"}

    def _context_too_long(self, call: _Call) -> tuple[int, Any]:
        return 400, {"error": "the input length exceeds the context length"}

    def _blocked(self, call: _Call) -> tuple[int, Any]:
        # Ollama has no moderation of its own: this is a moderating gateway in front of it.
        return 400, {"error": "the request was rejected by the gateway's content policy"}
