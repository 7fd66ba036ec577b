"""A stateful test of chains and their shared health tracker against reference models.

Hypothesis drives three chains over three shared targets (`p/a,p/b,p/c`, `p/b,p/a` and
`p/c`) with random sequences of calls (`generate` or `stream`, each target scripted per
attempt: ok, transient, transient with a retry-after, timeout, advance-without-penalty,
permanent) and clock advances. Before each call the reference models
(`tests/helpers/chain_reference.py` on `tests/helpers/reference.py`) predict it; the
call must then make exactly the predicted attempts, skips (with their recovery times),
waits, and end with the predicted answer or error, and after every step the tracker's
state must equal the reference health model's.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import anyio.lowlevel
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    precondition,
    rule,
    run_state_machine_as_test,
)

from majordomo_async import (
    AuthenticationError,
    Capabilities,
    Chain,
    ChainConfig,
    ChainExhaustedError,
    HealthConfig,
    HealthTracker,
    InMemoryHealthStore,
    ManualClock,
    ModelNotFoundError,
    Option,
    OverloadedError,
    ProviderTimeoutError,
    RateLimitError,
    Request,
    Response,
    Stream,
    StreamEnd,
    StreamEvent,
    StreamStart,
    Target,
    TargetFailure,
    TargetSkippedError,
    TextDelta,
    Usage,
)

from .helpers.chain_reference import Prediction, ReferenceChain, Step, retry_after
from .helpers.reference import ReferenceHealth

KEYS = ("p/a", "p/b", "p/c")
SPECS = (("p/a", "p/b", "p/c"), ("p/b", "p/a"), ("p/c",))
FAILURES = ("503", "429:0", "429:0.5", "429:3", "timeout", "404", "401")
"""Failure labels (see chain_reference): 429:3 waits longer than `max_retry_wait`."""
OUTCOMES = st.sampled_from(("ok",) * len(FAILURES) + FAILURES)
"""An attempt's outcome: "ok" half of the time (and what a failure shrinks to)."""


def make_error(key: str, label: str) -> Exception:
    """The provider error an outcome label stands for."""
    provider, _, model = key.partition("/")
    fields: dict[str, Any] = {"provider": provider, "model": model}
    if label == "503":
        return OverloadedError("busy", status=503, **fields)
    if label.startswith("429:"):
        return RateLimitError("slow down", status=429, retry_after=retry_after(label), **fields)
    if label == "timeout":
        return ProviderTimeoutError("no answer", **fields)
    if label == "404":
        return ModelNotFoundError("no such model", status=404, **fields)
    assert label == "401"
    return AuthenticationError("bad key", status=401, **fields)


def label_of(failure: TargetFailure) -> str:
    """The outcome label of a real failure (the inverse of `make_error`), or "skip"."""
    error = failure.error
    if isinstance(error, TargetSkippedError):
        return "skip"
    if isinstance(error, RateLimitError):
        return f"429:{error.retry_after:g}"
    labels: dict[type[Exception], str] = {
        OverloadedError: "503",
        ProviderTimeoutError: "timeout",
        ModelNotFoundError: "404",
    }
    return labels[type(error)]


SITUATIONS = (
    "stream",
    "answered after failures",
    "exhausted",
    "permanent",
    "skip",
    "advance without penalty",
    "retry-after wait",
    "recovery wait",
    "probe",
)
SEEN: Counter[str] = Counter()
"""What the calls of a run exercised, by the reference's account (see the test)."""


def tally(prediction: Prediction, streaming: bool) -> None:
    """Count the situations a predicted call goes through."""
    labels = {step.label for step in prediction.failures}
    SEEN.update(
        {
            "stream": streaming,
            "answered after failures": prediction.answer is not None and bool(labels),
            "exhausted": prediction.error == "exhausted",
            "permanent": prediction.error == "permanent",
            "skip": "skip" in labels,
            "advance without penalty": "404" in labels,
            "retry-after wait": 0.5 in prediction.sleeps,
            "recovery wait": prediction.recovery_wait is not None,
            "probe": bool(prediction.probes),
        }
    )


class ScriptedTarget:
    """A model that answers each attempt by the next label of its script (then "ok").

    Every attempt is logged (in the shared `attempts`); a stream fails in-band, after
    its start event, and counts as opened and, once closed, closed.
    """

    def __init__(self, key: str, attempts: list[str]) -> None:
        self.key = key
        self.script: list[str] = []
        self.attempts = attempts
        self.opened = 0
        self.closed = 0

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities()

    def _next(self) -> str:
        self.attempts.append(self.key)
        return self.script.pop(0) if self.script else "ok"

    async def generate(self, request: Request | str, *options: Option) -> Response:
        await anyio.lowlevel.checkpoint()
        label = self._next()
        if label != "ok":
            raise make_error(self.key, label)
        return Response(text="ok", model=self.key, usage=Usage(1, 1))

    async def stream(self, request: Request | str, *options: Option) -> Stream:
        await anyio.lowlevel.checkpoint()
        self.opened += 1
        return Stream(self._events(self._next()), model=self.key, on_close=self._on_close)

    def _on_close(self) -> None:
        self.closed += 1

    async def _events(self, label: str) -> AsyncIterator[StreamEvent]:
        yield StreamStart(model=self.key)
        if label != "ok":
            raise make_error(self.key, label)
        yield TextDelta("ok")
        yield StreamEnd()


