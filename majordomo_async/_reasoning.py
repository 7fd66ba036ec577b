"""`Reasoning`: how much a model should think before it answers, portably.

One option maps to each provider's own control (the README's Reasoning section has the
table): OpenAI's `reasoning_effort`, Anthropic's extended thinking budget, Gemini's
thinking config, Ollama's `think`. An effort and a token budget convert into each other
by `EFFORT_BUDGETS`, so either can be given to any provider.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final, Literal, TypeAlias

import attrs

from ._exceptions import ConfigurationError

__all__ = ["EFFORT_BUDGETS", "Reasoning", "ReasoningEffort"]

ReasoningEffort: TypeAlias = Literal["none", "minimal", "low", "medium", "high"]
"""How hard to think: "none" asks a model that can skip reasoning to skip it."""

EFFORT_BUDGETS: Final[Mapping[str, int]] = MappingProxyType(
    {"none": 0, "minimal": 1024, "low": 2048, "medium": 8192, "high": 24576}
)
"""The thinking budget (tokens) an effort stands for, for providers that take a budget.

1024 is Anthropic's smallest budget; 24576 is Gemini 2.5 Flash's largest."""


def _check_effort(_: object, __: attrs.Attribute[Any], value: str | None) -> None:
    if value is not None and value not in EFFORT_BUDGETS:
        raise ConfigurationError(
            f"reasoning effort must be one of {', '.join(EFFORT_BUDGETS)}, got {value!r}"
        )


def _check_budget(_: object, __: attrs.Attribute[Any], value: int | None) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise ConfigurationError(
            f"reasoning budget_tokens must be a whole number >= 0, got {value!r}"
        )


@attrs.frozen
class Reasoning:
    """Ask a model to reason before answering: an `effort`, a `budget_tokens`, or both
    (then each provider uses the one its API takes). Build it with `reasoning()`.

    A target that cannot reason (`Capabilities.reasoning` is False) gets the request
    without this option: reasoning is a way to answer, not part of the question.
    """

    effort: ReasoningEffort | None = attrs.field(default=None, validator=_check_effort)
    budget_tokens: int | None = attrs.field(default=None, validator=_check_budget)
    """Tokens the model may spend thinking (0: do not think)."""
    summary: bool = True
    """Ask for the reasoning's text (a summary where the API gives only that), streamed
    as `ReasoningDelta` and kept in `Response.reasoning`."""

    def __attrs_post_init__(self) -> None:
        if self.effort is None and self.budget_tokens is None:
            raise ConfigurationError("reasoning needs an effort or a budget_tokens")

    @property
    def enabled(self) -> bool:
        """False when the option asks the model not to reason at all."""
        if self.budget_tokens is not None:
            return self.budget_tokens > 0
        return self.effort != "none"

    def tokens(self, minimum: int = 0) -> int:
        """The thinking budget in tokens (from the effort when none was given), at least
        `minimum` when reasoning is enabled (0 when it is not)."""
        budget = self.budget_tokens
        if budget is None:
            budget = EFFORT_BUDGETS[self.effort or "medium"]
        return max(budget, minimum) if budget > 0 else 0

    def level(self) -> ReasoningEffort:
        """The effort (from the budget when none was given: the nearest effort)."""
        if self.effort is not None:
            return self.effort
        budget = self.budget_tokens or 0
        if budget <= 0:
            return "none"
        if budget <= EFFORT_BUDGETS["minimal"]:
            return "minimal"
        if budget <= EFFORT_BUDGETS["low"]:
            return "low"
        if budget <= EFFORT_BUDGETS["medium"]:
            return "medium"
        return "high"
