"""Retry hints: Retry-After headers, protobuf durations and Gemini's RetryInfo, as seconds."""

from __future__ import annotations

import time
from collections.abc import Mapping
from email.utils import formatdate
from typing import Any

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from majordomo_async._retry_after import gemini_retry_delay, parse_duration, parse_retry_after

# Fri, 29 Sep 2023 16:26:37 GMT, the instant anthropic's table test pins.
NOW = 1696004797.0


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        pytest.param({"retry-after": "20"}, 20.0, id="seconds"),
        pytest.param({"retry-after": "0"}, 0.0, id="zero-seconds"),
        pytest.param({"retry-after": "1.5"}, 1.5, id="float-seconds"),
        pytest.param({"retry-after": " 12 "}, 12.0, id="padded-seconds"),
        pytest.param({"retry-after-ms": "1500"}, 1.5, id="ms-only"),
        pytest.param({"retry-after-ms": "250.5"}, 0.2505, id="float-ms"),
        pytest.param({"retry-after-ms": "250", "retry-after": "30"}, 0.25, id="ms-wins"),
        pytest.param({"retry-after-ms": "soon", "retry-after": "30"}, 30.0, id="bad-ms-skipped"),
        pytest.param({"retry-after-ms": "-5", "retry-after": "3"}, 3.0, id="negative-ms-skipped"),
        pytest.param({"retry-after": "Fri, 29 Sep 2023 16:26:57 GMT"}, 20.0, id="date-future"),
        pytest.param({"retry-after": "Fri, 29 Sep 2023 16:26:27 GMT"}, 0.0, id="date-past"),
        pytest.param({"retry-after": "Friday, 29-Sep-23 16:27:37 GMT"}, 60.0, id="date-rfc850"),
        pytest.param({"retry-after": "Fri Sep 29 16:27:37 2023"}, 60.0, id="date-asctime"),
        pytest.param({"retry-after": "Fri, 29 Sep 2023 16:26:57 -0000"}, 20.0, id="date-minus-0"),
        pytest.param({"retry-after": "Fri, 29 Sep 2023 17:26:57 +0100"}, 20.0, id="date-offset"),
        pytest.param({"retry-after": "Fri, 29 Sep 99999 16:26:57 GMT"}, None, id="date-bad-year"),
        pytest.param({"retry-after": "garbage"}, None, id="garbage"),
        pytest.param({"retry-after": "20 seconds"}, None, id="number-with-unit"),
        pytest.param({"retry-after": "-10"}, None, id="negative"),
        pytest.param({"retry-after": ""}, None, id="empty"),
        pytest.param({"retry-after": "nan"}, None, id="nan"),
        pytest.param({"retry-after": "inf"}, None, id="inf"),
        pytest.param({"retry-after": "9" * 400}, None, id="overflows-to-inf"),
        pytest.param({"retry-after": "1e3"}, None, id="exponent"),
        pytest.param({"retry-after": "1_000"}, None, id="underscore"),
        pytest.param({"retry-after-ms": "nan"}, None, id="nan-ms-alone"),
        pytest.param({}, None, id="no-headers"),
        pytest.param({"x-request-id": "req_1"}, None, id="unrelated-headers"),
        pytest.param({"Retry-After": "7"}, 7.0, id="title-case-key"),
        pytest.param({"RETRY-AFTER-MS": "100", "Retry-After": "9"}, 0.1, id="upper-case-ms-key"),
    ],
)
def test_parse_retry_after_header(headers: Mapping[str, str], expected: float | None) -> None:
    """Each header combination gives the documented delay, or None, with `now` pinned."""
    assert parse_retry_after(headers, now=NOW) == pytest.approx(expected)


def test_parse_retry_after_with_aiohttp_style_headers() -> None:
    """A case-insensitive CIMultiDictProxy (what aiohttp hands us) works as-is."""
    headers = CIMultiDictProxy(CIMultiDict([("Retry-After-Ms", "2000"), ("Retry-After", "5")]))
    assert parse_retry_after(headers) == 2.0


def test_parse_retry_after_defaults_now_to_the_wall_clock() -> None:
    """Without `now`, an HTTP date is measured from time.time()."""
    headers = {"retry-after": formatdate(time.time() + 100, usegmt=True)}
    delay = parse_retry_after(headers)
    assert delay is not None
    assert 95 <= delay <= 100


@pytest.mark.parametrize("value", [5, None, b"5", ["5"]], ids=["int", "none", "bytes", "list"])
def test_parse_retry_after_ignores_non_string_values(value: Any) -> None:
    """A header value that is not a string is no hint, and no crash."""
    assert parse_retry_after({"retry-after": value, "retry-after-ms": value}, now=NOW) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("30s", 30.0, id="whole"),
        pytest.param("1.5s", 1.5, id="fraction"),
        pytest.param("0.250s", 0.25, id="millis"),
        pytest.param("0s", 0.0, id="zero"),
        pytest.param("3.000000001s", 3.000000001, id="nanos"),
        pytest.param("-1.5s", -1.5, id="negative"),
        pytest.param(" 30s\n", 30.0, id="padded"),
        pytest.param("315576000000s", 315576000000.0, id="max"),
    ],
)
def test_parse_duration_valid(text: str, expected: float) -> None:
    """protobuf Duration JSON strings become seconds."""
    assert parse_duration(text) == pytest.approx(expected)


