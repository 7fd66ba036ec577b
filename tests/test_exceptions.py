"""The error hierarchy: the `classify` policy table, messages, pickling, and the chain's group."""

from __future__ import annotations

import pickle
from datetime import datetime

import pytest

import majordomo_async
from majordomo_async import (
    AliasCycleError,
    AuthenticationError,
    BadRequestError,
    ChainExhaustedError,
    ClientDisconnectedError,
    ConfigurationError,
    ContentPolicyError,
    ContextLengthError,
    DSNError,
    ErrorClass,
    ImageDownloadError,
    MajordomoError,
    ModelNotFoundError,
    ModelProtocolError,
    OverloadedError,
    ProviderConnectionError,
    ProviderError,
    ProviderStatusError,
    ProviderTimeoutError,
    QuotaExceededError,
    RateLimitError,
    ResponseFormatError,
    ServerError,
    SpecError,
    StreamClosedError,
    StreamConsumedError,
    StreamError,
    StreamNotFinishedError,
    StreamTruncatedError,
    TargetFailure,
    TargetSkippedError,
    UnknownProviderError,
    UnsupportedRequestError,
    classify,
)
from majordomo_async._exceptions import linked_errors

TRANSIENT = ErrorClass.TRANSIENT
PERMANENT = ErrorClass.PERMANENT


def caused(exc: Exception, cause: Exception) -> Exception:
    """`exc` as if raised `from cause`."""
    exc.__cause__ = cause
    return exc


# --------------------------------------------------------------------------- classify


CLASSIFY_TABLE: list[tuple[str, Exception, ErrorClass]] = [
    # Provider error classes decide by type.
    ("rate-limit", RateLimitError("slow down", status=429), TRANSIENT),
    ("quota-is-a-rate-limit-but-permanent", QuotaExceededError("no credit", status=429), PERMANENT),
    ("overloaded-529", OverloadedError("busy", status=529), TRANSIENT),
    ("overloaded-503", OverloadedError("busy", status=503), TRANSIENT),
    ("server-error", ServerError("oops", status=500), TRANSIENT),
    ("auth-401", AuthenticationError("bad key", status=401), PERMANENT),
    ("auth-403", AuthenticationError("forbidden", status=403), PERMANENT),
    ("model-not-found", ModelNotFoundError("no such model", status=404), PERMANENT),
    ("bad-request", BadRequestError("malformed", status=400), PERMANENT),
    ("context-length", ContextLengthError("too long", status=400), PERMANENT),
    ("content-policy", ContentPolicyError("refused", status=400), PERMANENT),
    ("unsupported-request", UnsupportedRequestError("no images"), PERMANENT),
    ("image-download", ImageDownloadError("HTTP 404", status=404), PERMANENT),
    ("connection", ProviderConnectionError("reset"), TRANSIENT),
    ("timeout", ProviderTimeoutError("no answer"), TRANSIENT),
    ("truncated-stream", StreamTruncatedError("cut short"), TRANSIENT),
    ("unparseable-reply", ResponseFormatError("not json"), TRANSIENT),
    # A bare status error decides by its status.
    *(
        (f"status-{status}", ProviderStatusError("x", status=status), TRANSIENT)
        for status in (408, 409, 425, 429, 500, 503, 599)
    ),
    *(
        (f"status-{status}", ProviderStatusError("x", status=status), PERMANENT)
        for status in (400, 404, 418)
    ),
    ("status-none", ProviderStatusError("x"), PERMANENT),
    # The provider's explicit verdict wins over the type and status rules.
    ("should-retry-true", BadRequestError("x", status=400, should_retry=True), TRANSIENT),
    ("should-retry-false", ServerError("x", status=500, should_retry=False), PERMANENT),
    ("should-retry-false-conn", ProviderConnectionError("x", should_retry=False), PERMANENT),
    ("should-retry-true-418", ProviderStatusError("x", status=418, should_retry=True), TRANSIENT),
    # Stdlib network failures are transient.
    ("stdlib-timeout", TimeoutError(), TRANSIENT),
    ("stdlib-connection", ConnectionError(), TRANSIENT),
    ("stdlib-connection-reset", ConnectionResetError(), TRANSIENT),
    # Bugs are permanent...
    ("type-error", TypeError("bug"), PERMANENT),
    ("key-error", KeyError("bug"), PERMANENT),
    ("value-error", ValueError("bug"), PERMANENT),
    # ...unless raised from a transient error.
    ("runtime-from-connection", caused(RuntimeError("x"), ProviderConnectionError("r")), TRANSIENT),
    ("runtime-from-timeout", caused(RuntimeError("x"), TimeoutError()), TRANSIENT),
    ("runtime-from-type-error", caused(RuntimeError("x"), TypeError("bug")), PERMANENT),
    # Our own non-provider errors are the caller's to fix.
    ("spec-error", SpecError("bad spec"), PERMANENT),
    ("configuration-error", ConfigurationError("bad option"), PERMANENT),
    ("stream-misuse", StreamConsumedError("read twice"), PERMANENT),
]


