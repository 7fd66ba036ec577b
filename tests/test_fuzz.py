"""Fuzzing every parser of untrusted input: only our typed errors may come out.

Specs and DSNs come from users; bodies, streams and headers come from servers (or the
proxies in front of them). Each parser here is fed arbitrary text or bytes, arbitrary
JSON values, JSON shaped like the provider's replies (its field names and values), and
the recorded fixtures (`tests/fixtures/*`) mutated: a subtree replaced or deleted, bytes
cut, inserted or flipped, the body split at random points. Whatever it is fed, a parser
returns normally or raises a `MajordomoError`, never a `KeyError`, `IndexError`,
`TypeError`, `AttributeError`, `JSONDecodeError`, `UnicodeDecodeError`, `ValueError` or
`RecursionError`; an error mapper returns a `ProviderError` and raises nothing.

The tests at the end pin the bugs fuzzing found (huge integers, absurd nesting, a key
that is JSON syntax, deep alias chains), all fixed.
The provider parsers are private names of modules under refactoring: `private()` looks
each one up when its test runs, so a rename fails that test with a clear message.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st

from majordomo_async import (
    DSN,
    DSNError,
    HTTPSessionHolder,
    MajordomoError,
    ProviderError,
    ReasoningDelta,
    Response,
    StreamEnd,
    StreamStart,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    UsageUpdate,
    _http,
    _retry_after,
    _spec,
    _sse,
    classify,
)
from majordomo_async._providers import anthropic, gemini, ollama, openai
from majordomo_async._providers._translate import stream_events

T = TypeVar("T")

FIXTURES = Path(__file__).parent / "fixtures"
KEY = "p/m"
SECRET = "sk-fuzz-SECRET-7f3a"
HEADERS = {"x-request-id": "req_1", "request-id": "req_1", "content-type": "application/json"}
EVENT_TYPES = (StreamStart, TextDelta, ToolCallDelta, ReasoningDelta, UsageUpdate, StreamEnd)

FUZZ = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --------------------------------------------------------------------------- the harness


def typed_only(call: Callable[[], T]) -> T | MajordomoError:
    """`call()`'s result, or the `MajordomoError` it raised; anything else fails the test."""
    try:
        return call()
    except MajordomoError as exc:
        return exc
    except ValueError as exc:
        # Known bug C (test_openai_error_code_in_non_decimal_digits_is_a_typed_error):
        # random text may, rarely, be such a code. Skip the input rather than flake.
        if "invalid literal for int()" in str(exc):
            reject()
        raise


def private(module: ModuleType, name: str) -> Any:
    """A private parser of a provider module, found when the test runs."""
    try:
        return getattr(module, name)
    except AttributeError:
        pytest.fail(f"{module.__name__}.{name} is gone: point tests/test_fuzz.py at its new home")


def fixture_paths(provider: str, *suffixes: str) -> list[Path]:
    return sorted(p for p in (FIXTURES / provider).iterdir() if p.suffix in suffixes)


# --------------------------------------------------------------------------- strategies

