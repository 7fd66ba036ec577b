"""`ChainConfig` and `Target`: how a chain behaves, and one element of it."""

from __future__ import annotations

import math
import random
from typing import Any, Literal

import attrs

from .._capabilities import Capabilities
from .._exceptions import Classifier, ConfigurationError, classify
from .._http import HOSTED_TIMEOUTS, Timeouts
from .._protocols import AsyncModel
from .._routing import STRATEGIES, Strategy
from ._policy import backoff

__all__ = [
    "DEFAULT_TRANSIENT_RETRIES",
    "HEDGE_COLD_START",
    "ChainConfig",
    "Target",
    "hedge_percentile",
]

HEDGE_COLD_START = 2.0
"""Seconds a percentile `hedge_after` waits while too few answers have been measured
(fewer than ten of the target's, and of every tracked target's together)."""

DEFAULT_TRANSIENT_RETRIES = 1


def _non_negative(_: object, attribute: attrs.Attribute[Any], value: float | None) -> None:
    if value is not None and value < 0:
        raise ConfigurationError(f"ChainConfig.{attribute.name} must not be negative, got {value}")


def _positive_or_none(_: object, attribute: attrs.Attribute[Any], value: float | None) -> None:
    if value is not None and not value > 0:
        raise ConfigurationError(f"ChainConfig.{attribute.name} must be positive, got {value}")


