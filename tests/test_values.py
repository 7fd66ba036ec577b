"""Value types: `Request` and its options, `Message` and parts, `ToolCall`, `Usage`, frozen-ness."""

from __future__ import annotations

import base64

import attrs
import pytest

from majordomo_async import (
    ConfigurationError,
    FinishReason,
    ImagePart,
    JSONMode,
    JSONSchema,
    Message,
    Request,
    Response,
    ResponseFormatError,
    StreamEnd,
    TargetFailure,
    TargetSkippedError,
    TextDelta,
    TextPart,
    Tool,
    ToolCall,
    ToolCallPart,
    ToolResultPart,
    Usage,
    as_request,
    json_mode,
    json_schema,
    max_tokens,
    metadata,
    stop,
    system,
    temperature,
    timeout,
    tool_choice,
    tools,
    top_p,
)

WEATHER = Tool("weather", "Current weather", {"type": "object", "properties": {}})


# --------------------------------------------------------------------------- Request converters


def test_a_string_becomes_one_user_message() -> None:
    """`Request("hi")` holds exactly one user message with that text."""
    request = Request("hi")

    assert request.messages == (Message("user", (TextPart("hi"),)),)
    assert request.messages == (Message.user("hi"),)


def test_a_single_message_and_a_list_become_tuples() -> None:
    """One Message or a list of them is stored as a tuple, in order."""
    first, second = Message.user("q"), Message.assistant("a")

    assert Request(first).messages == (first,)
    assert Request([first, second]).messages == (first, second)
    assert isinstance(Request([first, second]).messages, tuple)


def test_tools_and_stop_become_tuples() -> None:
    """Lists of tools and stop sequences are stored as tuples."""
    request = Request("hi", tools=[WEATHER], stop=["END", "STOP"])

    assert request.tools == (WEATHER,)
    assert request.stop == ("END", "STOP")


def test_a_single_stop_string_becomes_a_one_tuple() -> None:
    """`stop="END"` is one stop sequence, not three one-letter ones."""
    assert Request("hi", stop="END").stop == ("END",)


# --------------------------------------------------------------------------- Request validators


@pytest.mark.parametrize(
    "fields",
    [
        {"temperature": -0.1},
        {"temperature": 2.01},
        {"temperature": float("nan")},
        {"top_p": -0.01},
        {"top_p": 1.01},
        {"max_tokens": 0},
        {"max_tokens": -5},
        {"timeout": 0},
        {"timeout": -1.5},
    ],
    ids=lambda fields: "{}={}".format(*next(iter(fields.items()))),
)
def test_out_of_range_fields_raise_configuration_error(fields: dict[str, float]) -> None:
    """Out-of-range sampling values and non-positive limits are refused with ConfigurationError."""
    with pytest.raises(ConfigurationError, match=next(iter(fields))):
        Request("hi", **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "fields",
    [
        {"temperature": 0.0},
        {"temperature": 2.0},
        {"top_p": 0.0},
        {"top_p": 1.0},
        {"max_tokens": 1},
        {"timeout": 0.001},
    ],
    ids=lambda fields: "{}={}".format(*next(iter(fields.items()))),
)
def test_boundary_values_are_accepted(fields: dict[str, float]) -> None:
    """The inclusive range ends and the smallest positive limits are valid."""
    request = Request("hi", **fields)  # type: ignore[arg-type]

    for name, value in fields.items():
        assert getattr(request, name) == value


def test_a_nan_timeout_is_refused() -> None:
    """A NaN deadline is a bad input and gets ConfigurationError."""
    with pytest.raises(ConfigurationError):
        Request("hi", timeout=float("nan"))


def test_options_are_validated_too() -> None:
    """An out-of-range option fails when applied, like the constructor."""
    with pytest.raises(ConfigurationError):
        Request("hi").apply(temperature(3))
    with pytest.raises(ConfigurationError):
        Request("hi").apply(max_tokens(0))


# --------------------------------------------------------------------------- Request options


def test_apply_without_options_returns_the_same_object() -> None:
    """`apply()` with nothing to apply does not copy."""
    request = Request("hi")

    assert request.apply() is request


