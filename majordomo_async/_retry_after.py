"""How long a provider asked us to wait: Retry-After headers and Gemini's RetryInfo.

Pure, and never raises on what a server sent: a hint we cannot read is no hint (None).
The order follows providers.md 8.4: `retry-after-ms`, then `retry-after` (seconds or an
HTTP date), then, for Gemini, `RetryInfo.retryDelay` in the error body. Capping a long
hint is the caller's business (the health tracker and the chain do it).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Final

__all__ = [
    "gemini_retry_delay",
    "header_value",
    "parse_duration",
    "parse_rate_limit_reset",
    "parse_retry_after",
]

# RFC 9110 10.2.3 allows only `1*DIGIT`; the Stainless SDKs accept a float too, and so do
# we. Nothing else: no sign, exponent, "nan", "inf" or "1_000", all of which float() takes.
_SECONDS = re.compile(r"[0-9]+(?:\.[0-9]*)?|\.[0-9]+")

# protobuf's JSON form of google.protobuf.Duration: seconds with up to 9 fractional
# digits and an "s" suffix ("30s", "1.5s", "-0.250s"), within +-315,576,000,000 s.
_DURATION = re.compile(r"(-?)([0-9]+)(?:\.([0-9]{1,9}))?s")
_DURATION_MAX_SECONDS = 315_576_000_000

_RETRY_INFO = "type.googleapis.com/google.rpc.RetryInfo"


def parse_retry_after(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds a response's headers ask us to wait before retrying, or None.

    Tried in order, the first usable value wins:

    1. `retry-after-ms`: milliseconds, a non-negative number (not standard; OpenAI and
       Anthropic send it, and their SDKs read it first).
    2. `retry-after` as a non-negative number of seconds (a float is accepted).
    3. `retry-after` as an HTTP date (RFC 9110 IMF-fixdate, or the obsolete RFC 850 and
       asctime forms), counted from `now`; a date in the past gives 0.

    A header that is malformed, negative, NaN or infinite is skipped, never an error.

    Args:
        headers: the response headers; names match case-insensitively, whatever the
            mapping (a plain `dict` works as well as aiohttp's `CIMultiDictProxy`).
        now: the current wall-clock time in epoch seconds, for HTTP dates; defaults to
            `time.time()`.

    Returns:
        The delay in seconds (>= 0), or None when no header gives one.

    Example:
        >>> parse_retry_after({"Retry-After": "20"})
        20.0
        >>> parse_retry_after({"retry-after-ms": "1500", "retry-after": "2"})
        1.5
    """
    millis = _seconds(header_value(headers, "retry-after-ms"))
    if millis is not None:
        return millis / 1000
    value = header_value(headers, "retry-after")
    if value is None:
        return None
    seconds = _seconds(value)
    if seconds is not None:
        return seconds
    try:
        # email.utils takes about 15 ms to import: only a date-form hint pays for it.
        from email.utils import parsedate_to_datetime

        when = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        # RFC 9110 dates are always GMT; `-0000` and the asctime form parse as naive.
        when = when.replace(tzinfo=UTC)
    try:
        delay = when.timestamp() - (time.time() if now is None else now)
    except (OverflowError, ValueError):
        return None
    return max(delay, 0.0) if math.isfinite(delay) else None


_GO_DURATION = re.compile(r"(?:([0-9]+)h)?(?:([0-9]+)m(?!s))?(?:([0-9.]+)s)?(?:([0-9.]+)ms)?")
"""OpenAI's reset durations: "1s", "6m0s", "20ms", "1h2m3.5s"."""

_RESET_HEADERS: Final = (
    # (remaining, reset) pairs: OpenAI-compatible (a duration), Anthropic (RFC 3339).
    ("x-ratelimit-remaining-requests", "x-ratelimit-reset-requests"),
    ("x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens"),
    ("anthropic-ratelimit-requests-remaining", "anthropic-ratelimit-requests-reset"),
    ("anthropic-ratelimit-tokens-remaining", "anthropic-ratelimit-tokens-reset"),
    ("anthropic-ratelimit-input-tokens-remaining", "anthropic-ratelimit-input-tokens-reset"),
    ("anthropic-ratelimit-output-tokens-remaining", "anthropic-ratelimit-output-tokens-reset"),
)


