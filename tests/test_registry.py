"""Registry: parse grammar, env resolution (eager and lazy), names, schemes, lifecycle."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from majordomo_async import (
    DSN,
    AliasCycleError,
    Capabilities,
    Chain,
    ChainConfig,
    ConfigurationError,
    DSNError,
    HealthConfig,
    ManualClock,
    ProviderContext,
    Registry,
    Response,
    SpecError,
    UnknownProviderError,
)

pytestmark = pytest.mark.usefixtures("no_leaked_tasks")


class EchoModel:
    """A minimal AsyncModel for registry tests."""

    def __init__(self, key: str) -> None:
        self.key = key

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities()

    async def generate(self, request: Any, *options: Any) -> Response:
        return Response(text="ok", model=self.key)

    async def stream(self, request: Any, *options: Any) -> Any:
        raise NotImplementedError


class StubProvider:
    """A provider that records which model ids it was asked for."""

    def __init__(self, name: str, dsn: DSN | None = None) -> None:
        self._name = name
        self.dsn = dsn
        self.models: list[str] = []

    @property
    def name(self) -> str:
        return self._name

    def model(self, model_id: str) -> EchoModel:
        self.models.append(model_id)
        return EchoModel(f"{self._name}/{model_id}")

    async def list_models(self) -> list[str]:
        return ["a", "b"]


def stub_factory(name: str, dsn: DSN, context: ProviderContext) -> StubProvider:
    return StubProvider(name, dsn)


def registry_with(env: Any = None, **kwargs: Any) -> Registry:
    registry = Registry(env=env if env is not None else {}, **kwargs)
    registry.register_scheme("stub", stub_factory)
    for name in ("openai", "anthropic", "openrouter"):
        registry.register_provider(StubProvider(name))
    return registry


# --------------------------------------------------------------------------- parse


async def test_parse_single_target_is_a_chain_of_one() -> None:
    """A one-element spec is a Chain with one target key."""
    async with registry_with() as registry:
        chain = registry.parse("openai/gpt-4o")

    assert isinstance(chain, Chain)
    assert chain.targets == ("openai/gpt-4o",)


async def test_parse_keeps_slashes_in_model_ids_and_trims_whitespace() -> None:
    """Split on the first '/', trim around elements, keep model ids as written."""
    async with registry_with() as registry:
        chain = registry.parse("  openrouter/meta-llama/Llama-3-70B ,  OpenAI / gpt-4o ")

    assert chain.targets == ("openrouter/meta-llama/Llama-3-70B", "openai/gpt-4o")


@pytest.mark.parametrize("spec", ["", "   ", "openai/a,,openai/b", "openai/a,", "openai/", "/m"])
async def test_parse_rejects_malformed_specs(spec: str) -> None:
    """Empty specs, empty elements and half targets raise SpecError."""
    async with registry_with() as registry:
        with pytest.raises(SpecError):
            registry.parse(spec)


async def test_aliases_expand_recursively_and_dedupe() -> None:
    """Aliases expand inline, recursively; a target repeated by expansion appears once."""
    async with registry_with() as registry:
        registry.register_alias("cheap", "openai/mini,anthropic/haiku")
        registry.register_alias("fast", "openai/mini,cheap")
        registry.register_alias("Best_Effort", "fast, anthropic/sonnet, cheap")

        chain = registry.parse("best-effort")

    assert chain.targets == ("openai/mini", "anthropic/haiku", "anthropic/sonnet")


async def test_alias_cycle_names_the_cycle() -> None:
    """A cycle raises AliasCycleError naming each alias on it."""
    async with registry_with() as registry:
        registry.register_alias("a", "openai/x,b")
        registry.register_alias("b", "c")
        registry.register_alias("c", "a")

        with pytest.raises(AliasCycleError) as info:
            registry.parse("openai/y,a")

    assert info.value.cycle == ("a", "b", "c", "a")
    assert "a -> b -> c -> a" in str(info.value)


async def test_unknown_alias_and_bad_alias_names() -> None:
    """A bare unknown name is a SpecError; alias names cannot contain '/' or ','."""
    async with registry_with() as registry:
        with pytest.raises(SpecError, match="register_alias"):
            registry.parse("nope")
        with pytest.raises(ConfigurationError):
            registry.register_alias("a/b", "openai/x")


async def test_unknown_provider_names_the_env_var() -> None:
    """An unknown provider's error names the LLM_<NAME> variable that was checked."""
    async with registry_with() as registry:
        with pytest.raises(UnknownProviderError) as info:
            registry.parse("my_prov/x")

    assert (info.value.name, info.value.env_var) == ("my-prov", "LLM_MY_PROV")
    assert "LLM_MY_PROV" in str(info.value)