@pytest.mark.parametrize(
    ("error", "expected"),
    [pytest.param(error, expected, id=name) for name, error, expected in CLASSIFY_TABLE],
)
def test_classify_table(error: Exception, expected: ErrorClass) -> None:
    """`classify` gives each error the class its docstring's rules assign."""
    assert classify(error) is expected


def test_classify_decides_bare_status_errors_per_instance() -> None:
    """The per-type memo never leaks one status error's verdict to another of the same type."""

    class CustomStatusError(ProviderStatusError):
        pass

    assert classify(ProviderStatusError("x", status=503)) is TRANSIENT
    assert classify(ProviderStatusError("x", status=400)) is PERMANENT
    assert classify(CustomStatusError("x", status=400)) is PERMANENT
    assert classify(CustomStatusError("x", status=502)) is TRANSIENT


def test_classify_obeys_should_retry_after_the_type_was_memoised() -> None:
    """An explicit verdict still wins once a type's default verdict is cached."""
    assert classify(RateLimitError("x", status=429)) is TRANSIENT
    assert classify(RateLimitError("x", status=429, should_retry=False)) is PERMANENT
    assert classify(AuthenticationError("x", status=401)) is PERMANENT
    assert classify(AuthenticationError("x", status=401, should_retry=True)) is TRANSIENT


def test_classify_terminates_on_a_cause_cycle() -> None:
    """Two errors that name each other as cause are classified, not a RecursionError."""
    first, second = RuntimeError("first"), RuntimeError("second")
    first.__cause__, second.__cause__ = second, first

    assert classify(first) is PERMANENT


# --------------------------------------------------------------------------- ProviderError


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, "it broke"),
        ({"status": 429}, "429: it broke"),
        ({"code": "rate_limited"}, "rate_limited: it broke"),
        ({"status": 429, "code": "rate_limited"}, "429 rate_limited: it broke"),
        ({"retry_after": 1.5}, "it broke (retry after 1.5 s)"),
        ({"retry_after": 0.0}, "it broke (retry after 0 s)"),
        ({"request_id": "req_9"}, "it broke [request id req_9]"),
        (
            {"status": 503, "code": "overloaded", "retry_after": 20, "request_id": "req_1"},
            "503 overloaded: it broke (retry after 20 s) [request id req_1]",
        ),
    ],
    ids=["bare", "status", "code", "status+code", "retry", "retry-zero", "request-id", "all"],
)
def test_provider_error_message_is_built_from_fields(
    fields: dict[str, object], expected: str
) -> None:
    """`str()` shows status, code, retry_after and request id only when they are set."""
    error = ProviderError("it broke", provider="openai", model="gpt-4o", **fields)  # type: ignore[arg-type]

    assert str(error) == expected
    assert error.message == "it broke"


