"""`ChainConfig` and `Target`: how a chain behaves, and one element of it."""

from __future__ import annotations

import random
from typing import Any, Literal

import attrs

from .._capabilities import Capabilities
from .._exceptions import Classifier, ConfigurationError, classify
from .._protocols import AsyncModel
from ._policy import backoff

__all__ = ["DEFAULT_TRANSIENT_RETRIES", "ChainConfig", "Target"]

DEFAULT_TRANSIENT_RETRIES = 1


def _non_negative(_: object, attribute: attrs.Attribute[Any], value: float | None) -> None:
    if value is not None and value < 0:
        raise ConfigurationError(f"ChainConfig.{attribute.name} must not be negative, got {value}")


def _positive_or_none(_: object, attribute: attrs.Attribute[Any], value: float | None) -> None:
    if value is not None and not value > 0:
        raise ConfigurationError(f"ChainConfig.{attribute.name} must be positive, got {value}")


def _error_types(value: Any) -> tuple[type[Exception], ...]:
    if isinstance(value, type):
        value = (value,)
    try:
        types = tuple(value)
    except TypeError:
        types = (value,)
    for item in types:
        if not (isinstance(item, type) and issubclass(item, Exception)):
            raise ConfigurationError(
                f"ChainConfig.advance_on takes exception classes "
                f"(e.g. AuthenticationError), got {item!r}"
            )
    return types


@attrs.frozen
class ChainConfig:
    """How a chain retries, advances and spends its time (rules: `majordomo_async.Chain`)."""

    transient_retries: int = 0
    """Same-target retries after a transient error: 0 selects the default (1), a negative
    number disables retries."""
    advance_on_permanent: bool = False
    """Advance to the next target on every permanent error instead of raising it."""
    advance_on: tuple[type[Exception], ...] = attrs.field(default=(), converter=_error_types)
    """Permanent error types that advance to the next target (with no health penalty)
    instead of being raised: `advance_on=(AuthenticationError,)` lets a chain whose head
    has no key reach its backup. Model-not-found, context-length and unsupported-request
    errors always advance."""
    classify: Classifier = classify
    """The error classifier (see `majordomo_async.classify`)."""
    timeout: float | None = attrs.field(default=None, validator=_positive_or_none)
    """Seconds for a whole call when the request sets no `timeout` (None: no deadline)."""
    attempt_timeout: float | None = attrs.field(default=None, validator=_positive_or_none)
    """Seconds for one attempt; a target that exceeds it fails with a timeout, counts as
    a transient failure, and is not retried. None: only the call's deadline applies."""
    retry_backoff: float = attrs.field(default=0.2, validator=_non_negative)
    """Seconds: base of the jittered same-target backoff (doubles per retry)."""
    max_retry_wait: float = attrs.field(default=2.0, validator=_non_negative)
    """Seconds: a same-target retry that would wait longer advances instead."""
    max_recovery_wait: float = attrs.field(default=30.0, validator=_non_negative)
    """Seconds: when every target is benched, the longest wait for the first to recover."""
    mid_stream: Literal["raise", "restart"] = "raise"
    """A stream whose target fails after it delivered content: "raise" the typed error
    to the consumer (a note says how much was delivered); "restart" the request on the
    next target, announced by a `StreamRestart` event, so the consumer gets a complete
    answer. A partial answer is never spliced into a continuation."""
    unsupported_images: Literal["error", "placeholder"] = "error"
    """An image a target cannot take (no vision, wrong type, too large): "error" refuses
    that target (the chain moves on without a health penalty); "placeholder" sends the
    request with the image replaced by a short text note."""
    image_download_max_bytes: int = attrs.field(default=20 * 1024 * 1024, validator=_non_negative)
    """The largest image URL downloaded for a target that takes only inline images."""
    image_download_timeout: float = attrs.field(default=30.0, validator=_positive_or_none)
    """Seconds for one image download (also bounded by the call's deadline)."""

    @property
    def retries(self) -> int:
        """The effective number of same-target retries."""
        if self.transient_retries < 0:
            return 0
        return self.transient_retries or DEFAULT_TRANSIENT_RETRIES

    def backoff(self, retry: int, retry_after: float | None) -> float:
        """Seconds before same-target retry number `retry` (1-based).

        Half-jittered exponential backoff, never less than the provider's `retry_after`.
        """
        return backoff(self.retry_backoff, retry, retry_after, random.random())


@attrs.frozen
class Target:
    """One resolved element of a chain."""

    key: str
    """"provider/model-id": the health tracker's key and `Response.model`."""
    model: AsyncModel
    capabilities_override: Capabilities | None = None
    """What the target accepts, when the user overrode the model's own `capabilities`."""

    @property
    def capabilities(self) -> Capabilities:
        """The capabilities each attempt on this target is fitted to."""
        override = self.capabilities_override
        return override if override is not None else self.model.capabilities
