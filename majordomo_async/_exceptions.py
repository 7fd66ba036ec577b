"""The error hierarchy, and the one retry policy: `classify()`.

```
MajordomoError
├── ConfigurationError (ValueError)        the user must fix an input
│   ├── SpecError                          a model spec is malformed or names nothing
│   │   └── AliasCycleError                .cycle = ("fast", "cheap", "fast")
│   ├── DSNError                           credential redacted from the message
│   └── UnknownProviderError               .name, .env_var ("LLM_MY_PROV")
├── ProviderError                          .provider .model .status .code .retry_after .request_id
│   ├── ProviderConnectionError (ConnectionError)   refused, reset, DNS
│   │   └── ProviderTimeoutError (TimeoutError)     .limit: connect, headers, first_token, ...
│   ├── StreamTruncatedError               body ended before the provider's terminal signal
│   ├── ResponseFormatError                a reply we cannot parse
│   ├── UnsupportedRequestError            the target's capabilities cannot take the request
│   │   └── ImageDownloadError             an image URL could not be fetched for inlining
│   └── ProviderStatusError                an HTTP error status (or an in-band error event)
│       ├── AuthenticationError            401 / 403
│       ├── ModelNotFoundError             404 naming the model
│       ├── BadRequestError                400 / 413 / 422
│       │   ├── ContextLengthError
│       │   └── ContentPolicyError
│       ├── RateLimitError                 429
│       │   └── QuotaExceededError         429 that means quota or spend cap: not retryable
│       ├── OverloadedError                529, 503
│       └── ServerError                    other 5xx
├── TargetSkippedError                     a chain target was not tried (benched, deadline)
├── ModelProtocolError (TypeError)         a model broke the AsyncModel protocol (names the target)
├── ClientDisconnectedError                a service's HTTP client left (`cancel_on_disconnect`)
├── StreamError (RuntimeError)             misuse of a Stream
│   ├── StreamConsumedError
│   ├── StreamClosedError
│   └── StreamNotFinishedError
└── ChainExhaustedError (ExceptionGroup)   every target failed or was skipped
```

Cancellation is never an error here: it is a `BaseException` and passes through
`classify()` untouched, because `classify()` only ever sees `Exception`.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Any

import attrs

__all__ = [
    "AliasCycleError",
    "AuthenticationError",
    "BadRequestError",
    "ChainExhaustedError",
    "ConfigurationError",
    "ContentPolicyError",
    "ContextLengthError",
    "DSNError",
    "ErrorClass",
    "MajordomoError",
    "ModelNotFoundError",
    "ModelProtocolError",
    "OverloadedError",
    "ProviderConnectionError",
    "ProviderError",
    "ProviderStatusError",
    "ProviderTimeoutError",
    "QuotaExceededError",
    "RateLimitError",
    "ResponseFormatError",
    "ServerError",
    "SpecError",
    "StreamClosedError",
    "StreamConsumedError",
    "StreamError",
    "StreamNotFinishedError",
    "StreamTruncatedError",
    "TargetFailure",
    "TargetSkippedError",
    "UnknownProviderError",
    "UnsupportedRequestError",
    "classify",
]


class MajordomoError(Exception):
    """The root of every error this library raises on purpose."""


# --------------------------------------------------------------------------- configuration


class ConfigurationError(MajordomoError, ValueError):
    """An input the user must fix: a spec, a DSN, an option, a provider name."""


class SpecError(ConfigurationError):
    """A model spec is malformed, or one of its elements names nothing."""


class AliasCycleError(SpecError):
    """Alias expansion looped. `cycle` holds the names in order, first name repeated last."""

    def __init__(self, cycle: Sequence[str]) -> None:
        self.cycle = tuple(cycle)
        super().__init__(f"alias cycle: {' -> '.join(self.cycle)}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.cycle,))


class DSNError(ConfigurationError):
    """A DSN could not be parsed. The message never contains the credential."""


class UnknownProviderError(ConfigurationError):
    """No provider has this name: not registered, and no `LLM_<NAME>` variable defines one."""

    def __init__(self, name: str, env_var: str) -> None:
        self.name = name
        self.env_var = env_var
        super().__init__(
            f"unknown provider {name!r}: not registered and {env_var} is not set "
            f"(set {env_var} to a DSN such as 'openai://KEY@api.openai.com/v1', "
            "or call Registry.register_provider)"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.name, self.env_var))


# --------------------------------------------------------------------------- provider errors


class ProviderError(MajordomoError):
    """A target failed to answer. Fields first; the message is built from them.

    Attributes:
        provider: registry name of the provider ("openai", "m1").
        model: the model id as the provider knows it.
        status: HTTP status, or None when there was no HTTP answer.
        code: the provider's own error code or type ("insufficient_quota"), if any.
        retry_after: seconds the provider asked us to wait, if it said so.
        request_id: the provider's request id, if it sent one (quote it to their support).
        should_retry: the provider's explicit verdict (`x-should-retry`), overriding
            the status rules when not None.
    """

    def __init__(
        self,
        message: str,
        *,
        provider: str = "",
        model: str = "",
        status: int | None = None,
        code: str | None = None,
        retry_after: float | None = None,
        request_id: str | None = None,
        should_retry: bool | None = None,
    ) -> None:
        self.message = message
        self.provider = provider
        self.model = model
        self.status = status
        self.code = code
        self.retry_after = retry_after
        self.request_id = request_id
        self.should_retry = should_retry
        super().__init__(self._render())

    @property
    def key(self) -> str:
        """The "provider/model-id" key of the target that failed."""
        return f"{self.provider}/{self.model}"

    def _render(self) -> str:
        head = []
        if self.status is not None:
            head.append(str(self.status))
        if self.code:
            head.append(self.code)
        text = f"{' '.join(head)}: {self.message}" if head else self.message
        if self.retry_after is not None:
            text += f" (retry after {self.retry_after:g} s)"
        if self.request_id:
            text += f" [request id {self.request_id}]"
        return text

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_provider_error, (type(self), self.message, self._fields()))

    def _fields(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "model": self.model,
            "status": self.status,
            "code": self.code,
            "retry_after": self.retry_after,
            "request_id": self.request_id,
            "should_retry": self.should_retry,
        }


def _rebuild_provider_error(
    cls: type[ProviderError], message: str, fields: dict[str, Any]
) -> ProviderError:
    return cls(message, **fields)


class ProviderConnectionError(ProviderError, ConnectionError):
    """The connection failed: refused, reset, DNS, closed early."""


class ProviderTimeoutError(ProviderConnectionError, TimeoutError):
    """No answer in time. `limit` names the limit that ran out:

    - "connect": TCP connect and TLS handshake;
    - "headers": a stream's response headers;
    - "generate": a generate's reply (its headers come with the whole answer);
    - "first_token": a stream's first content event after its headers;
    - "idle": a silent gap in a stream (or a reply body) after its first bytes;
    - "attempt": the chain's `attempt_timeout`;
    - "deadline": the call's own deadline (`Request.timeout` / `ChainConfig.timeout`):
      the caller's budget ran out, which says nothing of the target's health;
    - None: a timeout the transport could not attribute.
    """

    def __init__(self, message: str, *, limit: str | None = None, **fields: Any) -> None:
        self.limit = limit
        super().__init__(message, **fields)

    def _fields(self) -> dict[str, Any]:
        return {**super()._fields(), "limit": self.limit}


class StreamTruncatedError(ProviderError):
    """The body ended before the provider's terminal signal: the answer is incomplete."""


