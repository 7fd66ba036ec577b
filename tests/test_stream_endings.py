"""A finished stream is finished: how the HTTP wire formats' streams end, on real sockets.

The rule, per wire format:

- OpenAI-compatible: complete at `data: [DONE]`, or at a CLEAN end of the body (the
  chunked terminator, Content-Length reached, the end of a close-delimited body) after a
  chunk carried a `finish_reason`. Several compatible servers send the finish chunk and
  the usage chunk (`choices: []`), then end the body without `[DONE]`.
- Anthropic: complete at `message_stop`, or at a clean end after a `message_delta` with a
  `stop_reason` (it carries the final usage).
- Gemini: complete once a chunk carries a `finishReason` (its terminal signal).

A clean end before any finish reason is `StreamTruncatedError`, and so is a body cut by a
transport error (a chunked body closed or reset before its zero-length chunk): aiohttp
raises `ClientPayloadError`, even when the finish reason came before the cut, because the
usage may be missing and nothing says the body was complete.

The servers are real: `aiohttp.web` handlers from `tests/helpers/servers.py` writing SSE
bodies shaped like the providers' own (chunked, or with a Content-Length), and a raw TCP
server below for what aiohttp.web cannot write (a close-delimited body, a chunked body
without its terminator written byte by byte). Providers come from a `Registry` built from
`LLM_<NAME>` DSNs, as a user configures them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, Final, Literal

import aiohttp
import attrs
import pytest
from aiohttp import web

from majordomo_async import (
    ChainConfig,
    FinishReason,
    Registry,
    Stream,
    StreamEnd,
    StreamEvent,
    StreamRestart,
    StreamStart,
    StreamTruncatedError,
    TextDelta,
    Usage,
    UsageUpdate,
)

from .helpers.servers import (
    Handler,
    LocalServer,
    abort_connection,
    acquired_connections,
    local_server,
    play,
    respond,
)

pytestmark = pytest.mark.usefixtures("no_leaked_tasks")

PROMPT = "Wann fährt der nächste Zug nach Zürich?"
PIECES: Final = ("Der nächste Zug ", "fährt um ", "7:42 ✓")
TEXT: Final = "".join(PIECES)
INPUT_TOKENS: Final = 19
OUTPUT_TOKENS: Final = 9
USAGE: Final = Usage(INPUT_TOKENS, OUTPUT_TOKENS)
KEY: Final = "sk-test-endings-0123SECRET"

Ending = Literal["chunked", "content-length", "close-delimited"]
ENDINGS: Final[Sequence[Ending]] = ("chunked", "content-length", "close-delimited")


# --------------------------------------------------------------------------- wire bodies


def _sse(data: Any, *, event: str | None = None, eol: str = "\n") -> bytes:
    text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    head = f"event: {event}{eol}" if event else ""
    return f"{head}data: {text}{eol}{eol}".encode()


def openai_frames(
    *,
    finish: str | None = "stop",
    usage: bool = True,
    done: bool = False,
    refusal: bool = False,
) -> list[bytes]:
    """A Chat Completions stream as OpenAI writes it: role chunk, content chunks, the
    finish chunk (`delta: {}`), the usage chunk (`choices: []`), then `[DONE]` if told."""

    def chunk(choices: list[Any], usage_value: Any = None) -> bytes:
        return _sse(
            {
                "id": "chatcmpl-BPx7d2mQ9rTfK1vWn4sLz8YcE0aHj",
                "object": "chat.completion.chunk",
                "created": 1767225600,
                "model": "gpt-4o-mini-2024-07-18",
                "service_tier": "default",
                "system_fingerprint": "fp_560af6e559",
                "choices": choices,
                "usage": usage_value,
            }
        )

    def choice(delta: Mapping[str, Any], reason: str | None = None) -> list[Any]:
        return [{"index": 0, "delta": dict(delta), "logprobs": None, "finish_reason": reason}]

    frames = [chunk(choice({"role": "assistant", "content": "", "refusal": None}))]
    frames += [chunk(choice({"content": piece})) for piece in PIECES]
    if refusal:
        frames.append(chunk(choice({"refusal": "I can't help with that."})))
    if finish is not None:
        frames.append(chunk(choice({}, finish)))
    if usage:
        counts = {
            "prompt_tokens": INPUT_TOKENS,
            "completion_tokens": OUTPUT_TOKENS,
            "total_tokens": INPUT_TOKENS + OUTPUT_TOKENS,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }
        frames.append(chunk([], counts))
    if done:
        frames.append(_sse("[DONE]"))
    return frames


def anthropic_frames(
    *, stop_reason: str | None = "end_turn", usage: bool = True, done: bool = False
) -> list[bytes]:
    """A Messages stream as Anthropic writes it: `message_start`, `ping`, one text block,
    `message_delta` with the stop reason and final usage, then `message_stop` if told."""
    start = {
        "type": "message_start",
        "message": {
            "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
            "type": "message",
            "role": "assistant",
            "content": [],
            "model": "claude-sonnet-4-5-20250929",
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {
                "input_tokens": INPUT_TOKENS,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
                "output_tokens": 1,
                "service_tier": "standard",
            },
        },
    }
    frames = [
        _sse(start, event="message_start"),
        _sse({"type": "ping"}, event="ping"),
        _sse(
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
            event="content_block_start",
        ),
    ]
    for piece in PIECES:
        delta = {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": piece},
        }
        frames.append(_sse(delta, event="content_block_delta"))
    frames.append(_sse({"type": "content_block_stop", "index": 0}, event="content_block_stop"))
    if stop_reason is not None:
        message_delta: dict[str, Any] = {
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": None},
        }
        if usage:
            message_delta["usage"] = {"output_tokens": OUTPUT_TOKENS}
        frames.append(_sse(message_delta, event="message_delta"))
    if done:
        frames.append(_sse({"type": "message_stop"}, event="message_stop"))
    return frames


def gemini_frames(*, finish: str | None = "STOP", done: bool = False) -> list[bytes]:
    """A `streamGenerateContent?alt=sse` stream as Gemini writes it (CRLF line ends): the
    last chunk carries `finishReason` and the full `usageMetadata`. `done` is unused:
    the `finishReason` chunk is Gemini's terminal signal."""
    del done
    frames = []
    for number, piece in enumerate(PIECES):
        last = number == len(PIECES) - 1
        candidate: dict[str, Any] = {
            "content": {"parts": [{"text": piece}], "role": "model"},
            "index": 0,
        }
        usage: dict[str, Any] = {"promptTokenCount": INPUT_TOKENS, "totalTokenCount": INPUT_TOKENS}
        if last and finish is not None:
            candidate["finishReason"] = finish
            usage = {
                "promptTokenCount": INPUT_TOKENS,
                "candidatesTokenCount": OUTPUT_TOKENS,
                "totalTokenCount": INPUT_TOKENS + OUTPUT_TOKENS,
                "promptTokensDetails": [{"modality": "TEXT", "tokenCount": INPUT_TOKENS}],
            }
        chunk = {
            "candidates": [candidate],
            "usageMetadata": usage,
            "modelVersion": "gemini-2.5-flash",
            "responseId": "aGx0Z2VtaW5pLXJlc3AtMDAwMQ",
        }
        frames.append(_sse(chunk, eol="\r\n"))
    return frames


