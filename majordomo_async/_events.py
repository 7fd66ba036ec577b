"""Typed stream events.

Content events (`TextDelta`, `ToolCallDelta`) commit a stream to its target: before
the first of them a failure still fails over; after it, a failure reaches the consumer.
Everything else is bookkeeping.
"""

from __future__ import annotations

from typing import TypeAlias

import attrs

from ._response import FinishReason, Usage

__all__ = [
    "ContentEvent",
    "StreamEnd",
    "StreamEvent",
    "StreamStart",
    "TextDelta",
    "ToolCallDelta",
    "UsageUpdate",
]


@attrs.frozen
class StreamStart:
    """The provider accepted the request (a preamble: it does not commit the stream)."""

    model: str = ""
    """The "provider/model-id" key of the target streaming."""
    request_id: str | None = None


@attrs.frozen
class TextDelta:
    """More answer text."""

    text: str


@attrs.frozen
class ToolCallDelta:
    """A piece of a tool call. Pieces with the same `index` form one call.

    The first piece of a call carries `id` and `name`; later ones add `arguments` text.
    """

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@attrs.frozen
class UsageUpdate:
    """Token counts so far (the last one wins)."""

    usage: Usage


@attrs.frozen
class StreamEnd:
    """The provider's terminal signal: the answer is complete."""

    finish_reason: FinishReason = FinishReason.STOP


ContentEvent: TypeAlias = TextDelta | ToolCallDelta
StreamEvent: TypeAlias = StreamStart | TextDelta | ToolCallDelta | UsageUpdate | StreamEnd