def observed(failures: tuple[TargetFailure, ...], clock: ManualClock) -> list[Step]:
    """The real failure list in the reference's terms (skip times back on the clock)."""
    steps = []
    for failure in failures:
        until: float | None = None
        if isinstance(failure.error, TargetSkippedError) and failure.error.until is not None:
            until = (failure.error.until - clock.wall(0.0)).total_seconds()
        steps.append(Step(failure.key, label_of(failure), failure.attempt, _micro(until)))
    return steps


def expected(prediction: Prediction) -> list[Step]:
    return [
        Step(step.key, step.label, step.attempt, _micro(step.until)) for step in prediction.failures
    ]


def _micro(seconds: float | None) -> float | None:
    # A skip's time reaches us as a wall-clock datetime: microsecond resolution.
    return None if seconds is None else round(seconds, 6)


class ChainMachine(RuleBasedStateMachine):
    """Chains over shared targets and one tracker, checked against the references."""

    def __init__(self) -> None:
        super().__init__()
        # One event loop for the whole run: the store's lock and the chains live in it.
        self.runner = asyncio.Runner()
        self.ready = False

    @initialize(
        threshold=st.sampled_from([1, 2, 3]),
        retries=st.sampled_from([-1, 0, 2]),
        recovery=st.sampled_from([0.5, 30.0]),
    )
    def setup(self, threshold: int, retries: int, recovery: float) -> None:
        self.clock = ManualClock()
        health = HealthConfig(failure_threshold=threshold, base_cooldown=1.0, max_cooldown=8.0)
        config = ChainConfig(
            transient_retries=retries,
            retry_backoff=0,
            max_retry_wait=2.0,
            max_recovery_wait=recovery,
        )
        self.store = InMemoryHealthStore(health, self.clock)
        tracker = HealthTracker(health, clock=self.clock, store=self.store)
        self.attempts: list[str] = []
        self.targets = {key: ScriptedTarget(key, self.attempts) for key in KEYS}
        self.chains = [
            Chain([Target(key, self.targets[key]) for key in spec], tracker, config)
            for spec in SPECS
        ]
        self.reference = ReferenceChain(ReferenceHealth(health), config)
        self.ready = True

    def teardown(self) -> None:
        loop = self.runner.get_loop()
        leftovers = [task for task in asyncio.all_tasks(loop) if not task.done()]
        self.runner.close()
        assert not leftovers, f"tasks left running: {leftovers}"

    @precondition(lambda self: self.ready)
    @rule(chain=st.integers(0, len(SPECS) - 1), streaming=st.booleans(), data=st.data())
    def call(self, chain: int, streaming: bool, data: st.DataObject) -> None:
        """One call; it must do exactly what the reference predicts."""
        scripts: dict[str, list[str]] = {key: [] for key in KEYS}

        def outcome(key: str) -> str:
            # Drawn when the reference attempts `key`: only outcomes that matter are drawn.
            label = data.draw(OUTCOMES, label=f"attempt on {key}")
            scripts[key].append(label)
            return label

        prediction = self.reference.call(SPECS[chain], outcome)
        tally(prediction, streaming)
        for key, target in self.targets.items():
            target.script = scripts[key]
        self.attempts.clear()
        sleeps = len(self.clock.sleeps)

        result, snapshot = self.runner.run(self._call(self.chains[chain], streaming))

        assert self.attempts == prediction.attempts
        assert self.clock.sleeps[sleeps:] == prediction.sleeps
        assert self.clock.now() == self.reference.now
        assert snapshot == self.reference.health.snapshot()
        assert all(target.opened == target.closed for target in self.targets.values())
        if prediction.answer is not None:
            assert isinstance(result, Response), result
            assert result.model == prediction.answer
            failures = result.failed_attempts
        elif prediction.error == "permanent":
            assert isinstance(result, AuthenticationError), result
            assert result.key == prediction.attempts[-1]
            return
        else:
            assert isinstance(result, ChainExhaustedError), result
            failures = result.failures
        assert observed(failures, self.clock) == expected(prediction)

    async def _call(
        self, chain: Chain, streaming: bool
    ) -> tuple[Response | Exception, dict[str, tuple[int, int, float | None, bool]]]:
        """The call's response or error, and the health store's state after it."""
        result: Response | Exception
        try:
            if streaming:
                async with await chain.stream("hi") as stream:
                    async for _ in stream:
                        pass
                result = stream.response
            else:
                result = await chain.generate("hi")
        except (ChainExhaustedError, AuthenticationError) as exc:
            result = exc
        return result, dict(await self.store.snapshot())

    @precondition(lambda self: self.ready)
    @rule(seconds=st.sampled_from([0.25, 0.5, 1.0, 2.0, 4.0, 30.0]))
    def advance(self, seconds: float) -> None:
        """Time passes between calls: cooldowns end."""
        self.clock.advance(seconds)
        self.reference.now += seconds


def test_chains_and_tracker_follow_the_reference_model() -> None:
    """Random call/advance sequences: every attempt, skip, wait and state as predicted."""
    SEEN.clear()
    run_state_machine_as_test(
        ChainMachine,
        settings=settings(max_examples=120, stateful_step_count=25, deadline=None),
    )

    # The run went through every situation the rules distinguish (so it can fail there).
    assert all(SEEN[situation] > 0 for situation in SITUATIONS), SEEN
