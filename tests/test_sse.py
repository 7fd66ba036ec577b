"""The SSE and NDJSON decoders: WHATWG line and field rules, provider streams, errors, splits.

Rules are tested one per test on small literal bodies. The property tests at the end
check the decoders against a model of the generated events, and check that where the
byte stream is cut into chunks never changes what comes out.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from majordomo_async._exceptions import ResponseFormatError
from majordomo_async._sse import NDJSONDecoder, ServerSentEvent, SSEDecoder

E = ServerSentEvent


def sse(chunks: Iterable[bytes], **kwargs: Any) -> list[ServerSentEvent]:
    """Every event from feeding `chunks` in order, then closing."""
    decoder = SSEDecoder(**kwargs)
    events = [event for chunk in chunks for event in decoder.feed(chunk)]
    return events + decoder.close()


def ndjson(chunks: Iterable[bytes], **kwargs: Any) -> list[Any]:
    """Every value from feeding `chunks` in order, then closing."""
    decoder = NDJSONDecoder(**kwargs)
    values = [value for chunk in chunks for value in decoder.feed(chunk)]
    return values + decoder.close()


def bytewise(body: bytes) -> list[bytes]:
    """`body` as one-byte chunks."""
    return [body[i : i + 1] for i in range(len(body))]


# --------------------------------------------------------------------------- line endings


def test_lf_line_endings() -> None:
    """LF ends lines, and an LF blank line dispatches."""
    assert sse([b"data: a\n\ndata: b\n\n"]) == [E(data="a"), E(data="b")]


def test_crlf_line_endings() -> None:
    """CRLF is one line ending, not a line ending plus a blank line."""
    assert sse([b"data: a\r\ndata: b\r\n\r\n"]) == [E(data="a\nb")]


def test_cr_line_endings() -> None:
    """A lone CR ends a line."""
    assert sse([b"data: a\rdata: b\r\rdata: c\r\r"]) == [E(data="a\nb"), E(data="c")]


def test_crlf_split_across_chunks_is_one_line_ending() -> None:
    """A CR ending one chunk and the LF starting the next make one line ending."""
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r") == []
    assert decoder.feed(b"\ndata: b\r") == []  # were the LF a blank line, "a" would be out
    assert decoder.feed(b"\n") == []
    assert decoder.feed(b"\r\n") == [E(data="a\nb")]


def test_crlf_split_survives_an_empty_chunk() -> None:
    """An empty chunk between the CR and the LF does not separate them."""
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r") == []
    assert decoder.feed(b"") == []
    assert decoder.feed(b"\ndata: b\n") == []
    assert decoder.feed(b"\n") == [E(data="a\nb")]


def test_cr_at_chunk_end_then_cr_is_a_blank_line() -> None:
    """Only an LF is swallowed after a chunk-ending CR: a second CR is a blank line."""
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r") == []
    assert decoder.feed(b"\r") == [E(data="a")]


def test_lf_after_a_mid_chunk_cr_pair_is_a_blank_line() -> None:
    """The chunk-boundary CRLF rule does not swallow an LF after an in-chunk CRLF."""
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r\n") == []
    assert decoder.feed(b"\n") == [E(data="a")]


# --------------------------------------------------------------------------- fields


def test_comments_and_keep_alives_are_ignored() -> None:
    """Lines starting with ':' are skipped, between events and inside one."""
    body = b": OPENROUTER PROCESSING\n\n: keep-alive\n\ndata: a\n:mid-event\ndata: b\n\n:\n\n"
    assert sse([body]) == [E(data="a\nb")]


def test_multiple_data_lines_join_with_newline() -> None:
    """Several data lines make one event, joined with '\\n' and no trailing newline."""
    assert sse([b"data: one\ndata: two\ndata: three\n\n"]) == [E(data="one\ntwo\nthree")]


def test_one_leading_space_is_dropped() -> None:
    """Exactly one space after the colon is dropped; more are kept, none is fine."""
    body = b"data:  two\n\ndata:none\n\ndata: \n\nevent:  spaced\ndata: x\n\n"
    assert sse([body]) == [E(data=" two"), E(data="none"), E(data=""), E(" spaced", "x")]


def test_a_line_without_colon_is_a_field_with_empty_value() -> None:
    """'data' alone is an empty data line; 'event' alone means the default type."""
    assert sse([b"data\ndata\n\nevent\ndata: x\n\n"]) == [E(data="\n"), E(data="x")]


def test_colon_in_value_is_kept() -> None:
    """Only the first colon separates the field name from the value."""
    assert sse([b'data: {"a": "b:c"}\n\n']) == [E(data='{"a": "b:c"}')]


def test_event_name_resets_after_dispatch() -> None:
    """An event type applies to its own block only."""
    body = b"event: delta\ndata: a\n\ndata: b\n\n"
    assert sse([body]) == [E("delta", "a"), E("message", "b")]


def test_empty_event_field_means_message() -> None:
    """An `event:` with an empty value dispatches as 'message'."""
    assert sse([b"event:\ndata: a\n\n"]) == [E("message", "a")]


def test_event_name_of_an_undispatched_block_does_not_leak() -> None:
    """A block without data resets the event type too."""
    assert sse([b"event: ghost\n\ndata: a\n\n"]) == [E("message", "a")]


def test_id_persists_across_events() -> None:
    """The last event id stays set until the next id field (the spec's buffer)."""
    body = b"id: 7\ndata: a\n\ndata: b\n\nid: 8\ndata: c\n\nid\ndata: d\n\n"
    assert sse([body]) == [
        E(data="a", id="7"),
        E(data="b", id="7"),
        E(data="c", id="8"),
        E(data="d", id=""),
    ]


def test_id_with_nul_is_ignored() -> None:
    """An id field containing NUL leaves the last event id unchanged."""
    assert sse([b"id: 1\ndata: a\n\nid: 2\x003\ndata: b\n\n"]) == [
        E(data="a", id="1"),
        E(data="b", id="1"),
    ]


def test_id_of_an_undispatched_block_still_counts() -> None:
    """An id in a block without data still sets the last event id."""
    assert sse([b"id: 5\n\ndata: a\n\n"]) == [E(data="a", id="5")]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(b"3000", 3000, id="digits"),
        pytest.param(b"0", 0, id="zero"),
        pytest.param(b"1.5", None, id="decimal"),
        pytest.param(b"-1", None, id="negative"),
        pytest.param(b"", None, id="empty"),
        pytest.param(b"12a", None, id="trailing-letter"),
        pytest.param("\u00b2".encode(), None, id="unicode-superscript-digit"),
        pytest.param("\u0663".encode(), None, id="arabic-indic-digit"),
    ],
)
def test_retry_only_if_all_ascii_digits(value: bytes, expected: int | None) -> None:
    """`retry` is taken only when its value is ASCII digits."""
    assert sse([b"retry: " + value + b"\ndata: a\n\n"]) == [E(data="a", retry=expected)]


