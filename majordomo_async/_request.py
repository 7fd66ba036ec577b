"""`Request`, its option callables, and the str-to-Request convenience."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal, TypeAlias

import attrs

from ._exceptions import ConfigurationError
from ._messages import Message, Tool
from ._provider_options import ProviderOptions
from ._reasoning import Reasoning, ReasoningEffort

__all__ = [
    "JSONMode",
    "JSONSchema",
    "Option",
    "Request",
    "ResponseFormat",
    "ToolChoice",
    "as_request",
    "cache",
    "first_token_timeout",
    "json_mode",
    "json_schema",
    "max_tokens",
    "metadata",
    "provider_options",
    "reasoning",
    "stop",
    "system",
    "temperature",
    "timeout",
    "tool_choice",
    "tools",
    "top_p",
]


@attrs.frozen
class JSONMode:
    """Ask for a JSON object, with no schema."""


@attrs.frozen
class JSONSchema:
    """Ask for JSON that follows `schema`."""

    schema: Mapping[str, Any]
    name: str = "response"
    strict: bool = True


ResponseFormat: TypeAlias = JSONMode | JSONSchema

ToolChoice: TypeAlias = Literal["auto", "none", "required"] | str
""""auto", "none", "required", or the name of the one tool the model must call."""


def _messages(value: Iterable[Message] | Message | str) -> tuple[Message, ...]:
    if isinstance(value, str):
        return (Message.user(value),)
    if isinstance(value, Message):
        return (value,)
    return tuple(value)


def _tools(value: Iterable[Tool]) -> tuple[Tool, ...]:
    return tuple(value)


def _strings(value: Iterable[str]) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(value)


def _check_temperature(_: object, __: attrs.Attribute[Any], value: float | None) -> None:
    if value is not None and not 0.0 <= value <= 2.0:
        raise ConfigurationError(f"temperature must be within [0, 2], got {value}")


def _check_top_p(_: object, __: attrs.Attribute[Any], value: float | None) -> None:
    if value is not None and not 0.0 <= value <= 1.0:
        raise ConfigurationError(f"top_p must be within [0, 1], got {value}")


def _check_positive(_: object, attribute: attrs.Attribute[Any], value: float | None) -> None:
    if value is not None and not value > 0:  # `not >` also rejects NaN
        raise ConfigurationError(f"{attribute.name} must be positive, got {value}")


@attrs.frozen
class Request:
    """What to ask a model. Frozen: derive variants with `apply()` or `attrs.evolve()`.

    Example:
        ```python
        req = Request("Summarise this.", system="Be terse.").apply(temperature(0.2))
        ```
    """

    messages: tuple[Message, ...] = attrs.field(converter=_messages)
    """The conversation; a str becomes one user message."""
    system: str | None = None
    """The system prompt."""
    tools: tuple[Tool, ...] = attrs.field(default=(), converter=_tools)
    tool_choice: ToolChoice | None = None
    temperature: float | None = attrs.field(default=None, validator=_check_temperature)
    max_tokens: int | None = attrs.field(default=None, validator=_check_positive)
    top_p: float | None = attrs.field(default=None, validator=_check_top_p)
    stop: tuple[str, ...] = attrs.field(default=(), converter=_strings)
    response_format: ResponseFormat | None = None
    timeout: float | None = attrs.field(default=None, validator=_check_positive)
    """Seconds for the whole call: every retry, wait and fallback spends from it, and so
    does reading a stream to its end (None: the chain's `ChainConfig.timeout`)."""
    first_token_timeout: float | None = attrs.field(default=None, validator=_check_positive)
    """Seconds from sending the request to the first content event, per attempt; a
    target that misses it is left for the next (None: the chain's, see
    `ChainConfig.first_token_timeout`; `math.inf`: no limit)."""
    metadata: Mapping[str, str] = attrs.field(factory=dict, hash=False)
    """Free-form tags for hooks and logs; never sent to providers."""
    reasoning: Reasoning | None = None
    """Ask the model to reason first (see `reasoning()`); None: the model's default."""
    cache_system: bool = False
    """A prompt-cache breakpoint after the system prompt (see `cache()`)."""
    cache_tools: bool = False
    """A prompt-cache breakpoint after the tool definitions (see `cache()`)."""
    provider_options: Mapping[str, ProviderOptions] = attrs.field(factory=dict, hash=False)
    """Extra wire fields per provider family or preset (see `provider_options()`)."""

    def apply(self, *options: Option) -> Request:
        """Return a copy with each option applied in order (self when there are none)."""
        request = self
        for option in options:
            request = option(request)
        return request

    @property
    def prompt(self) -> str:
        """The text of the last user message (what an echo reply repeats)."""
        for message in reversed(self.messages):
            if message.role == "user":
                return message.text
        return ""


Option: TypeAlias = Callable[[Request], Request]
"""A request option: a callable that returns an evolved copy."""


def as_request(value: Request | str) -> Request:
    """Accept a plain prompt wherever a `Request` is expected."""
    return value if isinstance(value, Request) else Request(value)


def temperature(value: float) -> Option:
    """Sampling temperature, 0 to 2."""
    return lambda request: attrs.evolve(request, temperature=value)


def max_tokens(value: int) -> Option:
    """Upper bound on generated tokens."""
    return lambda request: attrs.evolve(request, max_tokens=value)


def top_p(value: float) -> Option:
    """Nucleus sampling mass, 0 to 1."""
    return lambda request: attrs.evolve(request, top_p=value)


def stop(*sequences: str) -> Option:
    """Stop sequences."""
    return lambda request: attrs.evolve(request, stop=sequences)


def system(prompt: str) -> Option:
    """The system prompt."""
    return lambda request: attrs.evolve(request, system=prompt)


def tools(*definitions: Tool) -> Option:
    """Tools the model may call."""
    return lambda request: attrs.evolve(request, tools=definitions)


def tool_choice(choice: ToolChoice) -> Option:
    """ "auto", "none", "required", or a tool name."""
    return lambda request: attrs.evolve(request, tool_choice=choice)


def json_mode() -> Option:
    """Ask for a JSON object."""
    return lambda request: attrs.evolve(request, response_format=JSONMode())


def json_schema(
    schema: Mapping[str, Any], *, name: str = "response", strict: bool = True
) -> Option:
    """Ask for JSON following `schema`."""
    return lambda request: attrs.evolve(
        request, response_format=JSONSchema(schema, name=name, strict=strict)
    )


def timeout(seconds: float) -> Option:
    """The whole call's deadline, in seconds (a stream's whole reading included)."""
    return lambda request: attrs.evolve(request, timeout=seconds)


def first_token_timeout(seconds: float) -> Option:
    """Seconds each attempt may take to its first content event (`math.inf`: no limit)."""
    return lambda request: attrs.evolve(request, first_token_timeout=seconds)


def metadata(**tags: str) -> Option:
    """Tags for hooks and logs (merged into existing ones)."""
    return lambda request: attrs.evolve(request, metadata={**request.metadata, **tags})


def reasoning(
    effort: ReasoningEffort | None = None,
    *,
    budget_tokens: int | None = None,
    summary: bool = True,
) -> Option:
    """Ask the model to reason before answering: `reasoning("high")`,
    `reasoning(budget_tokens=4096)`, or `reasoning("none")` to skip it where a model can.

    Mapped to OpenAI `reasoning_effort`, Anthropic extended thinking, Gemini's thinking
    config and Ollama `think`; dropped for a target that cannot reason. `summary` asks
    for the reasoning's text (`ReasoningDelta`, `Response.reasoning`).
    """
    option = Reasoning(effort, budget_tokens, summary)
    return lambda request: attrs.evolve(request, reasoning=option)


def cache(*, system: bool = False, tools: bool = False) -> Option:
    """Prompt-cache breakpoints: after the system prompt and/or the tool definitions (a
    message's own breakpoint is `Message(..., cache_breakpoint=True)`).

    Anthropic caches only what is marked (`cache_control`); OpenAI, Gemini and the
    others cache long prompts by themselves and ignore the marks. Cached tokens show in
    `Usage.cached_input_tokens`.
    """
    return lambda request: attrs.evolve(
        request,
        cache_system=request.cache_system or system,
        cache_tools=request.cache_tools or tools,
    )


def provider_options(
    family: str,
    *,
    body: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Option:
    """Extra body fields and headers for one provider family's wire only.

    `family` is a wire format ("openai", "anthropic", "gemini", "ollama": every target
    speaking it) or an OpenAI-compatible preset ("groq", "azure", "mistral", ...: only
    that one, on top of "openai"). `body` merges into the JSON body recursively (a `None`
    value removes a field); `headers` are added (never the credential's). Values are
    never logged or shown in a repr.

    Example: `provider_options("openai", body={"seed": 7, "logit_bias": {"50256": -100}})`.
    """
    if not family or not isinstance(family, str):
        raise ConfigurationError("provider_options needs a provider family name")
    added = ProviderOptions(body or {}, headers or {})

    def apply(request: Request) -> Request:
        options = dict(request.provider_options)
        previous = options.get(family)
        options[family] = previous.merged(added) if previous is not None else added
        return attrs.evolve(request, provider_options=options)

    return apply