def parse_rate_limit_reset(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds until the rate limit a 429 hit resets, from the rate-limit headers, or None.

    OpenAI-compatible servers send `x-ratelimit-reset-requests` / `-tokens` as durations
    ("6m0s", "20ms"); Anthropic sends `anthropic-ratelimit-*-reset` as RFC 3339 times.
    A reset counts when its budget's `remaining` is 0 (or not sent): the limit that was
    hit. The longest such reset wins (each exhausted budget must refill). Never raises.
    """
    waits: list[float] = []
    for remaining_name, reset_name in _RESET_HEADERS:
        reset = header_value(headers, reset_name)
        if reset is None:
            continue
        remaining = header_value(headers, remaining_name)
        if remaining is not None and remaining.strip() not in ("0", "0.0"):
            continue
        wait = _reset_seconds(reset.strip(), now)
        if wait is not None:
            waits.append(wait)
    return max(waits) if waits else None


def _reset_seconds(text: str, now: float | None) -> float | None:
    """A reset header's value as seconds from now: a duration, or an RFC 3339 time."""
    match = _GO_DURATION.fullmatch(text)
    if match is not None and any(match.groups()):
        hours, minutes, seconds, millis = (float(g) if g else 0.0 for g in match.groups())
        total = hours * 3600 + minutes * 60 + seconds + millis / 1000
        return total if math.isfinite(total) else None
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        return None
    current = time.time() if now is None else now
    return max(when.timestamp() - current, 0.0)


def parse_duration(text: str) -> float | None:
    """Seconds in a protobuf `Duration` written in its JSON form, or None if malformed.

    Google APIs write durations as decimal seconds with an "s" suffix and up to nine
    fractional digits. Surrounding whitespace is tolerated; a negative duration is
    well-formed and returned as such.

    Args:
        text: the duration, such as "30s", "1.5s" or "0.250s".

    Returns:
        The duration in seconds, or None when `text` is not a valid Duration.

    Example:
        >>> parse_duration("0.250s")
        0.25
        >>> parse_duration("30") is None
        True
    """
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        return None
    sign, whole, fraction = match.groups()
    # Length first: int() refuses more than 4300 digits, and such a delay is absurd anyway.
    if len(whole.lstrip("0")) > 12 or int(whole) > _DURATION_MAX_SECONDS:
        return None
    seconds = float(f"{whole}.{fraction or '0'}")
    return -seconds if sign else seconds


def gemini_retry_delay(body: object) -> float | None:
    """The delay a Gemini error body asks for in its `RetryInfo` detail, or None.

    Gemini sends no Retry-After header that we know of (providers.md 6.5); a 429 body
    carries `{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "36s"}`
    among `error.details` instead. Any other shape gives None, never an error.

    Args:
        body: the decoded JSON error body.

    Returns:
        The delay in seconds (>= 0) from the first readable RetryInfo detail, or None.

    Example:
        >>> gemini_retry_delay({"error": {"code": 429, "details": [
        ...     {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "36s"}]}})
        36.0
    """
    error = body.get("error") if isinstance(body, dict) else None
    details = error.get("details") if isinstance(error, dict) else None
    if not isinstance(details, list):
        return None
    for detail in details:
        if not isinstance(detail, dict) or detail.get("@type") != _RETRY_INFO:
            continue
        delay = detail.get("retryDelay")
        seconds = parse_duration(delay) if isinstance(delay, str) else None
        if seconds is not None and seconds >= 0:
            return seconds
    return None


_CASE_INSENSITIVE: Final = frozenset({"CIMultiDictProxy", "CIMultiDict"})
"""aiohttp's header types (named, not imported: multidict loads with aiohttp)."""


def header_value(headers: Mapping[str, str], name: str) -> str | None:
    """The value of header `name` (lower case), matched case-insensitively."""
    value = headers.get(name)
    if value is None and type(headers).__name__ not in _CASE_INSENSITIVE:
        # A plain dict keyed "Retry-After": fall back to a scan (a handful of headers).
        for key, candidate in headers.items():
            if isinstance(key, str) and key.lower() == name:
                value = candidate
                break
    return value if isinstance(value, str) else None


def _seconds(value: str | None) -> float | None:
    """A non-negative, finite decimal number of seconds (or milliseconds), or None."""
    if value is None:
        return None
    text = value.strip()
    if not _SECONDS.fullmatch(text):
        return None
    seconds = float(text)
    return seconds if math.isfinite(seconds) else None
