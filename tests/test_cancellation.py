"""Cancellation at every await point a call passes through.

Method. `cut_at(k, call)` runs `call()` inside a cancel scope and cancels that scope at the
call's k-th suspension: the k-th time its coroutine yields to the event loop, counted by a
transparent wrapper around the coroutine (`_counted`). A sweep builds a fresh scenario for
k = 1, 2, 3, ... and stops at the first k the call does not reach: every await point the
call passes through is cut once. A cancellation that lands inside a shielded section (the
health store's lock, a stream's `aclose`) is delivered at the next unshielded one, as anyio
promises.

After every cut:

- the cancellation propagated: once a `CancelledError` was thrown into the call, the call
  ended with it (never swallowed, never turned into an error);
- no failure was reported for the cancelled attempt: the health store's log (recorded by
  `RecordingStore`) holds no more failures per target than the target really produced, and
  replays exactly on the reference model of the health rules;
- every stream the models opened was closed, and no probe slot is held;
- on the wire emulators, the registry's session holds no connection;
- the next call through the same chain answers from the expected target at once (a probe
  slot left held would make it skip a half-open target).

Scripted scenarios (`SteppingModel`: checkpoints before each answer and each stream event)
run for `generate` and `stream`: a single target, a same-target retry, a failover, the
all-benched recovery wait, a recovery probe, and a mid-stream restart. On each of the four
wire emulators (real sockets, one connection pool for all cuts) run a reply, a retry
(generate) and a failover; the retry and failover are cut until the answering attempt is
established, after which they would repeat the reply's cuts. Explicit tests then cancel
at named points: while waiting for headers, mid-body, mid-stream, during a probe; and cover
a consumer that breaks out of `async for` and a consumer task cancelled with the stream
open. `no_leaked_tasks` checks that nothing is left running.
"""

from __future__ import annotations

import types
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Generator, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import anyio
import anyio.lowlevel
import attrs
import pytest
from aiohttp import web