# Field names and values the four wire formats use: JSON built from them reaches far
# deeper into a parser than random keys do.
FIELDS = sorted(
    {
        # OpenAI and compatible servers
        "choices", "message", "content", "tool_calls", "function", "name", "arguments", "id",
        "index", "delta", "finish_reason", "usage", "prompt_tokens", "completion_tokens",
        "error", "code", "type", "param", "refusal", "detail", "metadata", "reasons",
        "flagged_input", "object", "data", "role",
        # Anthropic
        "text", "input", "stop_reason", "input_tokens", "output_tokens",
        "cache_creation_input_tokens", "cache_read_input_tokens", "request_id",
        "partial_json", "content_block", "details", "error_code",
        # Gemini
        "candidates", "parts", "thought", "functionCall", "args", "thoughtSignature",
        "finishReason", "usageMetadata", "promptTokenCount", "candidatesTokenCount",
        "thoughtsTokenCount", "toolUsePromptTokenCount", "promptFeedback", "blockReason",
        "responseId", "status", "reason", "violations", "quotaId", "quotaMetric", "@type",
        "retryDelay", "models", "nextPageToken",
        # Ollama
        "done", "done_reason", "prompt_eval_count", "eval_count",
    }
)  # fmt: skip
WORDS = (
    "error", "message", "message_start", "message_delta", "message_stop", "content_block_start",
    "content_block_delta", "text", "text_delta", "tool_use", "input_json_delta", "end_turn",
    "max_tokens", "stop", "length", "tool_calls", "STOP", "MAX_TOKENS", "SAFETY", "[DONE]",
    "rate_limit_error", "overloaded_error", "invalid_request_error", "not_found_error",
    "model: m", "model_not_found", "insufficient_quota", "context_length_exceeded",
    "RESOURCE_EXHAUSTED", "INVALID_ARGUMENT", "API_KEY_INVALID", "NOT_FOUND",
    "type.googleapis.com/google.rpc.RetryInfo", "type.googleapis.com/google.rpc.ErrorInfo",
    "21s", "0.5s", "-1s", "GenerateRequestsPerDayPerProjectPerModel", "404", "429", "1500",
    "The model `m` does not exist", "maximum context length", "model 'm' not found",
    "does not support tools", "server busy", "input token count exceeds", SECRET,
)  # fmt: skip

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
"""Any JSON value."""
shaped = st.recursive(
    scalars | st.sampled_from(WORDS) | st.sampled_from((400, 404, 429, 500, 503, 529, 0, -1)),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.sampled_from(FIELDS), children, max_size=6)
    ),
    max_leaves=30,
)
"""JSON built from the providers' own field names and values."""
headers = st.dictionaries(
    st.sampled_from(
        (
            "retry-after", "retry-after-ms", "x-should-retry", "content-type", "x-request-id",
            "request-id", "location", "Retry-After", "x-goog-request-id",
        )
    ),
    st.text(max_size=40) | st.sampled_from(("2", "1500", "true", "text/html", "Wed, 21 Oct")),
    max_size=4,
)  # fmt: skip
statuses = st.sampled_from((400, 401, 402, 403, 404, 408, 413, 422, 429, 498, 500, 503, 529)) | (
    st.integers(min_value=300, max_value=599)
)


@st.composite
def mutated(draw: st.DrawFn, value: Any) -> Any:
    """`value` with one subtree replaced by shaped JSON, or deleted, or kept whole."""
    if not isinstance(value, dict | list) or not value or draw(st.integers(0, 3)) == 0:
        return draw(shaped) if draw(st.booleans()) else value
    keys: Sequence[Any] = list(value) if isinstance(value, dict) else range(len(value))
    key = draw(st.sampled_from(keys))
    copy: Any = dict(value) if isinstance(value, dict) else list(value)
    if draw(st.integers(0, 4)) == 0:
        del copy[key]
    else:
        copy[key] = draw(mutated(value[key]))
    return copy


@st.composite
def mutated_bytes(draw: st.DrawFn, data: bytes) -> bytes:
    """`data` with a few byte-level edits: cut, insert, flip, or truncate."""
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(data)))
        edit = draw(st.sampled_from(("cut", "insert", "flip", "truncate")))
        if edit == "cut":
            data = data[:at] + data[at + draw(st.integers(1, 40)) :]
        elif edit == "insert":
            data = data[:at] + draw(st.binary(min_size=1, max_size=12)) + data[at:]
        elif edit == "flip" and at < len(data):
            data = data[:at] + bytes([data[at] ^ draw(st.integers(1, 255))]) + data[at + 1 :]
        elif edit == "truncate":
            data = data[:at]
    return data


@st.composite
def split(draw: st.DrawFn, data: bytes) -> list[bytes]:
    """`data` cut into chunks at random points (sometimes into single bytes)."""
    if len(data) < 2:
        return [data]
    cuts = sorted(draw(st.sets(st.integers(1, len(data) - 1), max_size=12)))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def sse_body(blocks: Sequence[tuple[str | None, Any]], eol: str = "\n") -> bytes:
    """An SSE body: one block per (event name or None, data as JSON or raw text)."""
    out = []
    for event, data in blocks:
        text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
        head = f"event: {event}{eol}" if event else ""
        out.append(f"{head}data: {text}{eol}{eol}")
    return "".join(out).encode()


