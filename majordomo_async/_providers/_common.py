"""Plumbing shared by the HTTP providers: the generic status -> error mapping.

A provider's error mapper runs its own matchers first (model not found, quota, context
length, content policy: they need the provider's body shape), then hands the rest to
`status_error()`, which decides by status alone. See providers.md 8.1 and 8.4.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Callable, Iterable, Mapping
from http import HTTPStatus
from typing import Any, Final

import attrs

from .. import _json as fast_json
from .._exceptions import (
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
    OverloadedError,
    ProviderStatusError,
    RateLimitError,
    ServerError,
)
from .._http import Timeouts
from .._response import FinishReason
from .._retry_after import header_value, parse_rate_limit_reset, parse_retry_after

__all__ = [
    "TIMEOUT_KEYS",
    "body_summary",
    "dsn_timeouts",
    "finish_with_tools",
    "json_or_none",
    "key_from_env",
    "status_error",
]

TIMEOUT_KEYS: Final = (
    "connect",
    "headers",
    "generate",
    "first_token",
    "reasoning_first_token",
    "idle",
)
"""DSN query keys every HTTP provider accepts: its `Timeouts`, in seconds."""

# How much of a non-JSON, non-HTML error body a message quotes.
_EXCERPT_CHARS: Final = 300
_TITLE_CHARS: Final = 120

_BY_STATUS: Final[Mapping[int, type[ProviderStatusError]]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: AuthenticationError,
    413: BadRequestError,
    422: BadRequestError,
    429: RateLimitError,
    503: OverloadedError,
    529: OverloadedError,  # Anthropic's "overloaded_error"
}

_HTML_START = re.compile(r"\s*<(?:!doctype\s+html|html|head|body)\b", re.IGNORECASE)
_HTML_TITLE = re.compile(r"<title[^>]*>(.*?)</title\s*>", re.IGNORECASE | re.DOTALL)
_HTML_TAG = re.compile(r"<[^>]*>")

_WRONG_ENDPOINT_HINT: Final = (
    "the endpoint does not exist: check the provider's base URL "
    "(a missing or doubled /v1 is the usual cause)"
)


def status_error(
    *,
    provider: str,
    model: str,
    status: int,
    headers: Mapping[str, str],
    body_text: str,
    message: str | None = None,
    code: str | None = None,
    request_id: str | None = None,
    kind: type[ProviderStatusError] | None = None,
) -> ProviderStatusError:
    """The error for an HTTP error reply, by status, after the provider's own matchers.

    | status        | error                                                       |
    |---------------|-------------------------------------------------------------|
    | 401, 403      | AuthenticationError                                         |
    | 400, 413, 422 | BadRequestError                                             |
    | 404           | BadRequestError hinting at the base URL (a wrong endpoint)  |
    | 429           | RateLimitError                                              |
    | 503, 529      | OverloadedError                                             |
    | other 5xx     | ServerError                                                 |
    | anything else | ProviderStatusError (a 3xx: a redirect we did not follow)   |

    A 404 that names the model is a `ModelNotFoundError`; only the provider can tell
    (by its body), so it says so with `kind=ModelNotFoundError`. A bare 404 ("Not
    Found") means the URL is wrong, which no other model on the same base URL fixes.

    `retry_after` comes from `retry-after-ms` / `retry-after`; an `x-should-retry:
    true|false` header becomes `should_retry`, which overrides the status rules.

    Args:
        provider: the provider's registry name.
        model: the model id.
        status: the HTTP status.
        headers: the response headers (never the request's: they hold the credential).
        body_text: the error body, for the message when the provider gave none.
        message: the provider's own error message, if it had one.
        code: the provider's error code or type ("rate_limit_error").
        request_id: the provider's request id.
        kind: the error class, when the provider's matchers decided it.

    Returns:
        The error, to be raised by the caller.
    """
    if kind is None:
        kind = _BY_STATUS.get(status)
        if kind is None:
            kind = ServerError if 500 <= status <= 599 else ProviderStatusError
        if status == 404:
            kind = BadRequestError
            summary = message or body_summary(status, headers, body_text)
            message = f"{summary}: {_WRONG_ENDPOINT_HINT}"
    if message is None:
        message = body_summary(status, headers, body_text)
    if 300 <= status < 400:
        message = _redirect_message(headers, message)
    return kind(
        message,
        provider=provider,
        model=model,
        status=status,
        code=code,
        retry_after=_retry_hint(status, headers),
        request_id=request_id,
        should_retry=_should_retry(headers),
    )


def _retry_hint(status: int, headers: Mapping[str, str]) -> float | None:
    """Retry-After; for a 429 without it, when the exhausted rate limit resets."""
    hint = parse_retry_after(headers)
    if hint is None and status == 429:
        hint = parse_rate_limit_reset(headers)
    return hint


def body_summary(status: int, headers: Mapping[str, str], body_text: str) -> str:
    """A short, single-line, printable description of an error body.

    An HTML page (a proxy's or a load balancer's) becomes "HTML error page (<title>)";
    anything else, its first 300 characters with whitespace collapsed; an empty body,
    the status's reason phrase.
    """
    content_type = (header_value(headers, "content-type") or "").lower()
    if "html" in content_type or _HTML_START.match(body_text):
        match = _HTML_TITLE.search(body_text)
        title = _one_line(_HTML_TAG.sub(" ", html.unescape(match.group(1)))) if match else ""
        if len(title) > _TITLE_CHARS:
            title = title[: _TITLE_CHARS - 1] + "…"
        return f"HTML error page ({title or _status_line(status)})"
    text = _one_line(body_text[: _EXCERPT_CHARS * 2])
    if not text:
        return f"{_status_line(status)} (empty body)"
    if len(text) > _EXCERPT_CHARS:
        text = text[: _EXCERPT_CHARS - 1] + "…"
    return text


def json_or_none(text: str) -> Any:
    """`json.loads(text)`, or None when `text` is not JSON."""
    try:
        return fast_json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
        return None


def _status_line(status: int) -> str:
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return f"HTTP {status}"


def _one_line(text: str) -> str:
    """Control characters and runs of whitespace become single spaces."""
    if not text.isprintable():
        text = "".join(char if char.isprintable() else " " for char in text)
    return " ".join(text.split())


def _redirect_message(headers: Mapping[str, str], message: str) -> str:
    location = header_value(headers, "location")
    target = f" to {location.split('?', 1)[0]}" if location else ""
    return (
        f"the server redirected{target}; redirects are not followed so that credentials "
        f"stay with the configured host: set the base URL to the final address ({message})"
    )


def _should_retry(headers: Mapping[str, str]) -> bool | None:
    """The server's own verdict (`x-should-retry`, sent by OpenAI and Anthropic)."""
    value = (header_value(headers, "x-should-retry") or "").strip().lower()
    if value == "true":
        return True
    if value == "false":
        return False
    return None


def dsn_timeouts(
    query: Mapping[str, str],
    *,
    label: str,
    accepted: Iterable[str] = TIMEOUT_KEYS,
    base: Timeouts | None = None,
) -> Timeouts:
    """`Timeouts` from a DSN query's timeout keys (`TIMEOUT_KEYS`).

    Args:
        query: the DSN's query.
        label: names the provider in messages ("anthropic provider 'work'").
        accepted: every key the provider's DSN takes (the timeout keys and its own).
        base: the provider's defaults, which the query's keys override.

    Raises:
        ConfigurationError: a key outside `accepted`, or a timeout that is not a
            positive, finite number of seconds.
    """
    allowed = tuple(accepted)
    unknown = sorted(set(query) - set(allowed))
    if "first_event" in unknown:
        raise ConfigurationError(
            f"{label}: the DSN query key 'first_event' was split in two: `headers` (until "
            "the response headers of a stream) and `first_token` (then until its first "
            "content); a generate's limit is `generate`"
        )
    if unknown:
        raise ConfigurationError(
            f"{label}: unknown DSN query key(s) {', '.join(map(repr, unknown))} "
            f"(accepted: {', '.join(allowed)})"
        )
    seconds: dict[str, float] = {}
    for key in TIMEOUT_KEYS:
        if key not in query:
            continue
        try:
            value = float(query[key])
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value <= 0:
            raise ConfigurationError(
                f"{label}: DSN query key {key!r} needs a number: a positive number of "
                f"seconds, got {query[key]!r}"
            )
        seconds[key] = value
    return attrs.evolve(base or Timeouts(), **seconds)


def finish_with_tools(finish: FinishReason, has_tool_calls: bool) -> FinishReason:
    """The one finish-reason rule for tool calls, for every provider: an answer that
    carries tool calls and stopped naturally stopped to call them (`TOOL_CALLS`), whatever
    the wire said (OpenAI-compatible servers, Gemini and Ollama say "stop"); a cut
    (`LENGTH`) or a filter (`CONTENT_FILTER`) is kept, since the calls may be incomplete."""
    if has_tool_calls and finish is FinishReason.STOP:
        return FinishReason.TOOL_CALLS
    return finish


def key_from_env(env: Callable[[str], str | None], variables: Iterable[str]) -> str | None:
    """The first non-blank value among `variables` in the Registry's env, stripped."""
    for variable in variables:
        value = env(variable)
        if value and value.strip():
            return value.strip()
    return None
