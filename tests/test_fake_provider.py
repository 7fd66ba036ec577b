"""The built-in `fake` provider: replies, scripted outcomes, latency, streams, the factory."""

from __future__ import annotations

import time

import anyio
import pytest

from majordomo_async import (
    DSN,
    AsyncModel,
    AuthenticationError,
    BadRequestError,
    Capabilities,
    ConfigurationError,
    ContentPolicyError,
    ContextLengthError,
    FinishReason,
    HTTPSessionHolder,
    ManualClock,
    Message,
    ModelLister,
    ModelNotFoundError,
    OverloadedError,
    Provider,
    ProviderConnectionError,
    ProviderContext,
    ProviderError,
    ProviderTimeoutError,
    QuotaExceededError,
    RateLimitError,
    ReasoningDelta,
    Registry,
    Request,
    ServerError,
    StreamClosedError,
    StreamEnd,
    StreamStart,
    TextDelta,
    ToolCallDelta,
    Usage,
    UsageUpdate,
    max_tokens,
    reasoning,
    system,
)
from majordomo_async._providers.fake import FakeModel, FakeProvider, fake_factory


def fake(model_id: str, clock: ManualClock | None = None, **defaults: str) -> FakeModel:
    """A model of a fresh provider named "fake" on a manual clock."""
    return FakeProvider("fake", defaults, clock=clock or ManualClock()).model(model_id)


async def outcomes(model: FakeModel, calls: int) -> list[str]:
    """Call `model` `calls` times; "ok" or the raised error's class name, per call."""
    seen = []
    for _ in range(calls):
        try:
            await model.generate("hi")
        except ProviderError as exc:
            seen.append(type(exc).__name__)
        else:
            seen.append("ok")
    return seen


# --------------------------------------------------------------------------- replies


async def test_default_reply_echoes_the_prompt() -> None:
    """Without `reply`, generate answers with the last user message, fully described."""
    model = fake("echo")

    response = await model.generate(Request([Message.user("first"), Message.user("hello there")]))

    assert response.text == "hello there"
    assert response.finish_reason is FinishReason.STOP
    assert response.model == "fake/echo"
    assert response.request_id == "fake-1"


async def test_echo_of_an_empty_prompt_says_so() -> None:
    """A request with no user text is answered with "(empty prompt)"."""
    response = await fake("echo").generate(Request([Message.assistant("no user turn")]))

    assert response.text == "(empty prompt)"


async def test_fixed_reply_is_percent_decoded_and_keeps_plus() -> None:
    """`reply=` in a model id is percent-decoded, and `+` stays a literal plus."""
    model = fake("m?reply=hi%20there%2C%20you%26me+co")

    assert (await model.generate("ignored")).text == "hi there, you&me+co"


async def test_fixed_reply_from_defaults() -> None:
    """`reply` in the provider's defaults applies to every model."""
    assert (await fake("any", reply="fixed").generate("ignored")).text == "fixed"


async def test_usage_counts_words_of_system_all_messages_and_reply() -> None:
    """Input tokens count words of the system prompt and every message; output the reply's."""
    request = Request(
        [Message.user("one two"), Message.assistant("three"), Message.user("four five six")],
        system="be very brief",
    )

    response = await fake("m?reply=alpha%20beta").generate(request)

    assert response.usage == Usage(input_tokens=9, output_tokens=2)


async def test_options_are_applied_to_the_request() -> None:
    """Options passed to generate reach the request (a system prompt adds input words)."""
    response = await fake("m").generate("a b", system("x y z"))

    assert response.usage == Usage(input_tokens=5, output_tokens=2)


async def test_request_ids_count_every_call_of_the_provider() -> None:
    """Request ids number the provider's calls across its models, failed calls included."""
    provider = FakeProvider("fake", clock=ManualClock())
    good, bad = provider.model("good"), provider.model("bad?script=503")

    first = await good.generate("x")
    with pytest.raises(OverloadedError):
        await bad.generate("x")
    stream = await good.stream("x")
    await stream.aclose()

    assert (first.request_id, stream.request_id) == ("fake-1", "fake-3")


# --------------------------------------------------------------------------- outcomes