def sse_blocks(data: bytes) -> list[tuple[str | None, Any]]:
    """A recorded SSE body as (event, decoded JSON data or raw text) blocks."""
    decoder = _sse.SSEDecoder()
    blocks: list[tuple[str | None, Any]] = []
    for sse in [*decoder.feed(data), *decoder.close()]:
        try:
            value: Any = json.loads(sse.data)
        except ValueError:
            value = sse.data
        blocks.append((None if sse.event == "message" else sse.event, value))
    return blocks


# --------------------------------------------------------------------------- user input


@FUZZ
@given(st.text(max_size=60), st.dictionaries(st.text(max_size=6), st.text(max_size=30)))
def test_spec_of_any_text(spec: str, aliases: dict[str, str]) -> None:
    """Any spec and alias table: targets, or a `SpecError`."""
    result = typed_only(lambda: _spec.parse_spec(spec, aliases))
    if not isinstance(result, MajordomoError):
        assert all(provider and model for provider, model in result)


@FUZZ
@given(
    st.lists(st.sampled_from(("a", "b", "p/m", "q/x/y", " ", ",", "/", "c")), max_size=12).map(
        "".join
    ),
    st.dictionaries(
        st.sampled_from(("a", "b", "c", "A", "b_")),
        st.lists(st.sampled_from(("a", "b", "c", "p/m", ",", " ", "/", "z")), max_size=8).map(
            "".join
        ),
    ),
)
def test_spec_with_aliases_that_refer_to_each_other(spec: str, aliases: dict[str, str]) -> None:
    """Specs over a small alphabet of aliases (cycles, diamonds): targets or a SpecError."""
    typed_only(lambda: _spec.parse_spec(spec, aliases))


dsn_texts = st.text(max_size=80) | st.builds(
    "{}://{}{}{}{}{}".format,
    st.sampled_from(("openai", "openai+http", "fake", "ollama", "a", "1x", "")),
    st.sampled_from(("", "sk-x@", "%zz@", "a@b@", "@")),
    st.text(alphabet="[]:.abc0129%", max_size=12),
    st.sampled_from(("", ":", ":0", ":65536", ":99", ":٣", ":²")),
    st.text(alphabet="/%@?#ab", max_size=10),
    st.sampled_from(("", "?", "?a=1&a=2", "?=&&", "?x=%ff", "?k=v+w")),
)


@FUZZ
@given(dsn_texts)
def test_dsn_of_any_text(text: str) -> None:
    """Any text: a DSN (whose str, repr and base URL work), or a `DSNError`."""
    dsn = typed_only(lambda: DSN.parse(text))
    if isinstance(dsn, DSN):
        assert str(dsn) and repr(dsn) and dsn.base_url
        assert dsn.port is None or 0 < dsn.port < 65536


# --------------------------------------------------------------------------- stream decoders


@FUZZ
@given(
    st.data(),
    st.binary(max_size=300)
    | st.builds(
        sse_body,
        st.lists(
            st.tuples(st.none() | st.sampled_from(WORDS), json_values | st.text(max_size=30)),
            max_size=5,
        ),
    ),
)
def test_sse_decoder_of_any_bytes(data: st.DataObject, body: bytes) -> None:  # fmt: skip
    """Any bytes, split anywhere, with any line limit: events, or a `ResponseFormatError`."""
    body = data.draw(mutated_bytes(body))
    max_line_bytes = data.draw(st.sampled_from((4, 64, 8 * 1024 * 1024)))
    decoder = (
        # Gemini's wrapper, which also reads an error JSON sent without `data:`.
        private(gemini, "_GeminiDecoder")(max_line_bytes=max_line_bytes)
        if data.draw(st.booleans())
        else _sse.SSEDecoder(max_line_bytes=max_line_bytes)
    )

    def decode() -> list[_sse.ServerSentEvent]:
        events = [event for chunk in data.draw(split(body)) for event in decoder.feed(chunk)]
        return list(events + decoder.close())

    typed_only(decode)


