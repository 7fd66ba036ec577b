"""Gemini's error JSON written without `data:`: its decoder (`_GeminiDecoder`), end to end.

Gemini sometimes writes an `{"error": ...}` object as plain lines instead of an SSE
event: after some events, or as the whole body, on one line or pretty-printed over
several (python-genai reads such lines until the braces balance). The generic
`SSEDecoder` ignores them, as the SSE rules say; Gemini's own decoder keeps the trailing
run of such "stray" lines and hands an error object there to the translator, which
raises the mapped error: the status from the body's `code`, its `message` and `status`.

First the decoder's rules for the trailing run (moved here from the SSE decoder, which
no longer knows about them), then the whole path on a real socket.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable
from typing import Any, Final

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from majordomo_async import (
    BadRequestError,
    FinishReason,
    HTTPSessionHolder,
    ProviderError,
    RateLimitError,
    ServerError,
    StreamTruncatedError,
    TextDelta,
)
from majordomo_async._providers.gemini import GeminiProvider, _GeminiDecoder, _StreamTranslator
from majordomo_async._sse import ServerSentEvent, SSEDecoder

from .helpers.servers import LocalServer, local_server, play
from .test_sse import _LINE_TEXT, _event_stream_body, bytewise, cut

E = ServerSentEvent
KEY: Final = "AIzaSyTEST-raw-errors-0123456789abcdef"
MODEL: Final = "gemini-2.5-flash"
STREAM_PATH: Final = f"/v1beta/models/{MODEL}:streamGenerateContent"


def decode(chunks: Iterable[bytes], **kwargs: Any) -> tuple[list[ServerSentEvent], str]:
    """Every event from feeding `chunks` and closing, and the stray tail left."""
    decoder = _GeminiDecoder(**kwargs)
    events = [event for chunk in chunks for event in decoder.feed(chunk)]
    events += decoder.close()
    return events, decoder.stray_tail


def stray_tail(chunks: Iterable[bytes], **kwargs: Any) -> str:
    """The stray tail after feeding `chunks` and closing."""
    return decode(chunks, **kwargs)[1]


def generic(chunks: Iterable[bytes]) -> list[ServerSentEvent]:
    """The events the generic `SSEDecoder` finds in the same body."""
    decoder = SSEDecoder()
    return [event for chunk in chunks for event in decoder.feed(chunk)] + decoder.close()


# --------------------------------------------------------------------------- the trailing run

RAW_ERROR = (
    b'{\r\n  "error": {\r\n    "code": 429,\r\n    "status": "RESOURCE_EXHAUSTED"\r\n  }\r\n}\r\n'
)


def test_the_tail_holds_a_json_error_written_without_data() -> None:
    """Gemini's bare error JSON after the events comes back whole, lines joined by LF,
    and as one more event at the end of the body."""
    body = b'data: {"candidates": []}\r\n\r\n' + RAW_ERROR
    expected = '{\n  "error": {\n    "code": 429,\n    "status": "RESOURCE_EXHAUSTED"\n  }\n}'
    for chunks in ([body], bytewise(body)):
        events, tail = decode(chunks)
        assert tail == expected
        assert events == [E(data='{"candidates": []}'), E(data=expected)]


def test_stray_lines_do_not_change_the_events() -> None:
    """Stray lines are still ignored as unknown fields: the events are the SSE decoder's."""
    body = b"data: a\n{junk\n\n" + RAW_ERROR + b"data: b\n\n"
    assert decode([body])[0] == generic([body]) == [E(data="a"), E(data="b")]


def test_a_tail_that_is_no_error_object_is_no_event() -> None:
    """Stray lines that are not an `{"error": ...}` object stay out of the events."""
    for tail in (b"{junk}\n", b'{"candidates": []}\n', b'["error"]\n', b'{"error": 1\n'):
        assert decode([b"data: a\n\n" + tail])[0] == [E(data="a")]


