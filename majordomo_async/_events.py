"""Typed stream events.

Content events (`TextDelta`, `ToolCallDelta`, `ReasoningDelta`) commit a stream to its
target: before the first of them a failure still fails over; after it, a failure reaches
the consumer (who may have shown it). Everything else is bookkeeping.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeAlias

import attrs

from ._response import FinishReason, Usage

if TYPE_CHECKING:
    from ._exceptions import TargetFailure

__all__ = [
    "ContentEvent",
    "ReasoningDelta",
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
    served_model: str | None = None
    """The model id the provider reports serving ("gpt-4o-2024-08-06"), when it says."""


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


def _opaque(value: str | None) -> str:
    return "None" if value is None else f"<{len(value)} chars>"


@attrs.frozen
class ReasoningDelta:
    """More of the model's reasoning (a summary for some providers), before its answer.

    Pieces with the same `index` form one reasoning block; a block's `signature` (or its
    `redacted` content, for reasoning the provider encrypted) comes with its last piece.
    `Stream.response` gathers them into `reasoning` and `reasoning_parts`.
    """

    text: str = ""
    index: int = 0
    signature: str | None = attrs.field(default=None, repr=_opaque)
    redacted: str | None = attrs.field(default=None, repr=_opaque)
    provider: str = ""
    """The wire family that produced it ("anthropic", "gemini", "openai", "ollama")."""


@attrs.frozen
class UsageUpdate:
    """Token counts so far (the last one wins)."""

    usage: Usage


@attrs.frozen
class StreamEnd:
    """The provider's terminal signal: the answer is complete."""

    finish_reason: FinishReason = FinishReason.STOP
    refusal: str | None = None
    """The model's refusal text, when it declined (see `Response.refusal`)."""


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


ContentEvent: TypeAlias = TextDelta | ToolCallDelta | ReasoningDelta
StreamEvent: TypeAlias = (
    StreamStart
    | TextDelta
    | ToolCallDelta
    | ReasoningDelta
    | UsageUpdate
    | StreamEnd
    | StreamRestart
)