from majordomo_async import (
    Chain,
    ChainConfig,
    HealthConfig,
    HealthTracker,
    InMemoryHealthStore,
    Limits,
    ManualClock,
    Option,
    OverloadedError,
    ProviderError,
    Registry,
    Request,
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
from majordomo_async._limits import Refused
from majordomo_async._routing import Group

from .helpers.reference import RecordingStore, replay
from .helpers.scripted import HANG, ScriptedModel, error
from .helpers.servers import acquired_connections, serve
from .helpers.wire import (
    AnthropicWire,
    Behaviour,
    ErrorEvent,
    Fail,
    GeminiWire,
    OllamaWire,
    OpenAIWire,
    Reply,
    Stall,
    Wire,
)

pytestmark = pytest.mark.usefixtures("no_leaked_tasks")

T = TypeVar("T")

SWEEP_LIMIT = 1_000
"""No scenario here suspends this often: a sweep that gets here is stuck."""


# --------------------------------------------------------------------------- the cutter


@types.coroutine
def _counted(
    coro: Coroutine[Any, Any, T], on_suspend: Callable[[int], None], thrown: list[BaseException]
) -> Generator[Any, Any, T]:
    """Run `coro` exactly as `await coro` would, calling `on_suspend(n)` at its n-th suspension.

    Every exception the event loop throws into the call (a cancellation) is appended to
    `thrown` before it is passed on.
    """
    value: Any = None
    exc: BaseException | None = None
    suspensions = 0
    while True:
        try:
            yielded = coro.send(value) if exc is None else coro.throw(exc)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        suspensions += 1
        on_suspend(suspensions)
        try:
            value, exc = (yield yielded), None
        except BaseException as caught:
            thrown.append(caught)
            value, exc = None, caught


@attrs.define
class Cut:
    """What a call did when cancelled at its k-th suspension."""

    k: int
    reached: bool
    """The call suspended k times, so the scope was cancelled."""
    cancelled: bool
    """The cancellation reached our scope (the call ended with it)."""
    result: Any = None
    """The call's result, when it finished."""
    answered: bool = False
    """Set by a scenario: the answering target was already established when the cut
    fell, so later cuts would only repeat a scenario that covers them."""


async def cut_at(k: int, call: Callable[[], Coroutine[Any, Any, Any]]) -> Cut:
    """Run `call()`, cancelling it at its k-th suspension; check the cancellation propagated.

    Any exception other than the cancellation propagates to the test.
    """
    thrown: list[BaseException] = []
    result: Any = None
    with anyio.CancelScope() as scope:

        def on_suspend(n: int) -> None:
            if n == k:
                scope.cancel()

        result = await _counted(call(), on_suspend, thrown)
    cancel = anyio.get_cancelled_exc_class()
    # (Before the cut, a cancellation thrown in is the call's own: a timer's scope, such
    # as the hedge delay's.)
    if scope.cancel_called and any(isinstance(exc, cancel) for exc in thrown):
        # Thrown in, so it must have come out: the call ended with the cancellation.
        assert scope.cancelled_caught, f"cut {k}: the call swallowed its cancellation"
    return Cut(k, scope.cancel_called, scope.cancelled_caught, result)


async def sweep(run: Callable[[int], Awaitable[Cut]], *, at_least: int) -> list[Cut]:
    """`run(k)` for k = 1, 2, ... until the call finishes before its k-th suspension.

    A sweep also stops at a cut marked `answered`. `at_least`: the fewest cuts that must
    have cancelled the call (so the sweep can fail).
    """
    cuts: list[Cut] = []
    for k in range(1, SWEEP_LIMIT):
        cut = await run(k)
        cuts.append(cut)
        if not cut.reached or cut.answered:
            break
    else:
        raise AssertionError(f"the call still suspended after {SWEEP_LIMIT} cuts")
    cancelled = sum(cut.cancelled for cut in cuts)
    assert cancelled >= at_least, f"only {cancelled} cuts cancelled the call"
    return cuts


async def cancel_when(
    call: Callable[[], Awaitable[Any]], ready: Callable[[], Awaitable[None]]
) -> list[BaseException]:
    """Run `call` in a task, cancel it once `ready()` returns; what the call raised."""
    raised: list[BaseException] = []

    async def task() -> None:
        try:
            await call()
        except BaseException as exc:
            raised.append(exc)
            raise

    async with anyio.create_task_group() as tg:
        tg.start_soon(task)
        await ready()
        tg.cancel_scope.cancel()
    return raised


def cancelled_only(raised: list[BaseException]) -> bool:
    """The call ended with the cancellation and nothing else."""
    return [type(exc) for exc in raised] == [anyio.get_cancelled_exc_class()]


# --------------------------------------------------------------------------- scripted targets


class SteppingModel(ScriptedModel):
    """A `ScriptedModel` that suspends before answering and before every stream event.

    It counts what it really did, for the checks: `failures` (scripted errors raised),
    `opened` and `closed` streams.
    """

    def __init__(self, key: str, outcomes: Sequence[Any], *, steps: int = 2) -> None:
        super().__init__(key, outcomes)
        self.steps = steps
        self.failures = 0
        self.opened = 0
        self.closed = 0

    async def _outcome(self, request: Request) -> Any:
        for _ in range(self.steps):
            await anyio.lowlevel.checkpoint()
        try:
            return await super()._outcome(request)
        except ProviderError:
            self.failures += 1
            raise

    async def stream(self, request: Request | str, *options: Option) -> Stream:
        outcome = await self._outcome(as_request(request).apply(*options))
        if isinstance(outcome, str):
            events: list[Any] = [
                StreamStart(model=self.key),
                TextDelta(outcome[:1]),
                TextDelta(outcome[1:]),
                UsageUpdate(Usage(1, 1)),
                StreamEnd(),
            ]
        else:
            events = list(outcome)
        self.opened += 1
        return Stream(self._stepping(events), model=self.key, on_close=self._on_close)

    def _on_close(self) -> None:
        self.closed += 1

    async def _stepping(self, events: list[Any]) -> AsyncIterator[StreamEvent]:
        for event in events:
            await anyio.lowlevel.checkpoint()
            if event == HANG:
                await anyio.sleep_forever()
            if isinstance(event, Exception):
                self.failures += 1
                raise event
            yield event


def overloaded() -> Exception:
    return error(OverloadedError, "busy", status=503)


@attrs.define
class Scene:
    """One scripted scenario: a chain over stepping models, its clock and recorded store."""

    chain: Chain
    models: tuple[SteppingModel, ...]
    store: RecordingStore
    health: HealthConfig
    clock: ManualClock
    answers: str
    """The key of the target that answers when nothing is cancelled."""
    setup_ops: int = 0
    """Store operations the scenario's setup made (benching a target) before the call."""
    probe_at_once: bool = False
    """The answering target is half-open: a later call must probe it without waiting."""
    busy: Any = None
    """A lease on p/head the scene holds for its whole life (a target at its limit)."""


async def answer_key(chain: Chain, streaming: bool, prompt: str = "hi") -> str:
    """Make one call through `chain` (reading a stream to its end); the answering key."""
    if not streaming:
        return (await chain.generate(prompt)).model
    async with await chain.stream(prompt) as stream:
        async for _ in stream:
            pass
    return stream.response.model


def scene(
    *models: SteppingModel,
    answers: str,
    health: HealthConfig | None = None,
    config: ChainConfig | None = None,
    limits: dict[str, Limits] | None = None,
    group: int = 0,
) -> Scene:
    """A chain over `models`; the first `group` of them a balanced group, and `limits`
    set on the tracker."""
    clock = ManualClock()
    health = health or HealthConfig()
    store = RecordingStore(InMemoryHealthStore(health, clock))
    tracker = HealthTracker(health, clock=clock, store=store)
    for name, value in (limits or {}).items():
        tracker.limits.set(name, value)
    targets = [Target(m.key, m, limited=tracker.limits.limited(m.key)) for m in models]
    positions: list[Target | Group] = list(targets)
    if group:
        positions = [Group(targets[:group], [1.0] * group, tracker.load), *targets[group:]]
    chain = Chain(positions, tracker, config or ChainConfig())
    return Scene(chain, models, store, health, clock, answers)


def broken_stream(*content: StreamEvent) -> list[Any]:
    """A stream outcome: start, `content`, then a transient failure."""
    return [StreamStart(), *content, overloaded()]


async def single(streaming: bool) -> Scene:
    return scene(SteppingModel("p/only", ["ok"]), answers="p/only")


async def retry(streaming: bool) -> Scene:
    first: Any = broken_stream() if streaming else overloaded()
    head = SteppingModel("p/head", [first, "ok"])
    return scene(head, answers="p/head", health=HealthConfig(failure_threshold=5))


async def failover(streaming: bool) -> Scene:
    head = SteppingModel("p/head", [broken_stream() if streaming else overloaded()])
    return scene(head, SteppingModel("p/tail", ["ok"]), answers="p/tail")


async def recovery_wait(streaming: bool) -> Scene:
    """The only target is benched: the call waits out its cooldown, then probes it."""
    built = scene(
        SteppingModel("p/only", ["ok"]), answers="p/only", health=HealthConfig(failure_threshold=1)
    )
    await built.chain._tracker.report_failure("p/only")
    built.setup_ops = len(built.store.log)
    return built


async def probe(streaming: bool) -> Scene:
    """The head's cooldown is over: the call is its single recovery probe."""
    head = SteppingModel("p/head", ["ok"], steps=3)
    built = scene(
        head,
        SteppingModel("p/tail", ["ok"]),
        answers="p/head",
        health=HealthConfig(failure_threshold=1),
    )
    await built.chain._tracker.report_failure("p/head")
    built.clock.advance(1.0)
    built.setup_ops = len(built.store.log)
    built.probe_at_once = True
    return built


async def restart(streaming: bool) -> Scene:
    """`mid_stream="restart"`: the head fails after content; the tail answers in full."""
    head = SteppingModel("p/head", [broken_stream(TextDelta("Hel"))])
    return scene(
        head,
        SteppingModel("p/tail", ["ok"]),
        answers="p/tail",
        config=ChainConfig(mid_stream="restart"),
    )


async def group_failover(streaming: bool) -> Scene:
    """A limited group: its first member fails (retried, then benched), the second answers."""
    head = SteppingModel("p/head", [broken_stream() if streaming else overloaded()])
    return scene(
        head,
        SteppingModel("p/other", ["ok"]),
        SteppingModel("q/tail", ["ok"]),
        answers="p/other",
        config=ChainConfig(strategy="ordered"),
        limits={"p": Limits(max_concurrency=2, rpm=1000, tpm=100_000), "q/tail": Limits(rpm=5)},
        group=2,
    )


async def hedged(streaming: bool) -> Scene:
    """Hedging on: the head fails and waits out its retry backoff (the manual clock jumps
    past the hedge delay), so the hedge lane starts on the next member and answers."""
    head = SteppingModel("p/head", [broken_stream() if streaming else overloaded()])
    return scene(
        head,
        SteppingModel("p/other", ["ok"]),
        answers="p/other",
        config=ChainConfig(strategy="ordered", hedge_after=0.01),
        health=HealthConfig(failure_threshold=5),
        limits={"p": Limits(max_concurrency=2)},
        group=2,
    )


async def at_limit(streaming: bool) -> Scene:
    """The head is at its limit (a slot held elsewhere): skipped; the tail answers."""
    built = scene(
        SteppingModel("p/head", ["ok"]),
        SteppingModel("p/tail", ["ok"]),
        answers="p/tail",
        limits={"p/head": Limits(max_concurrency=1)},
    )
    built.busy = await built.chain._tracker.limits.acquire("p/head", 0)
    assert not isinstance(built.busy, Refused)
    return built


SCENES: dict[str, Callable[[bool], Awaitable[Scene]]] = {
    "single": single,
    "retry": retry,
    "failover": failover,
    "recovery-wait": recovery_wait,
    "probe": probe,
    "group-failover": group_failover,
    "at-limit": at_limit,
    "hedged": hedged,
}


async def check_scene(built: Scene, cut: Cut, streaming: bool) -> None:
    """The invariants every cut must leave behind (module docstring)."""
    if not cut.reached:
        assert cut.result == built.answers
    log = built.store.log[built.setup_ops :]
    for model in built.models:
        reported = sum(1 for op, key, *_ in log if op == "fail" and key == model.key)
        assert reported <= model.failures, (
            f"cut {cut.k}: {reported} failures reported for {model.key}, "
            f"which failed {model.failures} times: a cancelled attempt was counted"
        )
        assert model.opened == model.closed, f"cut {cut.k}: a stream of {model.key} left open"
    tracker = built.chain._tracker
    snapshot = await tracker.snapshot()
    assert all(health.state != "probing" for health in snapshot.values()), snapshot
    assert all(health.in_flight == 0 for health in snapshot.values()), snapshot
    busy = 1 if built.busy is not None else 0  # the one slot the scene holds
    for name, state in tracker.limits.snapshot().items():
        assert state.waiting == 0, f"cut {cut.k}: a waiter of {name} left queued"
        assert state.in_use == (busy if name == "p/head" else 0), f"cut {cut.k}: {name} leaked"
    sleeps = len(built.clock.sleeps)
    # The chain still works, and a half-open target is probed at once (no slot held).
    assert await answer_key(built.chain, streaming) == built.answers
    if built.probe_at_once:
        assert len(built.clock.sleeps) == sleeps, "the follow-up had to wait for a probe slot"
    replay(built.store.log, built.health)


async def sweep_scene(build: Callable[[bool], Awaitable[Scene]], streaming: bool) -> list[Cut]:
    async def run(k: int) -> Cut:
        built = await build(streaming)
        cut = await cut_at(k, lambda: answer_key(built.chain, streaming))
        await check_scene(built, cut, streaming)
        return cut

    return await sweep(run, at_least=2)


@pytest.mark.parametrize("streaming", [False, True], ids=["generate", "stream"])
@pytest.mark.parametrize("name", SCENES)
async def test_scripted_call_cancelled_at_every_await_point(name: str, streaming: bool) -> None:
    """Cancelled anywhere, a call propagates it, reports nothing for it, leaks nothing."""
    cuts = await sweep_scene(SCENES[name], streaming)

    # The last cut is past the end: the uncancelled call answered from the expected target.
    expected = (await SCENES[name](streaming)).answers
    assert cuts[-1].result == expected


async def test_restart_stream_cancelled_at_every_await_point() -> None:
    """The opt-in mid-stream restart, cut anywhere: on the failed stream, between, after."""
    cuts = await sweep_scene(restart, True)

    assert cuts[-1].result == "p/tail"
    assert len(cuts) > 10  # both streams and the restart between them were cut


async def test_probe_cancelled_mid_attempt_is_probed_again_at_once() -> None:
    """The single-flight slot of a cancelled probe is free for the very next caller."""
    built = await probe(False)
    head = built.models[0]

    # The head's attempt passes 3 checkpoints before it answers: cut at the second.
    cut = await cut_at(2, lambda: answer_key(built.chain, False))

    assert cut.cancelled
    assert (head.calls, head.failures) == (0, 0)
    assert (await built.chain._tracker.snapshot())["p/head"].state == "half-open"
    assert [op for op, *_ in built.store.log[built.setup_ops :]] == ["admit", "release"]
    assert await answer_key(built.chain, False) == "p/head"
    assert head.calls == 1
    assert built.clock.sleeps == []
    assert await built.chain._tracker.snapshot() == {}


# --------------------------------------------------------------------------- consumers


async def test_consumer_breaking_out_of_async_for_closes_the_stream() -> None:
    """`break` inside `async with`: the stream closes; no failure is reported."""
    built = await single(True)
    model = built.models[0]

    async with await built.chain.stream("hi") as stream:
        async for event in stream:
            if isinstance(event, TextDelta):
                break

    assert stream.closed and not stream.finished
    assert (model.opened, model.closed) == (1, 1)
    assert [op for op, *_ in built.store.log] == ["admit"]  # left early: no verdict


async def test_consumer_task_cancelled_with_the_stream_open() -> None:
    """A consumer task cancelled while it waits for the next event: the stream closes."""
    head = SteppingModel("p/only", [[StreamStart(), TextDelta("Hel"), HANG]])
    built = scene(head, answers="p/only")
    received: list[StreamEvent] = []
    got_content = anyio.Event()

    async def consume() -> None:
        async with await built.chain.stream("hi") as stream:
            async for event in stream:
                received.append(event)
                got_content.set()

    raised = await cancel_when(consume, got_content.wait)

    assert cancelled_only(raised)
    assert received == [StreamStart(), TextDelta("Hel")]
    assert (head.opened, head.closed) == (1, 1)
    assert await built.chain._tracker.snapshot() == {}


# --------------------------------------------------------------------------- real providers

WIRES: dict[str, type[Wire]] = {
    "openai": OpenAIWire,
    "anthropic": AnthropicWire,
    "gemini": GeminiWire,
    "ollama": OllamaWire,
}
KEY = "sk-cancel-test"
SHORT = Reply("Grüße ✓", input_tokens=3, output_tokens=4, pieces=2)


@attrs.define
class Served:
    """`wire`'s provider API on 127.0.0.1, whose request handlers all end with the block.

    aiohttp does not cancel a handler whose client went away, and a stalled one would
    outlive the server (and fail `no_leaked_tasks`): leaving `running()` cancels them.

    With `hold`, a request is read and counted in `arrived`, then nothing is sent (the
    headers never come); with `prefix`, 200 and these bytes of a longer body are sent,
    then nothing more. Otherwise the emulator answers by its script.

    A `marker` set, a request whose body lacks it is answered 410 without reaching the
    emulator: a request of an earlier, cancelled call may arrive late, and must not take
    a scripted reply meant for the next one.
    """

    wire: Wire
    hold: bool = False
    prefix: bytes | None = None
    marker: str | None = None
    arrived: int = 0
    scopes: set[anyio.CancelScope] = attrs.Factory(set)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        response: web.StreamResponse = web.Response(status=503)
        with anyio.CancelScope() as scope:
            self.scopes.add(scope)
            try:
                if self.marker is not None and self.marker.encode() not in await request.read():
                    return web.Response(status=410)
                if not (self.hold or self.prefix):
                    return await self.wire._handle(request)
                await request.read()
                if self.prefix:
                    response = web.StreamResponse(headers={"Content-Type": "application/json"})
                    response.content_length = 2 * len(self.prefix)  # promise more than is sent
                    await response.prepare(request)
                    await response.write(self.prefix)
                self.arrived += 1
                await anyio.sleep_forever()
            finally:
                self.scopes.discard(scope)
        return response  # released: the client is gone, nothing more is sent

    @asynccontextmanager
    async def running(self) -> AsyncIterator[str]:
        """Serve; yield the DSN of a provider pointed at this server."""
        async with serve({self.wire.route: self.handle}) as base:
            try:
                yield f"{self.wire.scheme}://{KEY}@{base.partition('://')[2]}{self.wire.base_path}"
            finally:
                for scope in list(self.scopes):
                    scope.cancel()


@attrs.define
class WireScene:
    """A registry on a local server, with a recorded health store and a manual clock."""

    registry: Registry
    store: RecordingStore
    clock: ManualClock

    def connections(self) -> int:
        """Connections the registry's session has checked out."""
        return acquired_connections(self.registry._http.get())


@asynccontextmanager
async def on_wire(served: Served, health: HealthConfig) -> AsyncIterator[WireScene]:
    """Serve `served`; yield a fresh registry (and health store) on it as provider `a`.

    When the block ends without an error, the session must hold no connection.
    """
    clock = ManualClock()
    store = RecordingStore(InMemoryHealthStore(health, clock))
    async with served.running() as dsn:
        registry = Registry(
            env={"LLM_A": dsn},
            clock=clock,
            health=health,
            health_store=store,
            chain=ChainConfig(retry_backoff=0),
        )
        async with registry:
            built = WireScene(registry, store, clock)
            yield built
            assert built.connections() == 0


@attrs.frozen
class WirePlan:
    """A wire scenario: the emulator's script per mode, the spec and the expected answer."""

    generate: tuple[Behaviour, ...]
    stream: tuple[Behaviour, ...] | None
    """None: the plan is not run for streams."""
    spec: str
    answers: str
    health: HealthConfig = attrs.field(factory=HealthConfig)
    failing_requests: int = 0
    """How many requests of the script fail (at the start): at most this many failures
    may be reported."""
    until_answered: bool = False
    """Cut only until the answering attempt is established: the rest of the call is
    the "reply" plan's (this keeps the sweeps of long streams short)."""


WIRE_PLANS = {
    "reply": WirePlan((SHORT,), (SHORT,), "a/m", "a/m"),
    # Streams: the failover plan retries its head (and the scripted sweeps cover both).
    "retry": WirePlan(
        (Fail(503), SHORT),
        None,
        "a/m",
        "a/m",
        HealthConfig(failure_threshold=5),
        failing_requests=1,
        until_answered=True,
    ),
    "failover": WirePlan(
        (Fail(503), Fail(503), SHORT),
        # The head's stream fails with a status, its retry with an in-band error event.
        (Fail(503), ErrorEvent(503), SHORT),
        "a/m1,a/m2",
        "a/m2",
        failing_requests=2,
        until_answered=True,
    ),
}


WIRE_CASES = [
    pytest.param(name, streaming, id=f"{name}-{'stream' if streaming else 'generate'}")
    for name, plan in WIRE_PLANS.items()
    for streaming in (False, True)
    if not streaming or plan.stream is not None
]


@pytest.mark.parametrize(("plan_name", "streaming"), WIRE_CASES)
@pytest.mark.parametrize("provider", WIRES)
async def test_provider_call_cancelled_at_every_await_point(
    provider: str, plan_name: str, streaming: bool
) -> None:
    """Real sockets: a reply, a retry and a failover cut at every suspension of the call.

    One server and one registry (its connection pool) serve every cut; each cut gets a
    fresh emulator script, health store and chain, and a prompt that marks its requests.
    """
    plan = WIRE_PLANS[plan_name]
    served = Served(WIRES[provider]())
    async with on_wire(served, plan.health) as shared:

        async def run(k: int) -> Cut:
            script = plan.stream if streaming else plan.generate
            assert script is not None
            wire = WIRES[provider](script, key=KEY)
            served.wire, served.marker = wire, f"<cut {k}>"
            clock = ManualClock()
            store = RecordingStore(InMemoryHealthStore(plan.health, clock))
            tracker = HealthTracker(plan.health, clock=clock, store=store)
            targets = [
                Target(key, shared.registry.provider("a").model(key.partition("/")[2]))
                for key in plan.spec.split(",")
            ]
            chain = Chain(targets, tracker, ChainConfig(retry_backoff=0))

            cut = await cut_at(k, lambda: answer_key(chain, streaming, served.marker or ""))

            if not cut.reached:
                assert cut.result == plan.answers
            assert shared.connections() == 0, f"cut {k} left a connection checked out"
            fails = sum(1 for op, *_ in store.log if op == "fail")
            assert fails <= min(len(wire.requests), plan.failing_requests), (
                f"cut {k}: a cancelled attempt was reported as a failure"
            )
            snapshot = await tracker.snapshot()
            assert all(health.state != "probing" for health in snapshot.values())
            replay(store.log, plan.health)
            cut.answered = plan.until_answered and any(op == "success" for op, *_ in store.log)
            return cut

        cuts = await sweep(run, at_least=3)

    last = cuts[-1]
    assert last.answered or last.result == plan.answers


# --------------------------------------------------------------------------- named points


SETTLE_TURNS = 20
"""Loop turns `settled()` gives the client after the server signalled."""


async def settled(predicate: Callable[[], bool]) -> None:
    """Yield to the loop (and its sockets) until `predicate()` holds, then a few turns more.

    The extra turns let the client read what the server just sent. Where exactly the
    cancellation then lands changes nothing the tests assert, only what they exercise.
    """
    with anyio.fail_after(5):
        while not predicate():
            await anyio.lowlevel.checkpoint()
    for _ in range(SETTLE_TURNS):
        await anyio.lowlevel.checkpoint()


@pytest.mark.parametrize("streaming", [False, True], ids=["generate", "stream"])
@pytest.mark.parametrize("provider", WIRES)
async def test_cancelled_while_waiting_for_headers(provider: str, streaming: bool) -> None:
    """Cancelled while the server holds back its headers: no failure, no connection left."""
    served = Served(WIRES[provider](), hold=True)
    async with on_wire(served, HealthConfig()) as s:
        chain = s.registry.parse("a/m")

        raised = await cancel_when(
            lambda: answer_key(chain, streaming), lambda: settled(lambda: served.arrived == 1)
        )

        assert cancelled_only(raised)
        assert await s.registry.health.snapshot() == {}
        assert [op for op, *_ in s.store.log] == ["admit"]


@pytest.mark.parametrize("provider", WIRES)
async def test_generate_cancelled_mid_body(provider: str) -> None:
    """Cancelled after the headers, with part of the JSON body read."""
    served = Served(WIRES[provider](), prefix=b'{"choices": [{"message": {"content": "Hal')
    async with on_wire(served, HealthConfig()) as s:
        chain = s.registry.parse("a/m")

        raised = await cancel_when(
            lambda: chain.generate("hi"), lambda: settled(lambda: served.arrived == 1)
        )

        assert cancelled_only(raised)
        assert await s.registry.health.snapshot() == {}
        assert [op for op, *_ in s.store.log] == ["admit"]


@pytest.mark.parametrize("provider", WIRES)
async def test_consumer_cancelled_mid_stream(provider: str) -> None:
    """A consumer task cancelled mid-stream (the server stalled after some text)."""
    served = Served(WIRES[provider]([Stall(text="Hallo aus Zürich, wie geht's?")], key=KEY))
    async with on_wire(served, HealthConfig()) as s:
        chain = s.registry.parse("a/m")
        streams: list[Stream] = []
        got_content = anyio.Event()

        async def consume() -> None:
            async with await chain.stream("hi") as stream:
                streams.append(stream)
                async for event in stream:
                    if isinstance(event, TextDelta):
                        got_content.set()

        raised = await cancel_when(consume, got_content.wait)

        assert cancelled_only(raised)
        assert streams[0].closed and not streams[0].finished
        assert await s.registry.health.snapshot() == {}
        assert [op for op, *_ in s.store.log] == ["admit"]  # cancelled: no verdict


@pytest.mark.parametrize("provider", WIRES)
async def test_consumer_breaking_out_of_a_provider_stream(provider: str) -> None:
    """`break` after the first delta inside `async with`: the connection is released."""
    served = Served(WIRES[provider]([SHORT], key=KEY))
    async with on_wire(served, HealthConfig()) as s:
        chain = s.registry.parse("a/m")
        async with await chain.stream("hi") as stream:
            async for event in stream:
                if isinstance(event, TextDelta):
                    break

        assert stream.closed and not stream.finished
        assert s.connections() == 0
        assert await answer_key(chain, True) == "a/m"  # the same registry answers in full


@pytest.mark.parametrize("streaming", [False, True], ids=["generate", "stream"])
@pytest.mark.parametrize("provider", WIRES)
async def test_cancelled_probe_on_the_wire_is_probed_again_at_once(
    provider: str, streaming: bool
) -> None:
    """A probe cancelled while the server stalls gives its slot back; the next call probes."""
    # Generate stalls before the headers; a stream after its preamble, before any content.
    wire = WIRES[provider]([Stall()], key=KEY)
    health = HealthConfig(failure_threshold=1)
    async with on_wire(Served(wire), health) as s:
        chain = s.registry.parse("a/m")
        await s.registry.health.report_failure("a/m")
        s.clock.advance(1.0)

        async def probing() -> None:
            await settled(lambda: len(wire.requests) == 1)
            assert (await s.registry.health.snapshot())["a/m"].state == "probing"

        raised = await cancel_when(lambda: answer_key(chain, streaming), probing)

        assert cancelled_only(raised)
        assert (await s.registry.health.snapshot())["a/m"].state == "half-open"
        wire.program(SHORT)
        assert await answer_key(chain, streaming) == "a/m"
        assert await s.registry.health.snapshot() == {}
        assert (len(wire.requests), s.clock.sleeps) == (2, [])