@FUZZ
@given(
    st.data(),
    st.binary(max_size=300)
    | st.lists(json_values, max_size=5).map(
        lambda values: "".join(json.dumps(v) + "\n" for v in values).encode()
    ),
)
def test_ndjson_decoder_of_any_bytes(data: st.DataObject, body: bytes) -> None:
    """Any bytes, split anywhere: JSON values, or a `ResponseFormatError`."""
    body = data.draw(mutated_bytes(body))
    decoder = _sse.NDJSONDecoder(max_line_bytes=data.draw(st.sampled_from((4, 8 * 1024 * 1024))))

    def decode() -> list[Any]:
        values = [value for chunk in data.draw(split(body)) for value in decoder.feed(chunk)]
        return values + decoder.close()

    typed_only(decode)


# --------------------------------------------------------------------------- shared helpers


@FUZZ
@given(st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode()))
def test_reply_body_json_decoding(body: bytes) -> None:
    """The first step of every `generate`: a body's JSON, or a `ResponseFormatError`."""
    typed_only(lambda: _http._decode_json(body, "p", "m"))


@FUZZ
@given(headers, st.text(max_size=30), shaped)
def test_retry_hints_never_raise(hints: dict[str, str], duration: str, body: Any) -> None:
    """Retry-After headers, durations and Gemini's RetryInfo: a delay or None, never an error."""
    delay = _retry_after.parse_retry_after(hints)
    assert delay is None or delay >= 0
    _retry_after.parse_duration(duration)
    body = {"error": {"details": [{"@type": _retry_after._RETRY_INFO, "retryDelay": duration}]}}
    _retry_after.gemini_retry_delay(body)


@FUZZ
@given(st.text(max_size=60) | json_values.map(json.dumps))
def test_tool_call_arguments_of_any_text(arguments: str) -> None:
    """A model's tool-call arguments: a dict, or a `ResponseFormatError`."""
    parsed = typed_only(lambda: ToolCall("call_1", "f", arguments).parse_arguments())
    assert isinstance(parsed, dict | MajordomoError)


# --------------------------------------------------------------------------- providers

# Per provider: (module, the non-streamed reply parser, the model-list parser or None).
PROVIDERS: dict[str, ModuleType] = {
    "openai": openai,
    "anthropic": anthropic,
    "gemini": gemini,
    "ollama": ollama,
}
PROVIDER_CLASSES: dict[str, type[Any]] = {
    "openai": openai.OpenAIProvider,
    "anthropic": anthropic.AnthropicProvider,
    "gemini": gemini.GeminiProvider,
    "ollama": ollama.OllamaProvider,
}
STREAM_SUFFIX = {"openai": ".sse", "anthropic": ".sse", "gemini": ".sse", "ollama": ".ndjson"}


def parse_reply(provider: str, body: Any) -> Response:
    """The provider's parser of a decoded, non-streamed reply."""
    module = PROVIDERS[provider]
    parse = private(module, "_parse_response")
    return parse(body, KEY, HEADERS)  # type: ignore[no-any-return]


def parse_models(provider: str, body: Any) -> list[str] | None:
    """The provider's parser of a model list, where it has a separate one."""
    if provider not in ("openai", "gemini"):
        return None  # Anthropic and Ollama read theirs inline, in `list_models`
    return private(PROVIDERS[provider], "_model_ids")(body, "p")  # type: ignore[no-any-return]


def map_error(provider: str, status: int, hints: Mapping[str, str], text: str) -> Any:
    """The provider's mapper of an HTTP error reply."""
    module = PROVIDERS[provider]
    if provider == "openai":
        return private(module, "_map_error")(status, hints, text, provider="p", model="m")
    if provider == "anthropic":
        return private(module, "_map_http_error")(status, hints, text, provider="p", model="m")
    if provider == "gemini":
        return private(module, "_map_error")("p", "m", status, hints, text)
    return private(module, "_ErrorMapper")("p", "m", has_key=True)(status, hints, text)