def _limit_or_auto(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is None or value == "auto":
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ConfigurationError(
            f'ChainConfig.{attribute.name} must be "auto", a positive number of seconds, '
            f"or None (no limit), got {value!r}"
        )


def _hedge_after(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is None or (isinstance(value, str) and hedge_percentile(value) is not None):
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ConfigurationError(
            "ChainConfig.hedge_after must be a positive number of seconds, a percentile of "
            f'the target\'s time to first content ("p95", "p99.5"), or None, got {value!r}'
        )


def hedge_percentile(value: str) -> float | None:
    """The fraction a hedge percentile names ("p95" -> 0.95), or None if it names none."""
    text = value.strip().lower()
    if not text.startswith("p"):
        return None
    try:
        number = float(text[1:])
    except ValueError:
        return None
    return number / 100 if 0 < number < 100 else None


def _strategy(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value not in STRATEGIES:
        raise ConfigurationError(
            f"ChainConfig.strategy must be one of {', '.join(map(repr, STRATEGIES))}, got {value!r}"
        )


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
    """Seconds for a whole call when the request sets no `timeout` (None: no deadline):
    every attempt, retry and wait, and the whole reading of a stream. When it runs out
    the caller gets `ProviderTimeoutError` (`limit="deadline"`), and no target is
    blamed: the budget was the caller's."""
    attempt_timeout: float | None = attrs.field(default=None, validator=_positive_or_none)
    """Seconds for one attempt (a generate, or opening a stream up to its first content);
    a target that exceeds it fails with a timeout, counts as a transient failure, and is
    not retried. None: only the other limits apply."""
    first_token_timeout: float | Literal["auto"] | None = attrs.field(
        default="auto", validator=_limit_or_auto
    )
    """Seconds from sending a stream request to its first content event (text, a tool
    call, or the end); a target that misses it fails like an attempt timeout (counted,
    not retried: the chain advances). "auto": the target's provider default
    (`Timeouts.first_token`: 30 s for hosted APIs). Streams only: a generate's first
    content is its whole answer (bounded by `Timeouts.generate` and `attempt_timeout`),
    unless a request sets its own `first_token_timeout`, which overrides this for
    streams and generates alike."""
    reasoning_first_token_timeout: float | Literal["auto"] | None = attrs.field(
        default="auto", validator=_limit_or_auto
    )
    """`first_token_timeout` for a target whose model reasons before answering
    (`Capabilities.reasoning`); "auto": `Timeouts.reasoning_first_token` (300 s hosted)."""
    idle_timeout: float | None = attrs.field(default=None, validator=_positive_or_none)
    """Seconds a stream may go without an event once it is established; a target that
    falls silent longer fails (counted; with `mid_stream="restart"` the answer starts
    over on the next target). None: only the provider's socket-level `Timeouts.idle`
    applies (which keep-alive bytes satisfy)."""
    retry_backoff: float = attrs.field(default=0.2, validator=_non_negative)
    """Seconds: base of the jittered same-target backoff (doubles per retry)."""
    max_retry_wait: float = attrs.field(default=5.0, validator=_non_negative)
    """Seconds: a same-target retry that would wait longer (a long `Retry-After`)
    advances instead, unless the target is the last one that can answer (the chain's
    last, or every later one benched): then it waits, within the call's deadline (or
    `max_recovery_wait` without one). 5 s leaves margin above the common 2 s."""
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
    strategy: Strategy = attrs.field(default="least-busy", validator=_strategy)
    """How the members of a balanced group ("a/x|b/x") are ordered per call:
    "least-busy" (fewest calls in flight per unit of weight, then the lower recent time
    to first content, then at random), "latency" (the lower recent time to first content
    first), "random" (in proportion to the weights) or "ordered" (as the spec lists them)."""
    hedge_after: float | str | None = attrs.field(default=None, validator=_hedge_after)
    """Hedged first tokens (off by default): when an attempt has produced no content this
    many seconds after it started (a generate: no answer), the next available target is
    started beside it; the first to produce content wins and the other is cancelled with
    no health penalty. Never more than two attempts in flight per call. Seconds, or a
    percentile of the target's observed time to first content ("p95"); with too few
    answers measured yet, a percentile waits `HEDGE_COLD_START` (2 s)."""
    max_limit_wait: float = attrs.field(default=30.0, validator=_non_negative)
    """Seconds a call waits for a slot of a target at its `max_concurrency`, `rpm` or
    `tpm` limit when no other target answered (within the call's deadline too). A target
    at its limit is otherwise skipped, with no health penalty."""

    @classmethod
    def interactive(cls, **changes: Any) -> ChainConfig:
        """The preset for services that stream answers to people, who leave when nothing
        happens: `Registry(chain=ChainConfig.interactive())`.

        - `mid_stream="restart"`: a target that breaks mid-answer is replaced by the next
          one, and the person gets a complete answer (after a `StreamRestart` event).
        - `first_token_timeout=10`: a target with nothing to show 10 s after the request
          is left for the next one (30 s by default for hosted APIs; a hosted API sends
          its first token in a second or two unless it is failing);
          `reasoning_first_token_timeout=120` for models that reason first.
        - `idle_timeout=20`: a stream silent for 20 s is broken (even if it sends
          keep-alive bytes).
        - `max_retry_wait=1`: a rate-limited target is left for the next one at once
          rather than waited for (it is still waited for when it is the last resort).
        - `timeout=300`: the call's deadline, over failover and the whole stream: long
          enough for a long answer, and no call outlives it.

        `changes` override any field: `ChainConfig.interactive(timeout=120)`.
        """
        preset: dict[str, Any] = {
            "mid_stream": "restart",
            "first_token_timeout": 10.0,
            "reasoning_first_token_timeout": 120.0,
            "idle_timeout": 20.0,
            "max_retry_wait": 1.0,
            "timeout": 300.0,
        }
        return cls(**{**preset, **changes})

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
    limited: bool = False
    """The registry holds `max_concurrency`, `rpm` or `tpm` limits for this target or its
    provider: each attempt takes a slot first."""

    @property
    def capabilities(self) -> Capabilities:
        """The capabilities each attempt on this target is fitted to."""
        override = self.capabilities_override
        return override if override is not None else self.model.capabilities

    def first_token_limit(
        self,
        config: ChainConfig,
        requested: float | None,
        streaming: bool,
        asks_reasoning: bool = False,
    ) -> float | None:
        """Seconds an attempt on this target may take to its first content event (None:
        no limit): the request's (streams and generates), else for a stream the chain's,
        else ("auto") the provider's default for a model that reasons first or not (it
        reasons by default, or the request asks it to and it can). A model without
        provider timeouts (one of the user's own) gets the hosted ones."""
        if requested is not None:
            return None if math.isinf(requested) else requested
        if not streaming:
            return None  # a generate's first content is its whole answer: `Timeouts.generate`
        capabilities = self.capabilities
        reasoning = capabilities.reasons_by_default or (asks_reasoning and capabilities.reasoning)
        chosen = config.reasoning_first_token_timeout if reasoning else config.first_token_timeout
        if chosen != "auto":
            return chosen
        timeouts = getattr(self.model, "timeouts", None)
        if not isinstance(timeouts, Timeouts):
            timeouts = HOSTED_TIMEOUTS
        return timeouts.first_token_for(reasoning)
