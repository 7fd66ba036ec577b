"""The Gemini provider: request bodies, reply parsing, streams, error mapping, the factory.

Request shapes and reply parsing go through `aioresponses` ("right JSON out, right parse
in"); streams and faults run against a real `aiohttp.web` server on 127.0.0.1 that writes
the fixture bodies of `tests/fixtures/gemini/` in small chunks, with CRLF line endings as
Gemini sends them. Every test that opens connections checks none is left acquired.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aioresponses import aioresponses
from yarl import URL

from majordomo_async import (
    DSN,
    AuthenticationError,
    BadRequestError,
    Chain,
    ChainConfig,
    ConfigurationError,
    ContentPolicyError,
    ContextLengthError,
    FinishReason,
    HealthTracker,
    HTTPSessionHolder,
    ImagePart,
    ManualClock,
    Message,
    ModelLister,
    ModelNotFoundError,
    OverloadedError,
    Provider,
    ProviderContext,
    ProviderError,
    QuotaExceededError,
    RateLimitError,
    ReasoningPart,
    Request,
    ResponseFormatError,
    ServerError,
    StreamEnd,
    StreamStart,
    StreamTruncatedError,
    Target,
    TextDelta,
    Tool,
    ToolCall,
    ToolCallDelta,
    ToolCallPart,
    ToolResultPart,
    UnsupportedRequestError,
    Usage,
    UsageUpdate,
    json_mode,
    json_schema,
    max_tokens,
    stop,
    system,
    temperature,
    top_p,
)
from majordomo_async._http import Timeouts
from majordomo_async._providers._base import USER_AGENT
from majordomo_async._providers.gemini import (
    DEFAULT_BASE_URL,
    GeminiModel,
    GeminiProvider,
    _build_body,
    _parse_response,
    _StreamTranslator,
    gemini_factory,
)

from .helpers.mocking import CompatResponse
from .helpers.servers import (
    Handler,
    LocalServer,
    acquired_connections,
    local_server,
    play,
    respond,
)

FIXTURES = Path(__file__).parent / "fixtures" / "gemini"
KEY = "AIzaSyTEST-secret-key-0123456789abcdef"
BASE = "https://generativelanguage.example/v1beta"
MODEL = "gemini-2.5-flash"
GENERATE_URL = f"{BASE}/models/{MODEL}:generateContent"


def fixture_text(name: str) -> str:
    """A fixture file's text."""
    return (FIXTURES / name).read_text(encoding="utf-8")


def fixture_json(name: str) -> Any:
    """A fixture file, decoded."""
    return json.loads(fixture_text(name))


@pytest.fixture
async def holder() -> AsyncIterator[HTTPSessionHolder]:
    """A session holder, closed after the test (the `server` fixture checks for leaks)."""
    holder = HTTPSessionHolder()
    yield holder
    await holder.aclose()


def provider(holder: HTTPSessionHolder, base: str = BASE, **kwargs: Any) -> GeminiProvider:
    """A provider with the test key on `base`."""
    kwargs.setdefault("api_key", KEY)
    return GeminiProvider("gemini", base_url=base, http=holder, **kwargs)


def mock_post(mock: aioresponses, url: str = GENERATE_URL, **kwargs: Any) -> None:
    """Queue one reply to a POST of `url` (payload=, body=, status=, ...)."""
    mock.post(url, response_class=CompatResponse, **kwargs)


def sent(mock: aioresponses, url: str = GENERATE_URL) -> tuple[Any, dict[str, str]]:
    """The JSON body and headers of the one request made to `url`."""
    calls = mock.requests[("POST", URL(url))]
    assert len(calls) == 1
    kwargs = calls[0].kwargs
    return json.loads(kwargs["data"]), dict(kwargs["headers"])


async def body_for(holder: HTTPSessionHolder, request: Request | str) -> Any:
    """The JSON body `generate(request)` sends."""
    with aioresponses() as mock:
        mock_post(mock, GENERATE_URL, payload=fixture_json("generate_text.json"))
        await provider(holder).model(MODEL).generate(request)
        body, _ = sent(mock)
    return body


# --------------------------------------------------------------------------- a real server


@pytest.fixture
async def server(holder: HTTPSessionHolder) -> AsyncIterator[LocalServer]:
    """A local server for the test; it must leave no connection of `holder` checked out."""
    async with local_server(holder) as server:
        yield server


def sse(name: str, *, chunk: int = 7) -> Handler:
    """A handler writing fixture `name` as an event stream, CRLF lines, `chunk` bytes at a time."""
    return play(fixture_text(name).replace("\n", "\r\n").encode(), chunk=chunk)


def reply(name: str, *, status: int = 200, headers: Mapping[str, str] | None = None) -> Handler:
    """A handler answering with fixture `name` as a JSON body."""
    return respond(status, fixture_text(name), headers=headers)


