"""Every built-in scheme and provider resolves, without I/O and without keys."""

from __future__ import annotations

import pytest

from majordomo_async import AuthenticationError, Registry
from majordomo_async._providers import builtin_provider_names, builtin_schemes
from majordomo_async._providers.openai import OPENAI_COMPATIBLE_PRESETS


def test_every_openai_preset_has_its_schemes() -> None:
    """Each preset of the OpenAI module is a scheme, with its +http and +https forms."""
    schemes = builtin_schemes()

    for preset in OPENAI_COMPATIBLE_PRESETS:
        for transport in ("", "+http", "+https"):
            assert f"{preset}{transport}" in schemes, preset


@pytest.mark.parametrize("scheme", sorted(builtin_schemes()))
async def test_every_scheme_builds_a_provider_from_the_environment(scheme: str) -> None:
    """`LLM_X=<scheme>://host` builds a provider named x, with no I/O and no key needed."""
    async with Registry(env={"LLM_X": f"{scheme}://127.0.0.1:9/v1"}) as registry:
        provider = registry.provider("x")
        chain = registry.parse("x/some-model")

    assert provider.name == "x"
    assert chain.targets == ("x/some-model",)


@pytest.mark.parametrize("name", builtin_provider_names())
async def test_builtin_providers_need_no_configuration(name: str) -> None:
    """Every built-in provider resolves in an empty environment."""
    async with Registry(env={}) as registry:
        assert registry.provider(name).name == name


@pytest.mark.parametrize(
    ("name", "variable"),
    [
        ("openai", "OPENAI_API_KEY"),
        ("anthropic", "ANTHROPIC_API_KEY"),
        ("gemini", "GEMINI_API_KEY"),
    ],
)
async def test_a_missing_key_fails_the_call_naming_the_variable(name: str, variable: str) -> None:
    """Hosted providers without a key raise AuthenticationError naming what to set."""
    async with Registry(env={}) as registry:
        with pytest.raises(AuthenticationError, match=variable):
            await registry.parse(f"{name}/m").generate("hi")


async def test_a_preset_without_its_key_names_the_preset_variable() -> None:
    """`LLM_FAST=groq://` with no key fails the call naming GROQ_API_KEY."""
    async with Registry(env={"LLM_FAST": "groq://"}) as registry:
        with pytest.raises(AuthenticationError, match="GROQ_API_KEY"):
            await registry.parse("fast/llama-3.3-70b-versatile").generate("hi")
