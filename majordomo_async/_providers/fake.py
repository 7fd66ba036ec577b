"""The built-in `fake` provider: in-process, no network, scripted by keys.

Behaviour comes from the DSN query (the provider's defaults) and from the model id,
whose keys override the defaults:

```
model-id := NAME ["?" key "=" value ("&" key "=" value)*]
script   := step ("+" step)*            the last outcome repeats forever
step     := outcome ["*" N] | N "*" outcome     N repeats of one outcome
```

Model ids cannot contain commas (the spec grammar splits on them), so lists use `+`.
Spaces separate script steps too.
See `docs/fake-provider.md` for every key and outcome.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import AsyncIterator, Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Final
from urllib.parse import unquote

import anyio
import anyio.lowlevel
import attrs

from .._capabilities import Capabilities
from .._clock import Clock, MonotonicClock
from .._events import (
    ReasoningDelta,
    StreamEnd,
    StreamEvent,
    StreamStart,
    TextDelta,
    ToolCallDelta,
    UsageUpdate,
)
from .._exceptions import (
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
    ContentPolicyError,
    ContextLengthError,
    ModelNotFoundError,
    OverloadedError,
    ProviderConnectionError,
    ProviderError,
    ProviderTimeoutError,
    QuotaExceededError,
    RateLimitError,
    ServerError,
)
from .._messages import ReasoningPart, ToolCall
from .._request import Option, Request, as_request
from .._response import FinishReason, Response, Usage
from .._stream import Stream

if TYPE_CHECKING:
    from .._context import ProviderContext
    from .._dsn import DSN

__all__ = ["FakeModel", "FakeProvider", "fake_factory"]

_NO_DEFAULTS: Final[Mapping[str, str]] = MappingProxyType({})
_CAPABILITIES: Final = Capabilities(reasoning=True)
_EMPTY_PROMPT: Final = "(empty prompt)"
_WORDS: Final = re.compile(r"\s*\S+\s*|\s+")
"""One piece per word, its surrounding spaces kept (a reply of only spaces is one piece)."""


@attrs.frozen
class _Failure:
    """How one failing outcome is raised."""

    error: type[ProviderError]
    status: int | None
    message: str
    code: str | None = None


_FAILURES: Final[Mapping[str, _Failure]] = MappingProxyType(
    {
        "429": _Failure(RateLimitError, 429, "rate limited"),
        "quota": _Failure(QuotaExceededError, 429, "quota exhausted", "insufficient_quota"),
        "400": _Failure(BadRequestError, 400, "bad request"),
        "auth": _Failure(AuthenticationError, 401, "invalid credential"),
        "401": _Failure(AuthenticationError, 401, "invalid credential"),
        "notfound": _Failure(ModelNotFoundError, 404, "model not found"),
        "404": _Failure(ModelNotFoundError, 404, "model not found"),
        "context": _Failure(
            ContextLengthError, 400, "context length exceeded", "context_length_exceeded"
        ),
        "policy": _Failure(ContentPolicyError, 400, "refused by content policy"),
        "500": _Failure(ServerError, 500, "internal server error"),
        "502": _Failure(ServerError, 502, "bad gateway"),
        "503": _Failure(OverloadedError, 503, "service unavailable"),
        "529": _Failure(OverloadedError, 529, "overloaded"),
        "timeout": _Failure(ProviderTimeoutError, None, "timed out"),
        "reset": _Failure(ProviderConnectionError, None, "connection reset by peer"),
    }
)
_OK: Final = "ok"
_HANG: Final = "hang"
_OUTCOME_NAMES: Final = (_OK, *_FAILURES, "429:SECONDS", _HANG)


@attrs.frozen
class _Outcome:
    """One scripted outcome: `ok`, `hang`, or a key of `_FAILURES` (with `retry_after`)."""

    kind: str
    retry_after: float | None = None

    def error(self, provider: str, model: str) -> ProviderError | None:
        """The error this outcome raises, or None for `ok` and `hang`."""
        failure = _FAILURES.get(self.kind)
        if failure is None:
            return None
        return failure.error(
            f"scripted fake failure ({self.kind!r}): {failure.message}",
            provider=provider,
            model=model,
            status=failure.status,
            code=failure.code,
            retry_after=self.retry_after,
        )


@attrs.frozen
class _Behaviour:
    """Everything a fake model does, parsed once per model id."""

    reply: str | None = None
    """A fixed reply; None echoes the prompt."""
    script: tuple[tuple[int, _Outcome], ...] = ((1, _Outcome(_OK)),)
    """Run-length encoded outcomes: `(count, outcome)`; the last outcome repeats forever."""
    latency: float = 0.0
    chunks: int | None = None
    """Stream pieces; None is one piece per word."""
    chunk_delay: float = 0.0
    break_after: int | None = None
    tool: str | None = None
    """Answer with a call of this tool instead of text."""
    args: str = "{}"
    """The tool call's JSON arguments."""
    reasoning: str | None = None
    """Reasoning text streamed (`ReasoningDelta`) before the answer."""
    cached: int = 0
    """Input tokens reported as read from the prompt cache."""

    def outcome(self, call: int) -> _Outcome:
        """The outcome of call number `call` (0-based) of this model."""
        for count, outcome in self.script:
            if call < count:
                return outcome
            call -= count
        return self.script[-1][1]

    def pieces(self, reply: str) -> list[str]:
        """The reply split into stream pieces that join back to it exactly."""
        if self.chunks is None:
            return _WORDS.findall(reply)
        count = min(self.chunks, len(reply))  # never an empty piece
        size, extra = divmod(len(reply), count or 1)
        pieces: list[str] = []
        start = 0
        for index in range(count):
            end = start + size + (index < extra)
            pieces.append(reply[start:end])
            start = end
        return pieces

    @classmethod
    def parse(cls, keys: Mapping[str, str]) -> _Behaviour:
        """Build a behaviour from decoded `key -> value` pairs.

        Raises:
            ConfigurationError: an unknown key or a bad value, named in the message.
        """
        fields: dict[str, object] = {}
        for key, value in keys.items():
            parser = _PARSERS.get(key)
            if parser is None:
                raise ConfigurationError(
                    f"unknown fake provider key {key!r} (accepted keys: {', '.join(_PARSERS)})"
                )
            fields[key] = parser(value)
        return cls(**fields)  # type: ignore[arg-type]