class ResponseFormatError(ProviderError):
    """The provider's reply could not be parsed (the decoding error is the `__cause__`)."""


class UnsupportedRequestError(ProviderError):
    """The target cannot take this request by its capabilities (images, tools, JSON mode)."""


class ImageDownloadError(UnsupportedRequestError):
    """An image URL had to be downloaded for a target that takes only inline images, and
    the download failed (HTTP error, too large, not an image, network, timeout).

    Like any unsupported request, it moves the chain on without a health penalty: a
    target that takes image URLs may still answer.
    """


class ProviderStatusError(ProviderError):
    """The provider answered with an error status (or an in-band error event)."""


class AuthenticationError(ProviderStatusError):
    """The credential is missing, wrong or lacks permission (401/403)."""


class ModelNotFoundError(ProviderStatusError):
    """The provider does not serve this model id, or the key has no access to it."""


class BadRequestError(ProviderStatusError):
    """The provider rejected the request itself (400/413/422)."""


class ContextLengthError(BadRequestError):
    """The request does not fit the model's context window."""


class ContentPolicyError(BadRequestError):
    """The provider refused the request on content-policy grounds."""


class RateLimitError(ProviderStatusError):
    """Too many requests (429): clears with time; honour `retry_after`."""


class QuotaExceededError(RateLimitError):
    """The quota or spend cap is exhausted: a 429 that will not clear by retrying."""


class OverloadedError(ProviderStatusError):
    """The provider is over capacity (529, 503)."""