def test_retry_belongs_to_its_block() -> None:
    """`retry` resets at the end of its block, like the event type."""
    assert sse([b"retry: 10\ndata: a\n\nretry: 20\n\ndata: b\n\n"]) == [
        E(data="a", retry=10),
        E(data="b"),
    ]


def test_unknown_fields_are_ignored() -> None:
    """Fields other than event/data/id/retry, and near-misses, change nothing."""
    body = b"foo: bar\nDATA: no\ndata : no\ndatum: no\ndata: yes\n\n"
    assert sse([body]) == [E(data="yes")]


def test_bom_at_start_is_skipped() -> None:
    """A UTF-8 BOM before the first line is not part of the first field name."""
    assert sse([b"\xef\xbb\xbfdata: a\n\n"]) == [E(data="a")]


def test_bom_split_across_chunks_is_skipped() -> None:
    """The BOM is recognised when it arrives one byte at a time."""
    assert sse(bytewise(b"\xef\xbb\xbfdata: a\n\n")) == [E(data="a")]


def test_bom_later_in_the_stream_is_kept() -> None:
    """Only a BOM at the very start is skipped: later, it is part of the field name."""
    assert sse([b"data: a\n\n\xef\xbb\xbfdata: b\n\n"]) == [E(data="a")]


@pytest.mark.parametrize("split", [False, True], ids=["whole", "bytewise"])
def test_character_sharing_the_bom_prefix_is_kept(split: bool) -> None:
    """U+FEFB starts with the BOM's first two bytes; it is text, not a BOM to drop."""
    body = "\ufefbdata: a\n\ndata: b\n\n".encode()
    assert body.startswith(b"\xef\xbb")
    assert sse(bytewise(body) if split else [body]) == [E(data="b")]