STREAM_PATH = f"/v1beta/models/{MODEL}:streamGenerateContent"
GENERATE_PATH = f"/v1beta/models/{MODEL}:generateContent"


# --------------------------------------------------------------------------- request shapes


async def test_plain_text_request(holder: HTTPSessionHolder) -> None:
    """A prompt becomes one user turn; the key goes in x-goog-api-key, never in the URL."""
    with aioresponses() as mock:
        mock_post(mock, GENERATE_URL, payload=fixture_json("generate_text.json"))
        await provider(holder).model(MODEL).generate("What is the capital of Norway?")
        body, headers = sent(mock)
        (url,) = [url for _, url in mock.requests]
    assert body == {
        "contents": [{"role": "user", "parts": [{"text": "What is the capital of Norway?"}]}]
    }
    assert headers == {
        "User-Agent": USER_AGENT,
        "x-goog-api-key": KEY,
        "Content-Type": "application/json",
    }
    assert KEY not in str(url)
    assert "key" not in url.query


async def test_system_prompt_and_sampling(holder: HTTPSessionHolder) -> None:
    """System prompt, temperature, top_p, max_tokens and stop map to their Gemini fields."""
    request = Request("Hi").apply(
        system("Be terse."), temperature(0.2), top_p(0.9), max_tokens(256), stop("END", "STOP")
    )
    assert await body_for(holder, request) == {
        "contents": [{"role": "user", "parts": [{"text": "Hi"}]}],
        "systemInstruction": {"parts": [{"text": "Be terse."}]},
        "generationConfig": {
            "temperature": 0.2,
            "topP": 0.9,
            "maxOutputTokens": 256,
            "stopSequences": ["END", "STOP"],
        },
    }