@pytest.mark.parametrize(
    ("outcome", "error", "status", "code"),
    [
        ("429", RateLimitError, 429, None),
        ("quota", QuotaExceededError, 429, "insufficient_quota"),
        ("400", BadRequestError, 400, None),
        ("auth", AuthenticationError, 401, None),
        ("401", AuthenticationError, 401, None),
        ("notfound", ModelNotFoundError, 404, None),
        ("404", ModelNotFoundError, 404, None),
        ("context", ContextLengthError, 400, "context_length_exceeded"),
        ("policy", ContentPolicyError, 400, None),
        ("500", ServerError, 500, None),
        ("502", ServerError, 502, None),
        ("503", OverloadedError, 503, None),
        ("529", OverloadedError, 529, None),
        ("timeout", ProviderTimeoutError, None, None),
        ("reset", ProviderConnectionError, None, None),
    ],
)
async def test_each_outcome_raises_its_error(
    outcome: str, error: type[ProviderError], status: int | None, code: str | None
) -> None:
    """Every failing outcome raises exactly its error type, status and code, for its target."""
    model_id = f"m?script={outcome}"
    model = FakeProvider("prov", clock=ManualClock()).model(model_id)

    with pytest.raises(error) as info:
        await model.generate("hi")

    exc = info.value
    assert type(exc) is error
    assert (exc.provider, exc.model, exc.status, exc.code) == ("prov", model_id, status, code)
    assert exc.retry_after is None
    assert "scripted fake failure" in str(exc)


async def test_reset_outcome_says_connection_reset_by_peer() -> None:
    """`reset` reads like the network failure it imitates."""
    with pytest.raises(ProviderConnectionError, match="connection reset by peer"):
        await fake("m?script=reset").generate("hi")


async def test_429_with_seconds_sets_retry_after() -> None:
    """`429:SECONDS` is a RateLimitError whose retry_after is those seconds, as a float."""
    with pytest.raises(RateLimitError) as info:
        await fake("m?script=429:2.5").generate("hi")

    assert info.value.retry_after == 2.5
    assert info.value.status == 429


async def test_hang_never_answers_but_is_cancellable() -> None:
    """`hang` waits until cancelled, for generate and for stream alike."""
    model = fake("m?script=hang")

    with anyio.move_on_after(0.05) as generate_scope:
        await model.generate("hi")
    with anyio.move_on_after(0.05) as stream_scope:
        await model.stream("hi")

    assert generate_scope.cancelled_caught
    assert stream_scope.cancelled_caught
    assert model.calls == 2


# --------------------------------------------------------------------------- scripts


async def test_script_progresses_and_the_last_outcome_repeats() -> None:
    """`503+ok` fails once, then answers forever."""
    assert await outcomes(fake("m?script=503+ok"), 4) == ["OverloadedError", "ok", "ok", "ok"]


async def test_single_outcome_script_repeats_forever() -> None:
    """`script=503` fails on every call."""
    assert await outcomes(fake("m?script=503"), 3) == ["OverloadedError"] * 3


async def test_n_star_repeats_an_outcome() -> None:
    """`503*2+429+ok` fails twice with 503, once with 429, then answers."""
    assert await outcomes(fake("m?script=503*2+429+ok"), 5) == [
        "OverloadedError",
        "OverloadedError",
        "RateLimitError",
        "ok",
        "ok",
    ]


async def test_count_may_also_come_first() -> None:
    """`2*503` reads like `503*2`, and `500*500` is 500 repeated 500 times."""
    assert await outcomes(fake("m?script=2*503+ok"), 3) == ["OverloadedError"] * 2 + ["ok"]
    assert await outcomes(fake("m?script=500*500+ok"), 501) == ["ServerError"] * 500 + ["ok"]


async def test_n_star_on_the_last_outcome_still_repeats_it() -> None:
    """A repeated last step keeps repeating after its count runs out."""
    assert await outcomes(fake("m?script=ok+500*2"), 5) == ["ok"] + ["ServerError"] * 4


async def test_generate_and_stream_share_one_counter() -> None:
    """A stream call consumes a script step just like a generate call does."""
    model = fake("m?script=ok+503+ok")

    await model.generate("hi")
    with pytest.raises(OverloadedError):
        await model.stream("hi")
    stream = await model.stream("hi")
    await stream.aclose()

    assert model.calls == 3


async def test_models_are_cached_per_id_and_share_their_counter() -> None:
    """`model(id)` returns the same object each time, so everyone shares its script position."""
    provider = FakeProvider("fake", clock=ManualClock())

    with pytest.raises(OverloadedError):
        await provider.model("m?script=503+ok").generate("hi")
    response = await provider.model("m?script=503+ok").generate("hi")

    assert provider.model("m?script=503+ok") is provider.model("m?script=503+ok")
    assert response.text == "hi"


async def test_same_label_with_other_keys_is_another_model() -> None:
    """Caching is per whole model-id string: different keys mean a separate counter."""
    provider = FakeProvider("fake", clock=ManualClock())

    assert provider.model("m?script=503+ok") is not provider.model("m?script=503+ok&latency=0")