def test_provider_error_key_and_fields() -> None:
    """The fields are kept as given and `.key` is "provider/model-id"."""
    error = RateLimitError(
        "slow",
        provider="openrouter",
        model="meta/llama-3",
        status=429,
        code="rl",
        retry_after=2.0,
        request_id="abc",
        should_retry=True,
    )

    assert error.key == "openrouter/meta/llama-3"
    assert (error.provider, error.model, error.status, error.code) == (
        "openrouter",
        "meta/llama-3",
        429,
        "rl",
    )
    assert (error.retry_after, error.request_id, error.should_retry) == (2.0, "abc", True)


# --------------------------------------------------------------------------- pickling

PROVIDER_ERROR_TYPES: list[type[ProviderError]] = [
    ProviderError,
    ProviderConnectionError,
    ProviderTimeoutError,
    StreamTruncatedError,
    ResponseFormatError,
    UnsupportedRequestError,
    ImageDownloadError,
    ProviderStatusError,
    AuthenticationError,
    ModelNotFoundError,
    BadRequestError,
    ContextLengthError,
    ContentPolicyError,
    RateLimitError,
    QuotaExceededError,
    OverloadedError,
    ServerError,
]

PROVIDER_FIELDS = ("provider", "model", "status", "code", "retry_after", "request_id")


def exported_error_types() -> set[type[BaseException]]:
    return {
        obj
        for name in majordomo_async.__all__
        if isinstance(obj := getattr(majordomo_async, name), type)
        and issubclass(obj, BaseException)
    }


def test_the_pickle_tables_cover_every_exported_error() -> None:
    """Every exported error class appears in one of the pickle round-trip tests below."""
    covered = (
        set(PROVIDER_ERROR_TYPES)
        | set(SIMPLE_ERRORS)
        | {
            AliasCycleError,
            UnknownProviderError,
            TargetSkippedError,
            ChainExhaustedError,
        }
    )

    assert exported_error_types() - covered == set()


@pytest.mark.parametrize("cls", PROVIDER_ERROR_TYPES, ids=lambda cls: cls.__name__)
def test_provider_errors_pickle_with_their_fields(cls: type[ProviderError]) -> None:
    """Every ProviderError class survives a pickle round trip with all its fields."""
    error = cls(
        "went wrong",
        provider="anthropic",
        model="claude-x",
        status=529,
        code="overloaded_error",
        retry_after=3.5,
        request_id="req_77",
        should_retry=False,
    )

    copy = pickle.loads(pickle.dumps(error))

    assert type(copy) is cls
    assert str(copy) == str(error)
    assert copy.message == "went wrong"
    for field in (*PROVIDER_FIELDS, "should_retry"):
        assert getattr(copy, field) == getattr(error, field), field


SIMPLE_ERRORS: list[type[MajordomoError]] = [
    MajordomoError,
    ConfigurationError,
    SpecError,
    DSNError,
    StreamError,
    StreamConsumedError,
    StreamClosedError,
    StreamNotFinishedError,
    ModelProtocolError,
    ClientDisconnectedError,
]


@pytest.mark.parametrize("cls", SIMPLE_ERRORS, ids=lambda cls: cls.__name__)
def test_message_only_errors_pickle(cls: type[MajordomoError]) -> None:
    """Errors that carry only a message survive a pickle round trip."""
    copy = pickle.loads(pickle.dumps(cls("a message")))

    assert type(copy) is cls
    assert str(copy) == "a message"


def test_alias_cycle_error_pickles_with_its_cycle() -> None:
    """AliasCycleError keeps `.cycle` and its message through pickle."""
    error = AliasCycleError(["fast", "cheap", "fast"])

    copy = pickle.loads(pickle.dumps(error))

    assert type(copy) is AliasCycleError
    assert copy.cycle == ("fast", "cheap", "fast")
    assert str(copy) == str(error) == "alias cycle: fast -> cheap -> fast"