def _seconds(key: str) -> Callable[[str], float]:
    def parse(value: str) -> float:
        try:
            seconds = float(value)
        except ValueError:
            seconds = math.nan
        if not math.isfinite(seconds) or seconds < 0:
            raise ConfigurationError(
                f"fake provider key {key!r} needs a number of seconds >= 0, got {value!r}"
            )
        return seconds

    return parse


def _count(key: str, minimum: int) -> Callable[[str], int]:
    def parse(value: str) -> int:
        text = value.strip()
        if not (text.isascii() and text.isdigit()) or int(text) < minimum:
            raise ConfigurationError(
                f"fake provider key {key!r} needs a whole number >= {minimum}, got {value!r}"
            )
        return int(text)

    return parse


def _tool_name(value: str) -> str:
    name = value.strip()
    if not name:
        raise ConfigurationError("fake provider key 'tool' needs a tool name")
    return name


def _json_object(value: str) -> str:
    try:
        parsed = json.loads(value)
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict):
        raise ConfigurationError(
            f"fake provider key 'args' needs a JSON object (percent-encode its commas as "
            f"%2C: a spec splits on commas), got {value!r}"
        )
    return value


def _parse_outcome(text: str) -> _Outcome:
    kind, colon, seconds = text.strip().lower().partition(":")
    if colon and kind == "429":
        return _Outcome(kind, _seconds("script (429:SECONDS)")(seconds))
    if not colon and (kind in _FAILURES or kind in (_OK, _HANG)):
        return _Outcome(kind)
    raise ConfigurationError(
        f"fake provider key 'script' has an unknown outcome {text!r} "
        f"(accepted outcomes: {', '.join(_OUTCOME_NAMES)}; repeat one with OUTCOME*N)"
    )


def _parse_step(step: str) -> tuple[int, _Outcome]:
    """`OUTCOME`, or `OUTCOME*N` / `N*OUTCOME`: the outcome repeated N times."""
    if "*" not in step:
        return 1, _parse_outcome(step)
    left, _, right = step.partition("*")
    readings = set()
    for outcome, count in ((left, right), (right, left)):
        if count.isascii() and count.isdigit() and int(count) >= 1:
            try:
                readings.add((int(count), _parse_outcome(outcome)))
            except ConfigurationError:
                continue
    if len(readings) == 1:
        return readings.pop()
    raise ConfigurationError(
        f"fake provider key 'script' has a bad repeat {step!r}: write OUTCOME*N "
        "(or N*OUTCOME) with one outcome and one whole number N >= 1, e.g. 503*2"
    )


def _parse_script(value: str) -> tuple[tuple[int, _Outcome], ...]:
    steps = [step for step in re.split(r"[+\s]+", value) if step]
    if not steps:
        raise ConfigurationError(
            "fake provider key 'script' is empty (write outcomes joined by '+', e.g. 503*2+ok)"
        )
    return tuple(_parse_step(step) for step in steps)


_PARSERS: Final[Mapping[str, Callable[[str], object]]] = MappingProxyType(
    {
        "reply": str,
        "script": _parse_script,
        "latency": _seconds("latency"),
        "chunks": _count("chunks", 1),
        "chunk_delay": _seconds("chunk_delay"),
        "break_after": _count("break_after", 0),
        "tool": _tool_name,
        "args": _json_object,
        "reasoning": str,
        "cached": _count("cached", 0),
    }
)


