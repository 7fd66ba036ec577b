"""The failover rules as a table: every error class x attempt x benched x time left.

`majordomo_async._chain._policy` is pure, so each row is one call. The expected values
are written from the rule list in the module's docstring, not from the code.
"""

from __future__ import annotations

import itertools
import math
import pathlib
import re

import pytest

from majordomo_async import (
    AuthenticationError,
    BadRequestError,
    ChainConfig,
    ContentPolicyError,
    ContextLengthError,
    ErrorClass,
    ModelNotFoundError,
    OverloadedError,
    ProviderTimeoutError,
    QuotaExceededError,
    RateLimitError,
    StreamTruncatedError,
    UnsupportedRequestError,
)
from majordomo_async._chain import _policy
from majordomo_async._chain._policy import Step, backoff, judge, recovery_wait, retry_wait

P = {"provider": "p", "model": "m"}

# name -> (error, what the rules say with the default config)
ERRORS: dict[str, tuple[Exception, Step, int]] = {
    "503": (OverloadedError("busy", status=503, **P), Step.COUNT, 4),
    "429 hint 1.5": (RateLimitError("slow", status=429, retry_after=1.5, **P), Step.COUNT, 4),
    "429 hint 5": (RateLimitError("slow", status=429, retry_after=5.0, **P), Step.COUNT, 4),
    "429 hint 8": (RateLimitError("slow", status=429, retry_after=8.0, **P), Step.COUNT, 4),
    "429 hint 45": (RateLimitError("slow", status=429, retry_after=45.0, **P), Step.COUNT, 4),
    "timeout": (ProviderTimeoutError("late", **P), Step.COUNT, 4),
    "truncated": (StreamTruncatedError("cut", **P), Step.COUNT, 4),
    "connection reset": (ConnectionResetError("reset"), Step.COUNT, 4),
    "404 model": (ModelNotFoundError("no such model", status=404, **P), Step.ADVANCE, 5),
    "context length": (ContextLengthError("too long", status=400, **P), Step.ADVANCE, 5),
    "unsupported": (UnsupportedRequestError("no vision", **P), Step.ADVANCE, 5),
    "401": (AuthenticationError("bad key", status=401, **P), Step.RAISE, 6),
    "400": (BadRequestError("bad", status=400, **P), Step.RAISE, 6),
    "content policy": (ContentPolicyError("no", status=400, **P), Step.RAISE, 6),
    "quota": (QuotaExceededError("spent", status=429, **P), Step.RAISE, 6),
    "bug": (TypeError("a bug"), Step.RAISE, 6),
}

CONFIG = ChainConfig()  # 1 retry, backoff 0.2 s doubling, max_retry_wait 5 s
JITTER = 0.5  # the backoff is then 0.75 of its full value
ATTEMPTS = (1, 2, 3)
TIME_LEFT = (math.inf, 10.0, 0.1)


def expected_wait(
    name: str, attempt: int, benched: bool, time_left: float, last_resort: bool = False
) -> float | None:
    """Rule 4, as the docstring states it."""
    error, step, _ = ERRORS[name]
    if step is not Step.COUNT or benched or isinstance(error, TimeoutError):
        return None
    if attempt > 1:  # retries remain only after the first attempt (default: 1 retry)
        return None
    wait = 0.2 * 2 ** (attempt - 1) * 0.75
    hint = getattr(error, "retry_after", None) or 0.0
    wait = max(wait, hint)
    # The last resort may wait within the time left (30 s, max_recovery_wait, without
    # a deadline); any other target waits at most max_retry_wait (5 s).
    longest = (30.0 if time_left == math.inf else max(time_left, 5.0)) if last_resort else 5.0
    if wait > longest or wait >= time_left:
        return None
    return wait


ROWS = list(itertools.product(ERRORS, ATTEMPTS, (False, True), TIME_LEFT, (False, True)))


