"""The TOML configuration file: `Registry.from_config`, `MAJORDOMO_CONFIG`, and its errors.

Files are real files in `tmp_path`; keys come from the `env` mapping the registry is
given; a key's use is checked against a real local OpenAI-wire server, and the Redis
store's password against a private redis-server that requires it.
"""

from __future__ import annotations

import re
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

from majordomo_async import (
    AuthenticationError,
    ChainConfig,
    ConfigurationError,
    ContentPolicyError,
    HealthConfig,
    InMemoryHealthStore,
    Limits,
    RedisHealthStore,
    Registry,
)
from majordomo_async._config_file import (
    _CHAIN_FIELDS,
    _HEALTH_FIELDS,
    KeylessProvider,
    _key_lines,
    _locate,
    load_config,
)
from tests.helpers.redis_server import RedisServer, unavailable
from tests.helpers.wire import OpenAIWire, Reply

pytestmark = pytest.mark.usefixtures("no_leaked_tasks")

DOCS = Path(__file__).parent.parent / "docs" / "configuration.md"
SECRET = "sk-ant-api03-DoNotLeakThisKey0123456789"


def write(tmp_path: Path, text: str, name: str = "majordomo.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def load_error(path: Path, env: dict[str, str] | None = None) -> str:
    """The one ConfigurationError that building a registry from `path` raises."""
    with pytest.raises(ConfigurationError) as caught:
        Registry.from_config(path, env=env or {})
    return str(caught.value)


def docs_example() -> str:
    """The complete example of docs/configuration.md (its first TOML block)."""
    found = re.search(r"^```toml\n(.*?)^```$", DOCS.read_text(encoding="utf-8"), re.M | re.S)
    assert found is not None, "docs/configuration.md has no TOML example"
    return found.group(1)


# --------------------------------------------------------------------------- the format


async def test_the_documented_example_configures_everything(tmp_path: Path) -> None:
    """Every section of the docs' complete example reaches the registry."""
    pytest.importorskip("redis")
    path = write(tmp_path, docs_example())
    env = {
        "ANTHROPIC_WORK_KEY": "sk-ant-work",
        "OPENAI_PERSONAL_KEY": "sk-personal",
        "REDIS_PASSWORD": "hunter2",
    }
    # redis.internal does not exist: building the registry must not connect to it.
    async with Registry.from_config(path, env=env) as registry:
        assert registry.chain_config == ChainConfig.interactive(
            timeout=120.0,
            attempt_timeout=60.0,
            first_token_timeout=15.0,
            reasoning_first_token_timeout="auto",
            transient_retries=1,
            advance_on=(AuthenticationError,),
            hedge_after="p95",
        )
        assert registry.limits == {
            "work": Limits(rpm=50, tpm=40000),
            "personal/gpt-4o": Limits(max_concurrency=20, rpm=500),
        }
        assert registry.health.config == HealthConfig()
        store = registry.health.store
        assert isinstance(store, RedisHealthStore)
        assert (store.prefix, store.refresh_interval) == ("myservice:health:", 0.5)
        assert "hunter2" not in repr(store)
        assert registry.aliases == {
            "fast": "work/claude-haiku-4-5, personal/gpt-4o-mini",
            "smart": "work/claude-sonnet-4-5, personal/gpt-4o, local/llama3",
            "demo": "flaky/a, fake/backup",
            "balanced": "personal/gpt-4o | azure-east/gpt-4o*2, work/claude-sonnet-4-5",
        }
        assert registry.parse("smart").targets == (
            "work/claude-sonnet-4-5",
            "personal/gpt-4o",
            "local/llama3",
        )
        assert registry.provider("local").timeouts.first_token == 60.0  # type: ignore[attr-defined]
        llava = registry.capabilities("local/llava-13b")
        assert (llava.vision, llava.context_window, llava.tools) == (True, 32768, False)
        response = await registry.parse("demo").generate("hi")
        assert response.model == "fake/backup"  # flaky fails twice (retried), then advances


def test_every_chain_and_health_field_can_be_set() -> None:
    """The file knows every ChainConfig field but the classifier, and every HealthConfig
    field: a field added to either must be added to the file format too."""
    chain = {field.name for field in attrs.fields(ChainConfig)} - {"classify"}
    assert set(_CHAIN_FIELDS) == chain
    assert set(_HEALTH_FIELDS) == {field.name for field in attrs.fields(HealthConfig)}
    documented = DOCS.read_text(encoding="utf-8")
    assert all(f"`{name}`" in documented for name in (*chain, *_HEALTH_FIELDS))


def test_none_auto_and_the_default_preset(tmp_path: Path) -> None:
    """ "none" is None, "auto" the provider's default; the default preset is ChainConfig()."""
    path = write(
        tmp_path,
        """
        [chain]
        preset = "default"
        timeout = "none"
        first_token_timeout = "none"
        reasoning_first_token_timeout = "auto"
        idle_timeout = 5
        advance_on = ["ContentPolicyError", "AuthenticationError", "ContentPolicyError"]
        """,
    )
    config = Registry.from_config(path, env={}).chain_config
    assert config == ChainConfig(
        first_token_timeout=None,
        idle_timeout=5.0,
        advance_on=(ContentPolicyError, AuthenticationError),
    )


def test_the_interactive_preset_with_overrides(tmp_path: Path) -> None:
    path = write(tmp_path, '[chain]\npreset = "interactive"\ntimeout = "none"\n')
    assert Registry.from_config(path, env={}).chain_config == ChainConfig.interactive(timeout=None)


async def test_a_file_provider_answers_and_its_alias_resolves(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [providers.Canned_Replies]   # names ignore case, and '_' is '-'
        dsn = "fake://?reply=from%20the%20file"

        [aliases]
        Fast = "canned-replies/a, fake/b"
        """,
    )
    async with Registry.from_config(path, env={}) as registry:
        response = await registry.parse("fast").generate("hi")
    assert (response.text, response.model) == ("from the file", "canned-replies/a")


async def test_key_env_sends_the_key_from_that_variable(tmp_path: Path) -> None:
    """The provider gets its key from the variable `key_env` names, and sends it."""
    wire = OpenAIWire([Reply("keyed")], key="sk-from-the-env")
    async with wire.serving() as base:
        path = write(
            tmp_path,
            f"""
            [providers.local]
            dsn = "{wire.dsn(base, with_key=False)}"
            key_env = "LOCAL_LLM_KEY"
            """,
        )
        env = {"LOCAL_LLM_KEY": "sk-from-the-env\n", "OPENAI_API_KEY": "sk-other"}
        async with Registry.from_config(path, env=env) as registry:
            response = await registry.parse("local/m").generate("hi")
    assert response.text == "keyed"
    assert [request.headers["authorization"] for request in wire.requests] == [
        "Bearer sk-from-the-env"
    ]


async def test_an_unset_key_env_fails_each_call_before_sending(tmp_path: Path) -> None:
    """No key in the named variable: the registry is built, but every call fails with an
    AuthenticationError naming the variable, and nothing is sent, not even with another
    variable's key (OPENAI_API_KEY) at hand."""
    wire = OpenAIWire([Reply("never")])
    async with wire.serving() as base:
        path = write(
            tmp_path,
            f"""
            [providers.local]
            dsn = "{wire.dsn(base, with_key=False)}"
            key_env = "LOCAL_LLM_KEY"
            """,
        )
        env = {"LOCAL_LLM_KEY": "  ", "OPENAI_API_KEY": "sk-other"}
        async with Registry.from_config(path, env=env) as registry:
            provider = registry.provider("local")
            assert isinstance(provider, KeylessProvider)
            assert provider.key_variables == ("LOCAL_LLM_KEY",)
            for call in (registry.parse("local/m").generate, registry.parse("local/m").stream):
                with pytest.raises(AuthenticationError) as caught:
                    await call("hi")
                assert caught.value.status is None
                assert "set LOCAL_LLM_KEY" in str(caught.value)
                assert f"{path}, line 3" in str(caught.value)
            with pytest.raises(AuthenticationError):
                await registry.list_models("local")
            # The real model's capabilities still apply.
            assert registry.capabilities("local/gpt-4o").vision
    assert wire.requests == []


async def test_a_keyless_head_advances_with_advance_on(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [providers.work]
        dsn = "fake://"
        key_env = "WORK_KEY"

        [chain]
        advance_on = ["AuthenticationError"]
        """,
    )
    async with Registry.from_config(path, env={}) as registry:
        response = await registry.parse("work/a,fake/b").generate("hi")
    assert response.model == "fake/b"
    assert "set WORK_KEY" in str(response.failed_attempts[0])


async def test_custom_schemes_and_capability_arguments(tmp_path: Path) -> None:
    """`schemes=` lets the file use a custom scheme; `capabilities=` apply after the file's."""
    from majordomo_async._providers.fake import fake_factory

    path = write(
        tmp_path,
        """
        [providers.mine]
        dsn = "mine://?reply=custom"

        [capabilities."mine/*"]
        vision = false
        tools = false
        """,
    )
    registry = Registry.from_config(
        path, env={}, schemes={"MINE": fake_factory}, capabilities={"mine/*": {"vision": True}}
    )
    async with registry:
        assert (await registry.parse("mine/x").generate("hi")).text == "custom"
        capabilities = registry.capabilities("mine/x")
    assert (capabilities.vision, capabilities.tools) == (True, False)


# --------------------------------------------------------------------------- precedence


def test_majordomo_config_is_read_from_a_mapping(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [aliases]
        fast = "fake/a"

        [chain]
        timeout = 9

        [health]
        failure_threshold = 5
        """,
    )
    registry = Registry(env={"MAJORDOMO_CONFIG": str(path)})
    assert registry.aliases == {"fast": "fake/a"}
    assert registry.chain_config.timeout == 9.0
    assert registry.health.config.failure_threshold == 5
    # Arguments replace the file's sections.
    given = Registry(env={"MAJORDOMO_CONFIG": str(path)}, chain=ChainConfig(timeout=3))
    assert given.chain_config == ChainConfig(timeout=3)
    assert given.health.config.failure_threshold == 5
    # A lookup function is consulted lazily, for providers only: it names no file.
    lazy = Registry(env={"MAJORDOMO_CONFIG": str(path)}.get)
    assert lazy.aliases == {}
    assert Registry(env={"MAJORDOMO_CONFIG": " "}).aliases == {}


def test_a_bad_majordomo_config_says_where_the_path_came_from(tmp_path: Path) -> None:
    path = write(tmp_path, "[chain]\ntimeout = -1\n")
    with pytest.raises(ConfigurationError) as caught:
        Registry(env={"MAJORDOMO_CONFIG": str(path)})
    assert str(caught.value).startswith(f"{path} (from MAJORDOMO_CONFIG), line 2: chain.timeout:")


@pytest.mark.parametrize("lazy", [False, True], ids=["mapping", "lookup"])
async def test_the_environment_replaces_a_file_provider(tmp_path: Path, lazy: bool) -> None:
    """`LLM_<NAME>` wins over the file's provider NAME, as it wins over a built-in."""
    path = write(tmp_path, '[providers.work]\ndsn = "fake://?reply=file"\n')
    env = {"LLM_WORK": "fake://?reply=environment"}
    async with Registry.from_config(path, env=env.get if lazy else env) as registry:
        assert (await registry.parse("work/x").generate("hi")).text == "environment"
    async with Registry.from_config(path, env={}) as registry:
        assert (await registry.parse("work/x").generate("hi")).text == "file"


def test_the_store_memory_and_the_environment_store(tmp_path: Path) -> None:
    path = write(tmp_path, '[health_store]\nurl = "memory"\n')
    assert isinstance(Registry.from_config(path, env={}).health.store, InMemoryHealthStore)
    # MAJORDOMO_HEALTH_STORE replaces the file's store: here the file names an unset
    # password variable, which is then never read.
    redis_file = write(
        tmp_path,
        '[health_store]\nurl = "redis://127.0.0.1:1/0"\npassword_env = "UNSET_PW"\n',
        name="redis.toml",
    )
    registry = Registry.from_config(redis_file, env={"MAJORDOMO_HEALTH_STORE": "memory"})
    assert isinstance(registry.health.store, InMemoryHealthStore)


@pytest.fixture
def redis_with_password() -> Iterator[tuple[RedisServer, str]]:
    """A private redis-server that requires a password (the shared one must stay open)."""
    reason = unavailable()
    if reason is not None:
        pytest.skip(reason)
    import redis

    server = RedisServer().start()
    password = "p@ss:word/with%odd chars"
    try:
        redis.Redis(host="127.0.0.1", port=server.port).config_set("requirepass", password)
        yield server, password
    finally:
        server.close()


async def test_the_redis_password_comes_from_password_env(
    tmp_path: Path, redis_with_password: tuple[RedisServer, str]
) -> None:
    """The store authenticates with the password from `password_env` (odd characters
    survive the URL), and writes under the file's prefix."""
    import redis.asyncio

    server, password = redis_with_password
    prefix = f"cfg-{uuid.uuid4().hex[:8]}:"
    path = write(
        tmp_path,
        f"""
        [health]
        failure_threshold = 1

        [health_store]
        url = "{server.url}"
        password_env = "REDIS_PW"
        prefix = "{prefix}"
        """,
    )
    async with Registry.from_config(path, env={"REDIS_PW": password}) as registry:
        store = registry.health.store
        assert isinstance(store, RedisHealthStore)
        response = await registry.parse("fake/head?script=503,fake/tail").generate("hi")
        assert response.model == "fake/tail"
        assert set(await store.snapshot()) == {"fake/head?script=503"}
        assert not store.degraded
    client = redis.asyncio.Redis(host="127.0.0.1", port=server.port, password=password)
    async with client:
        keys = await client.keys(f"*{prefix}*")  # the prefix may be wrapped in a hash tag
    assert keys, "nothing was written under the file's prefix"


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("text", "line", "needle"),
    [
        pytest.param(
            "[chain]\ntimeout = \n",
            "line 2, column 11: invalid TOML: Invalid value",
            "",
            id="syntax",
        ),
        pytest.param(
            "[providers.a]\ndsn = 'fake://'\n[providers.a]\n",
            "line 3, column 13: invalid TOML: Cannot declare ('providers', 'a') twice",
            "",
            id="syntax-duplicate-table",
        ),
        pytest.param(
            "[chains]\ntimeout = 3\n",
            "line 1: chains: unknown key",
            "(accepted: providers, aliases, chain, health, health_store, capabilities, limits)",
            id="unknown-section",
        ),
        pytest.param(
            "# comment\n[chain]\nmid_stream = 'raise'\ntimout = 3\n",
            "line 4: chain.timout: unknown key",
            "attempt_timeout, first_token_timeout",
            id="unknown-key",
        ),
        pytest.param(
            "[chain]\ntimeout = 'soon'\n",
            "line 2: chain.timeout: ",
            'expected a number of seconds or "none" (no limit), got the string "soon"',
            id="bad-type",
        ),
        pytest.param(
            "[chain]\ntransient_retries = 1.5\n",
            "line 2: chain.transient_retries: ",
            "expected a whole number, got the number 1.5",
            id="float-for-int",
        ),
        pytest.param(
            "[health]\nfailure_threshold = true\n",
            "line 2: health.failure_threshold: ",
            "expected a whole number, got the boolean true",
            id="bool-for-int",
        ),
        pytest.param(
            "[chain]\nmid_stream = 'retry'\n",
            "line 2: chain.mid_stream: ",
            'expected "raise" or "restart", got the string "retry"',
            id="choice",
        ),
        pytest.param(
            "[chain]\nfirst_token_timeout = true\n",
            "line 2: chain.first_token_timeout: ",
            'expected a number of seconds, "auto"',
            id="limit",
        ),
        pytest.param(
            "[chain]\npreset = 'fast'\n",
            "line 2: chain.preset: ",
            'expected "default" or "interactive"',
            id="preset",
        ),
        pytest.param(
            "[chain]\nadvance_on = ['AuthenticationError', 'NoSuchError']\n",
            "line 2: chain.advance_on: ",
            "not a provider error class: NoSuchError (accepted: AuthenticationError, ",
            id="advance-on",
        ),
        pytest.param(
            "[chain]\nadvance_on = 'AuthenticationError'\n",
            "line 2: chain.advance_on: ",
            "expected an array of strings",
            id="advance-on-not-a-list",
        ),
        pytest.param(
            "[chain]\nretry_backoff = 0.1\ntimeout = -1\n",
            "line 3: chain.timeout: ",
            "ChainConfig.timeout must be positive, got -1",
            id="library-refuses",
        ),
        pytest.param(
            "[health]\nbase_cooldown = 30\n",
            "line 2: health.base_cooldown: ",
            "max_cooldown must be >= base_cooldown",
            id="cross-field",
        ),
        pytest.param(
            "chain = 3\n",
            "line 1: chain: ",
            "expected a table, got the number 3",
            id="not-a-table",
        ),
        pytest.param(
            "[providers.work]\nkey_env = 'WORK_KEY'\n",
            "line 1: providers.work.dsn: ",
            'missing: every provider needs a dsn = "scheme://..."',
            id="no-dsn",
        ),
        pytest.param(
            "[providers.work]\ndsn = 'nonsense'\n",
            "line 2: providers.work.dsn: ",
            "not a DSN",
            id="bad-dsn",
        ),
        pytest.param(
            "[providers.work]\ndsn = 'antropic://'\n",
            "line 2: providers.work.dsn: ",
            "unknown DSN scheme 'antropic' (known schemes: anthropic, ",
            id="unknown-scheme",
        ),
        pytest.param(
            "[providers.flaky]\ndsn = 'fake://?bogus=1'\n",
            "line 2: providers.flaky.dsn: ",
            "bogus",
            id="factory-refuses",
        ),
        pytest.param(
            "[providers.my_prov]\ndsn = 'fake://'\n[providers.My-Prov]\ndsn = 'fake://'\n",
            "line 3: providers.My-Prov: ",
            "the same provider as providers.my_prov",
            id="duplicate-provider",
        ),
        pytest.param(
            "[providers.'a/b']\ndsn = 'fake://'\n",
            'line 1: providers."a/b": ',
            "invalid provider name",
            id="provider-name",
        ),
        pytest.param(
            "[aliases]\nfast = 'fake/a, slow'\nslow = 'fast'\n",
            "line 2: aliases.fast: ",
            "cycle",
            id="alias-cycle",
        ),
        pytest.param(
            "[aliases]\nfast = 'fake/a, nope'\n",
            "line 2: aliases.fast: ",
            "unknown alias 'nope'",
            id="alias-unknown",
        ),
        pytest.param(
            "[aliases]\nfast = ['fake/a']\n",
            "line 2: aliases.fast: ",
            'expected a spec such as "fake/a,fake/b", got an array',
            id="alias-type",
        ),
        pytest.param(
            "[capabilities.'local/*']\nvisoin = true\n",
            'line 2: capabilities."local/*".visoin: unknown key',
            "streaming, system_prompt, tools, json_mode, vision",
            id="capability-key",
        ),
        pytest.param(
            "[capabilities.'local/*']\ncontext_window = 'big'\n",
            'line 2: capabilities."local/*".context_window: ',
            'expected a whole number or "none" (unknown)',
            id="capability-value",
        ),
        pytest.param(
            "[capabilities.local]\nvision = true\n",
            "line 1: capabilities.local: ",
            'expected a "provider/model-id" pattern',
            id="capability-pattern",
        ),
        pytest.param(
            "[health_store]\nurl = 'http://cache:6379'\n",
            "line 2: health_store.url: ",
            'expected "memory" or a redis://, rediss:// or unix:// URL, got a http URL',
            id="store-scheme",
        ),
        pytest.param(
            "[health_store]\nurl = 'memory'\nprefix = 'x:'\n",
            "line 3: health_store.prefix: ",
            'applies to a Redis store only, not to url = "memory"',
            id="store-memory-options",
        ),
        pytest.param(
            "[health_store]\nurl = 'redis://127.0.0.1/0'\nrefresh_interval = 0\n",
            "line 3: health_store.refresh_interval: ",
            "expected a positive number of seconds, got the number 0",
            id="store-option",
        ),
        pytest.param(
            "[health_store]\nprefix = 'x:'\n",
            "line 1: health_store.url: ",
            'missing: "memory" or a redis:// URL',
            id="store-no-url",
        ),
        pytest.param(
            "[health_store]\nurl = 'redis://127.0.0.1/0'\npassword_env = 'REDIS_PW'\n",
            "line 3: health_store.password_env: ",
            "the environment variable REDIS_PW is not set (it holds the Redis password)",
            id="password-env-unset",
        ),
        pytest.param(
            "[providers]\nwork = { dsn = 'fake://', key_env = 'WORK_KEY', retries = 2 }\n",
            "line 2: providers.work.retries: unknown key",
            "(accepted: dsn, key_env, max_concurrency, rpm, tpm)",
            id="inline-table",
        ),
    ],
)
def test_a_bad_file_is_one_error_naming_the_file_line_and_key(
    tmp_path: Path, text: str, line: str, needle: str
) -> None:
    path = write(tmp_path, text)

    message = load_error(path)

    assert message.startswith(f"{path}, {line}"), message
    assert needle in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("text", "line", "needle"),
    [
        pytest.param(
            f"[providers.work]\ndsn = 'anthropic://{SECRET}@'\n",
            "line 2: providers.work.dsn: ",
            "the DSN holds a credential (not shown): a key is never written in this file. "
            "a secret is never written in this file: put the key in an environment variable "
            'and name it with key_env = "VAR"',
            id="dsn-credential",
        ),
        pytest.param(
            f"[providers.work]\ndsn = 'anthropic://'\napi_key = '{SECRET}'\n",
            "line 3: providers.work.api_key: ",
            'a secret is never written in this file: put the key in an environment variable and name it with key_env = "VAR"',  # noqa: E501
            id="api-key-entry",
        ),
        pytest.param(
            "[providers.work]\ndsn = 'anthropic://${ANTHROPIC_KEY}@'\n",
            "line 2: providers.work.dsn: ",
            'no ${VAR} expansion in this file: a secret is never written in this file: put the key in an environment variable and name it with key_env = "VAR"',  # noqa: E501
            id="expansion",
        ),
        pytest.param(
            f"[providers.work]\ndsn = 'anthropic://'\nkey_env = '{SECRET}'\n",
            "line 3: providers.work.key_env: ",
            "expected the NAME of an environment variable (letters, digits and '_', such as "
            "ANTHROPIC_WORK_KEY), not the secret itself (the value is not shown)",
            id="key-in-key-env",
        ),
        pytest.param(
            f"[health_store]\nurl = 'redis://:{SECRET}@cache:6379/0'\n",
            "line 2: health_store.url: ",
            'the URL holds a password (not shown): put the password in an environment variable and name it with password_env = "VAR"',  # noqa: E501
            id="store-password",
        ),
        pytest.param(
            f"[health_store]\nurl = 'redis://cache:6379/0?password={SECRET}'\n",
            "line 2: health_store.url: ",
            "the URL holds a password (not shown)",
            id="store-password-query",
        ),
        pytest.param(
            f"[health_store]\nurl = 'redis://cache/0'\npassword = '{SECRET}'\n",
            "line 3: health_store.password: ",
            'put the password in an environment variable and name it with password_env = "VAR"',
            id="store-password-entry",
        ),
    ],
)
def test_a_secret_in_the_file_is_refused_without_showing_it(
    tmp_path: Path, text: str, line: str, needle: str
) -> None:
    path = write(tmp_path, text)

    message = load_error(path)

    assert message.startswith(f"{path}, {line}"), message
    assert needle in message
    assert SECRET not in message
    assert SECRET[:12] not in message


def test_an_unreadable_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    assert load_error(missing) == (
        f"{missing}: cannot read the configuration file: No such file or directory"
    )
    binary = tmp_path / "latin1.toml"
    binary.write_bytes(b"[aliases]\nfast = 'caf\xe9'\n")
    assert load_error(binary) == f"{binary}, line 2: the file is not UTF-8 text"
    with_bom = tmp_path / "bom.toml"
    with_bom.write_bytes(b"\xef\xbb\xbf[aliases]\nfast = 'fake/a'\n")  # some editors add one
    assert Registry.from_config(with_bom, env={}).aliases == {"fast": "fake/a"}


def test_an_error_at_the_end_of_the_file(tmp_path: Path) -> None:
    """tomllib says "at end of document": the line is the file's last."""
    path = write(tmp_path, '[aliases]\nfast = ["fake/a",\n\n')
    assert load_error(path) == (
        f"{path}, line 2: invalid TOML: Invalid value (at the end of the file)"
    )


# --------------------------------------------------------------------------- lines


def test_the_line_scan_handles_toml_key_forms() -> None:
    """Dotted, quoted and inline keys, arrays of tables, and multi-line strings."""
    text = textwrap.dedent(
        """
        top.level = 1
        [providers."my.prov"]
        dsn = 'fake://'
        [ capabilities . 'local/*' ]   # spaces around the dots
        "vision" = true
        [aliases]
        note = \"\"\"
        fake = "not a key"
        \"\"\"
        chain.timeout = 4
        inline = { a = 1, "b c" = 2 }
        [[array.of]]
        x = 1
        """
    ).lstrip("\n")
    lines = _key_lines(text)
    assert _locate(lines, ("top", "level")) == 1
    assert _locate(lines, ("providers", "my.prov", "dsn")) == 3
    assert _locate(lines, ("capabilities", "local/*", "vision")) == 5
    assert _locate(lines, ("aliases", "fake")) == 6  # inside the string: its table
    assert _locate(lines, ("aliases", "chain", "timeout")) == 10
    assert _locate(lines, ("aliases", "inline", "b c")) == 11
    assert _locate(lines, ("array", "of", "x")) == 13
    assert _locate(lines, ("nowhere",)) is None


def test_load_config_is_pure(tmp_path: Path) -> None:
    """`load_config` reads no variable: the keys are read when a registry is built."""
    path = write(tmp_path, '[providers.work]\ndsn = "anthropic://"\nkey_env = "WORK_KEY"\n')
    file = load_config(path)
    assert [(entry.name, entry.dsn, entry.key_env) for entry in file.providers] == [
        ("work", "anthropic://", "WORK_KEY")
    ]
    assert file.where(("providers", "work", "key_env")) == f"{path}, line 3"


def test_capability_overrides_keep_their_order(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [capabilities."fake/*"]
        context_window = 1000
        image_mime_types = ["IMAGE/PNG"]

        [capabilities."fake/big*"]
        context_window = "none"
        max_image_bytes = 10
        """,
    )
    registry = Registry.from_config(path, env={})
    small, big = registry.capabilities("fake/small"), registry.capabilities("fake/big-one")
    assert (small.context_window, small.image_mime_types) == (1000, frozenset({"image/png"}))
    assert (big.context_window, big.max_image_bytes) == (None, 10)


def test_store_options_reach_the_store_and_its_checks(tmp_path: Path) -> None:
    """The store's own options pass to `RedisHealthStore`; what it refuses is blamed on
    the table (no connection is made: nothing listens on port 1)."""
    pytest.importorskip("redis")
    path = write(
        tmp_path,
        """
        [health_store]
        url = "redis://127.0.0.1:1/0?client_name=cfg"
        max_connections = 4
        pubsub = false
        cluster = false
        key_ttl = 120
        """,
    )
    store = Registry.from_config(path, env={}).health.store
    assert isinstance(store, RedisHealthStore)
    bad = write(
        tmp_path,
        '[health_store]\nurl = "redis://127.0.0.1:1/0"\nkey_ttl = 1\nprobe_lease = 5\n',
        name="bad.toml",
    )
    assert load_error(bad).startswith(
        f"{bad}, line 1: health_store: RedisHealthStore key_ttl must be >= probe_lease"
    )
