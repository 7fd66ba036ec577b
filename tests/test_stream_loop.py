"""The one stream loop of the HTTP providers (`_providers/_translate.stream_events`).

First the loop itself, driven by a scripted translator over a body in memory: the order
of the steps, what happens after the terminal event, at a clean end, and on errors.
Then the rule it gives every wire format, on real sockets: once the terminal event is
in, the answer is complete, and whatever follows it in the body (an in-band error event,
in the same read or a later one) changes nothing. Last, the one way translators' errors
are masked: the provider's `_redact_error`, for every wire format.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Final

import pytest

from majordomo_async import (
    FinishReason,
    HTTPSessionHolder,
    ProviderError,
    Registry,
    ServerError,
    StreamEnd,
    StreamEvent,
    StreamTruncatedError,
    TextDelta,
)
from majordomo_async._providers._translate import StreamTranslator, stream_events
from majordomo_async._providers.anthropic import AnthropicProvider
from majordomo_async._providers.gemini import GeminiProvider
from majordomo_async._providers.ollama import OllamaProvider
from majordomo_async._providers.openai import OpenAIProvider

from .helpers.servers import acquired_connections, local_server, play, respond
from .test_stream_endings import ANTHROPIC, GEMINI, KEY, OPENAI, PROMPT, TEXT, Flavour, read

pytestmark = pytest.mark.usefixtures("no_leaked_tasks")


# --------------------------------------------------------------------------- the loop alone


class MemoryBody:
    """A `BodyReader` stand-in over chunks in memory, recording what the loop did."""

    def __init__(self, chunks: Sequence[bytes]) -> None:
        self.chunks = list(chunks)
        self.reads = 0
        self.drained = False
        self.closed = False

    async def read(self) -> bytes:
        self.reads += 1
        return self.chunks.pop(0) if self.chunks else b""

    async def drain(self) -> None:
        self.drained = True
        self.chunks.clear()

    async def aclose(self) -> None:
        self.closed = True


class LineDecoder:
    """Items are the body's lines (b"\\n"-terminated); `close()` gives the unterminated rest."""

    def __init__(self) -> None:
        self.rest = b""

    def feed(self, chunk: bytes) -> list[str]:
        *lines, self.rest = (self.rest + chunk).split(b"\n")
        return [line.decode() for line in lines]

    def close(self) -> list[str]:
        rest, self.rest = self.rest, b""
        return [rest.decode()] if rest else []


class Scripted:
    """A translator of lines: "text X" is a delta, "end" the terminal event, "fail" an
    in-band error; `finish()` completes after "stop", else raises truncation."""

    def __init__(self) -> None:
        self.done = False
        self.fed: list[str] = []
        self.stopped = False
        self.finished = 0

    def decoder(self) -> LineDecoder:
        return LineDecoder()

    def feed(self, item: str) -> list[StreamEvent]:
        self.fed.append(item)
        if item == "end":
            self.done = True
            return [StreamEnd(FinishReason.STOP)]
        if item == "fail":
            raise ServerError("in-band failure", provider="p", model="m")
        if item == "stop":
            self.stopped = True
            return []
        return [TextDelta(item.removeprefix("text "))]

    def finish(self) -> list[StreamEvent]:
        self.finished += 1
        if not self.stopped:
            raise StreamTruncatedError("cut", provider="p", model="m")
        self.done = True
        return [StreamEnd(FinishReason.LENGTH)]


async def run(
    translator: Scripted, body: MemoryBody, **kwargs: Any
) -> tuple[list[StreamEvent], Exception | None]:
    checked: StreamTranslator[str] = translator  # it is one, as mypy sees it
    events: list[StreamEvent] = []
    try:
        async for event in stream_events(checked, body, **kwargs):  # type: ignore[arg-type]
            events.append(event)
    except Exception as exc:
        return events, exc
    return events, None


async def test_items_are_translated_in_order_across_chunks() -> None:
    """Each chunk's items go through the translator; events come out in order."""
    translator = Scripted()
    body = MemoryBody([b"text a\ntex", b"t b\n", b"end\n"])
    events, error = await run(translator, body)
    assert error is None
    assert events == [TextDelta("a"), TextDelta("b"), StreamEnd(FinishReason.STOP)]
    assert translator.finished == 0  # the terminal event came: no finish()
    assert body.drained and body.closed