WEATHER = Tool(
    "get_weather",
    "Current weather for a city",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
CLOCK = Tool("get_time")


@pytest.mark.parametrize(
    ("choice", "config"),
    [
        (None, None),
        ("auto", {"functionCallingConfig": {"mode": "AUTO"}}),
        ("none", {"functionCallingConfig": {"mode": "NONE"}}),
        ("required", {"functionCallingConfig": {"mode": "ANY"}}),
        (
            "get_time",
            {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_time"]}},
        ),
    ],
)
async def test_tools_and_tool_choice(
    holder: HTTPSessionHolder, choice: str | None, config: dict[str, Any] | None
) -> None:
    """Tools become functionDeclarations; tool_choice becomes functionCallingConfig."""
    request = Request("Weather in Oslo?", tools=[WEATHER, CLOCK], tool_choice=choice)
    expected: dict[str, Any] = {
        "contents": [{"role": "user", "parts": [{"text": "Weather in Oslo?"}]}],
        "tools": [
            {
                "functionDeclarations": [
                    {
                        "name": "get_weather",
                        "description": "Current weather for a city",
                        "parametersJsonSchema": dict(WEATHER.parameters),
                    },
                    {
                        "name": "get_time",
                        "parametersJsonSchema": {"type": "object", "properties": {}},
                    },
                ]
            }
        ],
    }
    if config is not None:
        expected["toolConfig"] = config
    assert await body_for(holder, request) == expected


def test_tool_choice_naming_an_unknown_tool() -> None:
    """A tool_choice that names no tool of the request is a configuration error."""
    request = Request("Hi", tools=[WEATHER], tool_choice="get_stock")
    with pytest.raises(ConfigurationError, match="get_stock"):
        _build_body(request, MODEL, stream=False)


SIGNED = ToolCall("call_0__thought__c2lnbmF0dXJlLW9uZQ==", "get_weather", '{"city": "Oslo"}')
UNSIGNED = ToolCall("call_1", "get_time", '{"zone": "Europe/Oslo"}')


async def test_tool_results_follow_up(holder: HTTPSessionHolder) -> None:
    """Replayed calls keep their signatures; parallel results share one user turn, by name."""
    request = Request(
        [
            Message.user("Weather and time in Oslo?"),
            Message.assistant("Checking.", ToolCallPart(SIGNED), ToolCallPart(UNSIGNED)),
            Message.tool_result(SIGNED.id, '{"temp_c": 4}'),
            Message.tool_result("call_1", "14:05"),
            Message.user("Thanks!"),
        ],
        tools=[WEATHER, CLOCK],
    )
    body = await body_for(holder, request)
    assert body["contents"] == [
        {"role": "user", "parts": [{"text": "Weather and time in Oslo?"}]},
        {
            "role": "model",
            "parts": [
                {"text": "Checking."},
                {
                    "functionCall": {"name": "get_weather", "args": {"city": "Oslo"}},
                    "thoughtSignature": "c2lnbmF0dXJlLW9uZQ==",
                },
                {"functionCall": {"name": "get_time", "args": {"zone": "Europe/Oslo"}}},
            ],
        },
        {
            "role": "user",
            "parts": [
                {"functionResponse": {"name": "get_weather", "response": {"temp_c": 4}}},
                {"functionResponse": {"name": "get_time", "response": {"output": "14:05"}}},
            ],
        },
        {"role": "user", "parts": [{"text": "Thanks!"}]},
    ]


def test_foreign_tool_calls_are_replayed_with_their_ids_and_a_placeholder_signature() -> None:
    """Another provider's call gets the skip-validator signature; its id is echoed both ways."""
    call = ToolCall("toolu_01ABC", "get_weather", '{"city": "Oslo"}')
    request = Request(
        [
            Message.user("Weather?"),
            Message.assistant(ToolCallPart(call)),
            Message("tool", [ToolResultPart("toolu_01ABC", "no data", is_error=True)]),
        ]
    )
    contents = _build_body(request, MODEL, stream=False)["contents"]
    assert contents[1:] == [
        {
            "role": "model",
            "parts": [
                {
                    "functionCall": {
                        "name": "get_weather",
                        "args": {"city": "Oslo"},
                        "id": "toolu_01ABC",
                    },
                    "thoughtSignature": "skip_thought_signature_validator",
                }
            ],
        },
        {
            "role": "user",
            "parts": [
                {
                    "functionResponse": {
                        "name": "get_weather",
                        "response": {"error": "no data"},
                        "id": "toolu_01ABC",
                    }
                }
            ],
        },
    ]


def test_tool_result_without_a_name_is_unsupported() -> None:
    """A result whose call is not in the conversation and has no name cannot be sent."""
    request = Request([Message.user("Hi"), Message.tool_result("call_7", "42")])
    with pytest.raises(UnsupportedRequestError, match="call_7"):
        _build_body(request, MODEL, stream=False, provider="gemini")


def test_tool_result_with_an_explicit_name() -> None:
    """`ToolResultPart.name` names the function when the call is not in the conversation."""
    request = Request([Message("tool", [ToolResultPart("call_7", "[1, 2]", name="primes")])])
    assert _build_body(request, MODEL, stream=False)["contents"] == [
        {
            "role": "user",
            "parts": [{"functionResponse": {"name": "primes", "response": {"output": [1, 2]}}}],
        }
    ]


PNG = b"\x89PNG\r\n\x1a\n-not-really-a-png"


async def test_inline_and_url_images(holder: HTTPSessionHolder) -> None:
    """Inline bytes and data: URLs become inlineData; http(s) URLs become fileData."""
    data_url = "data:image/png;base64," + base64.b64encode(PNG).decode()
    request = Request(
        Message.user(
            "Compare these.",
            ImagePart.from_bytes(PNG, "image/png"),
            ImagePart.from_url(data_url),
            ImagePart.from_url("https://images.example/fjord.JPG?size=large"),
            ImagePart.from_url("https://images.example/render", mime_type="image/webp"),
        )
    )
    encoded = base64.b64encode(PNG).decode()
    assert (await body_for(holder, request))["contents"] == [
        {
            "role": "user",
            "parts": [
                {"text": "Compare these."},
                {"inlineData": {"mimeType": "image/png", "data": encoded}},
                {"inlineData": {"mimeType": "image/png", "data": encoded}},
                {
                    "fileData": {
                        "mimeType": "image/jpeg",
                        "fileUri": "https://images.example/fjord.JPG?size=large",
                    }
                },
                {
                    "fileData": {
                        "mimeType": "image/webp",
                        "fileUri": "https://images.example/render",
                    }
                },
            ],
        }
    ]


def test_unsupported_image_url_scheme() -> None:
    """An image URL Gemini cannot fetch (gs://, ftp://) is an UnsupportedRequestError."""
    request = Request(Message.user(ImagePart.from_url("gs://bucket/cat.png")))
    with pytest.raises(UnsupportedRequestError, match="gs:") as info:
        _build_body(request, MODEL, stream=False, provider="gemini")
    assert info.value.key == f"gemini/{MODEL}"


def test_malformed_data_url() -> None:
    """A data: URL with broken base64 is a configuration error, not a request."""
    request = Request(Message.user(ImagePart.from_url("data:image/png;base64,@@@")))
    with pytest.raises(ConfigurationError, match="base64"):
        _build_body(request, MODEL, stream=False)


async def test_json_mode(holder: HTTPSessionHolder) -> None:
    """JSON mode sets responseMimeType only."""
    body = await body_for(holder, Request("List three fjords.").apply(json_mode()))
    assert body["generationConfig"] == {"responseMimeType": "application/json"}


async def test_json_schema(holder: HTTPSessionHolder) -> None:
    """A JSON schema goes in responseJsonSchema, with the JSON MIME type."""
    schema = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}
    body = await body_for(holder, Request("Name a fjord.").apply(json_schema(schema)))
    assert body["generationConfig"] == {
        "responseMimeType": "application/json",
        "responseJsonSchema": schema,
    }


async def test_stream_url_and_tuned_model_path(holder: HTTPSessionHolder) -> None:
    """Streams use :streamGenerateContent?alt=sse; tuned models keep their collection."""
    stream_url = f"{BASE}/models/{MODEL}:streamGenerateContent?alt=sse"
    tuned_url = f"{BASE}/tunedModels/my-model-7:generateContent"
    sse_body = fixture_text("text_stream.sse")
    with aioresponses() as mock:
        mock_post(mock, stream_url, body=sse_body, content_type="text/event-stream")
        mock_post(mock, tuned_url, payload=fixture_json("generate_text.json"))
        gemini = provider(holder)
        response = await (await gemini.model(MODEL).stream("Hi")).collect()
        await gemini.model("tunedModels/my-model-7").generate("Hi")
        assert len(mock.requests[("POST", URL(stream_url))]) == 1
        assert len(mock.requests[("POST", URL(tuned_url))]) == 1
    assert response.text == "Glad to hélp → always."


# --------------------------------------------------------------------------- reply parsing


def test_parse_text_reply() -> None:
    """Text parts join (thought parts are reasoning); usage counts thinking as output."""
    response = _parse_response(fixture_json("generate_text.json"), f"gemini/{MODEL}", {})
    assert response.text == "Oslo is the capital of Norway."
    assert response.reasoning == "The user wants the capital; answer in one line."
    assert response.tool_calls == ()
    assert response.finish_reason is FinishReason.STOP
    assert response.usage == Usage(input_tokens=12, output_tokens=19, reasoning_tokens=11)
    assert response.request_id == "resp-text-0001"
    assert response.model == f"gemini/{MODEL}"


def test_parse_parallel_tool_calls() -> None:
    """Parallel calls get ids call_0, call_1; a signature is a ReasoningPart, not in the id."""
    response = _parse_response(fixture_json("generate_tools.json"), f"gemini/{MODEL}", {})
    assert response.finish_reason is FinishReason.TOOL_CALLS
    assert response.tool_calls == (
        ToolCall("call_0", "get_weather", '{"city": "Tromsø", "unit": "celsius"}'),
        ToolCall("call_1", "get_time", '{"zone": "Europe/Oslo"}'),
    )
    assert response.reasoning_parts == (
        ReasoningPart(signature="c2lnbmF0dXJlLW9uZQ==", provider="gemini"),
    )
    assert response.tool_calls[0].parse_arguments() == {"city": "Tromsø", "unit": "celsius"}
    assert response.text == ""


def test_tool_calls_round_trip() -> None:
    """A reply's message, replayed, gives back the model turn Gemini sent (signature included)."""
    reply_body = fixture_json("generate_tools.json")
    response = _parse_response(reply_body, f"gemini/{MODEL}", {})
    request = Request([Message.user("Weather?"), response.message])
    replayed = _build_body(request, MODEL, stream=False)["contents"][1]
    assert replayed == reply_body["candidates"][0]["content"]


def test_call_ids_from_gemini_are_kept() -> None:
    """A functionCall that carries an id keeps it as the ToolCall id."""
    body = {
        "candidates": [
            {
                "content": {"parts": [{"functionCall": {"id": "fc-9", "name": "f", "args": {}}}]},
                "finishReason": "STOP",
            }
        ]
    }
    (call,) = _parse_response(body, "gemini/m", {}).tool_calls
    assert call == ToolCall("fc-9", "f", "{}")


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("STOP", FinishReason.STOP),
        ("MAX_TOKENS", FinishReason.LENGTH),
        ("SAFETY", FinishReason.CONTENT_FILTER),
        ("RECITATION", FinishReason.CONTENT_FILTER),
        ("BLOCKLIST", FinishReason.CONTENT_FILTER),
        ("PROHIBITED_CONTENT", FinishReason.CONTENT_FILTER),
        ("SPII", FinishReason.CONTENT_FILTER),
        ("IMAGE_SAFETY", FinishReason.CONTENT_FILTER),
        ("MALFORMED_FUNCTION_CALL", FinishReason.OTHER),
        ("LANGUAGE", FinishReason.OTHER),
        ("OTHER", FinishReason.OTHER),
        ("SOMETHING_NEW", FinishReason.OTHER),
    ],
)
def test_finish_reasons(reason: str, expected: FinishReason) -> None:
    """Every Gemini finishReason maps to one of ours."""
    body = {"candidates": [{"finishReason": reason}]}  # SAFETY stops often carry no content
    assert _parse_response(body, "gemini/m", {}).finish_reason is expected


