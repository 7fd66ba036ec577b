"""What a model answered: `Response`, `Usage`, `FinishReason`."""

from __future__ import annotations

import enum
from collections.abc import Iterable
from typing import Any

import attrs

from ._exceptions import TargetFailure
from ._messages import Message, Part, TextPart, ToolCall, ToolCallPart

__all__ = ["FinishReason", "Response", "Usage"]


def _tool_calls(value: Iterable[ToolCall]) -> tuple[ToolCall, ...]:
    return tuple(value)


class FinishReason(enum.Enum):
    """Why the model stopped, normalised across providers."""

    STOP = "stop"
    """A natural end or a stop sequence."""
    LENGTH = "length"
    """`max_tokens` or the context window was reached: the text is cut short."""
    TOOL_CALLS = "tool_calls"
    """The model wants tool results before it goes on."""
    CONTENT_FILTER = "content_filter"
    """The provider withheld (part of) the output on policy grounds."""
    OTHER = "other"
    """Anything the provider reported that fits none of the above."""


@attrs.frozen
class Usage:
    """Token counts for one call (zero when the provider did not say)."""

    input_tokens: int = 0
    output_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        """Input plus output tokens."""
        return self.input_tokens + self.output_tokens

    def __add__(self, other: object) -> Usage:
        if not isinstance(other, Usage):
            return NotImplemented
        return Usage(
            self.input_tokens + other.input_tokens, self.output_tokens + other.output_tokens
        )

    def __radd__(self, other: object) -> Usage:
        # Lets `sum(usages)` start from its default 0.
        if other == 0:
            return self
        return NotImplemented


@attrs.frozen
class Response:
    """A complete answer."""

    text: str = ""
    """The answer's text (empty when the model only called tools)."""
    tool_calls: tuple[ToolCall, ...] = attrs.field(default=(), converter=_tool_calls)
    finish_reason: FinishReason = FinishReason.STOP
    usage: Usage = Usage()
    model: str = ""
    """The "provider/model-id" key of the target that actually answered."""
    request_id: str | None = None
    """The provider's request id, when it sent one."""
    failed_attempts: tuple[TargetFailure, ...] = ()
    """Attempts and skips the chain went through before this answer, in order."""
    raw: Any = attrs.field(default=None, repr=False, eq=False)
    """The provider's decoded reply, for fields this type does not carry."""

    def _restamped(self, model: str, failed_attempts: tuple[TargetFailure, ...]) -> Response:
        """A copy naming the answering chain target and the failures before it.

        What `attrs.evolve` would build, without its per-call field introspection: a
        chain stamps every answer that came after a skip or a failure.
        """
        return Response(
            text=self.text,
            tool_calls=self.tool_calls,
            finish_reason=self.finish_reason,
            usage=self.usage,
            model=model,
            request_id=self.request_id,
            failed_attempts=failed_attempts,
            raw=self.raw,
        )

    @property
    def message(self) -> Message:
        """The answer as an assistant turn, to append to the conversation history
        (its text and its tool calls, which the tool results then answer)."""
        parts: list[Part] = [TextPart(self.text)] if self.text else []
        parts.extend(ToolCallPart(call) for call in self.tool_calls)
        return Message("assistant", tuple(parts))
