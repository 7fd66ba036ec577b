"""OpenAI-compatible servers as data: each `Preset` (base URL, key variables, wire quirks,
time limits, and how `reasoning()` is sent to each model) and the built-in table of them.

`openai.py` speaks the wire; this module only says, per server, what to put on it. A new
compatible server is usually one entry in `_KNOWN_SERVERS`.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final, Literal, TypeAlias

import attrs

from .._http import HOSTED_TIMEOUTS, ON_DEMAND_TIMEOUTS, SELF_HOSTED_TIMEOUTS, Timeouts

if TYPE_CHECKING:
    from .._reasoning import Reasoning

__all__ = [
    "AZURE_PRESET",
    "DEFAULT_BASE_URL",
    "GENERIC_PRESET",
    "OPENAI_COMPATIBLE_PRESETS",
    "OPENAI_PRESET",
    "Preset",
    "ReasoningControl",
    "model_name",
]

DEFAULT_BASE_URL: Final = "https://api.openai.com/v1"
"""OpenAI's API root (the SDK's default); `/chat/completions` and `/models` are appended."""

MaxTokensField: TypeAlias = Literal["max_tokens", "max_completion_tokens"]
ReasoningField: TypeAlias = Literal["reasoning_effort", "reasoning"]


def _frozen(value: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(value))


def model_name(model_id: str) -> str:
    """The part of a model id a per-model rule matches: "qwen/qwen3-32b" (Groq,
    OpenRouter) and "ft:gpt-4o:org::id" (fine-tunes) name their base model."""
    name = model_id.strip().lower()
    if name.startswith("ft:"):
        name = name[3:]
    return name.rpartition("/")[2]


# --------------------------------------------------------------------------- presets


@attrs.frozen
class ReasoningControl:
    """How a server (or a model family on it) takes `Request.reasoning`: data, not branches.

    The effort is `Reasoning.level()` (a budget alone becomes its nearest effort),
    translated by `efforts`; `field` says where it goes; the `when_*` fields go with it.
    """

    field: ReasoningField | None = "reasoning_effort"
    """Where the effort goes: `reasoning_effort` (a string: OpenAI and most servers),
    `reasoning` (OpenRouter's object: `{"effort": ...}`, or `{"max_tokens": n}` for a
    budget alone), or None for a model that takes no control (it always reasons)."""
    efforts: Mapping[str, str | None] = attrs.field(factory=dict, converter=_frozen, hash=False)
    """Our effort -> the server's, for efforts it does not take as they are (None: send
    no effort). An effort not listed is sent as it is."""
    when_on: Mapping[str, Any] = attrs.field(factory=dict, converter=_frozen, hash=False)
    """Body fields sent when the request asks to reason (Groq's `reasoning_format`,
    DeepSeek's `thinking`)."""
    when_off: Mapping[str, Any] = attrs.field(factory=dict, converter=_frozen, hash=False)
    """Body fields sent when the request asks not to reason (`reasoning("none")`)."""
    when_hidden: Mapping[str, Any] = attrs.field(factory=dict, converter=_frozen, hash=False)
    """Body fields sent, over `when_on`'s, when the reasoning's text is not wanted
    (`Reasoning.summary` is False)."""

    def fields(self, reasoning: Reasoning) -> dict[str, Any]:
        """The body fields that ask for `reasoning`."""
        body: dict[str, Any] = {}
        if reasoning.enabled:
            body.update(self.when_on)
            if not reasoning.summary:
                body.update(self.when_hidden)
        else:
            body.update(self.when_off)
        if self.field is None:
            return body
        level = reasoning.level()
        effort = self.efforts.get(level, level)
        if self.field == "reasoning_effort":
            if effort is not None:
                body["reasoning_effort"] = effort
            return body
        control: dict[str, Any] = {}
        budget = reasoning.budget_tokens
        if reasoning.effort is None and budget:
            control["max_tokens"] = budget  # a budget alone: OpenRouter takes it as it is
        elif effort is not None:
            control["effort"] = effort
        if reasoning.enabled and not reasoning.summary:
            control["exclude"] = True
        if control:
            body["reasoning"] = control
        return body


_PASS_THROUGH: Final = ReasoningControl()
# Most compatible servers know low/medium/high (gpt-oss's levels), not OpenAI's "minimal".
_COMPATIBLE_REASONING: Final = ReasoningControl(efforts={"minimal": "low"})
_NO_FIELD: Final = ReasoningControl(field=None)


@attrs.frozen
class Preset:
    """An OpenAI-compatible server: where it lives, its key, and its wire quirks.

    Only quirks that change the request are fields here; differences in error bodies
    are handled by the one error mapper, which accepts every documented shape.
    """

    base_url: str
    """The default API root, used when the DSN names no host."""
    env_vars: tuple[str, ...] = ()
    """Environment variables read for the key, in order, when the DSN has none."""
    requires_key: bool = True
    """False for local servers, which run without a key unless started with one."""
    max_tokens_field: MaxTokensField = "max_tokens"
    """How `Request.max_tokens` is sent. OpenAI deprecated `max_tokens` (reasoning models
    reject it) for `max_completion_tokens`, which most compatible servers do not know
    (providers.md 3.2 and 4)."""
    stream_usage: bool = True
    """Send `stream_options: {"include_usage": true}` with streams. Mistral rejects the
    field with a 422 `extra_forbidden` and sends usage in its last chunk anyway."""
    family: str = "openai-compatible"
    """Where the built-in capability table looks its models up: "openai" for OpenAI, the
    scheme name for a known server ("groq"), "openai-compatible" for any other."""
    timeouts: Timeouts = HOSTED_TIMEOUTS
    """The time limits a DSN's query keys override: `HOSTED_TIMEOUTS` for hosted APIs
    and generic endpoints, `SELF_HOSTED_TIMEOUTS` for vllm and llamacpp,
    `ON_DEMAND_TIMEOUTS` for lmstudio (which loads a model on the first request)."""
    reasoning: ReasoningControl = _COMPATIBLE_REASONING
    """How the server takes `Request.reasoning`, for a model no `reasoning_models` rule
    names."""
    reasoning_models: tuple[tuple[str, ReasoningControl], ...] = ()
    """Per model family: (model-name prefix, control); the longest matching prefix wins.
    Matched against the model id in lower case, after its last "/"."""
    replay_reasoning: bool = False
    """Send an assistant turn's "openai" `ReasoningPart`s back as `reasoning_content`
    when the turn called tools. DeepSeek's thinking mode requires it (a 400 otherwise);
    everywhere else the reasoning of past turns is dropped."""

    def reasoning_for(self, model_id: str) -> ReasoningControl:
        """The reasoning control for `model_id` on this server."""
        name = model_name(model_id)
        chosen, length = self.reasoning, -1
        for prefix, control in self.reasoning_models:
            if len(prefix) > length and name.startswith(prefix):
                chosen, length = control, len(prefix)
        return chosen


# OpenAI's reasoning_effort values differ by model family (the API reference's enum:
# "gpt-5.1 ... supports none, low, medium, and high"; "all models before gpt-5.1 ... do
# not support none"; "gpt-5-pro ... only supports high"; the o-series take low, medium
# and high). An effort a family does not take becomes its nearest one, so a portable
# `reasoning("none")` or `reasoning("minimal")` never turns into a 400.
_OPENAI_REASONING_MODELS: Final = (
    ("o1", ReasoningControl(efforts={"none": "low", "minimal": "low"})),
    # The previews predate `reasoning_effort`: they reject the field.
    ("o1-mini", _NO_FIELD),
    ("o1-preview", _NO_FIELD),
    ("o3", ReasoningControl(efforts={"none": "low", "minimal": "low"})),
    ("o4", ReasoningControl(efforts={"none": "low", "minimal": "low"})),
    ("gpt-5", ReasoningControl(efforts={"none": "minimal"})),
    ("gpt-5.", ReasoningControl(efforts={"minimal": "low"})),  # gpt-5.1 and later
    (
        "gpt-5-pro",
        ReasoningControl(efforts=dict.fromkeys(("none", "minimal", "low", "medium"), "high")),
    ),
)

OPENAI_PRESET: Final = Preset(
    DEFAULT_BASE_URL,
    ("OPENAI_API_KEY",),
    max_tokens_field="max_completion_tokens",
    family="openai",
    reasoning=_PASS_THROUGH,
    reasoning_models=_OPENAI_REASONING_MODELS,
)
"""OpenAI itself (the `openai://` scheme)."""

AZURE_PRESET: Final = Preset(
    "",  # the resource's endpoint: from the DSN or AZURE_OPENAI_ENDPOINT
    ("AZURE_OPENAI_API_KEY",),
    max_tokens_field="max_completion_tokens",
    family="azure",
    reasoning=_PASS_THROUGH,
    # A deployment is often named after its model ("gpt-5-mini"): then OpenAI's rules
    # apply; any other name gets the effort as asked.
    reasoning_models=_OPENAI_REASONING_MODELS,
)
"""Azure OpenAI (the `azure://` scheme): OpenAI's wire and models, Azure's URLs and key
header (see `AzureOpenAIProvider`). Its capability family, "azure", is not in the
built-in table, which gives OpenAI's defaults for it."""

# `openai+http://host:port/v1` and `openai+https://...`: any compatible server. The key
# comes from the DSN only: OPENAI_API_KEY must never be sent to some other host.
GENERIC_PRESET: Final = Preset("", (), requires_key=False)

# Groq (console.groq.com/docs/reasoning): `reasoning_effort` is "none" / "default" for
# Qwen3 and "low" / "medium" / "high" for gpt-oss; `reasoning_format` ("parsed" puts the
# reasoning in `message.reasoning`; the default, "raw", leaves it in <think> tags inside
# the content) is "not supported" by gpt-oss, which takes `include_reasoning` instead.
_GROQ_GPT_OSS: Final = ReasoningControl(
    efforts={"none": "low", "minimal": "low"}, when_hidden={"include_reasoning": False}
)
_GROQ_REASONING: Final = (
    ("gpt-oss", _GROQ_GPT_OSS),
    (
        "qwen3",
        ReasoningControl(
            efforts=dict.fromkeys(("minimal", "low", "medium", "high"), "default"),
            when_on={"reasoning_format": "parsed"},
            when_hidden={"reasoning_format": "hidden"},
        ),
    ),
    (
        "deepseek-r1",
        ReasoningControl(
            field=None,
            when_on={"reasoning_format": "parsed"},
            when_hidden={"reasoning_format": "hidden"},
        ),
    ),
)

# DeepSeek (api-docs.deepseek.com/guides/thinking_mode): thinking is switched by
# `thinking: {"type": "enabled" | "disabled"}` (on by default) and its effort is
# `reasoning_effort` "low" / "high" ("max" has no effort of ours); the server maps
# minimal to low and medium to high itself, which is written out here.
_DEEPSEEK_REASONING: Final = ReasoningControl(
    efforts={"none": None, "minimal": "low", "medium": "high"},
    when_on={"thinking": {"type": "enabled"}},
    when_off={"thinking": {"type": "disabled"}},
)

# OpenRouter (openrouter.ai/docs/use-cases/reasoning-tokens): one `reasoning` object for
# every upstream; it takes every effort of ours ("xhigh" ... "none").
_OPENROUTER_REASONING: Final = ReasoningControl(field="reasoning")

# Mistral (docs.mistral.ai/capabilities/reasoning): `reasoning_effort` is "high" or
# "none" on mistral-small-latest and mistral-medium-3-5; Magistral models "always
# reason; no parameter needed"; Mistral Large 4 takes low, medium and high.
_MISTRAL_REASONING: Final = ReasoningControl(
    efforts=dict.fromkeys(("minimal", "low", "medium"), "high")
)
_MISTRAL_REASONING_MODELS: Final = (
    ("magistral", _NO_FIELD),
    ("mistral-large-4", ReasoningControl(efforts={"none": "low", "minimal": "low"})),
)

# xAI (docs.x.ai/guides/reasoning): grok-3-mini takes "low" or "high"; grok-4 and its
# fast variants reject the field; the grok-4.x models after them take it (grok-4.3
# none/low/medium/high, grok-4.5 low/medium/high: "none" is sent as asked).
_XAI_REASONING_MODELS: Final = (
    ("grok-3-mini", ReasoningControl(efforts={"none": "low", "minimal": "low", "medium": "high"})),
    ("grok-4", _NO_FIELD),
    ("grok-4.", _COMPATIBLE_REASONING),
)

_KNOWN_SERVERS: Final[Mapping[str, Preset]] = MappingProxyType(
    {
        # Base URLs per providers.md 4; key variables as each vendor's docs name them.
        "groq": Preset(
            "https://api.groq.com/openai/v1",
            ("GROQ_API_KEY",),
            reasoning=_GROQ_GPT_OSS,
            reasoning_models=_GROQ_REASONING,
        ),
        "deepseek": Preset(
            "https://api.deepseek.com",
            ("DEEPSEEK_API_KEY",),
            reasoning=_DEEPSEEK_REASONING,
            replay_reasoning=True,
        ),
        "openrouter": Preset(
            "https://openrouter.ai/api/v1",
            ("OPENROUTER_API_KEY",),
            reasoning=_OPENROUTER_REASONING,
        ),
        "together": Preset("https://api.together.xyz/v1", ("TOGETHER_API_KEY",)),
        "mistral": Preset(
            "https://api.mistral.ai/v1",
            ("MISTRAL_API_KEY",),
            stream_usage=False,
            reasoning=_MISTRAL_REASONING,
            reasoning_models=_MISTRAL_REASONING_MODELS,
        ),
        "xai": Preset(
            "https://api.x.ai/v1", ("XAI_API_KEY",), reasoning_models=_XAI_REASONING_MODELS
        ),
        "fireworks": Preset("https://api.fireworks.ai/inference/v1", ("FIREWORKS_API_KEY",)),
        # Local servers: default ports, no key unless the server was started with one
        # (the variables are the ones each server itself reads its key from).
        "vllm": Preset(
            "http://127.0.0.1:8000/v1",
            ("VLLM_API_KEY",),
            requires_key=False,
            timeouts=SELF_HOSTED_TIMEOUTS,
        ),
        "llamacpp": Preset(
            "http://127.0.0.1:8080/v1",
            ("LLAMA_API_KEY",),
            requires_key=False,
            timeouts=SELF_HOSTED_TIMEOUTS,
        ),
        "lmstudio": Preset(
            "http://127.0.0.1:1234/v1",
            ("LM_API_TOKEN",),
            requires_key=False,
            timeouts=ON_DEMAND_TIMEOUTS,
        ),
    }
)

OPENAI_COMPATIBLE_PRESETS: Final[Mapping[str, Preset]] = MappingProxyType(
    # Each preset's capability family is its scheme name.
    {name: attrs.evolve(preset, family=name) for name, preset in _KNOWN_SERVERS.items()}
)
"""Known OpenAI-compatible servers by scheme name (`groq://`, `vllm://`, ...)."""