def test_blocked_prompt_is_a_content_policy_error() -> None:
    """A 200 with promptFeedback.blockReason and no candidates raises ContentPolicyError."""
    with pytest.raises(ContentPolicyError, match="PROHIBITED_CONTENT") as info:
        _parse_response(fixture_json("generate_blocked.json"), f"gemini/{MODEL}", {})
    assert info.value.code == "PROHIBITED_CONTENT"
    assert info.value.request_id == "resp-blocked-0001"


@pytest.mark.parametrize("body", [[], {"candidates": []}, {"candidates": ["x"]}, "text"])
def test_unusable_replies(body: object) -> None:
    """A reply without a usable candidate is a ResponseFormatError, not a KeyError."""
    with pytest.raises(ResponseFormatError):
        _parse_response(body, "gemini/m", {})


# --------------------------------------------------------------------------- key handling


async def test_missing_key_fails_the_call_not_construction(holder: HTTPSessionHolder) -> None:
    """Without a key the provider builds, and a call names the variables to set."""
    model = provider(holder, api_key=None).model(MODEL)
    with aioresponses() as mock, pytest.raises(AuthenticationError) as info:
        await model.generate("Hi")
    assert not mock.requests
    assert "GEMINI_API_KEY" in str(info.value)
    assert "GOOGLE_API_KEY" in str(info.value)