def test_blocks_without_data_are_not_dispatched() -> None:
    """Blank lines alone, or blocks with only event/id/retry, produce no event."""
    assert sse([b"\n\n\r\n\revent: x\n\nid: 1\n\nretry: 5\n\n"]) == []


# --------------------------------------------------------------------------- end of body


def test_close_flushes_an_unterminated_line() -> None:
    """A last data line with no line ending is dispatched by close()."""
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\n\ndata: b") == [E(data="a")]
    assert decoder.close() == [E(data="b")]


def test_close_dispatches_a_block_without_blank_line() -> None:
    """A block whose closing blank line never came is dispatched by close()."""
    decoder = SSEDecoder()
    assert decoder.feed(b"event: last\r\ndata: b\r\n") == []
    assert decoder.close() == [E("last", "b")]


def test_close_with_nothing_pending() -> None:
    """close() after complete events, or on a block with no data, returns nothing."""
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\n\n") == [E(data="a")]
    assert decoder.close() == []
    assert sse([b"event: x\nid: 1"]) == []


def test_close_resets_the_decoder() -> None:
    """After close() the decoder starts a new stream: no id, event or BOM carries over."""
    decoder = SSEDecoder()
    assert decoder.feed(b"id: 1\nevent: x\ndata: a") == []
    assert decoder.close() == [E("x", "a", "1")]
    assert decoder.feed(b"\xef\xbb\xbfdata: b\n\n") == [E(data="b")]


# --------------------------------------------------------------------------- provider streams


def test_openai_style_stream_with_done() -> None:
    """OpenAI sends `data:` events only, ending with `data: [DONE]`."""
    body = (
        b'data: {"choices":[{"delta":{"role":"assistant","content":""}}]}\n\n'
        b'data: {"choices":[{"delta":{"content":"Hi"}}]}\n\n'
        b": keep-alive\n\n"
        b'data: {"choices":[{"delta":{},"finish_reason":"stop"}]}\n\n'
        b"data: [DONE]\n\n"
    )
    events = sse([body])
    assert [event.event for event in events] == ["message"] * 4
    assert [json.loads(event.data) for event in events[:3]][1] == {
        "choices": [{"delta": {"content": "Hi"}}]
    }
    assert events[-1] == E(data="[DONE]")


def test_anthropic_style_event_and_data_pairs() -> None:
    """Anthropic names every event with `event:`; the names come out with the data."""
    body = (
        b"event: message_start\n"
        b'data: {"type":"message_start","message":{"id":"msg_1"}}\n\n'
        b"event: ping\n"
        b'data: {"type": "ping"}\n\n'
        b"event: content_block_delta\n"
        b'data: {"type":"content_block_delta","delta":{"type":"text_delta","text":"Hi"}}\n\n'
        b"event: message_stop\n"
        b'data: {"type":"message_stop"}\n\n'
    )
    events = sse([body])
    assert [event.event for event in events] == [
        "message_start",
        "ping",
        "content_block_delta",
        "message_stop",
    ]
    assert [json.loads(event.data)["type"] for event in events] == [event.event for event in events]


def test_gemini_crlf_stream_without_sentinel() -> None:
    """Gemini sends CRLF `data:` events and just closes the body at the end."""
    first = {"candidates": [{"content": {"role": "model", "parts": [{"text": "Hel"}]}}]}
    last = {"candidates": [{"content": {"parts": [{"text": "lo."}]}, "finishReason": "STOP"}]}
    body = b"".join(b"data: " + json.dumps(chunk).encode() + b"\r\n\r\n" for chunk in (first, last))
    assert sse([body]) == [E(data=json.dumps(first)), E(data=json.dumps(last))]
    assert sse(bytewise(body)) == sse([body])


# --------------------------------------------------------------------------- UTF-8


def test_utf8_split_across_chunks() -> None:
    """A multi-byte character cut between chunks decodes whole."""
    body = "data: héllo — 日本語 🎉\n\n".encode()
    assert sse(bytewise(body)) == [E(data="héllo — 日本語 🎉")]


