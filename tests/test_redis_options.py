"""The health store's URL is checked whole at construction.

Regression: an unknown or invalid option (`?bogus=1`, `?socket_timeout=abc`) passed
construction and broke the first call that recorded a failure with a raw TypeError or
ValueError from redis-py, exactly when failover was needed. Now every option is checked
when the store is made: a `ConfigurationError` names the option and the accepted ones,
and never shows the URL's password. No Redis server is needed: nothing connects.
"""

from __future__ import annotations

import pytest

from majordomo_async import ConfigurationError, HealthConfig, RedisHealthStore, Registry

pytest.importorskip("redis")

BASE = "redis://:hunter2@127.0.0.1:6379/0"


def error_for(url: str) -> str:
    """The message of the ConfigurationError that constructing a store from `url` raises."""
    with pytest.raises(ConfigurationError) as caught:
        RedisHealthStore(url, HealthConfig())
    message = str(caught.value)
    assert "hunter2" not in message
    return message


@pytest.mark.parametrize("name", ["bogus", "socket_timeot", "PREFIX", "retry_on_error"])
def test_an_unknown_option_is_named_with_the_accepted_ones(name: str) -> None:
    message = error_for(f"{BASE}?{name}=1")

    assert f"unknown health store URL option {name!r}" in message
    for accepted in ("prefix", "timeout", "probe_lease", "pubsub", "cluster", "db"):
        assert accepted in message
    assert "ssl_certfile" not in message  # only with rediss://


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("timeout=abc", "timeout='abc' is not a number of seconds"),
        ("key_ttl=", "key_ttl='' is not a number of seconds"),
        ("refresh_interval=nan", "refresh_interval='nan' is not a number of seconds"),
        ("probe_lease=inf", "probe_lease='inf' is not a number of seconds"),
        ("max_connections=1.5", "max_connections='1.5' is not a whole number"),
        ("max_connections=-1", "max_connections='-1' is not a whole number"),
        ("db=two", "db='two' is not a whole number"),
        ("health_check_interval=soon", "health_check_interval='soon' is not a whole number"),
        ("socket_keepalive=maybe", "socket_keepalive='maybe' is not yes or no"),
        ("pubsub=2", "pubsub='2' is not yes or no"),
    ],
)
def test_an_invalid_value_is_named(query: str, expected: str) -> None:
    assert expected in error_for(f"{BASE}?{query}")


@pytest.mark.parametrize("name", ["socket_timeout", "socket_connect_timeout"])
def test_timeouts_the_store_sets_itself_are_refused(name: str) -> None:
    """`?socket_timeout=abc` fails at once, valid or not: the store's `timeout` rules."""
    for value in ("abc", "5"):
        message = error_for(f"{BASE}?{name}={value}")
        assert f"option {name} is not accepted (this store sets it from timeout=)" in message
        assert "accepted: " in message


def test_credentials_in_the_query_are_refused_without_being_shown() -> None:
    message = error_for("redis://127.0.0.1:6379/0?password=hunter2")

    assert "option password is not accepted" in message
    assert "redis://user:password@host" in message


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (f"{BASE}?ssl_certfile=/tmp/cert.pem", "ssl_certfile needs a rediss:// URL"),
        (f"{BASE}?timeout=1&timeout=2", "option timeout is given twice"),
        ("redis://:hunter2@127.0.0.1:port/0", "the port is not a number"),
        ("redis://:hunter2@127.0.0.1:6379/zero", "the database (the path) must be a number"),
        ("unix://", "unix:// needs the socket's path"),
        ("http://:hunter2@127.0.0.1:80/", "unsupported health store"),
        (f"{BASE[:-2]}/1?cluster=yes", "a Redis Cluster has only database 0"),
        (f"{BASE}?timeout=0", "timeout must be positive"),
        (f"{BASE}?probe_lease=7200", "key_ttl must be >= probe_lease"),
    ],
)
def test_other_bad_urls(url: str, expected: str) -> None:
    assert expected in error_for(url)


@pytest.mark.parametrize(
    "url",
    [
        f"{BASE}?prefix=svc:&key_ttl=60&timeout=0.5&refresh_interval=1&probe_lease=30",
        f"{BASE}?max_connections=4&pubsub=no&client_name=svc&health_check_interval=30",
        f"{BASE}?socket_keepalive=yes&db=3",
        "rediss://:hunter2@127.0.0.1:6380/0?ssl_cert_reqs=none&ssl_check_hostname=false",
        "unix:///run/redis.sock?db=2&prefix=svc:",
        "redis://127.0.0.1:7000?cluster=yes",
    ],
)
def test_accepted_urls_construct(url: str) -> None:
    RedisHealthStore(url, HealthConfig())


def test_options_reach_the_store_and_redis_py() -> None:
    """The store's own options configure it; the rest reach redis-py's URL untouched."""
    store = RedisHealthStore(
        f"{BASE}?prefix=svc:&max_connections=3&pubsub=off&client_name=svc&db=2",
        HealthConfig(),
    )

    assert store.prefix == "svc:"
    assert (store._max_connections, store._pubsub_on, store._publish_to) == (3, False, "")
    assert store._url == "redis://:hunter2@127.0.0.1:6379/0?client_name=svc&db=2"


def test_the_environment_variable_names_itself_in_the_error() -> None:
    """Through the Registry: the same check, prefixed with the variable's name."""
    with pytest.raises(ConfigurationError) as caught:
        Registry(env={"MAJORDOMO_HEALTH_STORE": f"{BASE}?bogus=1"})

    assert str(caught.value).startswith("MAJORDOMO_HEALTH_STORE: unknown health store URL")
    assert "hunter2" not in str(caught.value)
