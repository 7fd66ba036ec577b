"""The TOML configuration file of `Registry.from_config`, `MAJORDOMO_CONFIG` and `--config`.

One file holds what a deployment would otherwise spread over code and variables:
providers (DSNs), aliases, the chain's policy (`ChainConfig`), the health tracker's
thresholds (`HealthConfig`), the health store, and capability overrides. The format is
documented, with a complete example, in `docs/configuration.md`.

Secrets are never written in the file. A provider names the environment variable that
holds its key (`key_env = "ANTHROPIC_WORK_KEY"`), the Redis health store the one that
holds its password (`password_env`). A DSN with a credential, a URL with a password, a
`key = ...` entry or a `${VAR}` reference is refused, without showing the value. There is
deliberately one way to say where a secret lives: a name, read from the environment
when the registry is built.

Loading is pure: `load_config` reads and checks the file (every key, type and value,
each error naming the file, the line and the key) and returns a `ConfigFile`; the
registry then builds providers and the store from it, reading only the variables the
file names. Nothing here does network I/O.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final, NoReturn, final
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

import attrs

from ._capabilities import Capabilities
from ._chain import ChainConfig
from ._chain._config import hedge_percentile
from ._dsn import DSN, canonical_name
from ._exceptions import AuthenticationError, ConfigurationError, DSNError, ProviderError
from ._health import HealthConfig
from ._limits import LIMIT_KEYS, Limits
from ._routing import STRATEGIES
from ._spec import parse_spec

if TYPE_CHECKING:
    from ._context import EnvLookup
    from ._protocols import AsyncModel, Provider
    from ._redis_store import RedisHealthStore, RedisStoreEvent
    from ._request import Option, Request
    from ._response import Response
    from ._stream import Stream

__all__ = [
    "CONFIG_VARIABLE",
    "ConfigFile",
    "KeylessProvider",
    "ProviderEntry",
    "load_config",
    "provider_error_classes",
]

CONFIG_VARIABLE: Final = "MAJORDOMO_CONFIG"
"""Names the configuration file `Registry()` reads when its `env` is a mapping."""

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
"""An environment variable's name (what `key_env` and `password_env` hold)."""
_PROVIDER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\Z")
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_TOML_POSITION = re.compile(r"^(?P<message>.*?) \(at line (?P<line>\d+), column (?P<column>\d+)\)$")
_SECRET_WORDS: Final = frozenset(
    {"key", "api_key", "apikey", "api-key", "token", "secret", "password", "credential"}
)
_MEMORY: Final = ("memory", "memory://")
_STORE_SCHEMES: Final = ("redis", "rediss", "unix")


class _Bad(Exception):
    """A value the file cannot hold; its message says what is accepted."""


# --------------------------------------------------------------------------- value kinds
# Each kind checks one TOML value and returns what the library takes, or raises `_Bad`
# saying what is accepted. TOML has no null, so "none" stands for None where a field
# takes it (no limit).


def _describe(value: object) -> str:
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, str):
        return f"the string {json.dumps(value)}"
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return f"a {type(value).__name__}"  # dates and times


def _number(value: object) -> float:
    # bool is an int in Python, but `true` is not a number of seconds.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Bad(f"expected a number, got {_describe(value)}")
    return float(value)


def _seconds(value: object) -> float:
    try:
        return _number(value)
    except _Bad:
        raise _Bad(f"expected a number of seconds, got {_describe(value)}") from None


def _positive_seconds(value: object) -> float:
    seconds = _seconds(value)
    if not seconds > 0:
        raise _Bad(f"expected a positive number of seconds, got {_describe(value)}")
    return seconds


def _seconds_or_none(value: object) -> float | None:
    if value == "none":
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Bad(f'expected a number of seconds or "none" (no limit), got {_describe(value)}')
    return float(value)


def _limit(value: object) -> float | str | None:
    if value == "auto":
        return "auto"
    try:
        return _seconds_or_none(value)
    except _Bad:
        raise _Bad(
            f'expected a number of seconds, "auto" (the provider\'s default) or "none" '
            f"(no limit), got {_describe(value)}"
        ) from None


