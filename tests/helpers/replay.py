"""The recorded-response corpus (`tests/fixtures/replay/`), served by a real local server.

Each case is a body recorded in a provider's own shape, `<provider>/<case>.json` (a
generate reply or an error reply), `.sse` or `.ndjson` (a stream), beside
`<case>.expect.json`, which says how to serve it and what the library must make of it:

```
{"about": "...", "scheme": "deepseek", "model": "deepseek-reasoner", "status": 200,
 "headers": {"retry-after": "7"},
 "expect": {"text": ..., "tool_calls": [{"name": ..., "arguments": {...}}],
            "finish_reason": "stop", "usage": {...all five Usage fields...},
            "served_model": ..., "reasoning": ..., "reasoning_parts": [...], "refusal": ...,
            "sent_back": ["signature", ...]}}
 or "expect": {"error": {"class": "RateLimitError", "status": 429, "retry_after": 7.0}}
```

(`tests/fixtures/replay/README.md` has every key, and where each shape comes from.)

One `.expect.json` serves both bodies of a case (`text.json` and `text.sse`): a generate
and a stream of the same answer must come out the same. An error reply (status >= 400)
is played to a generate and to a stream alike. `Outcome` is the comparable form of both
sides: `expected_outcome(case)` from the file, `outcome_of(response)` / `outcome_of_error(exc)`
from the library (`run_library`) and, in `tests/test_differential.py`, from an official SDK.

`replay(case, bytewise=...)` serves the body on 127.0.0.1 with its status and headers
(and a Content-Length), either whole or one byte per write, yielding to the client after
each, so that the readers meet every split; it records each request's path and body.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final, Literal, TypeAlias

import attrs
from aiohttp import web

from majordomo_async import (
    ChainConfig,
    ChainExhaustedError,
    Message,
    ProviderError,
    Registry,
    Request,
    Response,
    Tool,
)

from .servers import serve

__all__ = [
    "CORPUS",
    "DEFAULT_SCHEMES",
    "PROVIDERS",
    "Case",
    "Mode",
    "Outcome",
    "ReplayServer",
    "expected_outcome",
    "load_cases",
    "outcome_of",
    "outcome_of_error",
    "check_request",
    "replay",
    "run_library",
]

CORPUS: Final = Path(__file__).resolve().parent.parent / "fixtures" / "replay"
PROVIDERS: Final = ("openai", "anthropic", "gemini", "ollama")

Mode: TypeAlias = Literal["generate", "stream"]

DEFAULT_SCHEMES: Final[Mapping[str, str]] = {
    "openai": "openai",
    "anthropic": "anthropic",
    "gemini": "gemini",
    "ollama": "ollama",
}
"""The DSN scheme (before `+http`) a provider folder's cases use unless they name one."""

_CONTENT_TYPES: Final[Mapping[str, str]] = {
    ".json": "application/json",
    ".sse": "text/event-stream",
    ".ndjson": "application/x-ndjson",
}
_BODY_SUFFIXES: Final = tuple(_CONTENT_TYPES)
_KEY: Final = "sk-replay-0123456789"
_PROMPT: Final = "Replay the recorded answer."

_USAGE_FIELDS: Final = (
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
)


@attrs.frozen
class Case:
    """One recorded body and how it is played to one mode."""

    provider: str
    """The provider folder: "openai", "anthropic", "gemini" or "ollama"."""
    name: str
    """The case name (the file name without its suffixes)."""
    body_path: Path
    mode: Mode
    spec: Mapping[str, Any] = attrs.field(repr=False, eq=False)
    """The decoded `<name>.expect.json`."""

    @property
    def id(self) -> str:
        """The test id: "openai/text.sse:stream"."""
        return f"{self.provider}/{self.body_path.name}:{self.mode}"

    @property
    def body(self) -> bytes:
        return self.body_path.read_bytes()

    @property
    def status(self) -> int:
        status = self.spec.get("status", 200)
        assert isinstance(status, int)
        return status

    @property
    def headers(self) -> dict[str, str]:
        """The reply's headers: the body's Content-Type, then the case's own."""
        headers = {"Content-Type": _CONTENT_TYPES[self.body_path.suffix]}
        headers.update(self.spec.get("headers", {}))
        return headers

    @property
    def scheme(self) -> str:
        scheme = self.spec.get("scheme", DEFAULT_SCHEMES[self.provider])
        assert isinstance(scheme, str)
        return scheme

    @property
    def model(self) -> str:
        model = self.spec["model"]
        assert isinstance(model, str)
        return model

    @property
    def expect(self) -> Mapping[str, Any]:
        expect = self.spec["expect"]
        assert isinstance(expect, dict)
        return expect

    def dsn(self, url: str) -> str:
        """The `LLM_REPLAY` DSN that points this case's provider at `url`."""
        host = url.removeprefix("http://")
        if self.provider == "openai" and self.scheme == "openai":
            return f"openai+http://{_KEY}@{host}/v1"
        if self.provider == "gemini":
            return f"gemini+http://{_KEY}@{host}/v1beta"
        if self.provider == "ollama":
            return f"ollama+http://{host}"
        return f"{self.scheme}+http://{_KEY}@{host}"