@pytest.mark.parametrize(
    "text",
    [
        "30",
        "s",
        "",
        "1.5",
        "30ms",
        "1m",
        "1.s",
        ".5s",
        "1.0000000001s",
        "1e3s",
        "+3s",
        "3 s",
        "abc",
        "315576000001s",
    ],
)
def test_parse_duration_malformed(text: str) -> None:
    """Anything but `[-]digits[.1-9 digits]s` within protobuf's range is None."""
    assert parse_duration(text) is None


def _retry_info(delay: object) -> dict[str, object]:
    return {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay}


QUOTA_FAILURE = {
    "@type": "type.googleapis.com/google.rpc.QuotaFailure",
    "violations": [
        {
            "quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
            "quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
        }
    ],
}


def _gemini_429(*details: object) -> dict[str, object]:
    return {
        "error": {
            "code": 429,
            "message": "You exceeded your current quota, please check your plan and billing.",
            "status": "RESOURCE_EXHAUSTED",
            "details": list(details),
        }
    }


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(_gemini_429(QUOTA_FAILURE, _retry_info("36s")), 36.0, id="real-429"),
        pytest.param(_gemini_429(_retry_info("0.5s")), 0.5, id="fractional"),
        pytest.param(_gemini_429(_retry_info("soon"), _retry_info("7s")), 7.0, id="first-bad"),
        pytest.param(_gemini_429(QUOTA_FAILURE), None, id="no-retry-info"),
        pytest.param(_gemini_429(), None, id="empty-details"),
        pytest.param(_gemini_429(_retry_info(30)), None, id="int-delay"),
        pytest.param(_gemini_429(_retry_info({"seconds": 30})), None, id="object-delay"),
        pytest.param(_gemini_429(_retry_info(None)), None, id="null-delay"),
        pytest.param(_gemini_429(_retry_info("-3s")), None, id="negative-delay"),
        pytest.param(
            _gemini_429({"@type": "type.googleapis.com/google.rpc.RetryInfo"}), None, id="no-delay"
        ),
        pytest.param(
            _gemini_429({"@type": "type.googleapis.com/google.rpc.Help", "retryDelay": "5s"}),
            None,
            id="delay-on-other-type",
        ),
        pytest.param(_gemini_429("RetryInfo", 36, None, ["36s"]), None, id="details-not-dicts"),
        pytest.param({"error": {"code": 429}}, None, id="no-details"),
        pytest.param({"error": {"details": {"retryDelay": "5s"}}}, None, id="details-dict"),
        pytest.param({"error": [_retry_info("5s")]}, None, id="error-list"),
        pytest.param({"error": "quota exceeded"}, None, id="error-string"),
        pytest.param([_gemini_429(_retry_info("36s"))], None, id="body-list"),
        pytest.param("Too Many Requests", None, id="body-string"),
        pytest.param(None, None, id="body-none"),
        pytest.param({}, None, id="body-empty"),
    ],
)
def test_gemini_retry_delay(body: object, expected: float | None) -> None:
    """RetryInfo.retryDelay is read from a Gemini error body; any odd shape gives None."""
    assert gemini_retry_delay(body) == expected


# --------------------------------------------------------------------------- rate-limit resets

from datetime import UTC, datetime  # noqa: E402

from majordomo_async._providers._common import status_error  # noqa: E402
from majordomo_async._retry_after import parse_rate_limit_reset  # noqa: E402

NOON = datetime(2026, 12, 7, 12, 0, 0, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        pytest.param(
            {
                "x-ratelimit-remaining-requests": "0",
                "x-ratelimit-reset-requests": "6m0s",
                "x-ratelimit-remaining-tokens": "5000",
                "x-ratelimit-reset-tokens": "20ms",
            },
            360.0,
            id="openai-requests-exhausted",
        ),
        pytest.param(
            {"x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "1h2m3.5s"},
            3723.5,
            id="openai-tokens-exhausted",
        ),
        pytest.param({"x-ratelimit-reset-tokens": "250ms"}, 0.25, id="no-remaining-header"),
        pytest.param(
            {
                "anthropic-ratelimit-requests-remaining": "0",
                "anthropic-ratelimit-requests-reset": "2026-12-07T12:00:30Z",
                "anthropic-ratelimit-tokens-remaining": "0",
                "anthropic-ratelimit-tokens-reset": "2026-12-07T12:00:05Z",
            },
            30.0,
            id="anthropic-the-longest-exhausted",
        ),
        pytest.param(
            {"anthropic-ratelimit-input-tokens-reset": "2026-12-07T11:59:00Z"},
            0.0,
            id="anthropic-in-the-past",
        ),
        pytest.param(
            {"x-ratelimit-remaining-requests": "12", "x-ratelimit-reset-requests": "1s"},
            None,
            id="not-the-exhausted-limit",
        ),
        pytest.param({"x-ratelimit-reset-requests": "soon"}, None, id="unreadable"),
        pytest.param(
            {"anthropic-ratelimit-requests-reset": "2026-12-07T12:00:30"}, None, id="naive"
        ),
        pytest.param({}, None, id="none"),
    ],
)
def test_rate_limit_resets_are_read(headers: dict[str, str], expected: float | None) -> None:
    assert parse_rate_limit_reset(headers, now=NOON) == expected


def test_a_429_without_retry_after_takes_its_reset_as_the_hint() -> None:
    reset = {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "2s"}

    def error(status: int, headers: dict[str, str]) -> float | None:
        return status_error(
            provider="openai", model="gpt-4o", status=status, headers=headers, body_text="{}"
        ).retry_after

    assert error(429, reset) == 2.0
    assert error(429, {**reset, "retry-after": "1"}) == 1.0  # Retry-After wins
    assert error(503, reset) is None  # resets speak of rate limits only