@pytest.mark.parametrize(
    "after",
    [b"data: x\n", b"data\n", b"event: x\n", b"id: 7\n", b"retry: 10\n", b": keep-alive\n"],
    ids=["data", "bare-data", "event", "id", "retry", "comment"],
)
def test_a_field_or_comment_line_empties_the_tail(after: bytes) -> None:
    """Any field the rules act on, or a comment, after the stray lines ends the tail."""
    assert stray_tail([b"{\n}\n" + after]) == ""
    assert stray_tail([b"{\n}\n" + after + b"\n]\n"]) == "]"


def test_a_dispatched_event_empties_the_tail() -> None:
    """Stray lines inside a block go with the block's event."""
    assert stray_tail([b"data: a\n{inside}\n\n"]) == ""
    assert stray_tail([b"data: a\n", b"{inside}\n\n"]) == ""  # data in an earlier chunk
    assert stray_tail([b"data: a\nevent: x\n{inside}\n\n"]) == ""
    assert stray_tail([b"data: a\n{inside}\n"]) == ""  # close() dispatches it too


def test_blank_lines_end_a_run_without_emptying_it() -> None:
    """Trailing blank lines keep the run; a stray line after a blank starts a new run."""
    assert stray_tail([b"{one\n}\n\n\r\n"]) == "{one\n}"
    assert stray_tail([b"{one\n\n{two\n"]) == "{two"
    assert stray_tail([b"event: x\n\n{after a block with no data\n"]) == (
        "{after a block with no data"
    )


def test_unknown_fields_are_stray_lines() -> None:
    """A field name the rules ignore (`foo: 1`) is as stray as a line with no colon."""
    assert stray_tail([b"data: a\n\nfoo: 1\nbar\n"]) == "foo: 1\nbar"


def test_close_flushes_the_last_line_into_the_tail() -> None:
    """A final stray line without a line ending counts at the end of the body."""
    assert stray_tail([b"data: a\n\n{\n", b'"error": 1}']) == '{\n"error": 1}'


def test_a_bom_before_a_whole_body_error_is_skipped() -> None:
    """A body that is only the error JSON may start with a BOM, like any event stream."""
    body = b"\xef\xbb\xbf" + RAW_ERROR
    assert json.loads(stray_tail([body])) == json.loads(RAW_ERROR)
    assert json.loads(stray_tail(bytewise(body))) == json.loads(RAW_ERROR)


def test_the_tail_is_bounded_by_the_line_cap() -> None:
    """The tail keeps at most max_line_bytes bytes: the run's last whole lines."""
    lines = [f"{{line {i}}}".encode() for i in range(50)]  # 9 or 10 bytes each
    tail = stray_tail([b"\n".join(lines) + b"\n"], max_line_bytes=32)
    assert tail == "{line 47}\n{line 48}\n{line 49}"
    assert stray_tail([b"{12345678}\n{12345678}\n"], max_line_bytes=21) == (
        "{12345678}\n{12345678}"
    )


def test_a_long_stray_body_keeps_bounded_memory() -> None:
    """After 64 KiB (plus the line cap) of stray lines with no event, nothing more is
    kept: no Gemini error is that long, and the stream is plainly truncated."""
    decoder = _GeminiDecoder(max_line_bytes=64)
    line = b"{a stray line of 32 bytes, ok?}\n"
    for _ in range(4_000):  # 128 000 bytes
        assert decoder.feed(line) == []
    assert sum(map(len, decoder._tail)) <= 64 * 1024 + 64 + len(line)
    assert decoder.feed(b'{"error": {"code": 500}}\n') == []
    assert decoder.close() == []
    assert decoder.stray_tail == ""
    # An event starts a new window: a tail after it counts again.
    decoder = _GeminiDecoder(max_line_bytes=64)
    for _ in range(4_000):
        decoder.feed(line)
    decoder.feed(b"data: {}\n\n")
    assert decoder.feed(b'{"error": {"code": 500}}\n') == []
    assert decoder.close() == [E(data='{"error": {"code": 500}}')]