def _model_keys(model_id: str) -> dict[str, str]:
    """The percent-decoded `key=value` pairs after the model id's `?` (the last repeat wins)."""
    _, _, query = model_id.partition("?")
    keys: dict[str, str] = {}
    for pair in query.split("&"):
        if not pair:
            continue
        key, equals, value = pair.partition("=")
        if not equals:
            raise ConfigurationError(
                f"expected key=value after '?', got {pair!r} (accepted keys: {', '.join(_PARSERS)})"
            )
        keys[unquote(key).strip()] = unquote(value)
    return keys


def _words(text: str | None) -> int:
    return len(text.split()) if text else 0


def _fragments(arguments: str, size: int = 8) -> list[str]:
    """JSON arguments in pieces, as providers stream them (never an empty piece)."""
    return [arguments[start : start + size] for start in range(0, len(arguments), size)]


@attrs.frozen
class _Answer:
    text: str
    calls: tuple[ToolCall, ...]
    finish: FinishReason
    usage: Usage
    reasoning: str


class FakeModel:
    """A scripted in-process model. Get one with `FakeProvider.model(model_id)`.

    Successive calls (`generate` and `stream` share one counter) follow the model's
    script; the last outcome repeats forever.
    """

    __slots__ = ("_behaviour", "_calls", "_key", "_model_id", "_provider")

    def __init__(self, provider: FakeProvider, model_id: str, behaviour: _Behaviour) -> None:
        self._provider = provider
        self._model_id = model_id
        self._key = f"{provider.name}/{model_id}"
        self._behaviour = behaviour
        self._calls = 0

    @property
    def capabilities(self) -> Capabilities:
        """Everything is accepted, reasoning included (but it never reasons unasked:
        `reasoning=TEXT` scripts what it shows)."""
        return _CAPABILITIES

    @property
    def calls(self) -> int:
        """How many calls (generate and stream) this model has had."""
        return self._calls

    async def generate(self, request: Request | str, *options: Option) -> Response:
        """Answer after the scripted latency, or raise the scripted error.

        Args:
            request: the request, or a plain prompt (one user message).
            *options: request options, applied in order.

        Returns:
            The reply (fixed, or the echoed prompt) with word-count usage.

        Raises:
            ProviderError: the subclass this call's scripted outcome names.
        """
        request = as_request(request).apply(*options)
        request_id = await self._begin()
        answer = self._answer(request)
        return Response(
            text=answer.text,
            tool_calls=answer.calls,
            finish_reason=answer.finish,
            usage=answer.usage,
            model=self._key,
            request_id=request_id,
            reasoning=answer.reasoning,
            reasoning_parts=(ReasoningPart(answer.reasoning, provider="fake"),)
            if answer.reasoning
            else (),
            served_model=self._served_model,
        )

    async def stream(self, request: Request | str, *options: Option) -> Stream:
        """Start a streamed answer; a scripted error is raised here, before any event.

        Args:
            request: the request, or a plain prompt (one user message).
            *options: request options, applied in order.

        Returns:
            An open `Stream`: `StreamStart`, `TextDelta` pieces, `UsageUpdate`, `StreamEnd`.

        Raises:
            ProviderError: the subclass this call's scripted outcome names.
        """
        request = as_request(request).apply(*options)
        request_id = await self._begin()
        events = self._events(self._answer(request), request_id)
        return Stream(events, model=self._key, request_id=request_id)

    async def _begin(self) -> str:
        """Count the call, wait the latency, then play its outcome. Returns the request id."""
        outcome = self._behaviour.outcome(self._calls)
        self._calls += 1
        request_id = self._provider._next_request_id()
        if self._behaviour.latency > 0:
            await self._provider.clock.sleep(self._behaviour.latency)
        else:
            await anyio.lowlevel.checkpoint()
        if outcome.kind == _HANG:
            await anyio.sleep_forever()
        error = outcome.error(self._provider.name, self._model_id)
        if error is not None:
            raise error
        return request_id

    @property
    def _served_model(self) -> str:
        return self._model_id.partition("?")[0]

    def _reply(self, request: Request) -> str:
        if self._behaviour.reply is not None:
            return self._behaviour.reply
        return request.prompt or _EMPTY_PROMPT

    def _answer(self, request: Request) -> _Answer:
        """What this call answers: text or a tool call, reasoning, `max_tokens` honoured
        (one token per word), and the usage that goes with it."""
        behaviour = self._behaviour
        reasoning = behaviour.reasoning or ""
        if request.reasoning is not None and not request.reasoning.enabled:
            reasoning = ""
        inputs = _words(request.system) + sum(_words(message.text) for message in request.messages)
        calls: tuple[ToolCall, ...] = ()
        text = self._reply(request)
        finish = FinishReason.STOP
        if behaviour.tool is not None:
            calls = (ToolCall(f"call_{self._calls}", behaviour.tool, behaviour.args),)
            text, finish = "", FinishReason.TOOL_CALLS
        words = _WORDS.findall(text)
        if request.max_tokens is not None and len(words) > request.max_tokens:
            text, finish = "".join(words[: request.max_tokens]), FinishReason.LENGTH
        thoughts = _words(reasoning)
        usage = Usage(
            input_tokens=inputs,
            output_tokens=_words(text) + thoughts + len(calls),
            cached_input_tokens=min(behaviour.cached, inputs),
            reasoning_tokens=thoughts,
        )
        return _Answer(text, calls, finish, usage, reasoning)

    async def _events(self, answer: _Answer, request_id: str) -> AsyncIterator[StreamEvent]:
        behaviour = self._behaviour
        pieces = behaviour.pieces(answer.text) if answer.text else []
        if behaviour.break_after is not None:
            pieces = pieces[: behaviour.break_after]
        yield StreamStart(model=self._key, request_id=request_id, served_model=self._served_model)
        delay = behaviour.chunk_delay
        sent = 0
        for thought in behaviour.pieces(answer.reasoning) if answer.reasoning else ():
            if sent and delay > 0:
                await self._provider.clock.sleep(delay)
            sent += 1
            yield ReasoningDelta(thought, provider="fake")
        for index, call in enumerate(answer.calls):
            yield ToolCallDelta(index, call.id, call.name)
            for fragment in _fragments(call.arguments):
                if sent and delay > 0:
                    await self._provider.clock.sleep(delay)
                sent += 1
                yield ToolCallDelta(index, arguments=fragment)
        for piece in pieces:
            if sent and delay > 0:
                await self._provider.clock.sleep(delay)
            sent += 1
            yield TextDelta(piece)
        if behaviour.break_after is not None:
            raise ProviderConnectionError(
                f"connection reset mid-stream after {len(pieces)} pieces "
                "(scripted fake failure: break_after)",
                provider=self._provider.name,
                model=self._model_id,
            )
        yield UsageUpdate(answer.usage)
        yield StreamEnd(answer.finish)

    def __repr__(self) -> str:
        return f"<FakeModel {self._key}>"