@attrs.frozen
class Flavour:
    """One wire format: its DSN, its stream path, its bodies and its truncation message."""

    name: str
    scheme: str
    base_path: str
    path: Callable[[str], str]
    """The stream request's path for a model id."""
    frames: Callable[..., list[bytes]]
    headers: Mapping[str, str]
    missing: str
    """What the truncation message of a clean end without a finish reason names."""

    def dsn(self, url: str) -> str:
        return f"{self.scheme}://{KEY}@{url.partition('://')[2]}{self.base_path}"

    def complete(self, *, done: bool = False) -> bytes:
        """The whole answer: finish reason and usage, with or without the terminal signal."""
        return b"".join(self.frames(done=done))

    def unfinished(self) -> bytes:
        """Content only: no finish reason, no usage, no terminal signal."""
        if self.name == "openai":
            return b"".join(openai_frames(finish=None, usage=False))
        if self.name == "anthropic":
            return b"".join(anthropic_frames(stop_reason=None))
        return b"".join(gemini_frames(finish=None))


OPENAI: Final = Flavour(
    "openai",
    "openai+http",
    "/v1",
    lambda model: "/v1/chat/completions",
    openai_frames,
    {"x-request-id": "req_8f3c1a2b9d"},
    r"finish_reason.*\[DONE\]",
)
ANTHROPIC: Final = Flavour(
    "anthropic",
    "anthropic+http",
    "",
    lambda model: "/v1/messages",
    anthropic_frames,
    {"request-id": "req_011CSHoEeqs5C35K2UUqR7Fy"},
    "message_stop.*stop_reason",
)
GEMINI: Final = Flavour(
    "gemini",
    "gemini+http",
    "/v1beta",
    lambda model: f"/v1beta/models/{model}:streamGenerateContent",
    gemini_frames,
    {},
    "finishReason",
)
# The formats whose finish reason is not their terminal signal (the rule applies).
SPLIT_END: Final = pytest.mark.parametrize("flavour", [OPENAI, ANTHROPIC], ids=lambda f: f.name)
ALL: Final = pytest.mark.parametrize("flavour", [OPENAI, ANTHROPIC, GEMINI], ids=lambda f: f.name)