@pytest.mark.parametrize(
    ("option", "field", "value"),
    [
        (temperature(0.3), "temperature", 0.3),
        (max_tokens(256), "max_tokens", 256),
        (top_p(0.9), "top_p", 0.9),
        (stop("END", "##"), "stop", ("END", "##")),
        (system("Be terse."), "system", "Be terse."),
        (tools(WEATHER), "tools", (WEATHER,)),
        (tool_choice("weather"), "tool_choice", "weather"),
        (json_mode(), "response_format", JSONMode()),
        (
            json_schema({"type": "object"}, name="answer", strict=False),
            "response_format",
            JSONSchema({"type": "object"}, name="answer", strict=False),
        ),
        (timeout(12.5), "timeout", 12.5),
        (metadata(team="search"), "metadata", {"team": "search"}),
    ],
    ids=lambda arg: arg if isinstance(arg, str) else None,
)
def test_each_option_sets_its_field(option: object, field: str, value: object) -> None:
    """Each option callable returns a copy with its field set and the original untouched."""
    original = Request("hi")

    changed = original.apply(option)  # type: ignore[arg-type]

    assert getattr(changed, field) == value
    assert changed is not original
    assert getattr(original, field) == getattr(Request("hi"), field)
    assert changed.messages == original.messages


def test_options_apply_in_order() -> None:
    """Later options win over earlier ones for the same field."""
    request = Request("hi").apply(temperature(0.1), max_tokens(5), temperature(0.7))

    assert (request.temperature, request.max_tokens) == (0.7, 5)


def test_metadata_option_merges_into_existing_tags() -> None:
    """`metadata()` adds and overrides tags, keeping the others, without mutating the original."""
    original = Request("hi", metadata={"team": "search", "env": "dev"})

    changed = original.apply(metadata(env="prod", user="u1"))

    assert changed.metadata == {"team": "search", "env": "prod", "user": "u1"}
    assert original.metadata == {"team": "search", "env": "dev"}


def test_as_request_accepts_a_string_or_a_request() -> None:
    """`as_request` wraps a str as one user message and passes a Request through unchanged."""
    request = Request("hi", system="s")

    assert as_request(request) is request
    assert as_request("hello") == Request("hello")


def test_prompt_is_the_last_user_message_text() -> None:
    """`Request.prompt` is the text of the last user turn, skipping later non-user turns."""
    request = Request(
        [
            Message.user("first"),
            Message.assistant("reply"),
            Message.user("second ", "part"),
            Message.tool_result("c1", "{}"),
        ]
    )

    assert request.prompt == "second part"
    assert Request([Message.assistant("only me")]).prompt == ""


# --------------------------------------------------------------------------- Message and parts


def test_message_constructors_set_role_and_parts() -> None:
    """`Message.user/assistant/tool_result` build the right role and parts."""
    image = ImagePart.from_url("https://example.com/cat.png")

    assert Message.user("look", image) == Message("user", (TextPart("look"), image))
    assert Message.assistant("ok") == Message("assistant", (TextPart("ok"),))
    assert Message.tool_result("call_1", '{"t": 20}', is_error=True) == Message(
        "tool", (ToolResultPart("call_1", '{"t": 20}', is_error=True),)
    )
    assert Message("user", "plain").parts == (TextPart("plain"),)
    assert Message("user", image).parts == (image,)


def test_message_text_joins_only_text_parts() -> None:
    """`.text` concatenates the text parts and ignores images and tool parts."""
    message = Message.assistant(
        "a",
        ImagePart.from_url("https://example.com/x.png"),
        "b",
        ToolCallPart(ToolCall("c1", "f")),
    )

    assert message.text == "ab"


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"data": b"\x89PNG", "mime_type": "image/png", "url": "https://example.com/x.png"},
        {"data": b"\x89PNG"},
    ],
    ids=["neither", "both", "data-without-mime"],
)
def test_image_part_validation(fields: dict[str, object]) -> None:
    """An image needs exactly one of data or url, and inline data needs a MIME type."""
    with pytest.raises(ValueError, match="ImagePart"):
        ImagePart(**fields)  # type: ignore[arg-type]


def test_image_part_base64_and_url_form() -> None:
    """`base64()` encodes inline bytes; a URL image has no inline data to encode."""
    data = b"\x89PNG\r\n\x1a\n\x00\x01"

    assert ImagePart.from_bytes(data, "image/png").base64() == base64.b64encode(data).decode()
    with pytest.raises(ValueError, match="URL"):
        ImagePart.from_url("https://example.com/x.png").base64()