async def test_key_never_appears_in_errors_or_reprs(holder: HTTPSessionHolder) -> None:
    """The key is in no repr, and not in an error even when a proxy echoes it back."""
    echoed = fixture_json("error_api_key_invalid.json")
    echoed["error"]["message"] += f" (got {KEY})"
    gemini = provider(holder)
    with aioresponses() as mock, pytest.raises(AuthenticationError) as info:
        mock_post(mock, GENERATE_URL, status=400, payload=echoed)
        await gemini.model(MODEL).generate("Hi")
    texts = [str(info.value), repr(info.value), repr(info.value.args), repr(gemini)]
    texts += [repr(gemini.model(MODEL))]
    assert all(KEY not in text for text in texts)
    assert info.value.code == "API_KEY_INVALID"


# --------------------------------------------------------------------------- the factory


def context(env: Mapping[str, str], holder: HTTPSessionHolder) -> ProviderContext:
    """A factory context with `env` as the environment."""
    return ProviderContext(http=holder, clock=ManualClock(), env=env.get)


@pytest.mark.parametrize(
    ("dsn", "env", "key"),
    [
        ("gemini://dsn-key@", {"GEMINI_API_KEY": "env-key"}, "dsn-key"),
        ("gemini://", {"GEMINI_API_KEY": "gem", "GOOGLE_API_KEY": "goo"}, "gem"),
        ("gemini://", {"GOOGLE_API_KEY": "goo"}, "goo"),
        ("gemini://", {}, None),
    ],
)
def test_factory_key_lookup(
    holder: HTTPSessionHolder, dsn: str, env: dict[str, str], key: str | None
) -> None:
    """The key comes from the DSN, then GEMINI_API_KEY, then GOOGLE_API_KEY."""
    gemini = gemini_factory("gemini", DSN.parse(dsn), context(env, holder))
    headers = gemini._headers(MODEL) if key else None
    expected = {"User-Agent": USER_AGENT, "x-goog-api-key": key, "Content-Type": "application/json"}
    assert headers == (expected if key else None)
    assert isinstance(gemini, Provider)
    assert isinstance(gemini, ModelLister)
    assert isinstance(gemini.model(MODEL), GeminiModel)
    assert gemini.model(MODEL) is gemini.model(MODEL)


@pytest.mark.parametrize(
    ("dsn", "base"),
    [
        ("gemini://k@", DEFAULT_BASE_URL),
        ("gemini://k@proxy.example/gemini/v1beta", "https://proxy.example/gemini/v1beta"),
        ("gemini+http://k@127.0.0.1:8080/v1beta/", "http://127.0.0.1:8080/v1beta"),
    ],
)
def test_factory_base_url(holder: HTTPSessionHolder, dsn: str, base: str) -> None:
    """The DSN's host and path give the base URL; without a host it is Google's."""
    assert gemini_factory("g", DSN.parse(dsn), context({}, holder)).base_url == base


def test_factory_timeouts(holder: HTTPSessionHolder) -> None:
    """Timeout keys in the DSN query set the timeouts, in seconds."""
    dsn = DSN.parse("gemini://k@?connect=2.5&first_token=300")
    gemini = gemini_factory("g", dsn, context({}, holder))
    assert gemini.timeouts == Timeouts(connect=2.5, first_token=300.0)


@pytest.mark.parametrize(
    ("query", "match"), [("idle=-1", "idle"), ("idle=soon", "idle"), ("retries=3", "retries")]
)
def test_factory_rejects_bad_query(holder: HTTPSessionHolder, query: str, match: str) -> None:
    """A bad number of seconds or an unknown DSN key is a configuration error."""
    with pytest.raises(ConfigurationError, match=match):
        gemini_factory("g", DSN.parse(f"gemini://k@?{query}"), context({}, holder))