def test_the_error_is_the_last_top_level_object_of_the_run() -> None:
    """Other stray JSON before the error object in the same run does not hide it."""
    chunk = b'{"candidates": []}\n'
    error = json.dumps({"error": {"code": 503}}, indent=2).encode()
    assert decode([chunk + error])[0] == [E(data=error.decode())]
    assert decode([b"junk\n" + error])[0] == [E(data=error.decode())]
    assert decode([error + b"\n" + chunk])[0] == []  # the run ends with no error


# A stray line: its first character rules out a field name and a comment.
_STRAY_LINE = st.builds(str.__add__, st.sampled_from(["{", "}", "]", '  "', "foo: "]), _LINE_TEXT)


@st.composite
def streams_with_strays(draw: st.DrawFn) -> tuple[bytes, list[ServerSentEvent], str]:
    """A body mixing events (with stray lines inside), comments and runs of stray lines,
    with the events it holds and the stray tail it must leave.

    By construction: stray lines inside an event's block never stay (the dispatch empties
    the tail); a standalone run stays unless a block or a comment follows it; runs with
    no blank line between them are one run.
    """
    lines: list[str] = []
    expected: list[ServerSentEvent] = []
    tail: list[str] = []
    joined = False  # the last line was a stray one: a run drawn now continues it
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["event", "comment", "strays", "blank"]))
        if kind == "event":
            data = draw(st.lists(_LINE_TEXT, min_size=1, max_size=3))
            for value in data:
                lines.append("data: " + value)
                lines.extend(draw(st.lists(_STRAY_LINE, max_size=2)))
            lines.append("")
            expected.append(E(data="\n".join(data)))
            tail, joined = [], False
        elif kind == "comment":
            lines.append(":" + draw(_LINE_TEXT))
            tail, joined = [], False
        elif kind == "strays":
            run = draw(st.lists(_STRAY_LINE, min_size=1, max_size=3))
            lines.extend(run)
            tail = [*tail, *run] if joined else run
            joined = True
        else:
            lines.append("")
            joined = False
    return _event_stream_body(draw, lines), expected, "\n".join(tail)


@settings(max_examples=300, deadline=None)
@given(st.data(), streams_with_strays())
def test_stray_tail_split_anywhere_is_the_same(
    data: st.DataObject, stream: tuple[bytes, list[ServerSentEvent], str]
) -> None:
    """Any chunking gives the same events and the same stray tail, and the right ones."""
    body, expected_events, expected_tail = stream
    chunks = data.draw(cut(body))
    assert generic([body]) == expected_events == generic(chunks)
    whole, split = decode([body]), decode(chunks)
    assert whole[1] == split[1] == expected_tail
    if '"error"' in expected_tail:
        return  # hypothesis drew a line like an error object: the close() event may differ
    assert whole[0] == split[0] == expected_events


# --------------------------------------------------------------------------- the whole body

# python-genai's own error body, and a Gemini 400 as the API writes it (two-space indent).
INVALID: Final = {
    "error": {
        "code": 400,
        "message": "* GenerateContentRequest.contents: contents is not specified\n",
        "status": "INVALID_ARGUMENT",
    }
}
ONE_LINE: Final = json.dumps(INVALID).encode()
PRETTY: Final = json.dumps(INVALID, indent=2).encode() + b"\n"
BODIES: Final = pytest.mark.parametrize("body", [ONE_LINE, PRETTY], ids=["one-line", "pretty"])
SPLITS: Final = pytest.mark.parametrize("whole", [True, False], ids=["whole", "bytewise"])


def translate(chunks: Iterable[bytes]) -> list[Any]:
    """The stream's events through the decoder and translator, as the loop runs them."""
    translator = _StreamTranslator(key=f"gemini/{MODEL}", headers={})
    decoder = translator.decoder()
    events: list[Any] = []
    for chunk in chunks:
        for item in decoder.feed(chunk):
            events += translator.feed(item)
    for item in decoder.close():
        events += translator.feed(item)
    return events + translator.finish()