# --------------------------------------------------------------------------- servers


def sse_handler(flavour: Flavour, body: bytes, **kwargs: Any) -> Handler:
    """`body` written in small chunked pieces (see `play`), with the provider's headers."""
    return play(body, chunk=61, headers=flavour.headers, **kwargs)


def sized_handler(flavour: Flavour, body: bytes) -> Handler:
    """`body` at once, with a Content-Length (no chunked encoding)."""
    return respond(200, body, content_type="text/event-stream", headers=flavour.headers)


@attrs.define
class RawServer:
    """A TCP server that reads each whole request, then writes `reply` and closes (FIN)."""

    reply: bytes
    url: str = ""
    requests: int = 0


@asynccontextmanager
async def raw_http(reply: bytes) -> AsyncIterator[RawServer]:
    """A `RawServer` on 127.0.0.1; the request body is read before the reply is written,
    so closing sends a FIN rather than a reset."""
    state = RawServer(reply)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.decode("latin-1").split("\r\n"):
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            await reader.readexactly(length)
            state.requests += 1
            writer.write(state.reply)
            await writer.drain()
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        state.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        yield state
    finally:
        server.close()
        await server.wait_closed()


def close_delimited(flavour: Flavour, body: bytes) -> bytes:
    """An HTTP/1.1 reply whose body ends where the connection does (no length, no chunks)."""
    headers = "".join(f"{name}: {value}\r\n" for name, value in flavour.headers.items())
    return (
        f"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n{headers}\r\n"
    ).encode() + body


def chunked_without_terminator(flavour: Flavour, frames: Sequence[bytes]) -> bytes:
    """An HTTP/1.1 chunked reply, one chunk per frame, closed before the `0\\r\\n\\r\\n`."""
    headers = "".join(f"{name}: {value}\r\n" for name, value in flavour.headers.items())
    head = (
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n"
        f"{headers}\r\n"
    ).encode()
    return head + b"".join(b"%x\r\n%s\r\n" % (len(frame), frame) for frame in frames)


@asynccontextmanager
async def provider_at(flavour: Flavour, ending: Ending, body: bytes) -> AsyncIterator[Any]:
    """A registry whose provider "a" is served `body`, ended the `ending` way; yields the
    model "a/m1" (direct, no chain). Checks the request's path and that no connection
    stays checked out."""
    if ending == "close-delimited":
        async with raw_http(close_delimited(flavour, body)) as raw:
            async with Registry(env={"LLM_A": flavour.dsn(raw.url)}) as registry:
                yield registry.provider("a").model("m1")
                assert acquired_connections(registry._http.get()) == 0
            assert raw.requests == 1
        return
    async with local_server() as server:
        server.routes[flavour.path("m1")] = (
            sse_handler(flavour, body) if ending == "chunked" else sized_handler(flavour, body)
        )
        async with Registry(env={"LLM_A": flavour.dsn(server.url)}) as registry:
            yield registry.provider("a").model("m1")
            assert acquired_connections(registry._http.get()) == 0
        assert [request.path for request in server.requests] == [flavour.path("m1")]