@pytest.mark.parametrize(("name", "attempt", "benched", "time_left", "last_resort"), ROWS)
def test_the_rules_table(
    name: str, attempt: int, benched: bool, time_left: float, last_resort: bool
) -> None:
    error, step, rule = ERRORS[name]
    failure = judge(error, CONFIG)
    assert (failure.step, failure.rule) == (step, rule)
    assert failure.error is error
    wait = retry_wait(failure, attempt, benched, CONFIG, time_left, JITTER, last_resort=last_resort)
    assert wait == pytest.approx(expected_wait(name, attempt, benched, time_left, last_resort))


def test_the_last_resort_waits_for_a_long_retry_after_only_within_the_time_left() -> None:
    """A 3 s Retry-After is waited for by default; 8 s only by the last resort, and only
    when the deadline leaves more than 8 s."""
    three = judge(RateLimitError("slow", status=429, retry_after=3.0, **P), CONFIG)
    eight = judge(ERRORS["429 hint 8"][0], CONFIG)
    assert retry_wait(three, 1, False, CONFIG, math.inf, JITTER) == 3.0
    assert retry_wait(eight, 1, False, CONFIG, math.inf, JITTER) is None
    assert retry_wait(eight, 1, False, CONFIG, math.inf, JITTER, last_resort=True) == 8.0
    assert retry_wait(eight, 1, False, CONFIG, 8.5, JITTER, last_resort=True) == 8.0
    assert retry_wait(eight, 1, False, CONFIG, 7.9, JITTER, last_resort=True) is None
    # A bench or a spent retry is not overridden by being the last resort.
    assert retry_wait(eight, 1, True, CONFIG, math.inf, JITTER, last_resort=True) is None
    assert retry_wait(eight, 2, False, CONFIG, math.inf, JITTER, last_resort=True) is None


def test_the_table_covers_every_step_and_a_real_retry() -> None:
    waits = [
        retry_wait(judge(ERRORS[n][0], CONFIG), a, b, CONFIG, t, JITTER, last_resort=r)
        for n, a, b, t, r in ROWS
    ]
    assert {ERRORS[n][1] for n in ERRORS} == set(Step)
    assert any(w is not None for w in waits) and any(w is None for w in waits)
    assert 1.5 in waits  # the retry-after hint is honoured


@pytest.mark.parametrize("name", [n for n, (_, step, _) in ERRORS.items() if step is Step.RAISE])
def test_permanent_errors_advance_by_policy(name: str) -> None:
    error = ERRORS[name][0]
    everything = judge(error, ChainConfig(advance_on_permanent=True))
    assert (everything.step, everything.rule) == (Step.ADVANCE, 6)
    by_type = judge(error, ChainConfig(advance_on=(type(error),)))
    assert (by_type.step, by_type.rule) == (Step.ADVANCE, 6)
    # advance_on names classes: another permanent class still raises.
    other = judge(error, ChainConfig(advance_on=(ModelProtocolErrorLike,)))
    assert other.step is Step.RAISE


class ModelProtocolErrorLike(Exception):
    """An error type that no row raises."""


def test_advance_on_takes_subclasses_and_a_single_class() -> None:
    config = ChainConfig(advance_on=BadRequestError)  # type: ignore[arg-type]
    assert config.advance_on == (BadRequestError,)
    assert judge(ContentPolicyError("no", status=400, **P), config).step is Step.ADVANCE
    assert judge(AuthenticationError("key", status=401, **P), config).step is Step.RAISE


@pytest.mark.parametrize("bad", [("AuthenticationError",), (3,), "x"])
def test_advance_on_rejects_what_is_not_an_exception_class(bad: object) -> None:
    from majordomo_async import ConfigurationError

    with pytest.raises(ConfigurationError, match="advance_on"):
        ChainConfig(advance_on=bad)  # type: ignore[arg-type]


def test_the_call_deadline_advances_without_penalty() -> None:
    failure = judge(ProviderTimeoutError("late", **P), CONFIG, out_of_time=True)
    assert (failure.step, failure.rule, failure.timed_out) == (Step.ADVANCE, 7, True)
    assert retry_wait(failure, 1, False, CONFIG, math.inf, JITTER) is None


