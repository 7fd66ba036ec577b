"""`ScriptedModel`: an AsyncModel whose successive calls follow a script (a fake, not a mock)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import anyio

from majordomo_async import (
    Capabilities,
    Chain,
    ChainConfig,
    HealthConfig,
    HealthTracker,
    Hooks,
    ManualClock,
    Option,
    Request,
    Response,
    Stream,
    StreamEnd,
    StreamEvent,
    StreamStart,
    Target,
    TextDelta,
    Usage,
    UsageUpdate,
    as_request,
)

HANG = "<hang>"
"""Outcome: never answer (until cancelled)."""


class Sleep:
    """Outcome: sleep `seconds` on the model's clock, then answer with `then`."""

    def __init__(self, seconds: float, then: Any = "ok") -> None:
        self.seconds = seconds
        self.then = then


class ScriptedModel:
    """Answers call N with `outcomes[N]` (the last one repeats).

    An outcome is a reply text, an exception instance (raised), `HANG`, a `Sleep`, or for
    streams a list of events in which an exception instance is raised at its position.
    """

    def __init__(
        self,
        key: str,
        outcomes: Sequence[Any] = ("ok",),
        *,
        clock: ManualClock | None = None,
        capabilities: Capabilities | None = None,
    ) -> None:
        self.key = key
        self.outcomes = list(outcomes)
        self.clock = clock
        self.calls = 0
        self.requests: list[Request] = []
        self.closed_streams = 0
        self._capabilities = capabilities or Capabilities()

    @property
    def capabilities(self) -> Capabilities:
        return self._capabilities

    async def _outcome(self, request: Request) -> Any:
        self.requests.append(request)
        outcome = self.outcomes[min(self.calls, len(self.outcomes) - 1)]
        self.calls += 1
        if isinstance(outcome, Sleep):
            assert self.clock is not None, "Sleep outcomes need a clock"
            await self.clock.sleep(outcome.seconds)
            outcome = outcome.then
        if outcome == HANG:
            await anyio.sleep_forever()
        if isinstance(outcome, BaseException):
            raise outcome
        if callable(outcome):
            outcome = await outcome()
        return outcome

    async def generate(self, request: Request | str, *options: Option) -> Response:
        outcome = await self._outcome(as_request(request).apply(*options))
        if isinstance(outcome, Response):
            return outcome
        return Response(text=str(outcome), model=self.key, usage=Usage(1, 1))

    async def stream(self, request: Request | str, *options: Option) -> Stream:
        outcome = await self._outcome(as_request(request).apply(*options))
        if isinstance(outcome, str):
            events: list[Any] = [
                StreamStart(model=self.key),
                TextDelta(outcome),
                UsageUpdate(Usage(1, 1)),
                StreamEnd(),
            ]
        else:
            events = list(outcome)
        return Stream(self._events(events), model=self.key)

    async def _events(self, events: list[Any]) -> AsyncIterator[StreamEvent]:
        try:
            for event in events:
                if isinstance(event, Sleep):  # a pause between events, on the clock
                    assert self.clock is not None, "Sleep events need a clock"
                    await self.clock.sleep(event.seconds)
                    continue
                if event == HANG:
                    await anyio.sleep_forever()
                if isinstance(event, BaseException):
                    raise event
                yield event
        finally:
            self.closed_streams += 1


def make_chain(
    *models: ScriptedModel,
    clock: ManualClock,
    health: HealthConfig | None = None,
    config: ChainConfig | None = None,
    tracker: HealthTracker | None = None,
    hooks: Sequence[Hooks] = (),
) -> Chain:
    """A chain over `models` with a tracker on `clock`."""
    tracker = tracker or HealthTracker(health or HealthConfig(), clock=clock)
    return Chain(
        [Target(model.key, model) for model in models],
        tracker,
        config or ChainConfig(),
        hooks=hooks,
    )


def error(cls: Callable[..., Exception], message: str = "scripted", **fields: Any) -> Exception:
    """A provider error with provider/model filled in."""
    fields.setdefault("provider", "p")
    fields.setdefault("model", "m")
    return cls(message, **fields)