def test_unknown_provider_error_pickles_with_its_fields() -> None:
    """UnknownProviderError keeps `.name` and `.env_var` through pickle."""
    error = UnknownProviderError("my-prov", "LLM_MY_PROV")

    copy = pickle.loads(pickle.dumps(error))

    assert type(copy) is UnknownProviderError
    assert (copy.name, copy.env_var) == ("my-prov", "LLM_MY_PROV")
    assert str(copy) == str(error)


def test_target_skipped_error_pickles_with_its_fields() -> None:
    """TargetSkippedError keeps key, reason and `until` through pickle."""
    error = TargetSkippedError.backed_off("p/m", datetime(2025, 6, 1, 12, 0, 1, 250000))

    copy = pickle.loads(pickle.dumps(error))

    assert type(copy) is TargetSkippedError
    assert (copy.key, copy.reason, copy.until) == (error.key, error.reason, error.until)
    assert str(copy) == str(error)


def test_chain_exhausted_error_pickles_with_its_failures() -> None:
    """ChainExhaustedError keeps every failure (key, attempt, error) in order through pickle."""
    error = ChainExhaustedError(
        [
            TargetFailure("a/x", RateLimitError("slow", provider="a", model="x", status=429)),
            TargetFailure("a/x", RateLimitError("slower", status=429), attempt=2),
            TargetFailure("b/y", TargetSkippedError("b/y", "skipped (deadline)")),
        ]
    )

    copy = pickle.loads(pickle.dumps(error))

    assert type(copy) is ChainExhaustedError
    assert [(f.key, f.attempt, type(f.error), str(f.error)) for f in copy.failures] == [
        (f.key, f.attempt, type(f.error), str(f.error)) for f in error.failures
    ]
    assert copy.exceptions == tuple(f.error for f in copy.failures)
    assert str(copy) == str(error)


# --------------------------------------------------------------------------- ChainExhaustedError


def sample_failures() -> list[TargetFailure]:
    return [
        TargetFailure("openai/gpt-4o", RateLimitError("slow", status=429)),
        TargetFailure("openai/gpt-4o", RateLimitError("slower", status=429), attempt=2),
        TargetFailure(
            "anthropic/claude",
            TargetSkippedError.backed_off("anthropic/claude", datetime(2025, 1, 1, 9, 30, 0)),
        ),
        TargetFailure("gemini/flash", AuthenticationError("bad key", status=401)),
    ]


def test_chain_exhausted_error_is_a_group_and_ours() -> None:
    """It is an ExceptionGroup and a MajordomoError; `.failures`, `.exceptions` agree in order."""
    failures = sample_failures()

    error = ChainExhaustedError(failures)

    assert isinstance(error, ExceptionGroup)
    assert isinstance(error, MajordomoError)
    assert error.failures == tuple(failures)
    assert error.exceptions == tuple(failure.error for failure in failures)
    assert all(a is b for a, b in zip(error.exceptions, (f.error for f in failures), strict=True))


def test_chain_exhausted_error_str_lists_every_target_with_attempts() -> None:
    """`str()` names every attempt in order, with retry numbers and the skip reason."""
    error = ChainExhaustedError(sample_failures())

    assert str(error) == (
        "all chain targets failed: "
        "openai/gpt-4o: RateLimitError: 429: slow; "
        "openai/gpt-4o (attempt 2): RateLimitError: 429: slower; "
        "anthropic/claude: skipped (backed off until 09:30:00.000); "
        "gemini/flash: AuthenticationError: 401: bad key"
    )


def test_except_star_splits_failures_by_type() -> None:
    """`except*` on a subtype yields a ChainExhaustedError keeping only the matching failures."""
    failures = sample_failures()
    rate_limited: ChainExhaustedError | None = None
    rest: ChainExhaustedError | None = None

    try:
        try:
            raise ChainExhaustedError(failures)
        except* RateLimitError as group:
            assert isinstance(group, ChainExhaustedError)
            rate_limited = group
    except* MajordomoError as group:
        assert isinstance(group, ChainExhaustedError)
        rest = group

    assert rate_limited is not None and rest is not None
    assert rate_limited.failures == (failures[0], failures[1])
    assert rest.failures == (failures[2], failures[3])
    assert rest.exceptions == (failures[2].error, failures[3].error)