def test_a_custom_classifier_decides_the_class() -> None:
    config = ChainConfig(classify=lambda exc: ErrorClass.TRANSIENT)
    failure = judge(TypeError("flaky plugin"), config)
    assert failure.step is Step.COUNT
    assert retry_wait(failure, 1, False, config, math.inf, JITTER) == pytest.approx(0.15)


@pytest.mark.parametrize("retries", [-1, 0, 1, 3])
def test_retries_bound_the_attempts(retries: int) -> None:
    config = ChainConfig(transient_retries=retries, max_retry_wait=100.0)
    failure = judge(OverloadedError("busy", status=503, **P), config)
    allowed = [
        a for a in range(1, 8) if retry_wait(failure, a, False, config, math.inf, 0.0) is not None
    ]
    assert allowed == list(range(1, config.retries + 1))


@pytest.mark.parametrize(
    ("base", "retry", "hint", "jitter", "expected"),
    [
        (0.2, 1, None, 0.0, 0.1),
        (0.2, 1, None, 0.999999, 0.2),
        (0.2, 3, None, 0.0, 0.4),
        (0.2, 1, 2.0, 0.5, 2.0),
        (0.0, 2, None, 0.5, 0.0),
    ],
)
def test_backoff(
    base: float, retry: int, hint: float | None, jitter: float, expected: float
) -> None:
    assert backoff(base, retry, hint, jitter) == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize(
    ("recoveries", "attempted", "time_left", "expected"),
    [
        ([], False, math.inf, None),  # nothing skipped as benched
        ([3.0, 1.0], True, math.inf, None),  # something was attempted this pass
        ([3.0, 1.0], False, math.inf, 1.0),  # the first to recover
        ([-0.5], False, math.inf, 0.0),  # recovered already
        ([31.0], False, math.inf, None),  # longer than max_recovery_wait (30 s)
        ([1.0], False, 1.0, None),  # would not fit the deadline
        ([1.0], False, 1.5, 1.0),
    ],
)
def test_recovery_wait(
    recoveries: list[float], attempted: bool, time_left: float, expected: float | None
) -> None:
    assert recovery_wait(recoveries, attempted, CONFIG, time_left) == expected


def test_the_policy_module_is_pure() -> None:
    """No clock, no anyio, no hooks, no I/O: only the exceptions and attrs."""
    source = pathlib.Path(_policy.__file__).read_text(encoding="utf-8")
    imports = [line for line in source.splitlines() if line.startswith(("import ", "from "))]
    allowed = (
        "from __future__",
        "import enum",
        "import math",
        "from collections.abc",
        "from typing",
        "import attrs",
    )
    for line in imports:
        assert line.startswith(allowed) or line.startswith("from .._exceptions"), line


def test_every_rule_is_listed_once_and_applied() -> None:
    source = pathlib.Path(_policy.__file__).read_text(encoding="utf-8")
    doc = _policy.__doc__ or ""
    numbers = [int(n) for n in re.findall(r"^(\d+)\. ", doc, re.MULTILINE)]
    assert numbers == list(range(1, 11))
    tags: set[int] = set()
    for path in pathlib.Path(_policy.__file__).parent.glob("*.py"):
        text = path.read_text(encoding="utf-8")
        for match in re.finditer(r"# rules? ([^:\n]*)", text):
            tags.update(int(n) for n in re.findall(r"\b\d+\b", match.group(1)))
    assert tags >= set(range(1, 11)), sorted(tags)
    # Only the policy decides what an error class means.
    for path in pathlib.Path(_policy.__file__).parent.glob("*.py"):
        if path.name != "_policy.py":
            assert "ErrorClass.PERMANENT" not in path.read_text(encoding="utf-8"), path
    assert "ErrorClass.PERMANENT" in source


def test_no_function_of_the_chain_is_above_complexity_12() -> None:
    """The loop stays readable beside the seed's `chainDo` (radon's cyclomatic complexity)."""
    from radon.complexity import cc_visit

    for path in pathlib.Path(_policy.__file__).parent.glob("*.py"):
        for block in cc_visit(path.read_text(encoding="utf-8")):
            assert block.complexity <= 12, f"{path.name}: {block.name} is {block.complexity}"