# --------------------------------------------------------------------------- configuration


async def test_model_id_keys_override_provider_defaults() -> None:
    """Keys in the model id win over the DSN defaults; the other defaults still apply."""
    provider = FakeProvider("fake", {"reply": "default", "script": "503+ok"}, clock=ManualClock())

    overridden = provider.model("x?script=ok")
    inherited = provider.model("y?reply=mine")

    assert (await overridden.generate("hi")).text == "default"
    assert await outcomes(inherited, 2) == ["OverloadedError", "ok"]
    assert (await inherited.generate("hi")).text == "mine"


@pytest.mark.parametrize(
    ("model_id", "fragment"),
    [
        ("m?colour=red", "'colour'"),
        ("m?colour=red", "accepted keys: reply, script, latency, chunks, chunk_delay"),
        ("m?script=teapot", "unknown outcome 'teapot'"),
        ("m?script=teapot", "accepted outcomes: ok, 429, quota"),
        ("m?script=", "'script' is empty"),
        ("m?script=503*0", "bad repeat '503*0'"),
        ("m?script=x*503", "bad repeat 'x*503'"),
        ("m?script=ok*hang", "bad repeat 'ok*hang'"),
        ("m?script=2*3*ok", "bad repeat '2*3*ok'"),
        ("m?script=429*500", "bad repeat '429*500'"),
        ("m?script=503:1", "unknown outcome '503:1'"),
        ("m?script=429:soon", "'script (429:SECONDS)'"),
        ("m?latency=-1", "'latency' needs a number of seconds >= 0, got '-1'"),
        ("m?latency=soon", "'latency'"),
        ("m?latency=nan", "'latency'"),
        ("m?chunk_delay=inf", "'chunk_delay'"),
        ("m?chunks=0", "'chunks' needs a whole number >= 1, got '0'"),
        ("m?chunks=1.5", "'chunks'"),
        ("m?break_after=-1", "'break_after' needs a whole number >= 0"),
        ("m?reply", "expected key=value after '?', got 'reply'"),
    ],
)
def test_bad_keys_and_values_raise_configuration_error(model_id: str, fragment: str) -> None:
    """An unknown key or a bad value fails at model() time with a message naming it."""
    provider = FakeProvider("fake")

    with pytest.raises(ConfigurationError) as info:
        provider.model(model_id)

    assert fragment in str(info.value)
    assert f"fake/{model_id}" in str(info.value)


def test_bad_defaults_fail_at_construction() -> None:
    """A bad DSN query is reported when the provider is built, naming the provider."""
    with pytest.raises(ConfigurationError, match=r"fake provider 'flaky'.*'latncy'"):
        FakeProvider("flaky", {"latncy": "1"})


async def test_outcome_names_are_case_insensitive_and_trimmed() -> None:
    """`OK` and ` 503 ` are read like `ok` and `503`."""
    assert await outcomes(fake("m?script=%20503%20+OK"), 2) == ["OverloadedError", "ok"]


async def test_list_models_returns_sorted_ids_created_so_far() -> None:
    """list_models lists the model ids built so far, sorted, leaving out rejected ones."""
    provider = FakeProvider("fake")
    provider.model("zeta")
    provider.model("alpha?script=503")
    with pytest.raises(ConfigurationError):
        provider.model("bad?nope=1")

    assert await provider.list_models() == ["alpha?script=503", "zeta"]


def test_provider_and_model_satisfy_the_protocols() -> None:
    """FakeProvider is a Provider and a ModelLister; FakeModel is an AsyncModel."""
    provider = FakeProvider("fake")
    model = provider.model("m")

    assert isinstance(provider, Provider)
    assert isinstance(provider, ModelLister)
    assert isinstance(model, AsyncModel)
    assert provider.name == "fake"
    assert model.capabilities == Capabilities(reasoning=True)


# --------------------------------------------------------------------------- latency


async def test_latency_sleeps_on_the_provider_clock() -> None:
    """`latency` waits on the provider's clock: no real time passes with a ManualClock."""
    clock = ManualClock()
    model = fake("m?latency=30", clock)

    started = time.perf_counter()
    await model.generate("hi")
    stream = await model.stream("hi")
    await stream.aclose()

    assert time.perf_counter() - started < 5
    assert clock.sleeps == [30.0, 30.0]
    assert clock.now() == 60.0


async def test_latency_is_waited_before_a_scripted_failure() -> None:
    """A failing call waits its latency first, like a slow provider answering 503."""
    clock = ManualClock()

    with pytest.raises(OverloadedError):
        await fake("m?script=503&latency=1.5", clock).generate("hi")

    assert clock.sleeps == [1.5]


