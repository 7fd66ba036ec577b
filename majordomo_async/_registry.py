"""`Registry`: providers, aliases, DSN schemes, the health tracker, and `parse()`."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from fnmatch import fnmatchcase
from types import MappingProxyType, TracebackType
from typing import TYPE_CHECKING, Any, TypeAlias, final
from urllib.parse import quote

import attrs

from ._capabilities import Capabilities
from ._chain import Chain, ChainConfig, Target
from ._clock import Clock, MonotonicClock
from ._context import EnvLookup, HTTPSessionHolder, ProviderContext, SchemeFactory
from ._download import session_fetcher
from ._dsn import DSN, canonical_name, env_var_for
from ._exceptions import (
    ConfigurationError,
    DSNError,
    MajordomoError,
    SpecError,
    UnknownProviderError,
)
from ._health import HealthConfig, HealthStore, HealthTracker
from ._hooks import Hooks, HookSet
from ._limits import Limits, LimitSet
from ._providers import builtin_provider, builtin_provider_names, builtin_schemes
from ._routing import Group
from ._spec import parse_positions, spec_type_message

if TYPE_CHECKING:
    import aiohttp

    from ._config_file import ConfigFile, ProviderEntry
    from ._limits import SharedBudget
    from ._protocols import Provider
    from ._redis_store import RedisHealthStore, RedisStoreEvent

__all__ = ["CapabilityOverride", "Registry"]

CapabilityOverride: TypeAlias = "Capabilities | Mapping[str, Any]"
"""A whole `Capabilities`, or the fields to change ({"vision": False, "context_window": 8192})."""

_ENV_PREFIX = "LLM_"
# Names the shared health store when no `health_store=` is given ("redis://host:6379/0").
_HEALTH_STORE_VARIABLE = "MAJORDOMO_HEALTH_STORE"
# Parsed chains are cached per spec string; a service that builds specs dynamically
# must not grow this without bound.
_CHAIN_CACHE_LIMIT = 1024


@final
class Registry:
    """Providers, aliases and DSN schemes, one health tracker, and `parse()`.

    Create one per process (in a service's lifespan), not one per request: it owns the
    HTTP connection pool and the health state every chain shares. It belongs to the event
    loop that first uses it (aiohttp sessions cannot move between loops): a call from
    another `asyncio.run()` or a thread's own loop raises `ConfigurationError`, so create
    it inside the loop that uses it. The HTTP providers need asyncio (not trio).

    Example:
        ```python
        async with Registry() as registry:
            registry.register_alias("fast", "openai/gpt-4o-mini,anthropic/claude-haiku-4-5")
            model = registry.parse("fast")
            response = await model.generate("Hello")
        ```

    Args:
        health: thresholds and cooldowns of the health tracker.
        chain: retry, deadline and failover policy of every parsed chain.
        clock: time source (a `ManualClock` in tests).
        env: where `LLM_<NAME>` DSNs and API keys are read: a mapping (scanned eagerly
            and looked up lazily) or a lookup function (lazy only). Default: `os.environ`.
            From a mapping, `MAJORDOMO_CONFIG=path` also names a configuration file,
            read at construction as `from_config` reads it (the arguments here replace
            its sections).
        load_env: scan the environment for `LLM_<NAME>` at construction (lazy
            resolution during `parse()` happens either way).
        session: an `aiohttp.ClientSession` to use instead of creating one. It is
            borrowed: `aclose()` leaves it open. It must belong to the event loop that
            uses the registry.
        health_store: where health state lives (default: in this process, or the Redis
            store that `MAJORDOMO_HEALTH_STORE=redis://...` names when `env` is a mapping,
            which this registry then closes in `aclose()`; see `RedisHealthStore`).
        capabilities: overrides of the built-in capability table, by target pattern:
            `{"ollama/my-llava*": {"vision": True}, "openai/*": {"context_window": None}}`.
            Patterns are shell globs over "provider/model-id"; every matching pattern
            applies, in order. See `override_capabilities`.
        hooks: callbacks told about every call, attempt, bench and recovery (metrics,
            tracing); see `Hooks`. More can be added with `add_hooks`.
    """

    def __init__(
        self,
        *,
        health: HealthConfig | None = None,
        chain: ChainConfig | None = None,
        clock: Clock | None = None,
        env: Mapping[str, str] | EnvLookup | None = None,
        load_env: bool = True,
        session: aiohttp.ClientSession | None = None,
        health_store: HealthStore | None = None,
        capabilities: Mapping[str, CapabilityOverride] | None = None,
        hooks: Iterable[Hooks] = (),
    ) -> None:
        if env is None:
            env = os.environ
        self._setup(
            file=_file_from_env(env) if isinstance(env, Mapping) else None,
            schemes=None,
            health=health,
            chain=chain,
            clock=clock,
            env=env,
            load_env=load_env,
            session=session,
            health_store=health_store,
            capabilities=capabilities,
            hooks=hooks,
        )

    @classmethod
    def from_config(
        cls,
        path: str | os.PathLike[str],
        *,
        schemes: Mapping[str, SchemeFactory] | None = None,
        health: HealthConfig | None = None,
        chain: ChainConfig | None = None,
        clock: Clock | None = None,
        env: Mapping[str, str] | EnvLookup | None = None,
        load_env: bool = True,
        session: aiohttp.ClientSession | None = None,
        health_store: HealthStore | None = None,
        capabilities: Mapping[str, CapabilityOverride] | None = None,
        hooks: Iterable[Hooks] = (),
    ) -> Registry:
        """A registry configured by the TOML file at `path` (see docs/configuration.md).

        Like `Registry(...)`, it does no I/O but reading the file (and the environment
        variables the file names), so it can be called in a service's lifespan. The file
        gives providers, aliases, the chain policy, the health thresholds and store, and
        capability overrides; `MAJORDOMO_CONFIG` is not read.

        Example:
            ```python
            async with Registry.from_config("majordomo.toml") as registry:
                response = await registry.parse("fast").generate("Hello")
            ```

        Precedence: an argument given here replaces the file's section (`chain=`,
        `health=`, `health_store=`; `capabilities=` apply after the file's); the
        environment's `LLM_<NAME>` replaces a file's provider of the same name, and
        `MAJORDOMO_HEALTH_STORE` (when `env` is a mapping) the file's store, as they
        replace the built-ins.

        Args:
            path: the configuration file.
            schemes: DSN schemes the file's providers may use besides the built-in ones
                (`{"myscheme": factory}`), as `register_scheme` adds them.
            health: see `Registry`; the other arguments too.

        Raises:
            ConfigurationError: the file cannot be read, is not valid TOML, or has an
                unknown key, a bad value or a secret written in it: one error naming the
                file, the line and the key, with the accepted values. Also a variable
                that `password_env` names but that is not set (a `key_env` variable that
                is not set fails the provider's calls instead, as a missing key does).
        """
        from ._config_file import load_config

        registry = cls.__new__(cls)
        registry._setup(
            file=load_config(path),
            schemes=schemes,
            health=health,
            chain=chain,
            clock=clock,
            env=os.environ if env is None else env,
            load_env=load_env,
            session=session,
            health_store=health_store,
            capabilities=capabilities,
            hooks=hooks,
        )
        return registry

    def _setup(
        self,
        *,
        file: ConfigFile | None,
        schemes: Mapping[str, SchemeFactory] | None,
        health: HealthConfig | None,
        chain: ChainConfig | None,
        clock: Clock | None,
        env: Mapping[str, str] | EnvLookup,
        load_env: bool,
        session: aiohttp.ClientSession | None,
        health_store: HealthStore | None,
        capabilities: Mapping[str, CapabilityOverride] | None,
        hooks: Iterable[Hooks],
    ) -> None:
        """The constructor's work, shared by `__init__` and `from_config`."""
        self._lock = threading.Lock()
        self._clock = clock or MonotonicClock()
        self._env_lookup: EnvLookup = env.get if isinstance(env, Mapping) else env
        if file is not None:  # the file's sections, unless an argument replaces them
            health = health or file.health
            chain = chain or file.chain
        health = health or HealthConfig()
        self._chain_config = chain or ChainConfig()
        self._http = HTTPSessionHolder(session)
        self._context = ProviderContext(http=self._http, clock=self._clock, env=self._env_lookup)
        self._providers: dict[str, Provider] = {}
        # Providers of a configuration file: looked up after `LLM_<NAME>` (which replaces
        # them, as it replaces a built-in) and before the built-ins.
        self._configured: dict[str, Provider] = {}
        self._aliases: dict[str, str] = {}
        self._schemes: dict[str, SchemeFactory] = builtin_schemes()
        for scheme, factory in (schemes or {}).items():
            self._schemes[scheme.lower()] = factory
        self._env_errors: dict[str, ConfigurationError] = {}
        # Keyed by the spec, or by (spec, config) for a chain parsed with its own config.
        self._chains: dict[str | tuple[str, ChainConfig], Chain] = {}
        self._fetch_image = session_fetcher(self._http)
        self._hooks = HookSet(hooks)
        self._capability_overrides: list[tuple[str, CapabilityOverride]] = []
        self._limits: dict[str, Limits] = {}
        """Limits by provider name or target key, as set (a DSN's, a file's, `set_limits`)."""
        self._limit_set: LimitSet | None = None
        """The tracker's limits, once it exists (a file's providers come before it)."""
        if file is not None:
            self._apply_file(file)
        for pattern, override in (capabilities or {}).items():
            self.override_capabilities(pattern, override)
        # The store last: a Redis store is only created once nothing else can fail.
        self._own_store: RedisHealthStore | None = None
        if health_store is None and isinstance(env, Mapping):
            # Read at construction, like the LLM_<NAME> scan: only from a mapping (a lookup
            # function is consulted lazily, for providers only).
            health_store = self._own_store = self._store_from_env(health)
        if health_store is None and file is not None and not _names_a_store(env):
            health_store = self._own_store = file.health_store(
                health, self._env_lookup, observer=self._store_event
            )
        tracker = HealthTracker(health, clock=self._clock, store=health_store)
        tracker.limits = self._limit_set = LimitSet(self._clock, _shared_budget(health_store))
        for name, limits in self._limits.items():
            tracker.limits.set(name, limits)
        self._tracker = tracker
        if load_env and isinstance(env, Mapping):
            self.load_env(env)

    # ----------------------------------------------------------------- configuration

    def register_provider(self, provider: Provider, *, name: str | None = None) -> None:
        """Add or replace a provider under `name` (default: `provider.name`)."""
        key = canonical_name(name or provider.name)
        with self._lock:
            self._providers[key] = provider
            self._env_errors.pop(key, None)
            self._chains.clear()

    def register_alias(self, name: str, spec: str) -> None:
        """Map a bare name to a spec: a target, another alias, or a comma-separated chain.

        Aliases expand inline and recursively when a spec is parsed.
        """
        key = canonical_name(name)
        if not key or "/" in key or "," in key:
            raise ConfigurationError(f"invalid alias name {name!r}: a bare name without '/' or ','")
        with self._lock:
            self._aliases[key] = spec
            self._chains.clear()

    def register_scheme(self, scheme: str, factory: SchemeFactory) -> None:
        """Add or replace a DSN scheme: `factory(name, dsn, context) -> Provider`."""
        with self._lock:
            self._schemes[scheme.lower()] = factory

    def add_hooks(self, *hooks: Hooks) -> None:
        """Register more `Hooks`; chains parsed from now on call them too."""
        with self._lock:
            self._hooks = HookSet((*self._hooks.hooks, *hooks))
            self._chains.clear()

    def override_capabilities(self, pattern: str, override: CapabilityOverride) -> None:
        """Correct what targets matching `pattern` accept, over the built-in table.

        Args:
            pattern: a shell glob over "provider/model-id" ("ollama/llava*", "local/*",
                or one exact key).
            override: the fields to change (`{"vision": True, "context_window": 32768}`),
                or a whole `Capabilities` that replaces the model's own.

        Raises:
            ConfigurationError: a field name or value that `Capabilities` does not take.
        """
        if not isinstance(override, Capabilities):
            override = dict(override)
            try:
                attrs.evolve(Capabilities(), **override)
            except (TypeError, ValueError) as exc:
                known = ", ".join(field.name for field in attrs.fields(Capabilities))
                raise ConfigurationError(
                    f"invalid capability override for {pattern!r}: {exc} (fields: {known})"
                ) from None
        with self._lock:
            self._capability_overrides.append((pattern, override))
            self._chains.clear()

    def set_limits(
        self,
        name: str,
        limits: Limits | None = None,
        *,
        max_concurrency: int | None = None,
        rpm: int | None = None,
        tpm: int | None = None,
    ) -> None:
        """Cap the calls of a provider (all its targets together) or of one target.

        A call that would exceed a limit moves on to the next member of its group (or the
        next target), with no health penalty; when nothing else answers it waits for a
        slot, within `ChainConfig.max_limit_wait` and the call's deadline. A slot is given
        back on every path (an answer, an error, a cancellation, a stream closed or
        dropped). With a Redis health store, `rpm` and `tpm` are shared by the fleet.

        Example:
            ```python
            registry.set_limits("openai", rpm=500, tpm=200_000)
            registry.set_limits("azure-east/gpt-4o", max_concurrency=20)
            ```

        Args:
            name: a provider name ("openai") or a target key ("openai/gpt-4o").
            limits: a whole `Limits` (instead of the keywords); `Limits()` removes them.
            max_concurrency: attempts in flight at once (a stream holds its slot until it
                ends).
            rpm: requests sent in any 60 s.
            tpm: tokens in any 60 s: the request's estimate is reserved when it is sent
                and replaced by the provider's reported usage when it ends.

        Raises:
            ConfigurationError: a limit that is not a positive integer, or a bad name.
        """
        if limits is None:
            limits = Limits(max_concurrency=max_concurrency, rpm=rpm, tpm=tpm)
        elif not isinstance(limits, Limits):
            raise ConfigurationError(
                f"set_limits() takes a Limits (or keywords), not {type(limits).__name__}"
            )
        provider, slash, model_id = name.partition("/")
        if not provider.strip() or (slash and not model_id.strip()):
            raise ConfigurationError(
                f"set_limits() takes a provider name or a 'provider/model-id' key, got {name!r}"
            )
        key = canonical_name(provider) + (f"/{model_id.strip()}" if slash else "")
        self._set_limits(key, limits)

    def _set_limits(self, key: str, limits: Limits) -> None:
        with self._lock:
            if limits.any:
                self._limits[key] = limits
            else:
                self._limits.pop(key, None)
            if self._limit_set is not None:
                self._limit_set.set(key, limits)
            self._chains.clear()

    def capabilities(self, key: str) -> Capabilities:
        """What target `key` ("provider/model-id") accepts, overrides applied."""
        provider, slash, model_id = key.partition("/")
        if not slash or not model_id:
            raise ConfigurationError(f"expected a 'provider/model-id' key, got {key!r}")
        return self._target(canonical_name(provider), model_id).capabilities

    def load_env(self, env: Mapping[str, str]) -> dict[str, ConfigurationError]:
        """Register a provider for every `LLM_<NAME>=<DSN>` in `env`.

        A malformed entry does not raise here: its error is kept and raised when, and
        only when, that provider name is used. Returns those errors by provider name.
        A blank entry (`LLM_OPENAI=`, or only whitespace) is ignored, as when `parse()`
        looks a name up: it defines nothing, so a built-in provider of that name stays.
        """
        errors: dict[str, ConfigurationError] = {}
        for variable, value in env.items():
            if not variable.startswith(_ENV_PREFIX) or len(variable) == len(_ENV_PREFIX):
                continue
            if _blank(value):
                continue
            name = canonical_name(variable[len(_ENV_PREFIX) :])
            try:
                provider = self._from_dsn(name, value, variable)
            except ConfigurationError as exc:
                errors[name] = exc
                continue
            with self._lock:
                self._providers[name] = provider
                self._env_errors.pop(name, None)
        with self._lock:
            self._env_errors.update(errors)
            self._chains.clear()
        return errors

    # ----------------------------------------------------------------- lookups

    @property
    def health(self) -> HealthTracker:
        """The health tracker every chain of this registry shares."""
        return self._tracker

    @property
    def chain_config(self) -> ChainConfig:
        """The failover policy of parsed chains."""
        return self._chain_config

    @property
    def limits(self) -> Mapping[str, Limits]:
        """The limits set, by provider name or target key (see `set_limits`)."""
        return dict(self._limits)

    @property
    def aliases(self) -> Mapping[str, str]:
        """Registered aliases (canonical name -> spec)."""
        return dict(self._aliases)

    def provider(self, name: str) -> Provider:
        """The provider registered as `name`, resolving built-ins and `LLM_<NAME>` lazily.

        Raises:
            UnknownProviderError: nothing defines `name`; the error names the env var checked.
            ConfigurationError: `LLM_<NAME>` is set but malformed.
        """
        key = canonical_name(name)
        provider = self._providers.get(key)
        if provider is not None:
            return provider
        error = self._env_errors.get(key)
        if error is not None:
            raise type(error)(str(error)) from error
        variable = env_var_for(key)
        value = self._env_lookup(variable)
        if value is not None and not _blank(value):
            provider = self._from_dsn(key, value, variable)
        elif key in self._configured:
            provider = self._configured[key]
        elif key in builtin_provider_names():
            provider = builtin_provider(key, self._context)
        else:
            raise UnknownProviderError(key, variable)
        with self._lock:
            # Another caller may have resolved the same name meanwhile: keep the first.
            return self._providers.setdefault(key, provider)

    def parse(self, spec: str, *, config: ChainConfig | None = None) -> Chain:
        """Turn a spec into a failover `Chain` (see the spec grammar in the README).

        Cheap and cached: calling it per request is fine.

        Args:
            spec: a string such as "openai/gpt-4o,anthropic/claude-sonnet-4-5", or an alias.
            config: the retry, deadline and failover policy of this chain, instead of the
                registry's `chain_config`, so that a service can give one endpoint
                different retries or deadlines. Chains are cached per (spec, config) pair.

        Raises:
            SpecError: the spec is not a string, is malformed or names an unknown alias.
            AliasCycleError: aliases expand in a cycle.
            UnknownProviderError: a provider name is not registered nor in the environment.
            ConfigurationError: `config` is not a `ChainConfig`.
        """
        key: str | tuple[str, ChainConfig] = spec if config is None else (spec, config)
        try:
            chain = self._chains.get(key)
        except TypeError:  # unhashable: a list for a spec, or not a config
            _check_parse_arguments(spec, config)
            # A ChainConfig that cannot be hashed (an unhashable `classify`): not cached.
            return self._new_chain(spec, config)
        if chain is not None:
            return chain
        _check_parse_arguments(spec, config)
        chain = self._new_chain(spec, config)
        with self._lock:
            if len(self._chains) >= _CHAIN_CACHE_LIMIT:
                self._chains.clear()
            return self._chains.setdefault(key, chain)

    async def list_models(self, provider: str) -> list[str]:
        """The model ids `provider` serves, if it can list them."""
        found = self.provider(provider)
        lister: Callable[[], object] | None = getattr(found, "list_models", None)
        if lister is None:
            raise ConfigurationError(f"provider {provider!r} cannot list its models")
        return await found.list_models()  # type: ignore[attr-defined, no-any-return]

    # ----------------------------------------------------------------- lifecycle

    async def aclose(self) -> None:
        """Close the HTTP session and the health store this registry created. Idempotent."""
        await self._http.aclose()
        if self._own_store is not None:
            await self._own_store.aclose()

    async def __aenter__(self) -> Registry:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"<Registry providers={sorted(self._providers)} aliases={sorted(self._aliases)}>"

    # ----------------------------------------------------------------- internals

    def _store_from_env(self, config: HealthConfig) -> RedisHealthStore | None:
        """The shared store `MAJORDOMO_HEALTH_STORE` names, if any (redis is imported only then)."""
        url = self._env_lookup(_HEALTH_STORE_VARIABLE)
        if not url:
            return None
        from ._redis_store import store_from_url

        try:
            return store_from_url(url, config, observer=self._store_event)
        except ConfigurationError as exc:
            raise ConfigurationError(f"{_HEALTH_STORE_VARIABLE}: {exc}") from None

    def _store_event(self, event: RedisStoreEvent) -> None:
        """The observer of a store this registry built: its hooks hear the event."""
        if self._hooks:
            self._hooks.emit("health_store_event", event)

    def _new_chain(self, spec: str, config: ChainConfig | None) -> Chain:
        """A chain for `spec` with `config` (default: the registry's), not cached."""
        positions: list[Target | Group] = []
        for members in parse_positions(spec, self._aliases):
            targets = [self._target(member.provider, member.model_id) for member in members]
            if len(targets) == 1:
                positions.append(targets[0])
            else:
                weights = [member.weight for member in members]
                positions.append(Group(targets, weights, self._tracker.load))
        return Chain(
            positions,
            self._tracker,
            self._chain_config if config is None else config,
            fetch_image=self._fetch_image,
            hooks=self._hooks,
        )

    def _target(self, provider: str, model_id: str) -> Target:
        key = f"{provider}/{model_id}"
        model = self.provider(provider).model(model_id)
        override: Capabilities | None = None
        for pattern, change in self._capability_overrides:
            if not fnmatchcase(key, pattern):
                continue
            if isinstance(change, Capabilities):
                override = change
            else:
                override = attrs.evolve(override or model.capabilities, **change)
        limited = self._tracker.limits.limited(key)
        return Target(key, model, override, limited=limited)

    def _apply_file(self, file: ConfigFile) -> None:
        """Register a configuration file's providers, aliases and capability overrides."""
        for entry in file.providers:
            self._configured[entry.name] = self._from_entry(file, entry)
            if entry.limits.any:
                self._set_limits(entry.name, entry.limits)
        for name, limits in file.limits:
            self._set_limits(name, limits)
        for name, spec in file.aliases.items():
            self.register_alias(name, spec)  # checked by the loader: cannot fail
        for pattern, fields in file.capabilities:
            self.override_capabilities(pattern, fields)

    def _from_entry(self, file: ConfigFile, entry: ProviderEntry) -> Provider:
        """Build a file's provider, its key read from the variable `key_env` names."""
        from ._config_file import KeylessProvider

        label = file.at((*entry.path, "dsn"))
        if entry.key_env is None:
            return self._from_dsn(entry.name, entry.dsn, label)
        key = self._env_lookup(entry.key_env)
        if key is None or _blank(key):
            # Built blind to the environment, so that no other variable's key is used:
            # the file said where the key comes from.
            blind = ProviderContext(http=self._http, clock=self._clock, env=lambda _: None)
            inner = self._from_dsn(entry.name, entry.dsn, label, context=blind)
            return KeylessProvider(inner, entry.key_env, file.where((*entry.path, "key_env")))
        scheme, _, rest = entry.dsn.strip().partition("://")
        # Parsed again with the key as its credential, so that the DSN's checks apply to
        # it (control characters); its messages never show a credential.
        keyed = f"{scheme}://{quote(key.strip(), safe='')}@{rest}"
        return self._from_dsn(entry.name, keyed, label)

    def _from_dsn(
        self, name: str, text: str, variable: str, *, context: ProviderContext | None = None
    ) -> Provider:
        """Build provider `name` from DSN `text` read from `variable` (or a file's key)."""
        try:
            dsn = DSN.parse(text)
        except DSNError as exc:
            raise DSNError(f"{variable}: {exc}") from None
        limits, query = Limits.from_query(dsn.query, variable)
        if limits.any:
            dsn = attrs.evolve(dsn, query=MappingProxyType(query))
        factory = self._schemes.get(dsn.scheme)
        if factory is None:
            known = ", ".join(sorted(self._schemes))
            raise DSNError(
                f"{variable}: unknown DSN scheme {dsn.scheme!r} "
                f"(known schemes: {known}; add one with Registry.register_scheme)"
            )
        try:
            provider = factory(name, dsn, context or self._context)
        except MajordomoError as exc:
            raise ConfigurationError(f"{variable}: {exc}") from exc
        except Exception as exc:
            raise ConfigurationError(
                f"{variable}: the {dsn.scheme!r} factory failed: {type(exc).__name__}"
            ) from exc
        if limits.any:
            self._set_limits(name, limits)
        return provider


def _shared_budget(store: HealthStore | None) -> SharedBudget | None:
    """The fleet's rpm/tpm budget: on the Redis health store's server, when there is one."""
    module = sys.modules.get("majordomo_async._redis_store")
    # Not imported: the store cannot be one (and redis is imported only for one).
    if module is None or not isinstance(store, module.RedisHealthStore):
        return None
    from ._redis_limits import RedisBudget

    return RedisBudget(store)


def _file_from_env(env: Mapping[str, str]) -> ConfigFile | None:
    """The configuration file `MAJORDOMO_CONFIG` names, if any (read at construction,
    like `MAJORDOMO_HEALTH_STORE`: only from a mapping)."""
    from ._config_file import CONFIG_VARIABLE, load_config

    path = env.get(CONFIG_VARIABLE)
    if path is None or _blank(path):
        return None
    return load_config(path, name=f"{path} (from {CONFIG_VARIABLE})")


def _names_a_store(env: Mapping[str, str] | EnvLookup) -> bool:
    """Whether `MAJORDOMO_HEALTH_STORE` is set in `env` (a mapping): then it replaces a
    configuration file's store, even when it says "memory"."""
    if not isinstance(env, Mapping):
        return False
    value = env.get(_HEALTH_STORE_VARIABLE)
    return value is not None and not _blank(value)


def _blank(value: object) -> bool:
    """An empty or whitespace-only variable (`LLM_OPENAI=`): it defines nothing, like an
    unset one. (Anything else, even a non-string, goes to the DSN parser and its error.)"""
    return isinstance(value, str) and not value.strip()


def _check_parse_arguments(spec: object, config: object) -> None:
    """Refuse what `parse()` cannot take, with the error a user can act on."""
    if not isinstance(spec, str):
        raise SpecError(spec_type_message(spec))
    if config is not None and not isinstance(config, ChainConfig):
        raise ConfigurationError(
            f"parse(config=...) takes a ChainConfig (or None), not {type(config).__name__}"
        )