class ServerError(ProviderStatusError):
    """The provider failed internally (5xx)."""


# --------------------------------------------------------------------------- chain errors


def _clock_text(when: datetime) -> str:
    return when.strftime("%H:%M:%S.") + f"{when.microsecond // 1000:03d}"


class TargetSkippedError(MajordomoError):
    """A chain target was not tried: benched by the health tracker, or out of time.

    Attributes:
        key: the target's "provider/model-id".
        until: wall-clock time the target's cooldown ends, when it is benched.
    """

    def __init__(self, key: str, reason: str, until: datetime | None = None) -> None:
        self.key = key
        self._reason: str | None = reason
        self._until = until
        self._wall: Callable[[], datetime] | None = None
        super().__init__()

    @classmethod
    def backed_off(cls, key: str, until: datetime | Callable[[], datetime]) -> TargetSkippedError:
        """The target is benched until `until` (wall clock).

        `until` may be a callable: skips are recorded on every call that meets a benched
        target, so the wall-clock conversion and the text are only made when read.
        """
        skip = cls(key, "", None)
        skip._reason = None
        if callable(until):
            skip._wall = until
        else:
            skip._until = until
        return skip

    @property
    def until(self) -> datetime | None:
        """Wall-clock time the target's cooldown ends, when it is benched."""
        if self._until is None and self._wall is not None:
            self._until = self._wall()
        return self._until

    @property
    def reason(self) -> str:
        """Why the target was not tried."""
        if self._reason is None:
            until = self.until
            assert until is not None
            self._reason = f"skipped (backed off until {_clock_text(until)})"
        return self._reason

    def __str__(self) -> str:
        return self.reason

    def __repr__(self) -> str:
        return f"TargetSkippedError({self.key!r}, {self.reason!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.key, self.reason, self.until))


@attrs.frozen
class TargetFailure:
    """One failed attempt (or skip) of a chain target, in the order it happened."""

    key: str
    """The target's "provider/model-id"."""
    error: Exception
    """Why: the provider error, or a `TargetSkippedError`."""
    attempt: int = 1
    """1 for the first attempt on this target, 2 for its first retry, and so on."""

    @property
    def skipped(self) -> bool:
        """True when the target was not tried at all."""
        return isinstance(self.error, TargetSkippedError)

    def __str__(self) -> str:
        attempt = f" (attempt {self.attempt})" if self.attempt > 1 else ""
        return f"{self.key}{attempt}: {_describe(self.error)}"


def _describe(error: BaseException) -> str:
    if isinstance(error, MajordomoError):
        return (
            f"{type(error).__name__}: {error}"
            if not isinstance(error, TargetSkippedError)
            else str(error)
        )
    return f"{type(error).__name__}: {error}"


class ChainExhaustedError(MajordomoError, ExceptionGroup[Exception]):
    """Every target of a chain failed or was skipped.

    An `ExceptionGroup`, so `except* RateLimitError:` works; `failures` keeps
    every attempt and skip in order with its target key, and `str()` lists them all.
    """

    failures: tuple[TargetFailure, ...]

    def __new__(cls, failures: Sequence[TargetFailure]) -> ChainExhaustedError:
        failures = tuple(failures)
        if not failures:
            raise ValueError("ChainExhaustedError needs at least one failure")
        self = super().__new__(
            cls, "all chain targets failed", [failure.error for failure in failures]
        )
        self.failures = failures
        return self

    def __init__(self, failures: Sequence[TargetFailure]) -> None:
        super().__init__("all chain targets failed", [failure.error for failure in failures])

    def derive(self, excs: Sequence[Exception]) -> ChainExhaustedError:  # type: ignore[override]
        """Keep the failures whose errors survive an `except*` split."""
        keep = {id(exc) for exc in excs}
        kept = [failure for failure in self.failures if id(failure.error) in keep]
        return ChainExhaustedError(kept) if kept else ChainExhaustedError(self.failures)

    def __str__(self) -> str:
        lines = "; ".join(str(failure) for failure in self.failures)
        return f"all chain targets failed: {lines}"

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.failures,))


class ModelProtocolError(MajordomoError, TypeError):
    """A model broke the `AsyncModel` protocol (its `generate` returned something other
    than a `Response`, say): a bug in that model, raised at once, naming the chain target."""


# --------------------------------------------------------------------------- stream misuse


class StreamError(MajordomoError, RuntimeError):
    """A `Stream` was used in a way it does not allow."""


class StreamConsumedError(StreamError):
    """The stream was already iterated; a stream can be read once."""


