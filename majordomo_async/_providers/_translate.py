"""The one stream loop of the HTTP providers, and the translator protocol it drives.

A streamed body goes through three steps, the same for every HTTP provider:

1. its `BodyReader` gives the raw byte chunks as they arrive;
2. a `BodyDecoder` turns them into items: Server-Sent Events (`SSEDecoder`) or JSON
   values, one per line (`NDJSONDecoder`);
3. a `StreamTranslator` turns each item into our `StreamEvent`s, and says when the
   provider's terminal signal arrived (`done`).

A provider module keeps only its wire format: its translator class, whose `decoder()`
picks the decoder. `stream_events()` is the loop, shared by all of them; see there for
what happens after the terminal event and at the end of the body.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from typing import TYPE_CHECKING, Protocol, TypeVar

if TYPE_CHECKING:
    from .._events import StreamEvent
    from .._exceptions import ProviderError
    from .._http import BodyReader

__all__ = ["BodyDecoder", "StreamTranslator", "stream_events"]

ItemT = TypeVar("ItemT")
"""What a decoder makes and its translator takes: `ServerSentEvent`, or a JSON value."""


class BodyDecoder(Protocol[ItemT]):
    """An incremental decoder of a streamed body: `SSEDecoder`, `NDJSONDecoder`, or a
    provider's wrapper of one. Pure: no I/O."""

    def feed(self, chunk: bytes) -> list[ItemT]:
        """Take the next chunk of the body; return the items it completes, in order.

        Raises:
            ResponseFormatError: the body cannot be decoded (bad UTF-8, a line too long,
                a line that is not JSON).
        """
        ...

    def close(self) -> list[ItemT]:
        """Mark the clean end of the body; return the items that completes (the last
        block or line, which had no closing line ending)."""
        ...


class StreamTranslator(Protocol[ItemT]):
    """One stream's translation from decoded items to our events: one object per stream.

    The loop (`stream_events()`) calls `decoder()` once, then `feed()` with every item in
    order until `done` turns True, then `finish()` if the body ended cleanly before that.
    Every method is a plain method returning a list: the loop yields from it directly,
    with no generator layer per item.

    A translator raises for what the body says went wrong: an in-band error event (the
    provider's mapped, typed error), an item that is not what the wire format promises
    (`ResponseFormatError`), a clean end before the answer was complete
    (`StreamTruncatedError`). It never masks the API key itself: every error leaving a
    stream passes the provider's `_redact_error` (the `Stream`'s `on_error`).
    """

    done: bool
    """True once the provider's terminal signal arrived (or `finish()` completed the
    answer): the answer is complete and nothing more is fed."""

    def decoder(self) -> BodyDecoder[ItemT]:
        """A new decoder for this stream's body (the wire format's choice)."""
        ...

    def feed(self, item: ItemT) -> list[StreamEvent]:
        """Our events for one decoded item (an SSE event or an NDJSON value); may set `done`.

        Raises:
            ProviderError: the item is an in-band error, or is malformed.
        """
        ...

    def finish(self) -> list[StreamEvent]:
        """The body ended cleanly (its reader returned b"") before `done`: the last events.

        A wire format whose answer can be complete without its terminal signal (a finish
        reason came, then the body ended) returns the `StreamEnd` here.

        Raises:
            StreamTruncatedError: the answer is incomplete.
            ProviderError: what the end of the body says went wrong.
        """
        ...


async def stream_events(
    translator: StreamTranslator[ItemT],
    chunks: BodyReader,
    *,
    not_a_stream: Callable[[BodyReader], Awaitable[ProviderError]] | None = None,
) -> AsyncGenerator[StreamEvent, None]:
    """Our events from a streamed body: read, decode, translate, yield.

    The loop every HTTP provider's `stream()` runs:

    - each chunk of `chunks` goes through the translator's decoder, each item it
      completes through `translator.feed()`, and each event is yielded at once;
    - as soon as `translator.done` turns True the answer is complete: the items after
      the terminal one are not fed, and the rest of the body is drained
      (`BodyReader.drain()`: for a moment at most, to reuse the connection). An error
      there (a reset, a stall, a missing chunked terminator, in-band data after the
      terminal event) is ignored: it cannot change a complete answer. Every provider
      behaves this way;
    - at a clean end of the body before `done`, the items `decoder.close()` completes
      are fed, then the events of `translator.finish()` are yielded (which raises if the
      answer is incomplete);
    - a transport failure while reading before `done` raises the reader's error (a cut
      body: `StreamTruncatedError`).

    Closing the generator early, or any error, closes `chunks` (and so the response).

    Args:
        translator: this stream's translator (it makes the decoder).
        chunks: the body reader of the open response.
        not_a_stream: when the reply is known not to be a stream (a provider that checks
            the content type), reads the body and returns the error to raise instead.
    """
    decoder = translator.decoder()
    decode, feed, read = decoder.feed, translator.feed, chunks.read
    async with aclosing(chunks):
        if not_a_stream is not None:
            raise await not_a_stream(chunks)
        # `read()` directly rather than `async for`: one frame less per chunk.
        while chunk := await read():
            for item in decode(chunk):
                for event in feed(item):
                    yield event
                if translator.done:
                    break
            if translator.done:
                await chunks.drain()
                return
        for item in decoder.close():
            for event in feed(item):
                yield event
            if translator.done:
                return
    for event in translator.finish():
        yield event
