"""Typed stream events.

Content events (`TextDelta`, `ToolCallDelta`) commit a stream to its target: before
the first of them a failure still fails over; after it, a failure reaches the consumer.
Everything else is bookkeeping.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeAlias

import attrs

from ._response import FinishReason, Usage

if TYPE_CHECKING:
    from ._exceptions import TargetFailure

__all__ = [
    "ContentEvent",
    "StreamEnd",
    "StreamEvent",
    "StreamRestart",
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


@attrs.frozen
class StreamRestart:
    """The answer starts over on another target: discard everything received so far.

    Sent only by chains with `ChainConfig(mid_stream="restart")`, when a target failed
    after it had delivered content. The events after it are the new target's complete
    answer; a UI clears the partial text it showed. `Stream.response` describes the new
    answer only.
    """

    model: str
    """The "provider/model-id" key of the target that answers from here on."""
    failed: str
    """The key of the target that failed mid-stream."""
    error: Exception = attrs.field(eq=False)
    """Why it failed."""
    failures: tuple[TargetFailure, ...] = attrs.field(default=(), eq=False, repr=False)
    """Every failed attempt and skip of the call so far, in order."""


ContentEvent: TypeAlias = TextDelta | ToolCallDelta
StreamEvent: TypeAlias = (
    StreamStart | TextDelta | ToolCallDelta | UsageUpdate | StreamEnd | StreamRestart
)
