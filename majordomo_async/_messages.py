"""Conversation messages and their parts: text, image, tool call, tool result, reasoning."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Mapping
from typing import Any, Literal, TypeAlias

import attrs

from ._exceptions import ConfigurationError, ResponseFormatError

__all__ = [
    "ImagePart",
    "Message",
    "Part",
    "ReasoningPart",
    "Role",
    "TextPart",
    "Tool",
    "ToolCall",
    "ToolCallPart",
    "ToolResultPart",
]

Role: TypeAlias = Literal["user", "assistant", "tool"]
"""Who speaks. The system prompt is `Request.system`, not a message."""


@attrs.frozen
class TextPart:
    """Plain text."""

    text: str


@attrs.frozen
class ImagePart:
    """An image, inline (`data` + `mime_type`) or by `url`. Build with `from_bytes`/`from_url`."""

    data: bytes | None = attrs.field(
        default=None, repr=lambda d: "None" if d is None else f"<{len(d)} bytes>"
    )
    """Raw image bytes (not base64), when inline."""
    mime_type: str | None = None
    """"image/png", "image/jpeg", ...; required with `data`."""
    url: str | None = None
    """An http(s) or data: URL, when not inline."""

    def __attrs_post_init__(self) -> None:
        if (self.data is None) == (self.url is None):
            raise ConfigurationError("ImagePart needs exactly one of data or url")
        if self.data is not None and not self.data:
            raise ConfigurationError("ImagePart data is empty")
        if self.data is not None and not self.mime_type:
            raise ConfigurationError("ImagePart with inline data needs a mime_type")

    @classmethod
    def from_bytes(cls, data: bytes, mime_type: str) -> ImagePart:
        """An inline image."""
        return cls(data=data, mime_type=mime_type)

    @classmethod
    def from_url(cls, url: str, mime_type: str | None = None) -> ImagePart:
        """An image the provider fetches (or a `data:` URL)."""
        return cls(url=url, mime_type=mime_type)

    def base64(self) -> str:
        """The inline bytes as base64 text (what most wire formats want)."""
        if self.data is None:
            raise ConfigurationError("this ImagePart is a URL, not inline data")
        return base64.b64encode(self.data).decode("ascii")


@attrs.frozen
class ToolCall:
    """A model's request to call a tool."""

    id: str
    """The provider's call id; echo it in the `ToolResultPart`."""
    name: str
    """The tool's name."""
    arguments: str = "{}"
    """The arguments as the model wrote them: JSON text (see `parse_arguments`)."""

    def parse_arguments(self) -> dict[str, Any]:
        """The arguments as a dict.

        Raises:
            ResponseFormatError: the model wrote something that is not a JSON object.
        """
        try:
            value = json.loads(self.arguments or "{}")
        except (ValueError, RecursionError) as exc:
            raise ResponseFormatError(
                f"tool call {self.name!r} has arguments that are not JSON: {self.arguments[:200]!r}"
            ) from exc
        if not isinstance(value, dict):
            raise ResponseFormatError(
                f"tool call {self.name!r} has arguments that are not a JSON object"
            )
        return value


@attrs.frozen
class ToolCallPart:
    """A tool call inside an assistant message (for replaying a conversation)."""

    call: ToolCall


@attrs.frozen
class ToolResultPart:
    """The result of a tool call, sent back in a `tool` message."""

    call_id: str
    """The `ToolCall.id` this answers."""
    content: str
    """The result, usually JSON text."""
    is_error: bool = False
    """True when the tool failed and `content` describes the failure."""
    name: str | None = None
    """The tool's name (some wire formats want it with the result)."""


def _opaque(value: str | None) -> str:
    return "None" if value is None else f"<{len(value)} chars>"


@attrs.frozen
class ReasoningPart:
    """A model's reasoning, kept in its assistant turn so that it can be sent back.

    `Response.message` puts it first. Anthropic requires the thinking blocks of a turn
    that called tools, signatures intact, when the conversation goes on; every other
    family gets the turn without it. Only the family that produced a part (`provider`)
    is sent it back: a signature means nothing to anyone else.
    """

    text: str = ""
    """The reasoning as the provider showed it (a summary, for some)."""
    signature: str | None = attrs.field(default=None, repr=_opaque)
    """The provider's opaque signature over the reasoning (Anthropic, Gemini)."""
    redacted: str | None = attrs.field(default=None, repr=_opaque)
    """Reasoning the provider encrypted (Anthropic `redacted_thinking`): kept opaque."""
    provider: str = ""
    """The wire family that produced it: "anthropic", "gemini", "openai", "ollama"."""


Part: TypeAlias = TextPart | ImagePart | ToolCallPart | ToolResultPart | ReasoningPart
"""Any message part."""


def _to_parts(value: str | Part | Iterable[str | Part]) -> tuple[Part, ...]:
    if type(value) is tuple and len(value) == 1:  # `Message.user("...")`, every plain prompt
        item = value[0]
        if type(item) is str:
            return (TextPart(item),)
        if type(item) is TextPart:
            return (item,)
    if isinstance(value, str):
        return (TextPart(value),)
    if isinstance(value, TextPart | ImagePart | ToolCallPart | ToolResultPart | ReasoningPart):
        return (value,)
    return tuple(TextPart(item) if isinstance(item, str) else item for item in value)


@attrs.frozen
class Message:
    """One turn of a conversation. `parts` accepts a str, a part, or a list of them."""

    role: Role
    parts: tuple[Part, ...] = attrs.field(converter=_to_parts)
    cache_breakpoint: bool = False
    """A prompt-cache breakpoint after this message: Anthropic caches the conversation up
    to here (`cache_control`); the other families cache by themselves and ignore it."""

    @classmethod
    def user(cls, *parts: str | Part) -> Message:
        """A user turn: `Message.user("describe this", ImagePart.from_url(url))`."""
        return cls("user", parts)

    @classmethod
    def assistant(cls, *parts: str | Part) -> Message:
        """An assistant turn (for replaying history)."""
        return cls("assistant", parts)

    @classmethod
    def tool_result(cls, call_id: str, content: str, *, is_error: bool = False) -> Message:
        """A tool turn answering `call_id`."""
        return cls("tool", (ToolResultPart(call_id, content, is_error),))

    @property
    def text(self) -> str:
        """The message's text parts joined."""
        return "".join(part.text for part in self.parts if isinstance(part, TextPart))


def _freeze_schema(value: Mapping[str, Any]) -> Mapping[str, Any]:
    return dict(value)


@attrs.frozen
class Tool:
    """A function the model may call."""

    name: str
    description: str = ""
    parameters: Mapping[str, Any] = attrs.field(
        factory=lambda: {"type": "object", "properties": {}}, converter=_freeze_schema, hash=False
    )
    """A JSON Schema object for the arguments."""