# --------------------------------------------------------------------------- streams


async def test_text_stream(holder: HTTPSessionHolder, server: LocalServer) -> None:
    """Text deltas aggregate; usage and the finish reason come from the last chunk."""
    server.routes[STREAM_PATH] = sse("text_stream.sse")
    base = server.url + "/v1beta"
    stream = await provider(holder, base).model(MODEL).stream("Greet me")
    events = [event async for event in stream]
    response = stream.response
    assert isinstance(events[0], StreamStart)
    texts = [event.text for event in events if isinstance(event, TextDelta)]
    assert texts == ["Gla", "d to hélp", " → always."]
    assert events[-1] == StreamEnd(FinishReason.STOP)
    assert response.text == "Glad to hélp → always."
    assert response.usage == Usage(input_tokens=7, output_tokens=11, reasoning_tokens=5)
    assert response.reasoning == "Greeting the user politely."
    assert response.request_id == "resp-stream-0001"
    assert response.model == f"gemini/{MODEL}"
    (request,) = server.requests
    assert request.query == "alt=sse"
    assert request.headers["x-goog-api-key"] == KEY


async def test_tool_call_stream(holder: HTTPSessionHolder, server: LocalServer) -> None:
    """Whole function calls arrive as one delta each and assemble into tool calls."""
    server.routes[STREAM_PATH] = sse("tool_stream.sse")
    base = server.url + "/v1beta"
    stream = await provider(holder, base).model(MODEL).stream("Weather?")
    events = [event async for event in stream]
    deltas = [event for event in events if isinstance(event, ToolCallDelta)]
    assert deltas == [
        ToolCallDelta(0, "call_0", "get_weather", '{"city": "Oslo"}'),
        ToolCallDelta(1, "call_1", "get_weather", '{"city": "Bergen"}'),
    ]
    response = stream.response
    assert response.finish_reason is FinishReason.TOOL_CALLS
    assert [call.parse_arguments()["city"] for call in response.tool_calls] == ["Oslo", "Bergen"]
    assert response.reasoning_parts == (ReasoningPart(signature="c2lnLW9zbG8=", provider="gemini"),)
    assert response.usage == Usage(input_tokens=30, output_tokens=14)


async def test_usage_update_arrives_before_the_end(
    holder: HTTPSessionHolder, server: LocalServer
) -> None:
    """The final usage is reported as an event before StreamEnd."""
    server.routes[STREAM_PATH] = sse("text_stream.sse")
    base = server.url + "/v1beta"
    stream = await provider(holder, base).model(MODEL).stream("Greet me")
    events = [event async for event in stream]
    assert events[-2] == UsageUpdate(Usage(input_tokens=7, output_tokens=11, reasoning_tokens=5))


async def test_truncated_stream(holder: HTTPSessionHolder, server: LocalServer) -> None:
    """A body that ends without a finishReason chunk raises StreamTruncatedError."""
    server.routes[STREAM_PATH] = sse("truncated_stream.sse")
    base = server.url + "/v1beta"
    stream = await provider(holder, base).model(MODEL).stream("Tell a story")
    texts: list[str] = []
    with pytest.raises(StreamTruncatedError) as info:
        async for event in stream:
            if isinstance(event, TextDelta):
                texts.append(event.text)
    assert texts == ["Once upon", " a time"]
    assert info.value.key == f"gemini/{MODEL}"


async def test_stream_cut_mid_body(holder: HTTPSessionHolder, server: LocalServer) -> None:
    """A connection dropped mid-body (no chunked terminator) is a truncated stream."""
    body = fixture_text("truncated_stream.sse").encode()[:120]
    server.routes[STREAM_PATH] = play(body, chunk=len(body), end="close")
    base = server.url + "/v1beta"
    stream = await provider(holder, base).model(MODEL).stream("Tell a story")
    with pytest.raises(StreamTruncatedError, match="ended early"):
        await stream.collect()


async def test_reset_after_the_terminal_chunk_loses_nothing(
    holder: HTTPSessionHolder, server: LocalServer
) -> None:
    """A connection dropped after the finishReason chunk still gives the complete answer."""
    body = fixture_text("text_stream.sse").encode()
    # No chunked terminator after the body: aiohttp sees a cut payload.
    server.routes[STREAM_PATH] = play(body, chunk=len(body), end="close")
    base = server.url + "/v1beta"
    stream = await provider(holder, base).model(MODEL).stream("Greet me")
    response = await stream.collect()
    assert response.text == "Glad to hélp → always."
    assert response.finish_reason is FinishReason.STOP