async def test_parse_is_cached_until_configuration_changes() -> None:
    """The same spec returns the same Chain; registering an alias invalidates it."""
    async with registry_with() as registry:
        registry.register_alias("fast", "openai/a")
        first = registry.parse("fast")
        assert registry.parse("fast") is first

        registry.register_alias("fast", "anthropic/b")

        assert registry.parse("fast").targets == ("anthropic/b",)


async def test_chains_share_the_registry_tracker_and_config(clock: ManualClock) -> None:
    """Every parsed chain uses the registry's tracker, health config and chain config."""
    config = ChainConfig(transient_retries=3)
    async with Registry(env={}, clock=clock, chain=config, health=HealthConfig(2, 5)) as registry:
        chain = registry.parse("fake/a")

    assert chain._tracker is registry.health
    assert chain.config is config is registry.chain_config
    assert registry.health.config.base_cooldown == 5
    assert registry.health.clock is clock


# --------------------------------------------------------------------------- environment


async def test_eager_env_scan_registers_providers() -> None:
    """LLM_<NAME>=<DSN> entries become providers at construction, names canonical."""
    env = {"LLM_MY_PROV": "stub://key@host:1234/v1", "HOME": "/root"}
    async with Registry(env=env) as registry:
        registry.register_scheme("stub", stub_factory)  # too late for the eager scan...
        with pytest.raises(ConfigurationError, match="unknown DSN scheme 'stub'"):
            registry.parse("my-prov/x")

    registry = Registry(env=env, load_env=False)
    registry.register_scheme("stub", stub_factory)
    registry.load_env(env)  # ...but load_env can be called again once the scheme exists
    provider = registry.provider("MY_PROV")
    assert isinstance(provider, StubProvider)
    assert provider.dsn is not None and provider.dsn.port == 1234
    assert registry.provider("my-prov") is registry.provider("my_prov") is provider
    await registry.aclose()


async def test_malformed_env_entry_raises_only_when_used() -> None:
    """A bad LLM_BAD does not break construction nor other providers; using it raises."""
    env = {"LLM_BAD": "not a dsn", "LLM_GOOD": "fake://"}
    async with Registry(env=env) as registry:
        assert registry.parse("good/x").targets == ("good/x",)

        with pytest.raises(DSNError, match="LLM_BAD") as info:
            registry.parse("bad/x")
        with pytest.raises(DSNError):  # and again: the error is kept, not forgotten
            registry.provider("bad")

    assert "not a DSN" in str(info.value)


async def test_env_errors_never_show_the_credential() -> None:
    """An env DSN with an unknown scheme is reported without its key."""
    env = {"LLM_X": "nosuch://sk-very-secret-key@host"}
    async with Registry(env=env) as registry:
        with pytest.raises(ConfigurationError) as info:
            registry.provider("x")

    assert "sk-very-secret-key" not in str(info.value)
    assert "nosuch" in str(info.value)


async def test_lazy_env_resolution_is_cached() -> None:
    """With a lookup function, LLM_<NAME> is read on first use, once."""
    reads: list[str] = []

    def lookup(name: str) -> str | None:
        reads.append(name)
        return {"LLM_M5": "fake://?reply=hi"}.get(name)

    async with Registry(env=lookup) as registry:
        first = registry.provider("m5")
        second = registry.provider("M5")
        chain = registry.parse("m5/model")
        response = await chain.generate("question")

    assert first is second
    assert reads == ["LLM_M5"]
    assert (response.text, response.model) == ("hi", "m5/model")