async def test_nothing_after_the_terminal_item_is_fed() -> None:
    """Items after the terminal one, in the same chunk or later, are not translated: the
    rest of the body is drained, and an in-band error there changes nothing."""
    translator = Scripted()
    body = MemoryBody([b"text a\nend\nfail\ntext late\n", b"fail\n"])
    events, error = await run(translator, body)
    assert error is None
    assert events == [TextDelta("a"), StreamEnd(FinishReason.STOP)]
    assert translator.fed == ["text a", "end"]
    assert body.drained and body.closed and body.reads == 1


async def test_a_clean_end_feeds_the_last_item_then_finishes() -> None:
    """At the end of the body, `decoder.close()` items are fed, then `finish()`'s events."""
    translator = Scripted()
    body = MemoryBody([b"text a\nstop\ntext b"])
    events, error = await run(translator, body)
    assert error is None
    assert events == [TextDelta("a"), TextDelta("b"), StreamEnd(FinishReason.LENGTH)]
    assert translator.finished == 1
    assert not body.drained and body.closed


async def test_a_terminal_item_at_the_clean_end_needs_no_finish() -> None:
    """A terminal item completed by `close()` ends the stream without `finish()`."""
    translator = Scripted()
    events, error = await run(translator, MemoryBody([b"text a\nend"]))
    assert error is None
    assert events[-1] == StreamEnd(FinishReason.STOP)
    assert translator.finished == 0


async def test_a_clean_end_without_the_terminal_item_is_truncated() -> None:
    """`finish()` raising at a clean end reaches the consumer after the events so far."""
    events, error = await run(Scripted(), MemoryBody([b"text a\n"]))
    assert events == [TextDelta("a")]
    assert isinstance(error, StreamTruncatedError)


async def test_an_in_band_error_closes_the_body() -> None:
    """An error from the translator stops the loop and closes the reader at once."""
    translator = Scripted()
    body = MemoryBody([b"text a\nfail\n", b"end\n"])
    events, error = await run(translator, body)
    assert events == [TextDelta("a")]
    assert isinstance(error, ServerError)
    assert body.closed and not body.drained and body.chunks == [b"end\n"]


async def test_not_a_stream_raises_its_error_before_any_event() -> None:
    """A reply the provider knows is no stream is read by its reader into the error."""
    body = MemoryBody([b'{"error": "x"}'])

    async def not_a_stream(chunks: Any) -> ProviderError:
        return ServerError(f"not a stream: {(await chunks.read()).decode()}", provider="p")

    events, error = await run(Scripted(), body, not_a_stream=not_a_stream)
    assert events == []
    assert isinstance(error, ServerError) and "not a stream" in str(error)
    assert body.closed


@pytest.mark.parametrize(
    "provider_class", [OpenAIProvider, AnthropicProvider, GeminiProvider, OllamaProvider]
)
def test_every_http_provider_has_a_translator(provider_class: type[Any]) -> None:
    """Every HTTP provider's model makes a translator with the one vocabulary."""
    provider = provider_class(
        "p", api_key=KEY, base_url="http://127.0.0.1:9", http=HTTPSessionHolder()
    )
    translator = provider.model("m")._translator({}, "req_1")
    assert translator.done is False
    decoder = translator.decoder()
    assert decoder.feed(b"") == [] and decoder.close() == []
    with pytest.raises(StreamTruncatedError):
        translator.finish()


# --------------------------------------------------------------------------- every wire format


def ollama_body() -> bytes:
    """An Ollama `/api/chat` stream: content lines, then the `"done": true` line."""
    lines: list[dict[str, Any]] = [
        {"model": "m1", "message": {"role": "assistant", "content": TEXT}, "done": False},
        {
            "model": "m1",
            "message": {"role": "assistant", "content": ""},
            "done": True,
            "done_reason": "stop",
            "prompt_eval_count": 19,
            "eval_count": 9,
        },
    ]
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


