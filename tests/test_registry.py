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
    ProviderError,
    Registry,
    Response,
    SpecError,
    UnknownProviderError,
    classify,
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


@pytest.mark.parametrize("spec", [["openai/gpt-4o"], ("openai/gpt-4o",), None, {"a": 1}])
async def test_parse_of_a_non_string_says_what_a_spec_is(spec: Any) -> None:
    """A list (or anything but a str) is a SpecError that shows what a spec looks like."""
    async with registry_with() as registry:
        with pytest.raises(SpecError) as info:
            registry.parse(spec)

    assert 'a string such as "openai/gpt-4o,anthropic/claude-sonnet-4-5"' in str(info.value)
    assert isinstance(info.value, ConfigurationError)


async def test_parse_with_its_own_config_is_cached_per_spec_and_config() -> None:
    """`parse(spec, config=...)` gives that chain its own policy; equal configs share it."""
    config = ChainConfig(transient_retries=3)
    async with registry_with() as registry:
        default = registry.parse("openai/a")
        custom = registry.parse("openai/a", config=config)

        assert custom.config is config
        assert default.config is registry.chain_config
        assert registry.parse("openai/a") is default
        assert registry.parse("openai/a", config=ChainConfig(transient_retries=3)) is custom
        assert registry.parse("openai/a", config=ChainConfig(transient_retries=2)) is not custom
        assert custom.targets == default.targets == ("openai/a",)

        registry.register_alias("fast", "openai/b")  # configuration changes clear them all
        assert registry.parse("openai/a", config=config) is not custom


async def test_parse_config_changes_the_failover_of_that_chain_only() -> None:
    """One endpoint can advance on a permanent error while the registry default raises."""
    spec = "fake/head?script=400,fake/backup"
    async with Registry(env={}) as registry:
        with pytest.raises(ProviderError):
            await registry.parse(spec).generate("hi")
        lenient = registry.parse(spec, config=ChainConfig(advance_on_permanent=True))

        response = await lenient.generate("hi")

    assert response.model == "fake/backup"


async def test_parse_config_must_be_a_chain_config() -> None:
    """Anything but a ChainConfig (or None) is a clear ConfigurationError."""
    async with registry_with() as registry:
        for config in ({"transient_retries": 3}, "retries=3"):
            with pytest.raises(ConfigurationError, match="takes a ChainConfig"):
                registry.parse("openai/a", config=config)  # type: ignore[arg-type]


async def test_parse_with_an_unhashable_config_works_uncached() -> None:
    """A config whose classifier cannot be hashed still parses, without caching."""

    class Classifier:
        __hash__ = None  # type: ignore[assignment]

        def __call__(self, exc: Exception) -> Any:
            return classify(exc)

    config = ChainConfig(classify=Classifier())
    async with registry_with() as registry:
        chain = registry.parse("openai/a", config=config)

    assert chain.config is config
    assert chain.targets == ("openai/a",)


async def test_chain_cache_stays_bounded_with_configs() -> None:
    """Specs times configs never grow the cache past its limit."""
    async with registry_with() as registry:
        for number in range(1, 1200):
            registry.parse("openai/a", config=ChainConfig(timeout=float(number)))

        assert len(registry._chains) <= 1024


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


@pytest.mark.parametrize("blank", ["", "   ", "\t\n"])
async def test_blank_env_entry_leaves_the_builtin_provider(blank: str) -> None:
    """`LLM_OPENAI=` defines nothing, in the eager scan as in the lazy lookup: the
    built-in `openai` provider stays usable and no error is kept."""
    env = {"LLM_OPENAI": blank, "LLM_EMPTY": blank}
    async with Registry(env=env) as registry:
        assert registry.load_env(env) == {}
        provider = registry.provider("openai")
        assert registry.parse("openai/gpt-4o").targets == ("openai/gpt-4o",)
        with pytest.raises(UnknownProviderError, match="LLM_EMPTY"):
            registry.provider("empty")

    assert provider.name == "openai"
    assert getattr(provider, "base_url", None) == "https://api.openai.com/v1"


async def test_blank_value_from_a_lookup_function_is_unset() -> None:
    """The lazy path treats a whitespace-only value as unset too."""
    async with Registry(env=lambda name: "  ") as registry:
        assert registry.provider("fake").name == "fake"
        with pytest.raises(UnknownProviderError):
            registry.provider("nope")


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