def _integer(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Bad(f"expected a whole number, got {_describe(value)}")
    return value


def _integer_or_none(value: object) -> int | None:
    if value == "none":
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Bad(f'expected a whole number or "none" (unknown), got {_describe(value)}')
    return value


def _positive_integer(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _Bad(f"expected a positive integer, got {_describe(value)}")
    return value


def _hedge(value: object) -> float | str:
    if isinstance(value, str) and hedge_percentile(value) is not None:
        return value
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return float(value)
    raise _Bad(f'expected seconds or a percentile such as "p95", got {_describe(value)}')


def _boolean(value: object) -> bool:
    if not isinstance(value, bool):
        raise _Bad(f"expected true or false, got {_describe(value)}")
    return value


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise _Bad(f"expected a string, got {_describe(value)}")
    return value


def _strings(value: object) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise _Bad(f"expected an array of strings, got {_describe(value)}")
    return list(value)


def _choice(*choices: str) -> Callable[[object], str]:
    accepted = " or ".join(json.dumps(choice) for choice in choices)

    def check(value: object) -> str:
        if value not in choices:
            raise _Bad(f"expected {accepted}, got {_describe(value)}")
        return str(value)

    return check


def _variable(value: object) -> str:
    """The name of an environment variable; never echoes the value, which may be the
    secret itself written in the wrong place."""
    if not isinstance(value, str):
        raise _Bad(f"expected the name of an environment variable, got {_describe(value)}")
    if not _NAME.match(value):
        raise _Bad(
            "expected the NAME of an environment variable (letters, digits and '_', such "
            "as ANTHROPIC_WORK_KEY), not the secret itself (the value is not shown)"
        )
    return value


def _error_classes(value: object) -> tuple[type[ProviderError], ...]:
    names = _strings(value)
    known = provider_error_classes()
    unknown = [name for name in names if name not in known]
    if unknown:
        raise _Bad(
            f"not a provider error class: {', '.join(unknown)} "
            f"(accepted: {', '.join(sorted(known))})"
        )
    return tuple(known[name] for name in dict.fromkeys(names))


def provider_error_classes() -> dict[str, type[ProviderError]]:
    """`ProviderError` and its subclasses that the package exports, by name (what
    `advance_on` and `--advance-on` accept)."""
    import majordomo_async  # the public names; deferred: this module is part of it

    found: dict[str, type[ProviderError]] = {}
    for name in majordomo_async.__all__:
        value = getattr(majordomo_async, name, None)
        if isinstance(value, type) and issubclass(value, ProviderError):
            found[name] = value
    return found


_Kind = Callable[[object], Any]

# Every ChainConfig field but `classify` (a function): tests/test_config_file.py checks
# that a new field is added here.
_CHAIN_FIELDS: Final[Mapping[str, _Kind]] = {
    "transient_retries": _integer,
    "advance_on_permanent": _boolean,
    "advance_on": _error_classes,
    "timeout": _seconds_or_none,
    "attempt_timeout": _seconds_or_none,
    "first_token_timeout": _limit,
    "reasoning_first_token_timeout": _limit,
    "idle_timeout": _seconds_or_none,
    "retry_backoff": _seconds,
    "max_retry_wait": _seconds,
    "max_recovery_wait": _seconds,
    "mid_stream": _choice("raise", "restart"),
    "unsupported_images": _choice("error", "placeholder"),
    "image_download_max_bytes": _integer,
    "image_download_timeout": _seconds_or_none,
    "strategy": _choice(*STRATEGIES),
    "hedge_after": _hedge,
    "max_limit_wait": _seconds,
}
_PRESETS: Final[Mapping[str, Callable[..., ChainConfig]]] = {
    "default": ChainConfig,
    "interactive": ChainConfig.interactive,
}
_HEALTH_FIELDS: Final[Mapping[str, _Kind]] = {
    "failure_threshold": _integer,
    "base_cooldown": _seconds,
    "cooldown_factor": _number,
    "max_cooldown": _seconds,
    "max_retry_after": _seconds,
    "probe_lease": _seconds,
}
# RedisHealthStore's keyword arguments that a URL's query can also set.
_STORE_OPTIONS: Final[Mapping[str, _Kind]] = {
    "prefix": _text,
    "key_ttl": _positive_seconds,
    "timeout": _positive_seconds,
    "refresh_interval": _positive_seconds,
    "probe_lease": _positive_seconds,
    "max_connections": _integer,
    "pubsub": _boolean,
    "cluster": _boolean,
}
_STORE_FIELDS: Final[Mapping[str, _Kind]] = {
    "url": _text,
    "password_env": _variable,
    **_STORE_OPTIONS,
}
_LIMIT_FIELDS: Final[Mapping[str, _Kind]] = {name: _positive_integer for name in LIMIT_KEYS}
_PROVIDER_FIELDS: Final[Mapping[str, _Kind]] = {
    "dsn": _text,
    "key_env": _variable,
    **_LIMIT_FIELDS,
}


def _capability_kind(field: attrs.Attribute[Any]) -> _Kind:
    if field.name == "image_mime_types":
        return _strings
    if field.name in ("max_image_bytes", "context_window"):
        return _integer_or_none
    return _boolean


_CAPABILITY_FIELDS: Final[Mapping[str, _Kind]] = {
    field.name: _capability_kind(field) for field in attrs.fields(Capabilities)
}
_SECTIONS: Final = (
    "providers",
    "aliases",
    "chain",
    "health",
    "health_store",
    "capabilities",
    "limits",
)


# --------------------------------------------------------------------------- the file


@final
@attrs.frozen
class ProviderEntry:
    """One `[providers.NAME]` table, checked: its DSN has no credential."""

    name: str
    """The canonical registry name."""
    path: tuple[str, ...]
    """Its key path in the file (`("providers", "Work")`), for messages."""
    dsn: str
    """The DSN as written (without a credential)."""
    key_env: str | None
    """The variable that holds the key, or None (the provider's own variables apply)."""
    limits: Limits = attrs.field(factory=Limits)
    """The provider's `max_concurrency`, `rpm` and `tpm` (all its targets together)."""


@final
@attrs.frozen
class _StoreEntry:
    url: str | None
    """A Redis URL without a password; None for the in-process store."""
    password_env: str | None
    options: Mapping[str, Any]


@final
@attrs.frozen(eq=False)
class ConfigFile:
    """A configuration file, read and checked by `load_config`; secrets not yet read."""

    name: str
    """How messages name the file (its path, and where the path came from)."""
    providers: tuple[ProviderEntry, ...] = ()
    aliases: Mapping[str, str] = attrs.field(factory=dict)
    """Canonical alias name -> spec."""
    chain: ChainConfig | None = None
    health: HealthConfig | None = None
    capabilities: tuple[tuple[str, Mapping[str, Any]], ...] = ()
    """(pattern, fields) in file order."""
    store: _StoreEntry | None = None
    limits: tuple[tuple[str, Limits], ...] = ()
    """(provider name or target key, its limits), from the `[limits]` table."""
    _lines: tuple[tuple[tuple[str, ...], int], ...] = attrs.field(default=(), repr=False)
    """Every key path the file writes and its line (see `_key_lines`)."""

    def where(self, path: Iterable[str]) -> str:
        """The file and the line that writes key `path` (or its table): "FILE, line N"."""
        line = _locate(self._lines, tuple(path))
        return f"{self.name}, line {line}" if line is not None else self.name

    def at(self, path: Iterable[str]) -> str:
        """Where a message about key `path` points: "FILE, line N: dotted.key"."""
        path = tuple(path)
        return f"{self.where(path)}: {_dotted(path)}"

    def error(self, path: Iterable[str], message: str) -> ConfigurationError:
        """A `ConfigurationError` naming this file, the line of `path` and its key."""
        return ConfigurationError(f"{self.at(path)}: {message}")

    def health_store(
        self,
        config: HealthConfig,
        env: EnvLookup,
        *,
        observer: Callable[[RedisStoreEvent], object] | None = None,
    ) -> RedisHealthStore | None:
        """The health store the file names (None: the in-process store), its password
        read from the variable `password_env` names.

        Raises:
            ConfigurationError: the variable is not set, or the store refuses an option.
        """
        entry = self.store
        if entry is None or entry.url is None:
            return None
        url = entry.url
        if entry.password_env is not None:
            password = env(entry.password_env)
            if password is None or not password.strip():
                raise self.error(
                    ("health_store", "password_env"),
                    f"the environment variable {entry.password_env} is not set "
                    "(it holds the Redis password)",
                )
            url = _with_password(url, password.strip())
        from ._redis_store import RedisHealthStore  # redis-py only when a file asks for it

        try:
            return RedisHealthStore(url, config, observer=observer, **entry.options)
        except ConfigurationError as exc:
            raise self.error(("health_store",), str(exc)) from None


def load_config(path: str | os.PathLike[str], *, name: str | None = None) -> ConfigFile:
    """Read and check the TOML configuration file at `path` (no secret is read yet).

    Args:
        path: the file.
        name: how messages name it (default: the path).

    Raises:
        ConfigurationError: the file cannot be read, is not TOML, or holds an unknown
            key, a value of the wrong type, a value a setting refuses, or a secret. One
            error, naming the file, the line and the key, with the accepted values.
    """
    import tomllib  # deferred: only a registry given a file pays for it

    label = name or os.fspath(path)
    try:
        with open(path, "rb") as file:
            raw = file.read()
    except OSError as exc:
        raise ConfigurationError(
            f"{label}: cannot read the configuration file: {exc.strerror or exc}"
        ) from None
    try:
        # utf-8-sig: a byte order mark, which some editors write, is not an error.
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigurationError(f"{label}, line {line}: the file is not UTF-8 text") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(_syntax_message(label, str(exc), text)) from None
    return _Checker(ConfigFile(label, lines=_key_lines(text))).check(data)


def _syntax_message(label: str, message: str, text: str) -> str:
    """tomllib's message, with its position first: "FILE, line 3, column 9: invalid TOML: ..."."""
    found = _TOML_POSITION.match(message)
    if found is None:
        # "... (at end of document)": an unterminated string or table; the file's last
        # line that holds anything is where to look.
        last = text.rstrip().count("\n") + 1
        message = message.removesuffix(" (at end of document)")
        return f"{label}, line {last}: invalid TOML: {message} (at the end of the file)"
    return (
        f"{label}, line {found['line']}, column {found['column']}: invalid TOML: {found['message']}"
    )


@final
class _Checker:
    """Checks the parsed TOML section by section into a `ConfigFile`."""

    def __init__(self, empty: ConfigFile) -> None:
        self._file = empty

    def fail(self, path: Iterable[str], message: str) -> NoReturn:
        raise self._file.error(path, message)

    def check(self, data: Mapping[str, Any]) -> ConfigFile:
        self._keys((), data, _SECTIONS)
        return attrs.evolve(
            self._file,
            providers=self._providers(self._table(data, "providers")),
            aliases=self._aliases(self._table(data, "aliases")),
            chain=self._chain(data.get("chain")),
            health=self._health(data.get("health")),
            capabilities=self._capabilities(self._table(data, "capabilities")),
            store=self._store(data.get("health_store")),
            limits=self._limits(self._table(data, "limits")),
        )

    # ---------------------------------------------------------------- helpers

    def _table(self, data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
        value = data.get(key, {})
        if not isinstance(value, dict):
            self.fail((key,), f"expected a table ([{key}]), got {_describe(value)}")
        return value

    def _keys(
        self, path: tuple[str, ...], table: Mapping[str, Any], accepted: Iterable[str]
    ) -> None:
        accepted = tuple(accepted)
        for key in table:
            if key in accepted:
                continue
            if key.lower() in _SECRET_WORDS:
                self.fail((*path, key), _secret_hint(path))
            self.fail((*path, key), f"unknown key (accepted: {', '.join(accepted)})")

    def _values(
        self, path: tuple[str, ...], table: object, kinds: Mapping[str, _Kind]
    ) -> dict[str, Any]:
        """Every entry of `table` converted by its kind (keys checked first)."""
        if not isinstance(table, dict):
            self.fail(path, f"expected a table, got {_describe(table)}")
        self._keys(path, table, kinds)
        values: dict[str, Any] = {}
        for key, value in table.items():
            try:
                values[key] = kinds[key](value)
            except _Bad as exc:
                self.fail((*path, key), str(exc))
        return values

    def _settings(
        self, path: tuple[str, ...], build: Callable[..., Any], values: Mapping[str, Any]
    ) -> Any:
        """`build(**values)`, a refused value blamed on its own key.

        Each value is tried alone first, so that the library's message (a negative
        timeout, a threshold below 1) points at the line that holds it; what fails only
        together (max_cooldown below base_cooldown) is blamed on the table.
        """
        for key, value in values.items():
            try:
                build(**{key: value})
            except ConfigurationError as exc:
                self.fail((*path, key), str(exc))
        try:
            return build(**values)
        except ConfigurationError as exc:
            self.fail(path, str(exc))

    # ---------------------------------------------------------------- sections

    def _providers(self, table: Mapping[str, Any]) -> tuple[ProviderEntry, ...]:
        entries: dict[str, ProviderEntry] = {}
        for raw_name, section in table.items():
            path = ("providers", raw_name)
            if not _PROVIDER_NAME.match(raw_name):
                self.fail(
                    path,
                    "invalid provider name: letters, digits, '_', '-' and '.', starting "
                    "with a letter or digit",
                )
            values = self._values(path, section, _PROVIDER_FIELDS)
            if "dsn" not in values:
                self.fail((*path, "dsn"), 'missing: every provider needs a dsn = "scheme://..."')
            self._check_dsn((*path, "dsn"), values["dsn"])
            name = canonical_name(raw_name)
            twin = entries.get(name)
            if twin is not None:
                self.fail(
                    path,
                    f"the same provider as providers.{twin.path[1]} (names ignore case, "
                    "and '_' is '-')",
                )
            limits = Limits(**{key: values[key] for key in LIMIT_KEYS if key in values})
            entries[name] = ProviderEntry(name, path, values["dsn"], values.get("key_env"), limits)
        return tuple(entries.values())

    def _limits(self, table: Mapping[str, Any]) -> tuple[tuple[str, Limits], ...]:
        found = []
        for name, section in table.items():
            path = ("limits", name)
            provider, slash, model_id = name.partition("/")
            if not provider.strip() or (slash and not model_id.strip()):
                self.fail(path, 'expected a provider name or a "provider/model-id" target')
            values = self._values(path, section, _LIMIT_FIELDS)
            key = canonical_name(provider) + (f"/{model_id.strip()}" if slash else "")
            found.append((key, Limits(**values)))
        return tuple(found)

    def _check_dsn(self, path: tuple[str, ...], text: str) -> None:
        if "${" in text:
            self.fail(path, f"no ${{VAR}} expansion in this file: {_secret_hint(path[:-1])}")
        try:
            dsn = DSN.parse(text)
        except DSNError as exc:  # its messages never show a credential
            self.fail(path, str(exc))
        if dsn.credential is not None:
            self.fail(
                path,
                "the DSN holds a credential (not shown): a key is never written in this "
                f"file. {_secret_hint(path[:-1])}",
            )

    def _aliases(self, table: Mapping[str, Any]) -> dict[str, str]:
        aliases: dict[str, str] = {}
        names: dict[str, str] = {}
        for raw_name, spec in table.items():
            path = ("aliases", raw_name)
            name = canonical_name(raw_name)
            if not name or "/" in name or "," in name:
                self.fail(path, "invalid alias name: a bare name without '/' or ','")
            if not isinstance(spec, str):
                self.fail(path, f'expected a spec such as "fake/a,fake/b", got {_describe(spec)}')
            if name in aliases:
                self.fail(path, f"the same alias as aliases.{names[name]}")
            aliases[name], names[name] = spec, raw_name
        for name, spec in aliases.items():
            try:
                parse_spec(spec, aliases)  # syntax, unknown aliases and cycles
            except ConfigurationError as exc:
                self.fail(("aliases", names[name]), str(exc))
        return aliases

    def _chain(self, table: object) -> ChainConfig | None:
        if table is None:
            return None
        path = ("chain",)
        values = self._values(path, table, {"preset": _choice(*_PRESETS), **_CHAIN_FIELDS})
        # The preset's values first, the file's keys over them.
        preset = _PRESETS[values.pop("preset", "default")]
        config: ChainConfig = self._settings(path, preset, values)
        return config

    def _health(self, table: object) -> HealthConfig | None:
        if table is None:
            return None
        values = self._values(("health",), table, _HEALTH_FIELDS)
        config: HealthConfig = self._settings(("health",), HealthConfig, values)
        return config

    def _capabilities(self, table: Mapping[str, Any]) -> tuple[tuple[str, Mapping[str, Any]], ...]:
        overrides = []
        for pattern, section in table.items():
            path = ("capabilities", pattern)
            if "/" not in pattern:
                self.fail(path, 'expected a "provider/model-id" pattern, such as "ollama/llava*"')
            values = self._values(path, section, _CAPABILITY_FIELDS)
            self._settings(path, _capabilities_with, values)
            overrides.append((pattern, values))
        return tuple(overrides)

    def _store(self, table: object) -> _StoreEntry | None:
        if table is None:
            return None
        path = ("health_store",)
        values = self._values(path, table, _STORE_FIELDS)
        if "url" not in values:
            self.fail((*path, "url"), 'missing: "memory" or a redis:// URL')
        url = values.pop("url").strip()
        password_env = values.pop("password_env", None)
        if url in _MEMORY:
            for key in (*values, *(("password_env",) if password_env else ())):
                self.fail((*path, key), 'applies to a Redis store only, not to url = "memory"')
            return _StoreEntry(None, None, {})
        self._check_store_url((*path, "url"), url)
        return _StoreEntry(url, password_env, values)

    def _check_store_url(self, path: tuple[str, ...], url: str) -> None:
        hint = 'put the password in an environment variable and name it with password_env = "VAR"'
        if "${" in url:
            self.fail(path, f"no ${{VAR}} expansion in this file: {hint}")
        try:
            parts = urlsplit(url)
            password = parts.password
        except ValueError:  # a port that is not a number
            self.fail(path, 'expected "memory" or a redis://, rediss:// or unix:// URL')
        if parts.scheme.lower() not in _STORE_SCHEMES:
            self.fail(
                path,
                f'expected "memory" or a redis://, rediss:// or unix:// URL, '
                f"got a {parts.scheme or 'scheme-less'} URL",
            )
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        if password is not None or "password" in query:
            self.fail(path, f"the URL holds a password (not shown): {hint}")


def _capabilities_with(**fields: Any) -> Capabilities:
    try:
        return attrs.evolve(Capabilities(), **fields)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(str(exc)) from None


def _secret_hint(path: tuple[str, ...]) -> str:
    if path == ("health_store",):
        return (
            "a secret is never written in this file: put the password in an environment "
            'variable and name it with password_env = "VAR"'
        )
    return (
        "a secret is never written in this file: put the key in an environment variable "
        'and name it with key_env = "VAR" in the provider\'s table'
    )


def _with_password(url: str, password: str) -> str:
    """`url` with `password` in its user info (percent-encoded: redis-py decodes it)."""
    parts = urlsplit(url)
    user, _, host = parts.netloc.rpartition("@")
    netloc = f"{user}:{quote(password, safe='')}@{host}"
    return urlunsplit(parts._replace(netloc=netloc))


# --------------------------------------------------------------------------- lines
# tomllib reports positions for syntax errors only. A semantic error (a bad value, an
# unknown key) is placed by a simple scan of the text: table headers and `key =` lines,
# with dotted and quoted keys and one level of inline tables. The scan only has to find
# the line of a key that tomllib accepted, so it need not be a full TOML parser; when it
# cannot place a key exactly, the nearest enclosing table's line is used.

_INLINE_KEY = re.compile(r"""[{,]\s*([A-Za-z0-9_-]+|"[^"\\]*"|'[^']*')\s*=""")


def _dotted_key(text: str, start: int = 0) -> tuple[tuple[str, ...], int]:
    """The dotted key at `text[start:]` (bare, "basic" or 'literal' parts) and where it ends."""
    parts: list[str] = []
    index = start
    while True:
        while index < len(text) and text[index] in " \t":
            index += 1
        if text.startswith('"', index):
            end = index + 1
            while end < len(text) and text[end] != '"':
                end += 2 if text[end] == "\\" else 1
            raw = text[index + 1 : end]
            try:
                parts.append(json.loads(f'"{raw}"'))
            except ValueError:
                parts.append(raw)
            index = end + 1
        elif text.startswith("'", index):
            end = text.find("'", index + 1)
            end = len(text) if end == -1 else end
            parts.append(text[index + 1 : end])
            index = end + 1
        else:
            found = _BARE_KEY.match(text, index)
            if found is None:
                return tuple(parts), index
            parts.append(found.group())
            index = found.end()
        while index < len(text) and text[index] in " \t":
            index += 1
        if not text.startswith(".", index):
            return tuple(parts), index
        index += 1


def _key_lines(text: str) -> tuple[tuple[tuple[str, ...], int], ...]:
    """Every (key path, line number) the text writes, in order."""
    found: list[tuple[tuple[str, ...], int]] = []
    table: tuple[str, ...] = ()
    closing: str | None = None  # inside a multi-line string until this quote
    for number, line in enumerate(text.split("\n"), start=1):
        if closing is not None:
            if line.count(closing) % 2:
                closing = None
            continue
        stripped = line.strip()
        if stripped.startswith("["):
            parts, _ = _dotted_key(stripped.lstrip("["))
            if parts:
                table = parts
                found.append((table, number))
            continue
        parts, end = _dotted_key(stripped)
        rest = stripped[end:]
        if not parts or not rest.startswith("="):
            continue
        found.append(((*table, *parts), number))
        value = rest[1:]
        for match in _INLINE_KEY.finditer(value):
            inner, _ = _dotted_key(match.group(1))
            found.append(((*table, *parts, *inner), number))
        for quote_mark in ('"""', "'''"):
            if value.count(quote_mark) % 2:
                closing = quote_mark
    return tuple(found)


def _locate(lines: Iterable[tuple[tuple[str, ...], int]], path: tuple[str, ...]) -> int | None:
    """The line that writes `path`, else the line of its longest written prefix."""
    best: tuple[int, int] | None = None  # (prefix length, line)
    for written, number in lines:
        if written == path:
            return number
        size = len(written)
        if written == path[:size] and (best is None or size > best[0]):
            best = (size, number)
    return None if best is None else best[1]


def _dotted(path: tuple[str, ...]) -> str:
    """A key path as TOML writes it: `capabilities."ollama/llava*".vision`."""
    return ".".join(part if _BARE_KEY.fullmatch(part) else json.dumps(part) for part in path)


# --------------------------------------------------------------------------- keyless


@final
class KeylessProvider:
    """A configured provider whose `key_env` variable is not set.

    Its models know their capabilities and limits (so a chain fits requests to them as
    usual), but every call fails before anything is sent with an `AuthenticationError`
    (no status: no server answered) that names the variable. That is how a provider of
    the environment without its key behaves too, so a chain with
    `advance_on=(AuthenticationError,)` still reaches its backup, and `majordomo
    resolve` can say "no key (set VAR)".
    """

    def __init__(self, inner: Provider, variable: str, where: str) -> None:
        self._inner = inner
        self._variable = variable
        self._where = where
        self._models: dict[str, _KeylessModel] = {}

    @property
    def name(self) -> str:
        """The registry name."""
        return self._inner.name

    @property
    def key_variables(self) -> tuple[str, ...]:
        """The variable that must hold the key."""
        return (self._variable,)

    def model(self, model_id: str) -> AsyncModel:
        """The model `model_id`, whose calls fail for want of a key."""
        model = self._models.get(model_id)
        if model is None:
            model = self._models.setdefault(
                model_id, _KeylessModel(self._inner.model(model_id), self, model_id)
            )
        return model

    async def list_models(self) -> list[str]:
        """Never lists: raises the missing key's `AuthenticationError`."""
        raise self.missing_key("")

    def missing_key(self, model_id: str) -> AuthenticationError:
        """The error every call of `model_id` raises."""
        return AuthenticationError(
            f"no API key for provider {self.name!r}: set {self._variable} "
            f"(named by key_env in {self._where})",
            provider=self.name,
            model=model_id,
        )

    def __repr__(self) -> str:
        return f"<KeylessProvider {self.name!r} key_env={self._variable}>"


@final
class _KeylessModel:
    """A model of a `KeylessProvider`."""

    def __init__(self, inner: AsyncModel, provider: KeylessProvider, model_id: str) -> None:
        self._inner = inner
        self._provider = provider
        self._model_id = model_id

    @property
    def capabilities(self) -> Capabilities:
        """The real model's capabilities."""
        return self._inner.capabilities

    @property
    def timeouts(self) -> object:
        """The real model's time limits, which a chain reads for its first-token limit."""
        return getattr(self._inner, "timeouts", None)

    async def generate(self, request: Request | str, *options: Option) -> Response:
        """Raise the missing key's `AuthenticationError`."""
        raise self._provider.missing_key(self._model_id)

    async def stream(self, request: Request | str, *options: Option) -> Stream:
        """Raise the missing key's `AuthenticationError`."""
        raise self._provider.missing_key(self._model_id)