# What each wire format writes after its terminal event here: an in-band error event.
ERROR_AFTER: Final = {
    "openai": b'data: {"error": {"message": "late failure", "type": "server_error"}}\n\n',
    "anthropic": (
        b"event: error\n"
        b'data: {"type": "error", "error": {"type": "api_error", "message": "late"}}\n\n'
    ),
    "gemini": b'data: {"error": {"code": 500, "message": "late", "status": "INTERNAL"}}\r\n\r\n',
    "ollama": b'{"error": "late failure"}\n',
}
OLLAMA: Final = Flavour(
    "ollama",
    "ollama+http",
    "",
    lambda model: "/api/chat",
    lambda done=False: [ollama_body()],
    {},
    "done",
)
FLAVOURS: Final = pytest.mark.parametrize(
    "flavour", [OPENAI, ANTHROPIC, GEMINI, OLLAMA], ids=lambda f: f.name
)


@FLAVOURS
@pytest.mark.parametrize("delivery", ["one-read", "bytewise"])
async def test_an_error_after_the_terminal_event_changes_nothing(
    flavour: Flavour, delivery: str
) -> None:
    """`[DONE]`, `message_stop`, Gemini's finishReason chunk, Ollama's `"done": true`:
    an in-band error right after it, in the same read or a later one, is not raised."""
    body = flavour.complete(done=True) + ERROR_AFTER[flavour.name]
    content_type = "application/x-ndjson" if flavour is OLLAMA else "text/event-stream"
    async with local_server() as server:
        server.routes[flavour.path("m1")] = (
            respond(200, body, content_type=content_type)
            if delivery == "one-read"
            else play(body, chunk=1, content_type=content_type)
        )
        async with Registry(env={"LLM_A": flavour.dsn(server.url)}) as registry:
            stream = await registry.provider("a").model("m1").stream(PROMPT)
            events, error = await read(stream)
            assert acquired_connections(registry._http.get()) == 0
    assert error is None, repr(error)
    assert stream.finished
    assert stream.response.text == TEXT
    assert stream.response.finish_reason is FinishReason.STOP
    assert sum(isinstance(event, StreamEnd) for event in events) == 1


# --------------------------------------------------------------------------- the key, masked


def error_event(flavour: Flavour, message: str) -> bytes:
    """An in-band error event of `flavour` whose message is `message`."""
    quoted = json.dumps(message)
    if flavour is OPENAI:
        return f'data: {{"error": {{"message": {quoted}, "type": "server_error"}}}}\n\n'.encode()
    if flavour is ANTHROPIC:
        data = f'{{"type": "error", "error": {{"type": "api_error", "message": {quoted}}}}}'
        return f"event: error\ndata: {data}\n\n".encode()
    if flavour is GEMINI:
        error = f'{{"code": 500, "message": {quoted}, "status": "INTERNAL"}}'
        return f'data: {{"error": {error}}}\r\n\r\n'.encode()
    return f'{{"error": {quoted}}}\n'.encode()


async def in_band_error(flavour: Flavour, message: str) -> ProviderError:
    """The error a stream of `flavour` raises for an in-band error event saying `message`."""
    content_type = "application/x-ndjson" if flavour is OLLAMA else "text/event-stream"
    async with local_server() as server:
        body = error_event(flavour, message)
        server.routes[flavour.path("m1")] = respond(200, body, content_type=content_type)
        async with Registry(env={"LLM_A": flavour.dsn(server.url)}) as registry:
            stream = await registry.provider("a").model("m1").stream(PROMPT)
            _, error = await read(stream)
    assert isinstance(error, ProviderError), repr(error)
    return error


@FLAVOURS
async def test_a_key_echoed_by_an_in_band_error_is_masked(flavour: Flavour) -> None:
    """The provider's `_redact_error` masks every translator's in-band error on its way
    out (the `Stream`'s `on_error`): the one masking path for them."""
    error = await in_band_error(flavour, f"invalid key {KEY} for this project")
    for text in (str(error), repr(error), error.message, error.code or ""):
        assert "endings-0123SECRET" not in text
    assert "***" in error.message


async def test_a_key_cut_by_a_clipped_message_is_masked() -> None:
    """OpenAI clips long messages (500 characters): a key cut in two there loses its
    start too, not only a whole key."""
    error = await in_band_error(OPENAI, "x" * 485 + " " + KEY + " and more")
    assert error.message.endswith("***…"), error.message[-40:]
    assert "sk-test" not in str(error)