async def test_chain_fails_over_on_an_in_band_error_before_content(
    holder: HTTPSessionHolder,
    server: LocalServer,
) -> None:
    """An error chunk before the first delta lets a chain move on to its next target."""
    server.routes.update(
        {
            "/v1beta/models/gemini-a:streamGenerateContent": sse("error_before_content.sse"),
            "/v1beta/models/gemini-b:streamGenerateContent": sse("text_stream.sse"),
        }
    )
    base = server.url + "/v1beta"
    gemini = provider(holder, base)
    targets = [Target(f"gemini/{m}", gemini.model(m)) for m in ("gemini-a", "gemini-b")]
    config = ChainConfig(transient_retries=-1)
    chain = Chain(targets, HealthTracker(clock=ManualClock()), config)
    response = await (await chain.stream("Greet me")).collect()
    assert response.model == "gemini/gemini-b"
    assert response.text == "Glad to hélp → always."
    (failure,) = response.failed_attempts
    assert failure.key == "gemini/gemini-a"
    assert isinstance(failure.error, OverloadedError)


async def test_in_band_error_before_content(holder: HTTPSessionHolder, server: LocalServer) -> None:
    """An error chunk before any delta raises the mapped error on the first read."""
    server.routes[STREAM_PATH] = sse("error_before_content.sse")
    base = server.url + "/v1beta"
    stream = await provider(holder, base).model(MODEL).stream("Hi")
    with pytest.raises(OverloadedError, match="overloaded") as info:
        await stream.__anext__()
    await stream.aclose()
    assert info.value.status == 503
    assert info.value.code == "UNAVAILABLE"


async def test_in_band_error_after_content(holder: HTTPSessionHolder, server: LocalServer) -> None:
    """An error chunk after a delta reaches the consumer as the mapped error."""
    server.routes[STREAM_PATH] = sse("error_after_content.sse")
    base = server.url + "/v1beta"
    stream = await provider(holder, base).model(MODEL).stream("Hi")
    seen: list[object] = []
    with pytest.raises(ServerError) as info:
        async for event in stream:
            seen.append(event)
    assert TextDelta("Partial answer") in seen
    assert info.value.status == 500


async def test_raw_error_json_without_data_prefix(
    holder: HTTPSessionHolder, server: LocalServer
) -> None:
    """A multi-line error JSON written without `data:` becomes the typed error, not truncation."""
    server.routes[STREAM_PATH] = sse("error_raw_after_content.sse")
    base = server.url + "/v1beta"
    stream = await provider(holder, base).model(MODEL).stream("Hi")
    with pytest.raises(RateLimitError) as info:
        await stream.collect()
    assert info.value.code == "RESOURCE_EXHAUSTED"
    assert not isinstance(info.value, QuotaExceededError)


async def test_blocked_prompt_in_a_stream(holder: HTTPSessionHolder, server: LocalServer) -> None:
    """A blocked prompt's only chunk raises ContentPolicyError before any content."""
    server.routes[STREAM_PATH] = sse("blocked_stream.sse")
    base = server.url + "/v1beta"
    stream = await provider(holder, base).model(MODEL).stream("Hi")
    with pytest.raises(ContentPolicyError, match="SAFETY"):
        await stream.collect()


async def test_stream_closed_unread_releases_the_connection(
    holder: HTTPSessionHolder, server: LocalServer
) -> None:
    """A stream closed before its first event still drops its connection."""
    server.routes[STREAM_PATH] = sse("text_stream.sse")
    base = server.url + "/v1beta"
    stream = await provider(holder, base).model(MODEL).stream("Hi")
    assert acquired_connections(holder.get()) == 1
    await stream.aclose()
    assert acquired_connections(holder.get()) == 0


async def test_breaking_out_early_releases_the_connection(
    holder: HTTPSessionHolder, server: LocalServer
) -> None:
    """Leaving `async with` after the first delta closes the connection."""
    server.routes[STREAM_PATH] = sse("text_stream.sse", chunk=4096)
    base = server.url + "/v1beta"
    async with await provider(holder, base).model(MODEL).stream("Hi") as stream:
        async for event in stream:
            if isinstance(event, TextDelta):
                break
    assert acquired_connections(holder.get()) == 0


def test_translator_safety_stop_and_late_usage() -> None:
    """A SAFETY stop ends the stream as content_filter; usage after it is still reported."""
    translator = _StreamTranslator(key="gemini/m", headers={})
    first = translator.chunk({"candidates": [{"finishReason": "SAFETY", "index": 0}]})
    late = translator.chunk({"usageMetadata": {"promptTokenCount": 3}})
    assert first == [StreamStart(model="gemini/m"), StreamEnd(FinishReason.CONTENT_FILTER)]
    assert late == [UsageUpdate(Usage(input_tokens=3))]
    assert translator.finish() == []  # terminal chunk seen: the end of the body is fine


# --------------------------------------------------------------------------- HTTP errors