async def read(stream: Stream) -> tuple[list[StreamEvent], Exception | None]:
    """Every event of `stream` (closed afterwards) and the error that ended it, if any."""
    events: list[StreamEvent] = []
    try:
        async with stream:
            async for event in stream:
                events.append(event)
    except Exception as exc:
        return events, exc
    return events, None


def text_of(events: Sequence[StreamEvent]) -> str:
    return "".join(event.text for event in events if isinstance(event, TextDelta))


def check_finished(stream: Stream, events: Sequence[StreamEvent], error: Exception | None) -> None:
    """A normal finished stream: the whole text, the usage, one StreamEnd, last."""
    assert error is None, repr(error)
    assert isinstance(events[0], StreamStart)
    assert text_of(events) == TEXT
    assert events[-1] == StreamEnd(FinishReason.STOP)
    assert events[-2] == UsageUpdate(USAGE)  # the final usage comes before the end
    assert sum(isinstance(event, StreamEnd) for event in events) == 1
    assert stream.finished
    response = stream.response
    assert (response.text, response.usage, response.finish_reason) == (
        TEXT,
        USAGE,
        FinishReason.STOP,
    )


def check_truncated(
    stream: Stream, events: Sequence[StreamEvent], error: Exception | None, match: str = ""
) -> StreamTruncatedError:
    """The text arrived, then StreamTruncatedError; never a StreamEnd nor a response."""
    assert isinstance(error, StreamTruncatedError), repr(error)
    assert text_of(events) == TEXT
    assert not any(isinstance(event, StreamEnd) for event in events)
    assert not stream.finished
    if match:
        assert re.search(match, str(error)), str(error)
    return error


# --------------------------------------------------------------------------- 1. finish + clean end


@SPLIT_END
@pytest.mark.parametrize("ending", ENDINGS)
async def test_finish_reason_then_clean_end_completes(flavour: Flavour, ending: Ending) -> None:
    """Finish reason, usage, then a clean end without the terminal signal: finished."""
    async with provider_at(flavour, ending, flavour.complete(done=False)) as model:
        stream = await model.stream(PROMPT)
        events, error = await read(stream)
    check_finished(stream, events, error)
    assert stream.response.model == "a/m1"


@SPLIT_END
async def test_a_chain_keeps_a_head_that_finished_without_the_terminal_signal(
    flavour: Flavour,
) -> None:
    """With `mid_stream="restart"`, such a head answers: no restart, the backup is never
    asked, and the head is not reported to health (nothing benched, nothing failing)."""
    async with local_server() as head, local_server() as backup:
        head.routes[flavour.path("m1")] = sse_handler(flavour, flavour.complete(done=False))
        backup.routes[flavour.path("m2")] = sse_handler(flavour, flavour.complete(done=True))
        env = {"LLM_A": flavour.dsn(head.url), "LLM_B": flavour.dsn(backup.url)}
        async with Registry(env=env, chain=ChainConfig(mid_stream="restart")) as registry:
            stream = await registry.parse("a/m1,b/m2").stream(PROMPT)
            events, error = await read(stream)
            check_finished(stream, events, error)
            assert not any(isinstance(event, StreamRestart) for event in events)
            assert stream.response.model == "a/m1"
            assert stream.response.failed_attempts == ()
            assert await registry.health.snapshot() == {}
            assert acquired_connections(registry._http.get()) == 0
        assert len(head.requests) == 1
        assert backup.requests == []


@pytest.mark.parametrize("done", [False, True], ids=["clean-end", "done"])
@pytest.mark.parametrize(
    ("finish", "refusal", "expected"),
    [
        ("length", False, FinishReason.LENGTH),
        ("content_filter", False, FinishReason.CONTENT_FILTER),
        # A refusal delta keeps the wire's finish and comes as the refusal: as for [DONE].
        ("stop", True, FinishReason.STOP),
        ("tool_calls", False, FinishReason.TOOL_CALLS),
    ],
)
async def test_openai_finish_reason_at_a_clean_end_is_the_same_as_at_done(
    finish: str, refusal: bool, expected: FinishReason, done: bool
) -> None:
    """The StreamEnd of a clean end carries the finish reason [DONE] would have."""
    body = b"".join(openai_frames(finish=finish, refusal=refusal, done=done))
    async with provider_at(OPENAI, "chunked", body) as model:
        stream = await model.stream(PROMPT)
        events, error = await read(stream)
    assert error is None, repr(error)
    refused = "I can't help with that." if refusal else None
    assert events[-2:] == [UsageUpdate(USAGE), StreamEnd(expected, refused)]
    assert stream.response.finish_reason is expected
    assert stream.response.refusal == refused