def test_invalid_utf8_raises_response_format_error() -> None:
    """Bytes that are not UTF-8 raise ResponseFormatError naming the provider and model."""
    decoder = SSEDecoder(provider="openai", model="gpt-x")
    with pytest.raises(ResponseFormatError, match="invalid UTF-8 in the event stream") as info:
        decoder.feed(b"data: \xff\xfe\n\n")
    assert (info.value.provider, info.value.model) == ("openai", "gpt-x")
    assert isinstance(info.value.__cause__, UnicodeDecodeError)


def test_invalid_utf8_in_final_partial_line() -> None:
    """A truncated multi-byte character left at the end of the body is an error at close()."""
    decoder = SSEDecoder()
    assert decoder.feed("data: é".encode()[:-1]) == []
    with pytest.raises(ResponseFormatError, match="invalid UTF-8"):
        decoder.close()


def test_surrogate_bytes_are_invalid_utf8() -> None:
    """Encoded surrogates (CESU-style) are rejected by the strict decoder."""
    with pytest.raises(ResponseFormatError, match="invalid UTF-8"):
        sse([b"data: \xed\xa0\x80\n\n"])


# --------------------------------------------------------------------------- line cap


def test_line_at_the_cap_is_accepted() -> None:
    """A line of exactly max_line_bytes (ending excluded) decodes."""
    line = b"data: " + b"x" * 94
    assert sse([line + b"\r\n\r\n"], max_line_bytes=100) == [E(data="x" * 94)]


def test_line_over_the_cap_raises() -> None:
    """A complete line one byte over the cap raises ResponseFormatError naming the cap."""
    with pytest.raises(ResponseFormatError, match="100-byte limit") as info:
        sse([b"data: " + b"x" * 95 + b"\n\n"], max_line_bytes=100, provider="p", model="m")
    assert info.value.key == "p/m"


def test_line_over_the_cap_in_one_big_chunk_among_short_lines() -> None:
    """The cap applies per line: a big chunk of short lines is fine, one long line is not."""
    short = b"data: ab\n\n" * 50
    assert len(sse([short], max_line_bytes=10)) == 50
    with pytest.raises(ResponseFormatError, match="limit"):
        sse([short + b"data: " + b"y" * 20 + b"\n\n" + short], max_line_bytes=10)


def test_line_over_the_cap_across_buffer_and_chunk() -> None:
    """A line made of a buffered part and a chunk head is measured whole."""
    decoder = SSEDecoder(max_line_bytes=100)
    assert decoder.feed(b"data: " + b"x" * 60) == []
    with pytest.raises(ResponseFormatError, match="limit"):
        decoder.feed(b"x" * 60 + b"\n\n")


def test_long_line_is_caught_before_it_is_buffered() -> None:
    """Fed in small chunks, a line that never ends is refused once it passes the cap."""
    decoder = SSEDecoder(max_line_bytes=1000)
    fed = 0
    with pytest.raises(ResponseFormatError, match="1000-byte limit"):
        for _ in range(100_000):  # up to 700 kB if nothing stopped it
            decoder.feed(b"xxxxxxx")
            fed += 7
    assert 1000 - 7 <= fed <= 1000


def test_unterminated_line_at_close_over_the_cap_was_refused_while_growing() -> None:
    """A final line without ending cannot sneak past the cap by never ending."""
    decoder = SSEDecoder(max_line_bytes=10)
    with pytest.raises(ResponseFormatError, match="limit"):
        decoder.feed(b"data: 12345\n\ndata: " + b"x" * 20)


def test_max_line_bytes_must_be_positive() -> None:
    """A cap below one byte is a programming error."""
    with pytest.raises(ValueError, match="max_line_bytes"):
        SSEDecoder(max_line_bytes=0)


# --------------------------------------------------------------------------- NDJSON


def test_ndjson_lf_lines() -> None:
    """One JSON value per LF-terminated line, in order."""
    assert ndjson([b'{"a": 1}\n{"b": 2}\n']) == [{"a": 1}, {"b": 2}]


def test_ndjson_crlf_lines() -> None:
    """CRLF endings work: the CR is JSON whitespace."""
    assert ndjson([b'{"a": 1}\r\n[2]\r\n']) == [{"a": 1}, [2]]