class MemoryBody:
    """A `BodyReader` stand-in that reads chunks from memory (never an empty one)."""

    def __init__(self, chunks: Sequence[bytes]) -> None:
        self._chunks = [chunk for chunk in chunks if chunk]

    async def read(self) -> bytes:
        return self._chunks.pop(0) if self._chunks else b""

    async def drain(self) -> None:
        self._chunks.clear()

    async def aclose(self) -> None:
        self._chunks.clear()


def read_stream(provider: str, chunks: Sequence[bytes]) -> list[Any]:
    """A streamed body through the provider's translator and the shared stream loop."""
    model = PROVIDER_CLASSES[provider](
        "p", api_key=SECRET, base_url="http://127.0.0.1:9", http=HTTPSessionHolder()
    ).model("m")
    translator = model._translator(HEADERS, "req_1")  # as the model's `stream()` makes it

    async def collect() -> list[Any]:
        body: Any = MemoryBody(chunks)
        return [event async for event in stream_events(translator, body)]

    return asyncio.run(collect())


def check_reply(result: Any) -> None:
    assert isinstance(result, Response | MajordomoError), result
    if isinstance(result, Response):
        assert result.model == KEY
        assert all(isinstance(call, ToolCall) for call in result.tool_calls)


def check_events(result: Any) -> None:
    assert isinstance(result, list | MajordomoError), result
    if isinstance(result, list):
        assert all(isinstance(event, EVENT_TYPES) for event in result), result


def check_mapped(error: Any) -> None:
    """A mapper's product: a provider error that can be shown and classified."""
    assert isinstance(error, ProviderError), error
    assert str(error) and repr(error)
    classify(error)


def json_fixtures(provider: str) -> list[Any]:
    return [json.loads(path.read_text()) for path in fixture_paths(provider, ".json")]


def stream_fixtures(provider: str) -> list[bytes]:
    return [path.read_bytes() for path in fixture_paths(provider, STREAM_SUFFIX[provider])]


ALL_PROVIDERS = pytest.mark.parametrize("provider", PROVIDERS)


@ALL_PROVIDERS
@FUZZ
@given(body=json_values | shaped)
def test_reply_parser_of_any_json(provider: str, body: Any) -> None:
    """Any JSON value as a non-streamed reply: a `Response`, or a typed error."""
    check_reply(typed_only(lambda: parse_reply(provider, body)))
    typed_only(lambda: parse_models(provider, body))


@ALL_PROVIDERS
@FUZZ
@given(data=st.data())
def test_reply_parser_of_mutated_fixtures(provider: str, data: st.DataObject) -> None:
    """Recorded replies, errors and model lists with a subtree replaced or removed."""
    body = data.draw(mutated(data.draw(st.sampled_from(json_fixtures(provider)))))
    check_reply(typed_only(lambda: parse_reply(provider, body)))
    typed_only(lambda: parse_models(provider, body))


@ALL_PROVIDERS
@FUZZ
@given(data=st.data(), status=statuses, hints=headers)
def test_error_mapper_of_any_reply(
    provider: str, data: st.DataObject, status: int, hints: dict[str, str]
) -> None:
    """Any status, headers and body (text, JSON, mutated recordings): a provider error."""
    fixtures = json_fixtures(provider) or [{"error": {"type": "x", "message": "y"}}]
    body = data.draw(
        st.text(max_size=80)
        | (json_values | shaped).map(json.dumps)
        | st.sampled_from(fixtures).flatmap(mutated).map(json.dumps)
    )
    check_mapped(map_error(provider, status, hints, body))


@ALL_PROVIDERS
@FUZZ
@given(data=st.data())
def test_stream_of_mutated_fixtures(provider: str, data: st.DataObject) -> None:
    """Recorded streams, one event's JSON mutated or bytes edited, split anywhere."""
    body = data.draw(st.sampled_from(stream_fixtures(provider)))
    if provider != "ollama" and data.draw(st.booleans()):
        blocks = sse_blocks(body)
        at = data.draw(st.integers(0, len(blocks) - 1))
        event, value = blocks[at]
        blocks[at] = (event, data.draw(mutated(value)))
        body = sse_body(blocks, eol=data.draw(st.sampled_from(("\n", "\r\n"))))
    elif provider == "ollama" and data.draw(st.booleans()):
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        at = data.draw(st.integers(0, len(lines) - 1))
        lines[at] = data.draw(mutated(lines[at]))
        body = "".join(json.dumps(line) + "\n" for line in lines).encode()
    else:
        body = data.draw(mutated_bytes(body))
    check_events(typed_only(lambda: read_stream(provider, data.draw(split(body)))))