class FakeProvider:
    """The in-process `fake` provider: scripted failures, latency and streams, no network.

    Args:
        name: the registry name (the first half of each target key).
        defaults: keys every model starts from (a DSN's query); a model id's keys override them.
        clock: what latencies and chunk delays sleep on (default `MonotonicClock()`).

    Raises:
        ConfigurationError: `defaults` has an unknown key or a bad value.

    Example:
        ```python
        provider = FakeProvider("fake", {"latency": "0.1"})
        model = provider.model("flaky?script=503*2+ok")
        ```
    """

    __slots__ = ("_clock", "_defaults", "_models", "_name", "_requests")

    def __init__(
        self,
        name: str,
        defaults: Mapping[str, str] = _NO_DEFAULTS,
        *,
        clock: Clock | None = None,
    ) -> None:
        self._name = name
        self._defaults = dict(defaults)
        try:
            _Behaviour.parse(self._defaults)
        except ConfigurationError as exc:
            raise ConfigurationError(f"fake provider {name!r}: {exc}") from None
        self._clock: Clock = clock if clock is not None else MonotonicClock()
        self._models: dict[str, FakeModel] = {}
        self._requests = 0

    @property
    def name(self) -> str:
        """The registry name."""
        return self._name

    @property
    def clock(self) -> Clock:
        """The clock latencies and chunk delays sleep on."""
        return self._clock

    def model(self, model_id: str) -> FakeModel:
        """The model `model_id` (`NAME[?key=value&...]`), cached per model-id string.

        Raises:
            ConfigurationError: the model id has an unknown key or a bad value.
        """
        model = self._models.get(model_id)
        if model is None:
            try:
                behaviour = _Behaviour.parse({**self._defaults, **_model_keys(model_id)})
            except ConfigurationError as exc:
                raise ConfigurationError(f"fake model {self._name}/{model_id}: {exc}") from None
            model = self._models.setdefault(model_id, FakeModel(self, model_id, behaviour))
        return model

    async def list_models(self) -> list[str]:
        """The model ids created so far, sorted."""
        return sorted(self._models)

    def _next_request_id(self) -> str:
        self._requests += 1
        return f"fake-{self._requests}"

    def __repr__(self) -> str:
        return f"FakeProvider({self._name!r}, {self._defaults!r})"


def fake_factory(name: str, dsn: DSN, context: ProviderContext) -> FakeProvider:
    """The `fake://` scheme factory: the DSN's query becomes the provider's defaults."""
    return FakeProvider(name, dsn.query, clock=context.clock)