async def test_no_latency_means_no_clock_sleep() -> None:
    """Without `latency`, generate does not sleep on the clock at all."""
    clock = ManualClock()

    await fake("m", clock).generate("hi")

    assert clock.sleeps == []


# --------------------------------------------------------------------------- streams


async def test_stream_events_come_in_order_one_piece_per_word() -> None:
    """A stream yields start, one delta per word (spaces kept), usage, then end."""
    model = fake("m?reply=one%20two%20%20three%20")

    async with await model.stream("a question") as stream:
        events = [event async for event in stream]

    assert events == [
        StreamStart(
            model="fake/m?reply=one%20two%20%20three%20", request_id="fake-1", served_model="m"
        ),
        TextDelta("one "),
        TextDelta("two  "),
        TextDelta("three "),
        UsageUpdate(Usage(input_tokens=2, output_tokens=3)),
        StreamEnd(FinishReason.STOP),
    ]
    assert stream.finished


async def test_stream_collect_equals_generate() -> None:
    """The stream's aggregated Response has the text, usage and key generate gives."""
    model = fake("m")
    request = Request("  tell me\ta  story  ", system="be kind")

    generated = await model.generate(request)
    collected = await (await model.stream(request)).collect()

    assert collected.text == generated.text == "  tell me\ta  story  "
    assert collected.usage == generated.usage
    assert collected.model == generated.model == "fake/m"
    assert collected.request_id == "fake-2"


async def test_stream_error_outcome_raises_before_any_stream_exists() -> None:
    """A failing outcome raises from stream() itself, so a chain can still fail over."""
    with pytest.raises(ServerError):
        await fake("m?script=500").stream("hi")


async def test_chunks_splits_into_n_nearly_equal_pieces() -> None:
    """`chunks=3` splits ten characters into pieces of 4, 3 and 3 that rejoin exactly."""
    stream = await fake("m?reply=abcdefghij&chunks=3").stream("hi")

    async with stream:
        pieces = [event.text async for event in stream if isinstance(event, TextDelta)]

    assert pieces == ["abcd", "efg", "hij"]


async def test_chunks_larger_than_the_reply_yields_no_empty_pieces() -> None:
    """More chunks than characters gives one piece per character, never an empty delta."""
    stream = await fake("m?reply=ab&chunks=5").stream("hi")

    async with stream:
        pieces = [event.text async for event in stream if isinstance(event, TextDelta)]

    assert pieces == ["a", "b"]


async def test_chunks_of_an_empty_reply_is_no_delta() -> None:
    """An empty reply streams no TextDelta at all, and still ends cleanly."""
    stream = await fake("m?reply=&chunks=1000000000").stream("hi")

    async with stream:
        events = [event async for event in stream]

    assert [type(event) for event in events] == [StreamStart, UsageUpdate, StreamEnd]


async def test_chunk_delay_sleeps_between_pieces_on_the_clock() -> None:
    """`chunk_delay` waits between pieces (not before the first), on the provider's clock."""
    clock = ManualClock()
    stream = await fake("m?reply=a%20b%20c&chunk_delay=0.25", clock).stream("hi")

    started = time.perf_counter()
    response = await stream.collect()

    assert time.perf_counter() - started < 5
    assert response.text == "a b c"
    assert clock.sleeps == [0.25, 0.25]


async def test_break_after_resets_the_stream_after_n_pieces() -> None:
    """`break_after=2` yields two deltas then ProviderConnectionError, with no end event."""
    stream = await fake("m?reply=a%20b%20c%20d&break_after=2").stream("hi")
    seen = []

    with pytest.raises(ProviderConnectionError, match="connection reset mid-stream") as info:
        async with stream:
            async for event in stream:
                seen.append(event)

    assert [type(event) for event in seen] == [StreamStart, TextDelta, TextDelta]
    assert (info.value.provider, info.value.model) == (
        "fake",
        "m?reply=a%20b%20c%20d&break_after=2",
    )
    assert stream.closed
    assert not stream.finished


async def test_break_after_beyond_the_reply_still_breaks() -> None:
    """With fewer pieces than `break_after`, the stream breaks after its last piece."""
    stream = await fake("m?reply=a%20b&break_after=10").stream("hi")

    with pytest.raises(ProviderConnectionError):
        await stream.collect()

    assert stream.closed