def check_invalid_argument(error: BaseException) -> None:
    """The mapped error of `INVALID`: status from its code, its message and status."""
    assert type(error) is BadRequestError, repr(error)
    assert error.status == 400
    assert error.code == "INVALID_ARGUMENT"
    assert error.message == INVALID["error"]["message"]


@BODIES
@SPLITS
def test_a_whole_body_error_without_data_is_the_mapped_error(body: bytes, whole: bool) -> None:
    """The whole body is the error object, no `data:` anywhere: its mapped error, not
    `StreamTruncatedError`."""
    with pytest.raises(ProviderError) as info:
        translate([body] if whole else bytewise(body))
    check_invalid_argument(info.value)


def test_python_genai_s_body_of_a_chunk_then_an_error() -> None:
    """python-genai's test body: a chunk and an error, neither with `data:`."""
    body = (
        b'{"candidates":[{"content":{"parts":[{"text":"test"}],"role":"model"}}]}\n'
        b'{"error":{"code":500,"message":"Error","status":"INTERNAL"}}'
    )
    for chunks in ([body], bytewise(body)):
        with pytest.raises(ServerError) as info:
            translate(chunks)
        assert (info.value.status, info.value.code, info.value.message) == (
            500,
            "INTERNAL",
            "Error",
        )


def test_an_unfinished_body_without_an_error_is_truncated() -> None:
    """Stray lines that hold no error leave a plain truncated stream."""
    with pytest.raises(StreamTruncatedError):
        translate([b"{\n  not json\n}\n"])


@pytest.fixture
async def server() -> AsyncIterator[tuple[LocalServer, GeminiProvider]]:
    """A local server, and a Gemini provider pointed at it."""
    holder = HTTPSessionHolder()
    try:
        async with local_server(holder) as server:
            yield (
                server,
                GeminiProvider("gemini", api_key=KEY, base_url=server.url + "/v1beta", http=holder),
            )
    finally:
        await holder.aclose()


@BODIES
@SPLITS
@pytest.mark.parametrize(
    ("status", "content_type"),
    [(200, "text/event-stream"), (200, "application/json"), (400, "application/json")],
    ids=["200-sse", "200-json", "400"],
)
async def test_a_whole_body_error_on_a_socket(
    server: tuple[LocalServer, GeminiProvider],
    body: bytes,
    whole: bool,
    status: int,
    content_type: str,
) -> None:
    """The same on a real socket, with HTTP 200 (in the stream) or the error status
    (before it): the mapped error either way."""
    local, provider = server
    local.routes[STREAM_PATH] = play(
        body, chunk=len(body) if whole else 1, status=status, content_type=content_type
    )
    with pytest.raises(ProviderError) as info:
        stream = await provider.model(MODEL).stream("Hi")
        async with stream:
            await stream.collect()
    check_invalid_argument(info.value)


async def test_a_raw_error_after_content_on_a_socket(
    server: tuple[LocalServer, GeminiProvider],
) -> None:
    """Content, then a pretty-printed error without `data:`: the content, then the error."""
    local, provider = server
    error = {
        "error": {"code": 429, "message": "Resource exhausted.", "status": "RESOURCE_EXHAUSTED"}
    }
    chunk = {"candidates": [{"content": {"parts": [{"text": "Partial"}], "role": "model"}}]}
    body = (
        b"data: " + json.dumps(chunk).encode() + b"\r\n\r\n" + json.dumps(error, indent=2).encode()
    )
    local.routes[STREAM_PATH] = play(body, chunk=5)
    seen: list[Any] = []
    stream = await provider.model(MODEL).stream("Hi")
    with pytest.raises(RateLimitError) as info:
        async with stream:
            async for event in stream:
                seen.append(event)
    assert TextDelta("Partial") in seen
    assert (info.value.status, info.value.code) == (429, "RESOURCE_EXHAUSTED")
    assert not stream.finished
    assert FinishReason.STOP not in [getattr(event, "finish_reason", None) for event in seen]