def test_image_part_repr_hides_the_bytes() -> None:
    """The repr shows the byte count, never the image bytes themselves."""
    part = ImagePart.from_bytes(b"SECRETPIXELS" * 10, "image/png")

    text = repr(part)

    assert "SECRETPIXELS" not in text
    assert "<120 bytes>" in text
    assert "image/png" in text


# --------------------------------------------------------------------------- ToolCall


def test_parse_arguments_returns_the_json_object() -> None:
    """Valid JSON object arguments come back as a dict; empty arguments as {}."""
    assert ToolCall("c1", "f", '{"city": "Oslo", "days": 3}').parse_arguments() == {
        "city": "Oslo",
        "days": 3,
    }
    assert ToolCall("c1", "f", "").parse_arguments() == {}
    assert ToolCall("c1", "f").parse_arguments() == {}


def test_parse_arguments_rejects_invalid_json() -> None:
    """Arguments that are not JSON raise ResponseFormatError chained to the decode error."""
    with pytest.raises(ResponseFormatError, match="not JSON") as caught:
        ToolCall("c1", "f", '{"city": ').parse_arguments()

    assert isinstance(caught.value.__cause__, ValueError)


@pytest.mark.parametrize("arguments", ["[1, 2]", '"text"', "3", "null"])
def test_parse_arguments_rejects_json_that_is_not_an_object(arguments: str) -> None:
    """JSON that is not an object raises ResponseFormatError."""
    with pytest.raises(ResponseFormatError, match="not a JSON object"):
        ToolCall("c1", "f", arguments).parse_arguments()


# --------------------------------------------------------------------------- Usage


def test_usage_adds_up_and_totals() -> None:
    """Usages add field by field, and the total is input plus output."""
    total = Usage(10, 3) + Usage(5, 7)

    assert total == Usage(15, 10)
    assert total.total_tokens == 25
    assert Usage().total_tokens == 0


def test_usage_plus_a_non_usage_is_a_type_error() -> None:
    """Adding something that is not a Usage fails with the standard TypeError."""
    with pytest.raises(TypeError):
        Usage(1, 1) + 1  # type: ignore[operator]


# --------------------------------------------------------------------------- frozen-ness


@pytest.mark.parametrize(
    ("value", "field"),
    [
        (Request("hi"), "temperature"),
        (Message.user("hi"), "role"),
        (TextPart("hi"), "text"),
        (ImagePart.from_url("https://example.com/x.png"), "url"),
        (ToolCall("c1", "f"), "arguments"),
        (ToolResultPart("c1", "{}"), "content"),
        (Tool("f"), "name"),
        (Usage(1, 2), "input_tokens"),
        (Response("hi"), "text"),
        (TextDelta("x"), "text"),
        (StreamEnd(FinishReason.STOP), "finish_reason"),
        (JSONSchema({}), "name"),
    ],
    ids=lambda arg: type(arg).__name__ if not isinstance(arg, str) else None,
)
def test_value_types_are_frozen(value: object, field: str) -> None:
    """Assigning to a field of a value type raises FrozenInstanceError."""
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        setattr(value, field, "changed")


def test_a_request_is_hashable() -> None:
    """A frozen Request can be hashed (it is a value type)."""
    assert hash(Request("hi")) == hash(Request("hi"))


def test_restamped_copies_every_field_but_the_two_it_sets() -> None:
    """The chain's fast copy must keep up with `Response`'s fields (a new field would
    otherwise be dropped silently)."""
    original = Response(
        text="hi",
        tool_calls=(ToolCall("c1", "f", "{}"),),
        finish_reason=FinishReason.TOOL_CALLS,
        usage=Usage(3, 4),
        model="p/m",
        request_id="req-1",
        raw={"x": 1},
    )
    failure = TargetFailure("p/a", TargetSkippedError("p/a", "skipped"))
    stamped = original._restamped("chain/m", (failure,))
    assert stamped.model == "chain/m"
    assert stamped.failed_attempts == (failure,)
    for field in attrs.fields(Response):
        if field.name not in ("model", "failed_attempts"):
            assert getattr(stamped, field.name) is getattr(original, field.name), field.name
