"""What a model answered: `Response`, `Usage`, `FinishReason`."""

from __future__ import annotations

import enum
from collections.abc import Iterable
from typing import Any

import attrs

from ._exceptions import TargetFailure
from ._messages import Message, Part, ReasoningPart, TextPart, ToolCall, ToolCallPart

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
    """Token counts for one call (zero when the provider did not say).

    Totals are totals on every provider: `input_tokens` counts cached input too, and
    `output_tokens` counts reasoning too (Anthropic reports cache reads and writes apart
    from its input, Gemini its thoughts apart from its output: they are added here).
    """

    input_tokens: int = 0
    """Every input token, cached ones included."""
    output_tokens: int = 0
    """Every generated token, reasoning included."""
    cached_input_tokens: int = 0
    """Input tokens read from the provider's prompt cache (part of `input_tokens`)."""
    cache_write_tokens: int = 0
    """Input tokens written to the prompt cache (Anthropic; part of `input_tokens`)."""
    reasoning_tokens: int = 0
    """Output tokens spent reasoning (part of `output_tokens`)."""

    @property
    def total_tokens(self) -> int:
        """Input plus output tokens."""
        return self.input_tokens + self.output_tokens

    def __add__(self, other: object) -> Usage:
        if not isinstance(other, Usage):
            return NotImplemented
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cached_input_tokens + other.cached_input_tokens,
            self.cache_write_tokens + other.cache_write_tokens,
            self.reasoning_tokens + other.reasoning_tokens,
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
    reasoning: str = ""
    """The model's reasoning as the provider showed it (a summary for some), when it
    reasoned and showed it (see `reasoning()`)."""
    reasoning_parts: tuple[ReasoningPart, ...] = ()
    """The reasoning blocks with their signatures, which `message` carries back."""
    refusal: str | None = None
    """The model's refusal text, when it declined (OpenAI's `refusal`); `finish_reason`
    is what the provider said."""
    served_model: str | None = None
    """The model id the provider reports having served ("gpt-4o-2024-08-06"), beside
    `model`, the target key that answered."""

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
            reasoning=self.reasoning,
            reasoning_parts=self.reasoning_parts,
            refusal=self.refusal,
            served_model=self.served_model,
        )

    @property
    def message(self) -> Message:
        """The answer as an assistant turn, to append to the conversation history
        (its reasoning blocks, its text and its tool calls, which the tool results then
        answer)."""
        parts: list[Part] = list(self.reasoning_parts)
        if self.text:
            parts.append(TextPart(self.text))
        parts.extend(ToolCallPart(call) for call in self.tool_calls)
        return Message("assistant", tuple(parts))
