"""Conformance: what every `AsyncModel` must do, on five models through one suite.

The models are the built-in `fake` provider and the four HTTP providers, each pointed at
an emulator of its wire format (`tests/helpers/wire.py`) by a `Registry(env=...)` DSN,
exactly as a user configures them. One script of format-agnostic behaviours drives all
five: the emulators render it in each provider's wire shape; the fake gets it as its own
`script`/`reply` keys, and a case it cannot express is skipped for the fake alone.

Every case runs under `no_leaked_tasks`, and the registry's session must have no
connection checked out when the case ends.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any
from urllib.parse import quote

import aiohttp
import anyio
import attrs
import pytest

from majordomo_async import (
    AsyncModel,
    AuthenticationError,
    Capabilities,
    ErrorClass,
    FinishReason,
    ManualClock,
    MonotonicClock,
    ProviderConnectionError,
    ProviderError,
    ProviderStatusError,
    RateLimitError,
    Registry,
    Response,
    ServerError,
    StreamEnd,
    StreamEvent,
    StreamStart,
    StreamTruncatedError,
    TextDelta,
    ToolCallDelta,
    Usage,
    UsageUpdate,
    classify,
)

from .helpers.servers import acquired_connections
from .helpers.wire import (
    DEFAULT_TEXT,
    AnthropicWire,
    Behaviour,
    CallTool,
    Drop,
    ErrorEvent,
    Fail,
    GeminiWire,
    OllamaWire,
    OpenAIWire,
    Reply,
    Stall,
    Truncate,
    Wire,
    awkward_chunks,
    split_text,
)

PROMPT = "Say hello to Zürich"
MODEL_ID = "m1"
KEY = "sk-conformance-0123SECRET"
STALLED_TEXT = "first words, then silence"


# --------------------------------------------------------------------------- the five models


@attrs.frozen
class Flavour:
    """One kind of model under test, and what its wire format can say."""

    name: str
    wire: type[Wire] | None
    """The emulator class; None for the in-process fake."""
    credential: Mapping[str, str] = attrs.field(factory=dict)
    """Request headers that carry the key, as the wire wants them."""
    request_ids: bool = True
    """The wire gives each reply an id (Ollama's does not)."""
    call_ids: bool = True
    """Tool calls carry the provider's id (Gemini's and Ollama's get `call_<n>`)."""
    argument_deltas: bool = True
    """Streamed tool-call arguments come in several pieces (Gemini and Ollama send calls whole)."""


FLAVOURS = [
    Flavour("fake", None),
    Flavour("openai", OpenAIWire, {"authorization": f"Bearer {KEY}"}),
    Flavour(
        "anthropic",
        AnthropicWire,
        {"x-api-key": KEY, "anthropic-version": "2023-06-01"},
    ),
    Flavour(
        "gemini",
        GeminiWire,
        {"x-goog-api-key": KEY},
        call_ids=False,
        argument_deltas=False,
    ),
    Flavour(
        "ollama",
        OllamaWire,
        {"authorization": f"Bearer {KEY}"},
        request_ids=False,
        call_ids=False,
        argument_deltas=False,
    ),
]


@attrs.frozen
class Subject:
    """A model under test, with the names its answers and errors must carry."""

    model: AsyncModel
    provider: str
    model_id: str

    @property
    def key(self) -> str:
        """The "provider/model-id" target key."""
        return f"{self.provider}/{self.model_id}"


class Harness:
    """Builds a scripted subject of one flavour, and knows what it must have served."""

    def __init__(self, flavour: Flavour, registry: Registry, wire: Wire | None) -> None:
        self.flavour = flavour
        self.registry = registry
        self.wire = wire

    @property
    def emulator(self) -> Wire:
        """The flavour's emulator (cases that inspect the wire skip the fake first)."""
        assert self.wire is not None
        return self.wire

    def subject(self, *script: Behaviour) -> Subject:
        """A model whose successive calls follow `script`."""
        if self.wire is None:
            model_id = _fake_model_id(script)
            return Subject(self.registry.provider("fake").model(model_id), "fake", model_id)
        self.wire.program(*script)
        provider = f"{self.flavour.name}-emu"
        return Subject(self.registry.provider(provider).model(MODEL_ID), provider, MODEL_ID)

    def usage(self, served: Reply | CallTool) -> Usage:
        """The usage the model must report for `served` answering `PROMPT`."""
        if self.wire is None:  # the fake counts words
            assert isinstance(served, Reply)
            return Usage(len(PROMPT.split()), len(served.text.split()))
        return Usage(served.input_tokens, served.output_tokens)

    def check_request_id(self, request_id: str | None) -> None:
        """The reply's request id is the one the wire sent, or None where it sends none."""
        if self.wire is None:
            assert request_id is not None and re.fullmatch(r"fake-\d+", request_id)
        elif self.flavour.request_ids:
            assert request_id == self.wire.requests[-1].request_id
        else:
            assert request_id is None

    def skip_fake(self, why: str) -> None:
        """Skip this case for the fake, saying what it cannot express."""
        if self.wire is None:
            pytest.skip(f"the fake provider cannot express {why}")


def _fake_model_id(script: tuple[Behaviour, ...]) -> str:
    """The fake model id that plays `script`: `m?script=...&reply=...`."""
    outcomes: list[str] = []
    keys: dict[str, str] = {}
    for behaviour in script:
        if isinstance(behaviour, Reply | Stall):
            outcomes.append("ok")
            keys["reply"] = behaviour.text
            if isinstance(behaviour, Stall):  # a long pause after the first piece
                keys["chunk_delay"] = "3600"
        elif isinstance(behaviour, Fail):
            retry = f":{behaviour.retry_after:g}" if behaviour.retry_after is not None else ""
            outcomes.append(f"{behaviour.status}{retry}")
        elif isinstance(behaviour, Drop):
            outcomes.append("reset")
        else:
            pytest.skip(f"the fake provider cannot express {type(behaviour).__name__}")
    query = "&".join(f"{key}={quote(value, safe='')}" for key, value in keys.items())
    return f"m?script={'+'.join(outcomes)}" + (f"&{query}" if query else "")


@pytest.fixture(params=FLAVOURS, ids=lambda flavour: flavour.name)
async def harness(
    request: pytest.FixtureRequest, no_leaked_tasks: None, clock: ManualClock
) -> AsyncIterator[Harness]:
    """One flavour, ready; afterwards its session must hold no connection.

    Depends on `no_leaked_tasks` so that check runs last, after the emulator stopped.
    """
    flavour: Flavour = request.param
    if flavour.wire is None:
        # The fake waits on the registry's clock: a real one, so that a stalled stream
        # (`chunk_delay`) really stalls until cancelled.
        async with Registry(env={}, clock=MonotonicClock()) as registry:
            yield Harness(flavour, registry, None)
        return
    wire = flavour.wire(key=KEY)
    async with wire.running() as dsn:
        env = {f"LLM_{flavour.name.upper()}_EMU": dsn}
        async with Registry(env=env, clock=clock) as registry:
            yield Harness(flavour, registry, wire)
            assert acquired_connections(registry._http.get()) == 0


async def read(model: AsyncModel) -> list[StreamEvent]:
    """Every event of a stream of `PROMPT`, closing it."""
    async with await model.stream(PROMPT) as stream:
        return [event async for event in stream]


def last_index(events: list[StreamEvent], kind: type[Any]) -> int:
    """Where the last event of type `kind` is."""
    return max(index for index, event in enumerate(events) if isinstance(event, kind))


# --------------------------------------------------------------------------- protocol


def test_is_an_async_model(harness: Harness) -> None:
    """Every model satisfies the protocol and reports `Capabilities`."""
    subject = harness.subject(Reply())
    assert isinstance(subject.model, AsyncModel)
    assert isinstance(subject.model.capabilities, Capabilities)


# --------------------------------------------------------------------------- generate


async def test_generate_text(harness: Harness) -> None:
    """The served text, the target key, the served usage, STOP and the wire's request id."""
    served = Reply(DEFAULT_TEXT, input_tokens=31, output_tokens=8)
    subject = harness.subject(served)

    response = await subject.model.generate(PROMPT)

    assert response.text == served.text
    assert response.tool_calls == ()
    assert response.model == subject.key
    assert response.usage == harness.usage(served)
    assert response.finish_reason is FinishReason.STOP
    assert response.failed_attempts == ()
    harness.check_request_id(response.request_id)


async def test_request_reaches_the_wire(harness: Harness) -> None:
    """One request, naming the model, carrying the prompt and the key the wire's way."""
    harness.skip_fake("a wire request")
    subject = harness.subject(Reply())

    await subject.model.generate(PROMPT)

    wire = harness.emulator
    assert len(wire.requests) == 1
    sent = wire.requests[0]
    assert sent.method == "POST"
    assert sent.model == MODEL_ID
    assert wire.prompt(sent) == PROMPT
    for header, value in harness.flavour.credential.items():
        assert sent.headers.get(header) == value
    assert KEY not in str(sent.query)  # never in the URL


async def test_wrong_key_is_an_authentication_error(harness: Harness) -> None:
    """A key the server rejects (Gemini: 400 API_KEY_INVALID) is an AuthenticationError."""
    harness.skip_fake("a rejected key")
    subject = harness.subject(Reply())
    harness.emulator.key = "a-different-key"

    with pytest.raises(AuthenticationError) as info:
        await subject.model.generate(PROMPT)

    assert classify(info.value) is ErrorClass.PERMANENT
    assert KEY not in str(info.value)


# --------------------------------------------------------------------------- stream


async def test_stream_text(harness: Harness) -> None:
    """StreamStart first, text deltas that join to the served text, usage, StreamEnd last."""
    served = Reply(DEFAULT_TEXT, input_tokens=17, output_tokens=6, pieces=3)
    subject = harness.subject(served)

    events = await read(subject.model)

    assert isinstance(events[0], StreamStart)
    assert events[-1] == StreamEnd(FinishReason.STOP)
    deltas = [event.text for event in events if isinstance(event, TextDelta)]
    assert len(deltas) >= 3
    assert "".join(deltas) == served.text
    usages = [event.usage for event in events if isinstance(event, UsageUpdate)]
    assert usages[-1] == harness.usage(served)
    assert last_index(events, UsageUpdate) > last_index(events, TextDelta)


async def test_stream_response_matches_generate(harness: Harness) -> None:
    """`collect()` and `stream.response` give what `generate` gives for the same reply."""
    served = Reply(DEFAULT_TEXT, input_tokens=9, output_tokens=4)
    subject = harness.subject(served)

    generated = await subject.model.generate(PROMPT)
    stream = await subject.model.stream(PROMPT)
    collected = await stream.collect()

    assert stream.response == collected
    assert_same_answer(collected, generated)
    assert collected.model == subject.key
    harness.check_request_id(collected.request_id)


def assert_same_answer(streamed: Response, generated: Response) -> None:
    assert streamed.text == generated.text
    assert streamed.tool_calls == generated.tool_calls
    assert streamed.usage == generated.usage
    assert streamed.finish_reason is generated.finish_reason
    assert streamed.model == generated.model


# --------------------------------------------------------------------------- tools


def assert_served_call(harness: Harness, response: Response, served: CallTool) -> None:
    """One complete tool call: the wire's id (or `call_0`), the name, the arguments."""
    assert response.finish_reason is FinishReason.TOOL_CALLS
    assert response.text == ""
    [call] = response.tool_calls
    assert call.id == (served.call_id if harness.flavour.call_ids else "call_0")
    assert call.name == served.name
    assert json.loads(call.arguments) == served.arguments
    assert response.usage == harness.usage(served)


async def test_generate_tool_call(harness: Harness) -> None:
    """A tool call in the reply comes back whole, with finish reason TOOL_CALLS."""
    served = CallTool()
    subject = harness.subject(served)

    response = await subject.model.generate(PROMPT)

    assert_served_call(harness, response, served)


async def test_stream_tool_call(harness: Harness) -> None:
    """Tool-call deltas assemble into the same complete call `generate` returns."""
    served = CallTool(arguments={"q": "Tromsø", "units": "metric", "limit": 12})
    subject = harness.subject(served, served)
    generated = await subject.model.generate(PROMPT)

    async with await subject.model.stream(PROMPT) as stream:
        events = [event async for event in stream]

    deltas = [event for event in events if isinstance(event, ToolCallDelta)]
    assert {delta.index for delta in deltas} == {0}
    with_arguments = [delta for delta in deltas if delta.arguments]
    assert len(with_arguments) >= (3 if harness.flavour.argument_deltas else 1)
    assert events[-1] == StreamEnd(FinishReason.TOOL_CALLS)
    assert_served_call(harness, stream.response, served)
    assert_same_answer(stream.response, generated)


# --------------------------------------------------------------------------- errors


@attrs.frozen
class ErrorCase:
    behaviour: Behaviour
    kind: type[ProviderError]
    verdict: ErrorClass
    check: Callable[[ProviderError], bool] = lambda error: True


ERROR_CASES = {
    "401": ErrorCase(Fail(401), AuthenticationError, ErrorClass.PERMANENT),
    "429-retry-after": ErrorCase(
        Fail(429, retry_after=3),
        RateLimitError,
        ErrorClass.TRANSIENT,
        lambda error: error.retry_after == 3.0,
    ),
    "500": ErrorCase(Fail(500), ServerError, ErrorClass.TRANSIENT),
    "reset": ErrorCase(Drop(), ProviderConnectionError, ErrorClass.TRANSIENT),
}


def assert_typed(error: BaseException, case: ErrorCase, subject: Subject) -> None:
    """Our typed error with the target's names; never an aiohttp exception."""
    assert isinstance(error, case.kind)
    assert not isinstance(error, aiohttp.ClientError)
    assert error.provider == subject.provider
    assert error.model == subject.model_id
    assert classify(error) is case.verdict
    assert case.check(error), error


@pytest.mark.parametrize("case", ERROR_CASES.values(), ids=ERROR_CASES.keys())
async def test_generate_error(harness: Harness, case: ErrorCase) -> None:
    """HTTP statuses and a reset connection become typed, classified errors."""
    subject = harness.subject(case.behaviour)

    with pytest.raises(ProviderError) as info:
        await subject.model.generate(PROMPT)

    assert_typed(info.value, case, subject)


@pytest.mark.parametrize("case", ERROR_CASES.values(), ids=ERROR_CASES.keys())
async def test_stream_error(harness: Harness, case: ErrorCase) -> None:
    """The same failures, met by a stream, raise before any content."""
    subject = harness.subject(case.behaviour)
    received: list[StreamEvent] = []

    with pytest.raises(ProviderError) as info:
        async with await subject.model.stream(PROMPT) as stream:
            async for event in stream:
                received.append(event)

    assert_typed(info.value, case, subject)
    assert not any(isinstance(event, TextDelta | ToolCallDelta) for event in received)


async def test_truncated_stream(harness: Harness) -> None:
    """A body that ends before the terminal signal raises StreamTruncatedError (transient)."""
    harness.skip_fake("a body that ends without its terminal signal")
    subject = harness.subject(Truncate(text="Grüße aus Zürich, und dann"))
    received: list[str] = []

    with pytest.raises(StreamTruncatedError) as info:
        async with await subject.model.stream(PROMPT) as stream:
            async for event in stream:
                if isinstance(event, TextDelta):
                    received.append(event.text)

    assert "".join(received) == "Grüße aus Zürich, und dann"
    assert info.value.provider == subject.provider
    assert info.value.model == subject.model_id
    assert classify(info.value) is ErrorClass.TRANSIENT


async def test_in_band_error_before_content(harness: Harness) -> None:
    """An error event in a 200 stream is a typed, transient status error."""
    harness.skip_fake("an in-band error event")
    status = 529 if harness.flavour.name == "anthropic" else 503
    subject = harness.subject(ErrorEvent(status))

    with pytest.raises(ProviderStatusError) as info:
        await read(subject.model)

    assert info.value.provider == subject.provider
    assert classify(info.value) is ErrorClass.TRANSIENT


# --------------------------------------------------------------------------- leaks


async def test_break_after_first_delta_releases_the_connection(harness: Harness) -> None:
    """Leaving `async for` early (inside `async with`) gives the connection back."""
    subject = harness.subject(Stall(STALLED_TEXT))

    async with await subject.model.stream(PROMPT) as stream:
        async for event in stream:
            if isinstance(event, TextDelta):
                break

    assert stream.closed
    assert acquired_connections(harness.registry._http.get()) == 0


async def test_cancelled_mid_stream_releases_the_connection(harness: Harness) -> None:
    """Cancelling the task that reads a stream closes it and leaves no connection."""
    subject = harness.subject(Stall(STALLED_TEXT))
    first_delta = anyio.Event()
    streams: list[Any] = []

    async def consume() -> None:
        async with await subject.model.stream(PROMPT) as stream:
            streams.append(stream)
            async for event in stream:
                if isinstance(event, TextDelta):
                    first_delta.set()  # and read on: the next read waits forever

    async with anyio.create_task_group() as group:
        group.start_soon(consume)
        with anyio.fail_after(5):
            await first_delta.wait()
        group.cancel_scope.cancel()

    [stream] = streams
    assert stream.closed and not stream.finished
    assert acquired_connections(harness.registry._http.get()) == 0


# --------------------------------------------------------------------------- the emulators


def test_stream_bodies_are_cut_inside_characters() -> None:
    """The emulators' pieces join back exactly, and split every multi-byte character."""
    data = 'data: {"text": "Grüße ✓"}\n\n'.encode()

    pieces = awkward_chunks(data)

    assert b"".join(pieces) == data
    assert len(pieces) > 5
    # ü, ß and ✓: each piece that ends on a lead byte leaves its character cut in two.
    assert sum(piece[-1] >= 0xC0 for piece in pieces) == 3


def test_served_text_is_split_between_words() -> None:
    """Text deltas join back to the served text; never an empty delta."""
    assert split_text("eins zwei  drei vier", 3) == ["eins zwei  ", "drei ", "vier"]
    assert split_text("allein", 4) == ["allein"]
    assert split_text("", 3) == []