def test_ndjson_blank_lines_are_skipped() -> None:
    """Empty and whitespace-only lines yield nothing."""
    assert ndjson([b'\n  \n{"a": 1}\n\t\r\n\n"s"\n \n']) == [{"a": 1}, "s"]


def test_ndjson_values_of_any_json_type() -> None:
    """Each line may hold any JSON value, not only objects."""
    assert ndjson([b'1\n"two"\nnull\ntrue\n[3]\n{"x": 4.5}\n']) == [
        1,
        "two",
        None,
        True,
        [3],
        {"x": 4.5},
    ]


def test_ndjson_split_across_chunks() -> None:
    """A value cut between chunks (even inside a UTF-8 character) decodes once, whole."""
    body = '{"message": {"content": "héllo 🎉"}, "done": false}\n{"done": true}\n'.encode()
    assert ndjson(bytewise(body)) == [
        {"message": {"content": "héllo 🎉"}, "done": False},
        {"done": True},
    ]


def test_ndjson_close_decodes_a_final_line_without_newline() -> None:
    """The last value needs no trailing newline."""
    decoder = NDJSONDecoder()
    assert decoder.feed(b'{"done": false}\n{"done": ') == [{"done": False}]
    assert decoder.feed(b"true}") == []
    assert decoder.close() == [{"done": True}]
    assert decoder.close() == []


def test_ndjson_close_ignores_trailing_whitespace() -> None:
    """A whitespace-only tail at the end of the body is not a value."""
    assert ndjson([b'{"a": 1}\n  ']) == [{"a": 1}]


def test_ndjson_ollama_stream_with_in_band_error() -> None:
    """An Ollama stream: deltas, then an `{"error": ...}` line, all decoded as values."""
    body = (
        b'{"model":"llama3.2","message":{"role":"assistant","content":"Hel"},"done":false}\n'
        b'{"error":"an error was encountered while running the model"}\n'
    )
    values = ndjson([body])
    assert values[1] == {"error": "an error was encountered while running the model"}


def test_ndjson_invalid_json_raises_with_cause_and_excerpt() -> None:
    """A bad line raises ResponseFormatError from the JSONDecodeError, quoting 200 chars."""
    bad = '{"a": ' + "z" * 500
    decoder = NDJSONDecoder(provider="ollama", model="llama3.2")
    with pytest.raises(ResponseFormatError, match="invalid JSON") as info:
        decoder.feed(b'{"ok": 1}\n' + bad.encode() + b"\n")
    assert isinstance(info.value.__cause__, json.JSONDecodeError)
    assert repr(bad[:200]) in str(info.value)
    assert bad[:201] not in str(info.value)
    assert info.value.key == "ollama/llama3.2"


def test_ndjson_invalid_json_at_close() -> None:
    """A truncated final value is an error when the body ends."""
    decoder = NDJSONDecoder()
    assert decoder.feed(b'{"done": tr') == []
    with pytest.raises(ResponseFormatError, match="invalid JSON"):
        decoder.close()


def test_ndjson_invalid_utf8() -> None:
    """Bytes that are not UTF-8 raise ResponseFormatError, not UnicodeDecodeError."""
    with pytest.raises(ResponseFormatError, match="invalid UTF-8 in the NDJSON stream"):
        ndjson([b'"\xc3"\n'])


def test_ndjson_line_cap() -> None:
    """A line over the cap raises, also when it is fed in small chunks and never ends."""
    assert ndjson([b'"' + b"x" * 8 + b'"\n'], max_line_bytes=10) == ["x" * 8]
    with pytest.raises(ResponseFormatError, match="10-byte limit"):
        ndjson([b'"' + b"x" * 9 + b'"\n'], max_line_bytes=10)
    decoder = NDJSONDecoder(max_line_bytes=10)
    with pytest.raises(ResponseFormatError, match="limit"):
        for _ in range(100):
            decoder.feed(b"  ")


def test_ndjson_cr_is_not_a_line_ending() -> None:
    """A lone CR does not split NDJSON lines (it is JSON whitespace inside a line)."""
    assert ndjson([b'{"a":\r1}\n']) == [{"a": 1}]


# --------------------------------------------------------------------------- properties