def _body_files(folder: Path) -> list[Path]:
    return sorted(
        path
        for path in folder.iterdir()
        if path.suffix in _BODY_SUFFIXES and not path.name.endswith(".expect.json")
    )


def load_cases(providers: Sequence[str] = PROVIDERS) -> list[Case]:
    """Every (body, mode) of the corpus for `providers`, in a stable order.

    A 2xx `.json` body is a generate, `.sse` and `.ndjson` are streams, and an error
    reply is played to both modes.
    """
    cases: list[Case] = []
    for provider in providers:
        for path in _body_files(CORPUS / provider):
            name = path.name.removesuffix(path.suffix)
            spec_path = path.with_name(f"{name}.expect.json")
            spec = json.loads(spec_path.read_text())
            status = spec.get("status", 200)
            modes: tuple[Mode, ...]
            if status >= 400:
                modes = ("generate", "stream")
            elif path.suffix == ".json":
                modes = ("generate",)
            else:
                modes = ("stream",)
            cases.extend(Case(provider, name, path, mode, spec) for mode in modes)
    return cases


# --------------------------------------------------------------------------- the server


@attrs.define
class ReplayServer:
    """A running replay server: its base URL, the case it plays, the requests it received."""

    url: str
    case: Case | None = None
    """The case every request is answered with; set it to play another."""
    bytewise: bool = False
    """Write the body one byte per write (draining after each), not whole."""
    requests: list[bytes] = attrs.Factory(list)
    """Each request's body, in order."""
    paths: list[str] = attrs.Factory(list)
    """Each request's path and query, in order."""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Answer any request with the current case's recorded reply."""
        self.requests.append(await request.read())
        self.paths.append(request.path_qs)
        case = self.case
        assert case is not None, "no case to replay: set ReplayServer.case"
        body = case.body
        if not self.bytewise:
            return web.Response(status=case.status, body=body, headers=case.headers)
        response = web.StreamResponse(status=case.status, headers=case.headers)
        response.content_length = len(body)
        await response.prepare(request)
        for index in range(len(body)):
            await response.write(body[index : index + 1])
            await asyncio.sleep(0)  # drain: let the client read this byte on its own
        await response.write_eof()
        return response


@asynccontextmanager
async def replay(
    case: Case | None = None, *, bytewise: bool = False
) -> AsyncIterator[ReplayServer]:
    """Serve `case`'s recorded reply (to any path) on 127.0.0.1 until the block ends."""
    server = ReplayServer("", case, bytewise)
    async with serve({"/{path:.*}": server.handle}) as url:
        server.url = url
        yield server


# --------------------------------------------------------------------------- outcomes


@attrs.frozen
class Outcome:
    """What a reply came to, in a form both sides of a comparison can build; compare
    `as_dict()`s, for pytest's readable diff. `reasoning_parts` is None when not compared
    (the expectation does not name them); `error` replaces everything for an error."""

    text: str = ""
    tool_calls: tuple[tuple[str, str], ...] = ()
    """(name, arguments as canonical JSON) per call, in order."""
    finish_reason: str = "stop"
    usage: tuple[tuple[str, int], ...] = ()
    served_model: str | None = None
    reasoning: str = ""
    reasoning_parts: tuple[tuple[tuple[str, Any], ...], ...] | None = None
    refusal: str | None = None
    error: tuple[tuple[str, Any], ...] | None = None

    def as_dict(self) -> dict[str, Any]:
        if self.error is not None:
            return {"error": dict(self.error)}
        data: dict[str, Any] = {
            "text": self.text,
            "tool_calls": [
                {"name": name, "arguments": json.loads(arguments)}
                for name, arguments in self.tool_calls
            ],
            "finish_reason": self.finish_reason,
            "usage": dict(self.usage),
            "served_model": self.served_model,
            "reasoning": self.reasoning,
            "refusal": self.refusal,
        }
        if self.reasoning_parts is not None:
            data["reasoning_parts"] = [dict(part) for part in self.reasoning_parts]
        return data


def _canonical(arguments: Any) -> str:
    return json.dumps(arguments, sort_keys=True, separators=(",", ":"))


def _usage(values: Mapping[str, Any]) -> tuple[tuple[str, int], ...]:
    return tuple((field, int(values.get(field, 0))) for field in _USAGE_FIELDS)