async def test_break_after_defaults_to_every_stream_of_the_provider() -> None:
    """`break_after` in the defaults breaks streams but leaves generate alone."""
    model = fake("m", break_after="0")

    assert (await model.generate("fine")).text == "fine"
    with pytest.raises(ProviderConnectionError):
        await (await model.stream("hi")).collect()


async def test_closing_a_stream_early_closes_its_source() -> None:
    """Breaking out of `async with` + `async for` closes the stream and its generator."""
    stream = await fake("m?reply=one%20two%20three").stream("hi")

    async with stream:
        async for event in stream:
            if isinstance(event, TextDelta):
                break

    assert stream.closed
    assert stream._source.ag_frame is None  # type: ignore[attr-defined]
    with pytest.raises(StreamClosedError):
        await stream.__anext__()


async def test_an_unread_stream_can_be_closed() -> None:
    """Closing a stream that was never iterated is clean (no warning, no error)."""
    stream = await fake("m").stream("hi")

    await stream.aclose()
    await stream.aclose()

    assert stream.closed


# --------------------------------------------------------------------------- wiring


async def test_fake_factory_builds_a_provider_from_the_dsn_query() -> None:
    """The DSN query becomes the defaults (`+` decoded to a space still separates steps)."""
    clock = ManualClock()
    context = ProviderContext(http=HTTPSessionHolder(), clock=clock, env=lambda _: None)

    provider = fake_factory("flaky", DSN.parse("fake://?script=503+ok&latency=0.5"), context)
    model = provider.model("any")

    assert provider.name == "flaky"
    assert await outcomes(model, 2) == ["OverloadedError", "ok"]
    assert clock.sleeps == [0.5, 0.5]


async def test_registry_fails_over_from_a_scripted_head(registry: Registry) -> None:
    """`fake/head?script=503,fake/backup` is a two-target spec answered by the backup."""
    response = await registry.parse("fake/head?script=503,fake/backup").generate("hello")

    assert (response.text, response.model) == ("hello", "fake/backup")
    assert {failure.key for failure in response.failed_attempts} == {"fake/head?script=503"}


# --------------------------------------------------------------------------- 2026 features


async def test_a_scripted_tool_call_streams_as_argument_deltas(registry: Registry) -> None:
    """`tool=NAME&args=JSON` (commas percent-encoded): the answer is that call, its
    arguments streamed in pieces, finish reason `tool_calls`."""
    model = registry.parse('fake/m?tool=get_weather&args={"city": "Oslo"%2C "unit": "C"}')
    response = await model.generate("weather?")
    assert response.finish_reason is FinishReason.TOOL_CALLS
    assert [(call.name, call.parse_arguments()) for call in response.tool_calls] == [
        ("get_weather", {"city": "Oslo", "unit": "C"})
    ]
    async with await model.stream("weather?") as stream:
        deltas = [event async for event in stream if isinstance(event, ToolCallDelta)]
    assert deltas[0].name == "get_weather" and len(deltas) > 2
    assert stream.response.tool_calls[0].parse_arguments() == {"city": "Oslo", "unit": "C"}
    assert stream.response.finish_reason is FinishReason.TOOL_CALLS


async def test_scripted_reasoning_and_its_usage(registry: Registry) -> None:
    model = registry.parse("fake/m?reasoning=first think hard&reply=done&cached=2")
    async with await model.stream("please answer me") as stream:
        thoughts = [event.text async for event in stream if isinstance(event, ReasoningDelta)]
    response = stream.response
    assert "".join(thoughts) == response.reasoning == "first think hard"
    assert response.usage == Usage(3, 4, cached_input_tokens=2, reasoning_tokens=3)
    generated = await model.generate("please answer me")
    assert generated.reasoning == "first think hard"
    assert generated.reasoning_parts[0].provider == "fake"
    # Asked not to reason, it does not.
    silent = await model.generate("please answer me", reasoning("none"))
    assert (silent.reasoning, silent.usage.reasoning_tokens) == ("", 0)


async def test_max_tokens_is_honoured(registry: Registry) -> None:
    model = registry.parse("fake/m?reply=one two three four")
    response = await model.generate("hi", max_tokens(2))
    assert (response.text, response.finish_reason) == ("one two ", FinishReason.LENGTH)
    assert response.usage.output_tokens == 2
    async with await model.stream("hi", max_tokens(2)) as stream:
        await stream.collect()
    assert (stream.response.text, stream.response.finish_reason) == (
        "one two ",
        FinishReason.LENGTH,
    )


def test_tool_arguments_must_be_a_json_object(registry: Registry) -> None:
    with pytest.raises(ConfigurationError, match="%2C"):
        registry.parse("fake/m?tool=t&args=[1]")