@pytest.mark.parametrize(
    ("status", "name", "error", "code"),
    [
        (404, "error_model_not_found.json", ModelNotFoundError, "NOT_FOUND"),
        (400, "error_api_key_invalid.json", AuthenticationError, "API_KEY_INVALID"),
        (403, "error_permission_denied.json", AuthenticationError, "PERMISSION_DENIED"),
        (400, "error_context_length.json", ContextLengthError, "INVALID_ARGUMENT"),
        (400, "error_bad_request.json", BadRequestError, "INVALID_ARGUMENT"),
        (429, "error_quota_per_day.json", QuotaExceededError, "RESOURCE_EXHAUSTED"),
        (503, "error_unavailable.json", OverloadedError, "UNAVAILABLE"),
        (500, "error_internal.json", ServerError, "INTERNAL"),
    ],
)
async def test_http_errors(
    holder: HTTPSessionHolder,
    status: int,
    name: str,
    error: type[ProviderError],
    code: str,
    server: LocalServer,
) -> None:
    """Each Gemini error body maps to its error type, for generate and for stream."""
    server.routes.update(
        {GENERATE_PATH: reply(name, status=status), STREAM_PATH: reply(name, status=status)}
    )
    base = server.url + "/v1beta"
    model = provider(holder, base).model(MODEL)
    with pytest.raises(error) as generated:
        await model.generate("Hi")
    with pytest.raises(error) as streamed:
        await model.stream("Hi")
    for info in (generated, streamed):
        assert type(info.value) is error
        assert info.value.status == status
        assert info.value.code == code
        assert info.value.key == f"gemini/{MODEL}"
        assert fixture_json(name)["error"]["message"][:40] in str(info.value)


async def test_rate_limit_uses_retry_delay_from_the_body(
    holder: HTTPSessionHolder, server: LocalServer
) -> None:
    """A per-minute 429 is a RateLimitError whose retry_after is RetryInfo.retryDelay."""
    server.routes[GENERATE_PATH] = reply("error_rate_limit.json", status=429)
    base = server.url + "/v1beta"
    with pytest.raises(RateLimitError) as info:
        await provider(holder, base).model(MODEL).generate("Hi")
    assert type(info.value) is RateLimitError
    assert info.value.retry_after == 21.0
    assert "retry after 21 s" in str(info.value)


async def test_rate_limit_prefers_a_retry_after_header(
    holder: HTTPSessionHolder, server: LocalServer
) -> None:
    """A Retry-After header, when sent, wins over the body's retryDelay."""
    handler = reply("error_rate_limit.json", status=429, headers={"Retry-After": "7"})
    server.routes[GENERATE_PATH] = handler
    base = server.url + "/v1beta"
    with pytest.raises(RateLimitError) as info:
        await provider(holder, base).model(MODEL).generate("Hi")
    assert info.value.retry_after == 7.0


async def test_blocked_prompt_over_http(holder: HTTPSessionHolder, server: LocalServer) -> None:
    """A blocked prompt (200 + blockReason) from generate is a ContentPolicyError."""
    server.routes[GENERATE_PATH] = reply("generate_blocked.json")
    base = server.url + "/v1beta"
    with pytest.raises(ContentPolicyError):
        await provider(holder, base).model(MODEL).generate("Hi")


async def test_generate_over_http(holder: HTTPSessionHolder, server: LocalServer) -> None:
    """A real round trip parses the reply and returns the connection to the pool."""
    server.routes[GENERATE_PATH] = reply("generate_text.json")
    base = server.url + "/v1beta"
    response = await provider(holder, base).model(MODEL).generate("Capital of Norway?")
    assert response.text == "Oslo is the capital of Norway."
    assert response.request_id == "resp-text-0001"


# --------------------------------------------------------------------------- list_models


async def test_list_models_follows_pages(holder: HTTPSessionHolder, server: LocalServer) -> None:
    """Models come from every page, without the models/ prefix, chat-capable ones only."""
    tokens: list[str | None] = []

    async def models(request: web.Request) -> web.StreamResponse:
        token = request.query.get("pageToken")
        tokens.append(token)
        assert request.headers["x-goog-api-key"] == KEY
        page = "models_page2.json" if token else "models_page1.json"
        return web.Response(text=fixture_text(page), content_type="application/json")

    server.routes["/v1beta/models"] = models
    base = server.url + "/v1beta"
    ids = await provider(holder, base).list_models()
    assert ids == ["gemini-2.5-flash", "gemini-2.5-pro"]
    assert tokens == [None, "Cg9tb2RlbHMvZ2VtaW5pLTI="]


async def test_list_models_maps_errors(holder: HTTPSessionHolder, server: LocalServer) -> None:
    """An invalid key while listing is an AuthenticationError too."""
    handler = reply("error_api_key_invalid.json", status=400)
    server.routes["/v1beta/models"] = handler
    base = server.url + "/v1beta"
    with pytest.raises(AuthenticationError):
        await provider(holder, base).list_models()