async def test_openai_finish_reason_without_a_usage_chunk_then_clean_end() -> None:
    """A server that sends no usage chunk (Mistral without `stream_options`) still ends."""
    body = b"".join(openai_frames(usage=False))
    async with provider_at(OPENAI, "chunked", body) as model:
        stream = await model.stream(PROMPT)
        events, error = await read(stream)
    assert error is None, repr(error)
    assert events[-1] == StreamEnd(FinishReason.STOP)
    assert not any(isinstance(event, UsageUpdate) for event in events)
    assert stream.response.text == TEXT


async def test_anthropic_stop_reason_at_a_clean_end() -> None:
    """A `message_delta` stop reason other than end_turn is the StreamEnd's reason."""
    body = b"".join(anthropic_frames(stop_reason="max_tokens"))
    async with provider_at(ANTHROPIC, "chunked", body) as model:
        stream = await model.stream(PROMPT)
        events, error = await read(stream)
    assert error is None, repr(error)
    assert events[-2:] == [UsageUpdate(USAGE), StreamEnd(FinishReason.LENGTH)]


# --------------------------------------------------------------------------- 2. no finish reason


@ALL
@pytest.mark.parametrize("ending", ENDINGS)
async def test_clean_end_without_finish_reason_is_truncated(
    flavour: Flavour, ending: Ending
) -> None:
    """Content, then a clean end before any finish reason: StreamTruncatedError, whose
    message names what was missing."""
    async with provider_at(flavour, ending, flavour.unfinished()) as model:
        stream = await model.stream(PROMPT)
        events, error = await read(stream)
    truncated = check_truncated(stream, events, error, flavour.missing)
    assert truncated.key == "a/m1"


@SPLIT_END
async def test_a_restarting_chain_moves_on_from_a_head_without_finish_reason(
    flavour: Flavour,
) -> None:
    """The same truncation through a chain with `mid_stream="restart"`: the backup answers."""
    async with local_server() as head, local_server() as backup:
        head.routes[flavour.path("m1")] = sse_handler(flavour, flavour.unfinished())
        backup.routes[flavour.path("m2")] = sse_handler(flavour, flavour.complete(done=True))
        env = {"LLM_A": flavour.dsn(head.url), "LLM_B": flavour.dsn(backup.url)}
        async with Registry(env=env, chain=ChainConfig(mid_stream="restart")) as registry:
            stream = await registry.parse("a/m1,b/m2").stream(PROMPT)
            events, error = await read(stream)
            assert error is None, repr(error)
            [restart] = [event for event in events if isinstance(event, StreamRestart)]
            assert (restart.model, restart.failed) == ("b/m2", "a/m1")
            assert isinstance(restart.error, StreamTruncatedError)
            assert stream.response.model == "b/m2"
            assert stream.response.text == TEXT
            assert acquired_connections(registry._http.get()) == 0
        assert len(backup.requests) == 1


# --------------------------------------------------------------------------- 3. a cut body

Cut = Literal["close", "reset", "raw-chunked", "short-content-length"]


def reset_after(flavour: Flavour, body: bytes, released: asyncio.Event) -> Handler:
    """Write `body` chunked, wait until the consumer saw the final usage, then reset."""

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", **flavour.headers}
        )
        await response.prepare(request)
        await response.write(body)
        await released.wait()
        abort_connection(request)
        return response

    return handler


