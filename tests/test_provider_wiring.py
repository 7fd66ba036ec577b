"""Every built-in scheme and provider resolves, without I/O and without keys."""

from __future__ import annotations

import pytest

from majordomo_async import AuthenticationError, Capabilities, Registry
from majordomo_async._providers import _base, builtin_provider_names, builtin_schemes
from majordomo_async._providers._base import HTTPProvider
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


def _expected_family(scheme: str) -> str:
    """The capability family a scheme's provider must report (the brief's table)."""
    base = scheme.partition("+")[0]
    if base == "openai":
        return "openai" if scheme == "openai" else "openai-compatible"
    if base == "google":
        return "gemini"
    return base  # anthropic, gemini, ollama, and each OpenAI-compatible preset by name


HTTP_SCHEMES = sorted(scheme for scheme in builtin_schemes() if scheme != "fake")


@pytest.mark.parametrize("scheme", HTTP_SCHEMES)
async def test_every_http_scheme_looks_capabilities_up_under_its_family(
    scheme: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model's capabilities are the built-in table's entry for (family, model id)."""
    asked: list[tuple[str, str]] = []

    def table(family: str, model_id: str) -> Capabilities:
        asked.append((family, model_id))
        return Capabilities(context_window=len(asked))

    monkeypatch.setattr(_base, "builtin_capabilities", table)
    async with Registry(env={"LLM_X": f"{scheme}://127.0.0.1:9/v1"}) as registry:
        provider = registry.provider("x")
        capabilities = provider.model("some/model").capabilities

    assert isinstance(provider, HTTPProvider)
    assert asked == [(_expected_family(scheme), "some/model")]
    assert capabilities == Capabilities(context_window=1)


@pytest.mark.parametrize(
    ("name", "family"),
    [
        ("openai", "openai"),
        ("anthropic", "anthropic"),
        ("gemini", "gemini"),
        ("google", "gemini"),
        ("ollama", "ollama"),
    ],
)
async def test_builtin_providers_report_their_family(name: str, family: str) -> None:
    """The providers every Registry has report the family of their wire format."""
    async with Registry(env={}) as registry:
        provider = registry.provider(name)

    assert isinstance(provider, HTTPProvider)
    assert provider.family == family


async def test_capabilities_are_looked_up_once_per_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """Reading capabilities again (before every chain attempt) costs no second lookup."""
    asked: list[tuple[str, str]] = []

    def table(family: str, model_id: str) -> Capabilities:
        asked.append((family, model_id))
        return Capabilities(vision=False)

    monkeypatch.setattr(_base, "builtin_capabilities", table)
    async with Registry(env={}) as registry:
        model = registry.provider("anthropic").model("claude-sonnet-4-5")
        first = model.capabilities
        again = [model.capabilities for _ in range(3)]
        other = registry.provider("anthropic").model("claude-haiku-4-5").capabilities

    assert all(read is first for read in again)
    assert first == other == Capabilities(vision=False)
    assert asked == [("anthropic", "claude-sonnet-4-5"), ("anthropic", "claude-haiku-4-5")]


def test_every_openai_preset_names_its_own_family() -> None:
    """Each preset's family is its scheme name (what the capability table is keyed by)."""
    assert {name: preset.family for name, preset in OPENAI_COMPATIBLE_PRESETS.items()} == {
        name: name for name in OPENAI_COMPATIBLE_PRESETS
    }