@ALL_PROVIDERS
@FUZZ
@given(data=st.data())
def test_stream_of_any_events(provider: str, data: st.DataObject) -> None:
    """Streams of shaped or arbitrary JSON events (or raw bytes): events, or a typed error."""
    values = data.draw(st.lists(shaped | json_values, max_size=6))
    if provider == "ollama":
        body = "".join(json.dumps(value) + "\n" for value in values).encode()
    else:
        names = st.none() | st.sampled_from(WORDS) | st.text(max_size=8)
        body = sse_body([(data.draw(names), value) for value in values])
    body = data.draw(st.just(body) | st.binary(max_size=200))
    check_events(typed_only(lambda: read_stream(provider, data.draw(split(body)))))


# ----------------------------------------------------------------- found by fuzzing, fixed

DEEP = "[" * 100_000 + "]" * 100_000
"""JSON nested far deeper than the interpreter's recursion limit."""
HUGE_INT = "9" * 5_000
"""An integer literal longer than CPython's 4300-digit `int()` limit (a `ValueError`)."""


def test_dsn_with_a_port_too_long_for_int_is_a_dsn_error() -> None:
    with pytest.raises(DSNError):
        DSN.parse(f"openai://h:{HUGE_INT}")


@pytest.mark.parametrize("line", [HUGE_INT, DEEP], ids=["huge-int", "deep"])
def test_ndjson_line_json_cannot_decode_is_a_typed_error(line: str) -> None:
    with pytest.raises(MajordomoError):
        _sse.NDJSONDecoder().feed(line.encode() + b"\n")


def test_deeply_nested_reply_body_is_a_typed_error() -> None:
    with pytest.raises(MajordomoError):
        _http._decode_json(DEEP.encode(), "p", "m")


def test_deeply_nested_tool_arguments_are_a_typed_error() -> None:
    with pytest.raises(MajordomoError):
        ToolCall("call_1", "f", DEEP).parse_arguments()


@pytest.mark.parametrize("provider", ["anthropic", "gemini"])
def test_deeply_nested_stream_event_is_a_typed_error(provider: str) -> None:
    body = sse_body([("message_start", DEEP)])
    with pytest.raises(MajordomoError):
        read_stream(provider, [body])


@pytest.mark.parametrize("code", ["²", HUGE_INT], ids=["superscript", "huge"])
def test_openai_error_code_in_non_decimal_digits_is_a_typed_error(code: str) -> None:
    body = {"error": {"message": "no", "code": code}}
    error = map_error("openai", 400, {}, json.dumps(body))
    check_mapped(error)
    with pytest.raises(ProviderError):
        parse_reply("openai", body)


def test_openai_in_band_error_with_a_key_that_is_json_syntax() -> None:
    body = {"error": {"message": "bad null", "param": None, "code": None}}
    provider = openai.OpenAIProvider(
        "p", api_key="null", base_url="http://127.0.0.1:9", http=HTTPSessionHolder()
    )
    with pytest.raises(ProviderError) as info:
        private(openai, "_parse_response")(body, KEY, HEADERS)
    provider._redact_error(info.value)
    assert info.value.message == "bad ***"


def test_gemini_retry_delay_too_long_for_int_is_no_hint() -> None:
    assert _retry_after.parse_duration(f"{HUGE_INT}s") is None


def test_a_very_deep_alias_chain_is_expanded_or_a_spec_error() -> None:
    aliases = {f"a{i}": f"a{i + 1}" for i in range(3_000)}
    aliases["a3000"] = "p/m"
    result = typed_only(lambda: _spec.parse_spec("a0", aliases))
    assert result == [("p", "m")] or isinstance(result, MajordomoError)