@SPLIT_END
@pytest.mark.parametrize("cut", ["close", "reset", "raw-chunked", "short-content-length"])
async def test_cut_after_finish_reason_is_truncated(flavour: Flavour, cut: Cut) -> None:
    """Finish reason and usage arrived, then the body was cut by a transport error (no
    chunked terminator; or fewer bytes than the Content-Length): StreamTruncatedError."""
    frames = flavour.frames(done=False)
    body = b"".join(frames)
    released = asyncio.Event()
    events: list[StreamEvent] = []
    error: Exception | None = None

    async def consume(model: Any) -> None:
        nonlocal error
        stream = await model.stream(PROMPT)
        try:
            async with stream:
                async for event in stream:
                    events.append(event)
                    if event == UsageUpdate(USAGE):
                        released.set()  # the finish reason came before this usage
        except Exception as exc:
            error = exc
        truncated = check_truncated(stream, events, error)
        # The transport's error (aiohttp's ClientPayloadError, mapped by `_http`), not the
        # translator's: the finish reason had come, and the cut still counts.
        assert isinstance(truncated.__cause__, aiohttp.ClientPayloadError), repr(truncated)
        assert not re.search(flavour.missing, str(truncated))

    if cut in ("raw-chunked", "short-content-length"):
        if cut == "raw-chunked":
            reply = chunked_without_terminator(flavour, frames)
        else:
            headers = "".join(f"{name}: {value}\r\n" for name, value in flavour.headers.items())
            reply = (
                "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                f"Content-Length: {len(body) + 64}\r\n{headers}\r\n"
            ).encode() + body
        async with (
            raw_http(reply) as raw,
            Registry(env={"LLM_A": flavour.dsn(raw.url)}) as registry,
        ):
            await consume(registry.provider("a").model("m1"))
            assert acquired_connections(registry._http.get()) == 0
    else:
        async with local_server() as server:
            server.routes[flavour.path("m1")] = (
                sse_handler(flavour, body, end="close")
                if cut == "close"
                else reset_after(flavour, body, released)
            )
            async with Registry(env={"LLM_A": flavour.dsn(server.url)}) as registry:
                await consume(registry.provider("a").model("m1"))
                assert acquired_connections(registry._http.get()) == 0
    assert UsageUpdate(USAGE) in events  # the cut came after the finish reason and usage


async def test_gemini_cut_after_the_finish_reason_chunk_loses_nothing(
    server: LocalServer,
) -> None:
    """Gemini's finishReason chunk is its terminal signal (it carries the final usage):
    StreamEnd comes with it, and a cut after it changes nothing."""
    server.routes[GEMINI.path("m1")] = sse_handler(GEMINI, GEMINI.complete(), end="close")
    async with Registry(env={"LLM_A": GEMINI.dsn(server.url)}) as registry:
        stream = await registry.provider("a").model("m1").stream(PROMPT)
        events, error = await read(stream)
        assert acquired_connections(registry._http.get()) == 0
    check_finished(stream, events, error)


async def test_gemini_cut_before_the_finish_reason_is_truncated(server: LocalServer) -> None:
    """A Gemini body cut before any finishReason is truncated."""
    server.routes[GEMINI.path("m1")] = sse_handler(GEMINI, GEMINI.unfinished(), end="close")
    async with Registry(env={"LLM_A": GEMINI.dsn(server.url)}) as registry:
        stream = await registry.provider("a").model("m1").stream(PROMPT)
        events, error = await read(stream)
        assert acquired_connections(registry._http.get()) == 0
    check_truncated(stream, events, error)


# --------------------------------------------------------------------------- 4. terminal signals


@ALL
@pytest.mark.parametrize("ending", ENDINGS)
async def test_terminal_signal_still_completes(flavour: Flavour, ending: Ending) -> None:
    """`[DONE]`, `message_stop`, Gemini's finishReason chunk: finished, as before."""
    async with provider_at(flavour, ending, flavour.complete(done=True)) as model:
        stream = await model.stream(PROMPT)
        events, error = await read(stream)
    check_finished(stream, events, error)


async def test_openai_done_without_any_finish_reason_still_ends_with_stop() -> None:
    """`[DONE]` with no finish reason seen completes with STOP (unchanged)."""
    body = b"".join(openai_frames(finish=None, done=True))
    async with provider_at(OPENAI, "chunked", body) as model:
        stream = await model.stream(PROMPT)
        events, error = await read(stream)
    check_finished(stream, events, error)