async def test_lazy_resolution_keeps_the_first_registration() -> None:
    """If a provider appears under the same name meanwhile, the first one is kept."""
    async with Registry(env={"LLM_RACE": "fake://"}, load_env=False) as registry:
        winner = StubProvider("race")
        original_from_dsn = registry._from_dsn

        def racing_from_dsn(name: str, text: str, variable: str) -> Any:
            built = original_from_dsn(name, text, variable)
            registry._providers["race"] = winner  # another caller won the race
            return built

        registry._from_dsn = racing_from_dsn  # type: ignore[method-assign]

        assert registry.provider("race") is winner


async def test_load_env_false_still_resolves_lazily() -> None:
    """No eager scan, but a name used in parse() is still read from the env mapping."""
    async with Registry(env={"LLM_LAZY": "fake://"}, load_env=False) as registry:
        assert "lazy" not in registry._providers
        assert registry.parse("lazy/m").targets == ("lazy/m",)


async def test_env_dsn_overrides_a_builtin_provider() -> None:
    """LLM_FAKE replaces the built-in fake provider."""
    async with Registry(env={"LLM_FAKE": "fake://?reply=overridden"}) as registry:
        response = await registry.parse("fake/x").generate("hi")

    assert response.text == "overridden"


async def test_builtin_fake_provider_needs_no_configuration() -> None:
    """The fake provider is there in an empty environment."""
    async with Registry(env={}) as registry:
        response = await registry.parse("fake/echo").generate("hello there")

    assert (response.text, response.model) == ("hello there", "fake/echo")


async def test_custom_scheme_and_factory_errors() -> None:
    """register_scheme wires a custom kind; a failing factory is a ConfigurationError."""

    def broken(name: str, dsn: DSN, context: ProviderContext) -> StubProvider:
        raise RuntimeError("factory bug")

    async with Registry(env={"LLM_S": "stub://k@h", "LLM_B": "broken://"}) as registry:
        registry.register_scheme("stub", stub_factory)
        registry.register_scheme("broken", broken)
        registry.load_env({"LLM_S": "stub://k@h", "LLM_B": "broken://"})

        assert isinstance(registry.provider("s"), StubProvider)
        with pytest.raises(ConfigurationError, match="factory failed"):
            registry.provider("b")


async def test_list_models() -> None:
    """list_models asks a provider that can list; others raise ConfigurationError."""

    class Mute:
        name = "mute"

        def model(self, model_id: str) -> EchoModel:
            return EchoModel(model_id)

    async with registry_with() as registry:
        registry.register_provider(Mute())  # type: ignore[arg-type]
        assert await registry.list_models("openai") == ["a", "b"]
        with pytest.raises(ConfigurationError):
            await registry.list_models("mute")


# --------------------------------------------------------------------------- lifecycle


async def test_owned_session_is_created_lazily_and_closed() -> None:
    """The registry creates its session on first use and closes it; reuse after is an error."""
    registry = Registry(env={})
    assert registry._http._session is None  # construction does no I/O

    session = registry._http.get()
    assert registry._http.get() is session
    await registry.aclose()
    await registry.aclose()  # idempotent

    assert session.closed
    with pytest.raises(ConfigurationError, match="closed"):
        registry._http.get()


async def test_borrowed_session_is_left_open() -> None:
    """A caller's session is used but never closed by the registry."""
    async with aiohttp.ClientSession() as session:
        async with Registry(env={}, session=session) as registry:
            assert registry._http.get() is session
        assert not session.closed


async def test_repr_lists_names_not_secrets() -> None:
    """The registry's repr names providers and aliases, never DSNs."""
    async with Registry(env={"LLM_K": "fake://sk-secret-abcdef@"}) as registry:
        registry.register_alias("fast", "k/x")
        text = repr(registry)

    assert "k" in text and "fast" in text and "sk-secret" not in text