def test_chain_exhausted_error_needs_a_failure() -> None:
    """An empty failure list is refused with ValueError."""
    with pytest.raises(ValueError, match="at least one"):
        ChainExhaustedError([])


def test_target_failure_knows_a_skip() -> None:
    """`TargetFailure.skipped` is true only for a TargetSkippedError."""
    failures = sample_failures()
    tried, skipped = failures[0], failures[2]

    assert skipped.skipped is True
    assert tried.skipped is False


# --------------------------------------------------------------------------- other errors


@pytest.mark.parametrize(
    ("until", "text"),
    [
        (datetime(2025, 3, 4, 5, 6, 7, 890123), "skipped (backed off until 05:06:07.890)"),
        (datetime(2025, 3, 4, 23, 59, 59, 999999), "skipped (backed off until 23:59:59.999)"),
        (datetime(2025, 3, 4, 0, 0, 0, 1000), "skipped (backed off until 00:00:00.001)"),
    ],
)
def test_backed_off_formats_hh_mm_ss_mmm(until: datetime, text: str) -> None:
    """`TargetSkippedError.backed_off` says "skipped (backed off until HH:MM:SS.mmm)"."""
    error = TargetSkippedError.backed_off("p/m", until)

    assert str(error) == error.reason == text
    assert (error.key, error.until) == ("p/m", until)


def test_timeout_error_is_a_connection_and_timeout_error() -> None:
    """ProviderTimeoutError is caught by `except TimeoutError` and `except ConnectionError`."""
    error = ProviderTimeoutError("no answer")

    assert isinstance(error, TimeoutError)
    assert isinstance(error, ConnectionError)
    assert isinstance(error, ProviderConnectionError)
    assert isinstance(ProviderConnectionError("reset"), ConnectionError)
    assert not isinstance(ProviderConnectionError("reset"), TimeoutError)


@pytest.mark.parametrize(
    "error",
    [
        ConfigurationError("x"),
        SpecError("x"),
        DSNError("x"),
        AliasCycleError(["a", "a"]),
        UnknownProviderError("p", "LLM_P"),
    ],
    ids=lambda error: type(error).__name__,
)
def test_configuration_errors_are_value_errors(error: Exception) -> None:
    """Every configuration error is a ValueError (and a MajordomoError)."""
    assert isinstance(error, ValueError)
    assert isinstance(error, MajordomoError)


@pytest.mark.parametrize(
    "cls",
    [StreamError, StreamConsumedError, StreamClosedError, StreamNotFinishedError],
    ids=lambda cls: cls.__name__,
)
def test_stream_errors_are_runtime_errors(cls: type[StreamError]) -> None:
    """Stream misuse errors are RuntimeErrors (and MajordomoErrors)."""
    assert issubclass(cls, RuntimeError)
    assert issubclass(cls, MajordomoError)


def test_unknown_provider_error_names_the_env_var() -> None:
    """The message names the provider and the `LLM_<NAME>` variable that was checked."""
    error = UnknownProviderError("my-prov", "LLM_MY_PROV")

    assert (error.name, error.env_var) == ("my-prov", "LLM_MY_PROV")
    assert "'my-prov'" in str(error)
    assert "LLM_MY_PROV is not set" in str(error)


def test_linked_errors_walk_causes_and_contexts_once_each() -> None:
    """Every error a chain of `raise ... from` and `except:` blocks links, each once, even
    when the links loop back (as a re-raised error's context can)."""
    root = ValueError("root")
    context = KeyError("context")
    middle = TypeError("middle")
    middle.__cause__ = root
    middle.__context__ = context
    top = RuntimeError("top")
    top.__cause__ = middle
    top.__context__ = middle
    context.__context__ = top  # a loop back to the start
    assert list(map(str, linked_errors(top))) == ["top", "middle", "'context'", "root"]
