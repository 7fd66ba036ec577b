"""What a target accepts: `Capabilities`, and the built-in per-model table.

The table has two layers:

- per provider family (the wire format or the OpenAI-compatible preset), what the
  endpoint accepts whatever the model: image URLs or inline data only, image types and
  sizes;
- per model, matched by the longest known prefix of the model id: vision, tools, JSON
  output and the context window.

The figures come from the providers' public docs as of 2026 (see `providers.md` for the
ones that could not be verified). They are defaults, not truth: a user overrides any
field per target with `Registry(capabilities={"ollama/my-llava*": {"vision": True}})`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import lru_cache
from types import MappingProxyType
from typing import Any, Final

import attrs

__all__ = ["Capabilities", "builtin_capabilities"]

_COMMON_IMAGE_TYPES: Final = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})
_GEMINI_IMAGE_TYPES: Final[frozenset[str]] = frozenset(
    {"image/png", "image/jpeg", "image/webp", "image/heic", "image/heif"}
)
_MIB: Final = 1024 * 1024


def _mime_types(values: Iterable[str]) -> frozenset[str]:
    return frozenset(value.strip().lower() for value in values)


@attrs.frozen
class Capabilities:
    """What a target can take. Chains report their head's; each attempt uses its own target's.

    The defaults describe a modern multimodal chat model with no known limits. Derive a
    variant with `attrs.evolve(capabilities, vision=False)`.
    """

    streaming: bool = True
    """Serves streams (a chain skips the target for `stream()` otherwise)."""
    system_prompt: bool = True
    tools: bool = True
    json_mode: bool = True
    """Supports JSON output (JSON mode or a JSON schema)."""
    vision: bool = True
    """Accepts image parts at all."""
    image_urls: bool = True
    """Accepts images by http(s) URL; when False, the chain downloads them and sends the
    bytes inline."""
    image_mime_types: frozenset[str] = attrs.field(
        default=_COMMON_IMAGE_TYPES, converter=_mime_types
    )
    """Image types accepted inline."""
    max_image_bytes: int | None = 20 * _MIB
    """Largest inline image, in bytes (None: no known limit)."""
    context_window: int | None = None
    """Tokens of context, when known: a request estimated to be larger skips the target."""
    reasoning: bool = False
    """Can reason before answering: takes the `reasoning()` option (an effort or a token
    budget) and may stream its reasoning (`ReasoningDelta`). A target without it gets
    requests with the option dropped (see the README's Reasoning section)."""
    reasons_by_default: bool = False
    """Reasons before its first token even when not asked to (o-series, GPT-5,
    DeepSeek-R1, Gemini 2.5 Pro and Flash, QwQ, Qwen3, Magistral, Grok): a stream's
    first-token limit is then the longer `Timeouts.reasoning_first_token` (as it is for
    any request that asks a model to reason)."""


# --------------------------------------------------------------------------- families

_OPENAI: Final = Capabilities()
_FAMILIES: Final[Mapping[str, Capabilities]] = MappingProxyType(
    {
        # ≤20 MB per image; PNG, JPEG, WEBP, non-animated GIF (providers.md 3.2).
        "openai": _OPENAI,
        # base64 media types jpeg/png/gif/webp, or a URL source; 5 MB per image is the
        # documented API limit (unverified in providers.md; the 32 MB request cap is sure).
        "anthropic": Capabilities(max_image_bytes=5 * _MIB),
        # inlineData MIME types from the Vertex image docs; ~20 MB inline per request.
        "gemini": Capabilities(image_mime_types=_GEMINI_IMAGE_TYPES),
        # `images` is raw base64 only: no URLs. Vision depends on the model (the table
        # below lists the known vision families); size limits are undocumented.
        "ollama": Capabilities(image_urls=False, vision=False, max_image_bytes=None),
        # DeepSeek's chat API is text only.
        "deepseek": Capabilities(vision=False),
        "groq": _OPENAI,
        "openrouter": _OPENAI,
        "together": _OPENAI,
        "mistral": _OPENAI,
        "xai": _OPENAI,
        "fireworks": _OPENAI,
        # Local servers: what they accept depends on the loaded model, so nothing is
        # refused up front, and images travel inline (llama.cpp and LM Studio take
        # base64 data URLs; inlining is valid for every server).
        "vllm": Capabilities(max_image_bytes=None),
        "llamacpp": Capabilities(image_urls=False, max_image_bytes=None),
        "lmstudio": Capabilities(image_urls=False, max_image_bytes=None),
        "openai-compatible": Capabilities(image_urls=False, max_image_bytes=None),
    }
)

# --------------------------------------------------------------------------- models

_TEXT_ONLY: Final = {"vision": False}
_REASONS: Final = {"reasoning": True, "reasons_by_default": True}
_CAN_REASON: Final = {"reasoning": True}
_REASONING_PREVIEW: Final = {
    "vision": False,
    "tools": False,
    "json_mode": False,
    "system_prompt": False,
    **_REASONS,
}


def _ctx(tokens: int, **changes: Any) -> dict[str, Any]:
    return {"context_window": tokens, **changes}


# Keys are model-id prefixes, matched after `_model_name` normalised the id; the longest
# matching prefix wins, so "gpt-4o-mini" finds "gpt-4o", not "gpt-4".
_MODELS: Final[Mapping[str, Mapping[str, Any]]] = MappingProxyType(
    {
        # OpenAI
        "gpt-5": _ctx(400_000, **_REASONS),
        "gpt-5-chat": _ctx(128_000),
        # GPT-5.1 and later reason only when asked (their default effort is "none").
        "gpt-5.1": _ctx(400_000, **_CAN_REASON),
        "gpt-4.1": _ctx(1_047_576),
        "gpt-4.5": _ctx(128_000),
        "gpt-4o": _ctx(128_000),
        "chatgpt-4o": _ctx(128_000),
        "gpt-4-turbo": _ctx(128_000),
        "gpt-4-32k": _ctx(32_768, **_TEXT_ONLY),
        "gpt-4-1106": _ctx(128_000, **_TEXT_ONLY),
        "gpt-4-0125": _ctx(128_000, **_TEXT_ONLY),
        "gpt-4": _ctx(8_192, **_TEXT_ONLY),
        "gpt-3.5-turbo": _ctx(16_385, **_TEXT_ONLY),
        "o1": _ctx(200_000, **_REASONS),
        "o1-mini": _ctx(128_000, **_REASONING_PREVIEW),
        "o1-preview": _ctx(128_000, **_REASONING_PREVIEW),
        "o3": _ctx(200_000, **_REASONS),
        "o3-mini": _ctx(200_000, **_TEXT_ONLY, **_REASONS),
        "o4-mini": _ctx(200_000, **_REASONS),
        # Anthropic: every Claude 3 and later model reads images and has 200k tokens.
        "claude-": _ctx(200_000),
        "claude-2": _ctx(100_000, vision=False, tools=False),
        "claude-2.1": _ctx(200_000, vision=False, tools=False),
        "claude-instant": _ctx(100_000, vision=False, tools=False),
        # Extended thinking, when asked for (Claude 3.7 and every Claude 4 model).
        "claude-3-7": _ctx(200_000, **_CAN_REASON),
        "claude-sonnet-4": _ctx(200_000, **_CAN_REASON),
        "claude-opus-4": _ctx(200_000, **_CAN_REASON),
        "claude-haiku-4": _ctx(200_000, **_CAN_REASON),
        # Gemini
        "gemini-1.0-pro": _ctx(32_760, **_TEXT_ONLY),
        "gemini-pro": _ctx(32_760, **_TEXT_ONLY),
        "gemini-1.5-flash": _ctx(1_048_576),
        "gemini-1.5-pro": _ctx(2_097_152),
        "gemini-2": _ctx(1_048_576),
        # 2.5 Pro and Flash think by default; Flash-Lite does not.
        "gemini-2.5": _ctx(1_048_576, **_REASONS),
        "gemini-2.5-flash-lite": _ctx(1_048_576, **_CAN_REASON),
        "gemini-3": _ctx(1_048_576, **_REASONS),
        # DeepSeek
        "deepseek-chat": _ctx(128_000, **_TEXT_ONLY),
        "deepseek-reasoner": _ctx(128_000, **_TEXT_ONLY, **_REASONS),
        # Open reasoning models as served by ollama, vllm, groq, together, ...
        "deepseek-r1": _ctx(131_072, **_TEXT_ONLY, **_REASONS),
        "qwq": {**_TEXT_ONLY, **_REASONS},
        "qwen3": _REASONS,
        "magistral": {**_TEXT_ONLY, **_REASONS},
        "phi4-reasoning": {**_TEXT_ONLY, **_REASONS},
        "grok-4": _REASONS,
        "grok-3-mini": _REASONS,
        "gpt-oss": {**_TEXT_ONLY, **_REASONS},
        # Meta Llama as served by Groq, Together, Fireworks (ids like "llama-3.3-70b-...")
        "llama-3.1": _ctx(131_072, **_TEXT_ONLY),
        "llama-3.3": _ctx(131_072, **_TEXT_ONLY),
        "llama-3.2": _ctx(131_072, **_TEXT_ONLY),
        "llama-3.2-11b-vision": _ctx(131_072, vision=True),
        "llama-3.2-90b-vision": _ctx(131_072, vision=True),
        "llama-4": {"vision": True},
        # Ollama library vision models (Ollama's family default is text only).
        "llava": {"vision": True},
        "bakllava": {"vision": True},
        "moondream": {"vision": True},
        "minicpm-v": {"vision": True},
        "llama3.2-vision": {"vision": True},
        "llama4": {"vision": True},
        "gemma3": {"vision": True},
        "qwen2.5vl": {"vision": True},
        "qwen2.5-vl": {"vision": True},
        "qwen3-vl": {"vision": True},
        "granite3.2-vision": {"vision": True},
        "mistral-small3.1": {"vision": True},
        "mistral-small3.2": {"vision": True},
        # Mistral
        "codestral": _ctx(256_000, **_TEXT_ONLY),
        "pixtral": _ctx(128_000, vision=True),
    }
)
_LONGEST_PREFIX: Final = max(map(len, _MODELS))


def _model_name(model_id: str) -> str:
    """The part of an id the table matches: "openai/gpt-4o" (OpenRouter), "models/gemini-2.5-pro"
    (Gemini's resource names) and "ft:gpt-4o-mini:org::id" (fine-tunes) all name their base model.
    """
    name = model_id.strip().lower()
    if name.startswith("ft:"):
        name = name[3:]
    return name.rpartition("/")[2]


def _model_facts(model_id: str) -> Mapping[str, Any]:
    name = _model_name(model_id)
    for length in range(min(len(name), _LONGEST_PREFIX), 0, -1):
        facts = _MODELS.get(name[:length])
        if facts is not None:
            return facts
    return {}


@lru_cache(maxsize=4096)
def builtin_capabilities(family: str, model_id: str) -> Capabilities:
    """The built-in table's entry for `model_id` served by a provider of `family`.

    `family` is the wire family or preset ("openai", "anthropic", "gemini", "ollama",
    "groq", "vllm", "openai-compatible", ...); an unknown family gets the defaults. An
    unknown model gets its family's defaults, with no context window.
    """
    base = _FAMILIES.get(family, _OPENAI)
    facts = _model_facts(model_id)
    return attrs.evolve(base, **facts) if facts else base