def _part(part: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    return (
        ("text", part.get("text", "")),
        ("signature", part.get("signature")),
        ("redacted", part.get("redacted")),
        ("provider", part.get("provider", "")),
    )


def expected_outcome(case: Case) -> Outcome:
    """The `Outcome` the case's `.expect.json` names (absent fields take their defaults:
    no text, no calls, STOP, zero usage, no reasoning, no refusal)."""
    expect = case.expect
    error = expect.get("error")
    if error is not None:
        return Outcome(
            error=(
                ("class", error["class"]),
                ("status", error.get("status")),
                ("retry_after", error.get("retry_after")),
            )
        )
    parts = expect.get("reasoning_parts")
    return Outcome(
        text=expect.get("text", ""),
        tool_calls=tuple(
            (call["name"], _canonical(call["arguments"])) for call in expect.get("tool_calls", ())
        ),
        finish_reason=expect.get("finish_reason", "stop"),
        usage=_usage(expect.get("usage", {})),
        served_model=expect.get("served_model"),
        reasoning=expect.get("reasoning", ""),
        reasoning_parts=None if parts is None else tuple(_part(part) for part in parts),
        refusal=expect.get("refusal"),
    )


def _arguments(text: str) -> str:
    try:
        return _canonical(json.loads(text or "{}"))
    except ValueError:
        return json.dumps(text)  # compared as written: not JSON


def outcome_of(response: Response, *, with_parts: bool) -> Outcome:
    """The library's `Response` as an `Outcome` (`with_parts`: compare reasoning_parts)."""
    usage = response.usage
    return Outcome(
        text=response.text,
        tool_calls=tuple((call.name, _arguments(call.arguments)) for call in response.tool_calls),
        finish_reason=response.finish_reason.value,
        usage=_usage({field: getattr(usage, field) for field in _USAGE_FIELDS}),
        served_model=response.served_model,
        reasoning=response.reasoning,
        reasoning_parts=(
            tuple(_part(attrs.asdict(part)) for part in response.reasoning_parts)
            if with_parts
            else None
        ),
        refusal=response.refusal,
    )


def outcome_of_error(error: BaseException) -> Outcome:
    """A library error as an `Outcome`: a one-target chain's only failure, unwrapped."""
    if isinstance(error, ChainExhaustedError) and len(error.failures) == 1:
        error = error.failures[0].error
    status = error.status if isinstance(error, ProviderError) else None
    retry_after = error.retry_after if isinstance(error, ProviderError) else None
    return Outcome(
        error=(("class", type(error).__name__), ("status", status), ("retry_after", retry_after))
    )


# --------------------------------------------------------------------------- the library


def _registry(case: Case, url: str) -> Registry:
    # No retries: a transient error is reported by the one attempt that met it.
    return Registry(env={"LLM_REPLAY": case.dsn(url)}, chain=ChainConfig(transient_retries=-1))


async def _ask(registry: Registry, case: Case, request: Request) -> Response:
    model = registry.parse(f"replay/{case.model}")
    if case.mode == "generate":
        return await model.generate(request)
    stream = await model.stream(request)
    return await stream.collect()


def check_request(case: Case, server: ReplayServer) -> None:
    """The first request asked for what the case plays: a stream or a whole reply."""
    stream = case.mode == "stream"
    if case.provider == "gemini":
        method = ":streamGenerateContent?alt=sse" if stream else ":generateContent"
        assert server.paths[0].endswith(method), server.paths[0]
        return
    body = json.loads(server.requests[0])
    assert body.get("stream", case.provider == "ollama") is stream, body.get("stream")


async def run_library(case: Case, server: ReplayServer) -> tuple[Outcome, Response | None]:
    """Play `case` through a `Registry` pointed at `server`; return its `Outcome` (and the
    `Response`, None for an error). A case with `sent_back` signatures then sends the
    answer back as history with a result for each tool call: each signature must be in
    that follow-up request's body."""
    async with _registry(case, server.url) as registry:
        try:
            response = await _ask(registry, case, Request(_PROMPT))
        except (ProviderError, ChainExhaustedError) as exc:
            return outcome_of_error(exc), None
        sent_back = case.expect.get("sent_back")
        if sent_back:
            history = [
                Message.user(_PROMPT),
                response.message,
                *(Message.tool_result(call.id, '{"ok": true}') for call in response.tool_calls),
            ]
            tools = [Tool(call.name, "", {"type": "object"}) for call in response.tool_calls]
            await _ask(registry, case, Request(history, tools=tools))
            follow_up = server.requests[-1].decode()
            missing = [signature for signature in sent_back if signature not in follow_up]
            assert not missing, f"not sent back in the next request: {missing}"
    return outcome_of(response, with_parts="reasoning_parts" in case.expect), response
