"""The built-in capability table and the Registry's per-target overrides."""

from __future__ import annotations

import pytest

from majordomo_async import Capabilities, ConfigurationError, Registry
from majordomo_async._capabilities import builtin_capabilities


@pytest.mark.parametrize(
    ("family", "model_id", "context_window", "vision"),
    [
        ("openai", "gpt-4o", 128_000, True),
        ("openai", "gpt-4o-mini-2024-07-18", 128_000, True),  # longest prefix: gpt-4o
        ("openai", "gpt-4-0613", 8_192, False),
        ("openai", "gpt-4-turbo-preview", 128_000, True),
        ("openai", "gpt-4.1-nano", 1_047_576, True),
        ("openai", "gpt-3.5-turbo-0125", 16_385, False),
        ("openai", "ft:gpt-4o-mini:acme::abc123", 128_000, True),
        ("openai", "o3-mini", 200_000, False),
        ("anthropic", "claude-sonnet-4-5", 200_000, True),
        ("anthropic", "claude-2.1", 200_000, False),
        ("anthropic", "claude-2.0", 100_000, False),
        ("gemini", "gemini-2.5-pro", 1_048_576, True),
        ("gemini", "models/gemini-1.5-pro-002", 2_097_152, True),
        ("openrouter", "openai/gpt-4o", 128_000, True),
        ("groq", "llama-3.3-70b-versatile", 131_072, False),
        ("groq", "meta-llama/llama-4-scout-17b-16e-instruct", None, True),
        ("deepseek", "deepseek-chat", 128_000, False),
        ("ollama", "llava:13b", None, True),
        ("ollama", "llama3.1:8b", None, False),
        ("ollama", "library/qwen2.5vl", None, True),
    ],
)
def test_table_matches_longest_prefix(
    family: str, model_id: str, context_window: int | None, vision: bool
) -> None:
    capabilities = builtin_capabilities(family, model_id)
    assert capabilities.context_window == context_window
    assert capabilities.vision is vision


def test_families_set_wire_limits() -> None:
    assert builtin_capabilities("ollama", "llava").image_urls is False
    assert builtin_capabilities("openai", "gpt-4o").image_urls is True
    assert builtin_capabilities("anthropic", "claude-opus-4-1").max_image_bytes == 5 * 1024 * 1024
    gemini = builtin_capabilities("gemini", "gemini-2.5-flash")
    assert "image/heic" in gemini.image_mime_types
    assert "image/gif" not in gemini.image_mime_types
    assert builtin_capabilities("lmstudio", "anything").image_urls is False


def test_unknown_model_and_family_get_defaults() -> None:
    assert builtin_capabilities("openai", "my-finetune") == Capabilities()
    assert builtin_capabilities("somebody-new", "gpt-4o").context_window == 128_000


def test_reasoning_previews_refuse_tools_and_system() -> None:
    preview = builtin_capabilities("openai", "o1-mini")
    assert (preview.tools, preview.system_prompt, preview.json_mode) == (False, False, False)


def test_mime_types_are_normalised() -> None:
    capabilities = Capabilities(image_mime_types=[" Image/PNG "])
    assert capabilities.image_mime_types == frozenset({"image/png"})


FAKE = Capabilities(reasoning=True)
"""The fake provider takes everything, reasoning included."""


async def test_registry_reports_builtin_capabilities(registry: Registry) -> None:
    assert registry.capabilities("fake/anything") == FAKE


async def test_override_changes_fields_per_pattern() -> None:
    overrides = {
        "fake/small*": {"context_window": 100, "vision": False},
        "fake/small-vision": {"vision": True},
    }
    async with Registry(env={}, capabilities=overrides) as registry:
        assert registry.capabilities("fake/small-vision") == Capabilities(
            context_window=100, vision=True, reasoning=True
        )
        assert registry.capabilities("fake/small") == Capabilities(
            context_window=100, vision=False, reasoning=True
        )
        assert registry.capabilities("fake/big") == FAKE
        chain = registry.parse("fake/small,fake/big")
        assert chain.capabilities.context_window == 100  # the head's


async def test_override_with_whole_capabilities_and_cache_invalidation(
    registry: Registry,
) -> None:
    before = registry.parse("fake/a")
    registry.override_capabilities("fake/*", Capabilities(tools=False))
    after = registry.parse("fake/a")
    assert before is not after
    assert after.capabilities == Capabilities(tools=False)
    assert before.capabilities == FAKE


def test_override_rejects_unknown_fields() -> None:
    with pytest.raises(ConfigurationError, match="fields: streaming"):
        Registry(env={}, capabilities={"x/*": {"visoin": True}})


async def test_capabilities_needs_a_key(registry: Registry) -> None:
    with pytest.raises(ConfigurationError, match="provider/model-id"):
        registry.capabilities("fake")