class StreamClosedError(StreamError):
    """The stream was closed before it was read to the end."""


class StreamNotFinishedError(StreamError):
    """The aggregated response was asked for before the stream was read to the end."""


# --------------------------------------------------------------------------- the policy


class ErrorClass(enum.Enum):
    """Whether retrying the same request can help."""

    TRANSIENT = "transient"
    """Retry may succeed: rate limits, overload, 5xx, network failures, truncated streams."""
    PERMANENT = "permanent"
    """Retrying the same request cannot succeed: bad request, auth, quota, bugs."""


Classifier = Callable[[Exception], ErrorClass]

# The official SDKs retry 408, 409, 429 and every 5xx; 425 (Too Early) asks for a replay.
_TRANSIENT_STATUSES: frozenset[int] = frozenset({408, 409, 425, 429})


def linked_errors(error: BaseException) -> Iterator[BaseException]:
    """`error`, then every exception it was raised from or while handling (its causes
    and contexts, transitively), each once."""
    pending: list[BaseException | None] = [error]
    seen: set[int] = set()
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        pending += (current.__cause__, current.__context__)


def classify(exc: Exception) -> ErrorClass:
    """Classify an error as TRANSIENT or PERMANENT: the default retry policy.

    Rules, first match wins:

    1. A provider's explicit verdict (`x-should-retry`) is obeyed.
    2. Quota exhausted, model not found, context length, content policy, auth,
       bad request and unsupported requests are PERMANENT: retrying cannot fix them.
    3. Connection failures, timeouts, truncated streams and unparseable replies are
       TRANSIENT: the server or the network failed, not the request.
    4. Other status errors: 408/409/425/429 and every 5xx are TRANSIENT, the rest PERMANENT.
    5. The stdlib's `TimeoutError` and `ConnectionError` are TRANSIENT.
    6. Anything else is a bug (a `TypeError`, a `KeyError`) and PERMANENT, unless it
       was raised `from` a transient error.
    """
    if isinstance(exc, ProviderError):
        if exc.should_retry is not None:
            return ErrorClass.TRANSIENT if exc.should_retry else ErrorClass.PERMANENT
        return _PROVIDER_CLASS_CACHE.get(type(exc)) or _classify_provider_error(exc)
    if isinstance(exc, TimeoutError | ConnectionError):
        return ErrorClass.TRANSIENT
    if isinstance(exc, MajordomoError):
        return ErrorClass.PERMANENT
    # `raise Wrapper from transient` stays transient; `seen` guards against cause cycles.
    seen = {id(exc)}
    cause = exc.__cause__
    while isinstance(cause, Exception) and id(cause) not in seen:
        if isinstance(cause, ProviderError | TimeoutError | ConnectionError):
            return classify(cause)
        seen.add(id(cause))
        cause = cause.__cause__
    return ErrorClass.PERMANENT


_PERMANENT_TYPES: tuple[type[ProviderError], ...] = (
    QuotaExceededError,
    ModelNotFoundError,
    BadRequestError,  # includes context length and content policy
    AuthenticationError,
    UnsupportedRequestError,
)
_TRANSIENT_TYPES: tuple[type[ProviderError], ...] = (
    ProviderConnectionError,  # includes timeouts
    StreamTruncatedError,
    ResponseFormatError,
    RateLimitError,
    OverloadedError,
    ServerError,
)

# Classes whose verdict does not depend on the instance, memoised per concrete type so the
# hot path is one dict lookup. Filled lazily; bounded by the number of error classes.
_PROVIDER_CLASS_CACHE: dict[type[ProviderError], ErrorClass] = {}


def _classify_provider_error(exc: ProviderError) -> ErrorClass:
    if isinstance(exc, _PERMANENT_TYPES):
        verdict = ErrorClass.PERMANENT
    elif isinstance(exc, _TRANSIENT_TYPES):
        verdict = ErrorClass.TRANSIENT
    else:
        # A bare ProviderStatusError (or a user's subclass): decide by status, per instance.
        status = exc.status
        if status is not None and (status in _TRANSIENT_STATUSES or status >= 500):
            return ErrorClass.TRANSIENT
        return ErrorClass.PERMANENT
    _PROVIDER_CLASS_CACHE[type(exc)] = verdict
    return verdict


# Errors that move the chain to its next target without counting against the target's
# health: the target is fine, this request just does not fit it.
ADVANCE_WITHOUT_PENALTY: tuple[type[Exception], ...] = (
    ModelNotFoundError,
    ContextLengthError,
    UnsupportedRequestError,
)