_LINE_TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\r\n"), max_size=12)
_ENDINGS = st.sampled_from(["\n", "\r\n", "\r"])


@st.composite
def sse_streams(draw: st.DrawFn) -> tuple[bytes, list[ServerSentEvent]]:
    """An event-stream body with random endings and comments, and the events it holds."""
    lines: list[str] = []
    expected: list[ServerSentEvent] = []
    last_id: str | None = None
    for _ in range(draw(st.integers(0, 6))):
        if draw(st.booleans()):
            lines.append(":" + draw(_LINE_TEXT))  # a comment line
        event = draw(st.none() | _LINE_TEXT)
        if event is not None:
            lines.append("event: " + event)
        event_id = draw(st.none() | _LINE_TEXT.filter(lambda text: "\0" not in text))
        if event_id is not None:
            lines.append("id: " + event_id)
            last_id = event_id
        retry = draw(st.none() | st.integers(0, 10**6))
        if retry is not None:
            lines.append(f"retry: {retry}")
        data = draw(st.lists(_LINE_TEXT, min_size=1, max_size=3))
        for value in data:
            lines.append("data: " + value)
            if draw(st.booleans()):
                lines.append(": keep-alive")
        lines.append("")
        expected.append(E(event or "message", "\n".join(data), last_id, retry))
    unterminated = draw(st.booleans())
    if lines and unterminated:
        lines.pop()  # no closing blank line: close() must still dispatch the last event
    return _event_stream_body(draw, lines), expected


def _event_stream_body(draw: st.DrawFn, lines: list[str]) -> bytes:
    """`lines` with random line endings, maybe after a BOM, as UTF-8."""
    body = ""
    previous = ""
    for line in lines:
        ending = draw(_ENDINGS)
        if previous == "\r" and not line and ending == "\n":
            ending = "\r\n"  # "\r" then an empty "\n" line would read as one CRLF
        body += line + ending
        previous = ending
    bom = "\ufeff" if draw(st.booleans()) else ""
    return (bom + body).encode()


@st.composite
def cut(draw: st.DrawFn, body: bytes) -> list[bytes]:
    """`body` cut into chunks at hypothesis-chosen points (sometimes into single bytes)."""
    if draw(st.booleans()):
        return bytewise(body)
    points = sorted(set(draw(st.lists(st.integers(0, len(body)), max_size=12))))
    edges = [0, *points, len(body)]
    return [body[start:end] for start, end in itertools.pairwise(edges)]


@settings(max_examples=300, deadline=None)
@given(st.data(), sse_streams())
def test_sse_split_anywhere_decodes_the_same(
    data: st.DataObject, stream: tuple[bytes, list[ServerSentEvent]]
) -> None:
    """Any chunking of a stream gives the same events as feeding it whole, and the right ones."""
    body, expected = stream
    chunks = data.draw(cut(body))
    assert b"".join(chunks) == body
    whole = sse([body])
    assert whole == expected
    assert sse(chunks) == whole


_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=6,
)


@st.composite
def ndjson_streams(draw: st.DrawFn) -> tuple[bytes, list[Any]]:
    """An NDJSON body with LF/CRLF endings and blank lines, and the values it holds."""
    values = draw(st.lists(_JSON, max_size=6))
    parts: list[str] = []
    for value in values:
        if draw(st.booleans()):
            parts.append(draw(st.sampled_from(["", " ", "\t", "  \r"])) + "\n")
        parts.append(json.dumps(value, ensure_ascii=draw(st.booleans())))
        parts.append(draw(st.sampled_from(["\n", "\r\n"])))
    unterminated = draw(st.booleans())
    if parts and unterminated:
        parts.pop()  # no final newline: close() must decode the last line
    return "".join(parts).encode(), values


@settings(max_examples=300, deadline=None)
@given(st.data(), ndjson_streams())
def test_ndjson_split_anywhere_decodes_the_same(
    data: st.DataObject, stream: tuple[bytes, Sequence[Any]]
) -> None:
    """Any chunking of an NDJSON body gives the same values as feeding it whole."""
    body, expected = stream
    chunks = data.draw(cut(body))
    whole = ndjson([body])
    assert whole == list(expected)
    assert ndjson(chunks) == whole
