"""A FastAPI service on majordomo_async: one `Registry` per process, answers and SSE streams.

Run it with no keys at all (the default spec uses the built-in fake provider, whose head
target always answers 503, so every call shows a failover):

```bash
uvicorn examples.fastapi_app:app
curl -s localhost:8000/ask -H 'content-type: application/json' -d '{"prompt": "Hello"}'
curl -sN localhost:8000/stream -H 'content-type: application/json' -d '{"prompt": "A story"}'
curl -s localhost:8000/health
```

Point it at real providers with the spec variable and the usual keys or DSNs:
`MAJORDOMO_SPEC="openai/gpt-4o-mini,anthropic/claude-haiku-4-5"`, or
`LLM_LOCAL="openai+http://127.0.0.1:8001/v1" MAJORDOMO_SPEC="local/my-model"`.

Endpoints:

- `POST /ask` `{"prompt": ..., "max_tokens": ...}`: the whole answer as JSON.
- `POST /stream` (same body): server-sent events, one `data: {"text": ...}` per text
  delta, `event: restart` when the answer starts over on another target, and a final
  `event: done` with the model and usage (or `event: error` if it failed midway).
- `GET /health`: the registry's health snapshot (healthy targets are not listed).

Library errors become JSON with a status: 503 when every target failed (with each
target's reason), 502 for a permanent provider error, 500 for a configuration error.

A client that disconnects cancels its upstream call at once, whenever it leaves: before
the answer (`cancel_on_disconnect`: the server itself would let the call run on) or
mid-stream (Starlette cancels the stream; `BackgroundTask(opened.aclose)` closes a stream
whose generator never started). A cancelled call costs the targets nothing in health.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field
from starlette.background import BackgroundTask

from majordomo_async import (
    Chain,
    ChainConfig,
    ChainExhaustedError,
    ClientDisconnectedError,
    ConfigurationError,
    MajordomoError,
    Option,
    ProviderError,
    Registry,
    Stream,
    StreamRestart,
    TargetFailure,
    TextDelta,
    Usage,
    cancel_on_disconnect,
    max_tokens,
)

__all__ = ["DEFAULT_SPEC", "SPEC_VARIABLE", "app", "create_app", "error_reply"]

logger = logging.getLogger(__name__)

SPEC_VARIABLE = "MAJORDOMO_SPEC"
"""The environment variable holding the spec every endpoint answers with."""

DEFAULT_SPEC = "fake/head?script=503,fake/backup?chunk_delay=0.05"
"""A spec that needs no key and fails over: the head always answers 503."""

CALL_TIMEOUT = 120.0
"""Seconds for one call, failover and the whole stream included: a request never waits
on providers forever."""

# Proxies (nginx) buffer responses by default, which would hold every token back.
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


# --------------------------------------------------------------------------- the process's registry


@dataclass(frozen=True)
class Service:
    """What the lifespan sets up once per process and every request shares."""

    registry: Registry
    spec: str

    def model(self) -> Chain:
        """The chain for the configured spec.

        Parsed per request on purpose: `parse()` does no I/O and caches per spec, and a
        bad spec then answers 500 with its reason while `/health` keeps working, rather
        than stopping the whole service at startup.
        """
        return self.registry.parse(self.spec)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Service]]:
    """Own the process's one `Registry`: created at startup, closed at shutdown.

    The registry holds the HTTP connection pool and the health state that every call
    shares; one per request would reconnect every time and forget every failure.
    """
    # The preset for streaming to people: a target that fails after it sent tokens is
    # replaced by the next one (announced to the client by a `restart` event, so the
    # stream still completes), and a silent or stalled target costs seconds, not minutes.
    config = ChainConfig.interactive(timeout=CALL_TIMEOUT)
    async with Registry(chain=config) as registry:
        # Lifespan state is copied into every request's `request.state`.
        yield {"service": Service(registry, os.environ.get(SPEC_VARIABLE, DEFAULT_SPEC))}


def get_service(request: Request) -> Service:
    """The lifespan's `Service` (a dependency)."""
    service: Service = request.state.service
    return service


ServiceDep = Annotated[Service, Depends(get_service)]


# --------------------------------------------------------------------------- JSON shapes


class Prompt(BaseModel):
    """The body of `/ask` and `/stream`."""

    prompt: str = Field(min_length=1)
    max_tokens: int | None = Field(default=None, gt=0)

    def options(self) -> list[Option]:
        """The request options the body asks for."""
        return [max_tokens(self.max_tokens)] if self.max_tokens is not None else []


class TokenUsage(BaseModel):
    """Token counts of one answer."""

    input_tokens: int
    output_tokens: int

    @classmethod
    def of(cls, usage: Usage) -> TokenUsage:
        """Convert the library's `Usage`."""
        return cls(input_tokens=usage.input_tokens, output_tokens=usage.output_tokens)


class FailedAttempt(BaseModel):
    """One failed attempt (or skipped target) of a call, in the order it happened."""

    target: str
    attempt: int
    error: str
    """The error's class name, e.g. "OverloadedError" or "TargetSkippedError"."""
    reason: str

    @classmethod
    def all_of(cls, failures: Iterable[TargetFailure]) -> list[FailedAttempt]:
        """Convert a call's `failed_attempts` (or a `ChainExhaustedError`'s `failures`)."""
        return [
            cls(
                target=failure.key,
                attempt=failure.attempt,
                error=type(failure.error).__name__,
                reason=str(failure.error),
            )
            for failure in failures
        ]


class Outcome(BaseModel):
    """Who answered and what it cost: the end of an answer, streamed or not."""

    model: str
    """The "provider/model-id" of the target that answered."""
    finish_reason: str
    usage: TokenUsage
    failed_attempts: list[FailedAttempt]


class Answer(Outcome):
    """The body of a `/ask` answer."""

    text: str


class Delta(BaseModel):
    """The data of one text `data:` event of `/stream`."""

    text: str


class Restart(BaseModel):
    """The data of a `restart` event: discard the text received so far."""

    model: str
    """The target that answers from here on."""
    failed: str
    """The target that failed midway."""
    reason: str


class ErrorBody(BaseModel):
    """The JSON of an error answer, and the data of a stream's `error` event."""

    error: str
    """"chain_exhausted", "provider_error", "configuration_error", "client_disconnected"
    or "internal_error"."""
    message: str
    target: str | None = None
    """The target that raised a provider error."""
    upstream_status: int | None = None
    """The provider's HTTP status, when it answered with one."""
    failures: list[FailedAttempt] = Field(default_factory=list)
    """Every attempt and skip, for "chain_exhausted"."""


class TargetState(BaseModel):
    """One target the health tracker has something to say about."""

    state: str
    """"failing", "benched", "half-open" or "probing"."""
    consecutive_failures: int
    benchings: int
    backed_off_until: datetime | None


class Health(BaseModel):
    """The body of `/health`."""

    spec: str
    targets: dict[str, TargetState]
    """Targets with recorded failures; a healthy target is not listed."""


# --------------------------------------------------------------------------- errors


def error_reply(exc: MajordomoError) -> tuple[int, ErrorBody]:
    """The HTTP status and JSON body a library error answers with."""
    if isinstance(exc, ClientDisconnectedError):
        # Nobody is left to read it (the server drops it): 499 "client closed request",
        # as nginx logs it, and no error is logged for an ordinary event.
        return 499, ErrorBody(error="client_disconnected", message=str(exc))
    if isinstance(exc, ChainExhaustedError):
        # Every target failed or is benched: the service is unavailable for now, and a
        # retry later may well succeed. Each target's reason helps whoever is on call.
        return 503, ErrorBody(
            error="chain_exhausted",
            message="every target of the chain failed",
            failures=FailedAttempt.all_of(exc.failures),
        )
    if isinstance(exc, ProviderError):
        # The chain raises only permanent errors itself (a bad key, a rejected request,
        # an exhausted quota): the upstream refused, and retrying will not change that.
        return 502, ErrorBody(
            error="provider_error",
            message=f"{type(exc).__name__}: {exc}",
            target=exc.key,
            upstream_status=exc.status,
        )
    if isinstance(exc, ConfigurationError):
        # The service's own setup is wrong (spec, DSN): nothing the client can fix.
        logger.error("majordomo configuration error: %s", exc)
        return 500, ErrorBody(error="configuration_error", message=str(exc))
    return 500, ErrorBody(error="internal_error", message=f"{type(exc).__name__}: {exc}")


async def library_error(request: Request, exc: MajordomoError) -> JSONResponse:
    """The exception handler for every `MajordomoError` an endpoint raises."""
    status, body = error_reply(exc)
    return JSONResponse(body.model_dump(mode="json"), status_code=status)


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    500: {"model": ErrorBody, "description": "The service is misconfigured"},
    502: {"model": ErrorBody, "description": "A provider refused the request"},
    503: {"model": ErrorBody, "description": "Every target failed or is benched"},
}


# --------------------------------------------------------------------------- endpoints

router = APIRouter()


@router.post("/ask", responses=ERROR_RESPONSES)
async def ask(body: Prompt, service: ServiceDep, request: Request) -> Answer:
    """Answer a prompt, failing over along the configured chain."""
    # The server does not cancel an endpoint whose client left: without this, the call
    # (its retries and failovers too) would run on for nobody.
    async with cancel_on_disconnect(request):
        response = await service.model().generate(body.prompt, *body.options())
    return Answer(
        text=response.text,
        model=response.model,
        finish_reason=response.finish_reason.value,
        usage=TokenUsage.of(response.usage),
        failed_attempts=FailedAttempt.all_of(response.failed_attempts),
    )


@router.post("/stream", response_class=StreamingResponse, responses=ERROR_RESPONSES)
async def stream(body: Prompt, service: ServiceDep, request: Request) -> StreamingResponse:
    """Stream an answer as server-sent events."""
    # Opened here rather than inside the event generator: a chain fails over until its
    # first token, so a call that fails before then still answers with a real status
    # (503, 502, ...) through the exception handler, not a 200 with an error event.
    # Until then no response is being sent, so nothing else notices a client that left.
    async with cancel_on_disconnect(request):
        opened = await service.model().stream(body.prompt, *body.options())
    return StreamingResponse(
        sse_events(opened),
        media_type="text/event-stream",
        headers=SSE_HEADERS,
        # Runs after the response, even when the client left before the generator ever
        # started (its `async with` would then never run); `aclose()` is idempotent.
        background=BackgroundTask(opened.aclose),
    )


@router.get("/health")
async def health(service: ServiceDep) -> Health:
    """The health tracker's view of every target it has seen fail."""
    snapshot = await service.registry.health.snapshot()
    return Health(
        spec=service.spec,
        targets={
            key: TargetState(
                state=entry.state,
                consecutive_failures=entry.consecutive_failures,
                benchings=entry.benchings,
                backed_off_until=entry.backed_off_until,
            )
            for key, entry in snapshot.items()
        },
    )


def sse(payload: BaseModel, event: str | None = None) -> str:
    """One server-sent event. Compact JSON has no raw newline, so one `data:` line holds it."""
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {payload.model_dump_json()}\n\n"


async def sse_events(opened: Stream) -> AsyncIterator[str]:
    """The stream as server-sent events.

    When the client disconnects, Starlette cancels the task iterating this generator
    (uvicorn and other servers of ASGI spec 2.3 and older; with spec 2.4 it stops at the
    next write, which fails); the cancellation reaches the provider's read inside
    `async with`, which closes the upstream connection at once. A cancelled call is
    never counted against a target's health.
    """
    async with opened:
        try:
            async for event in opened:
                if isinstance(event, TextDelta):
                    yield sse(Delta(text=event.text))
                elif isinstance(event, StreamRestart):
                    yield sse(
                        Restart(model=event.model, failed=event.failed, reason=str(event.error)),
                        event="restart",
                    )
        except MajordomoError as exc:
            # The 200 and some tokens are already out: report the failure in-band.
            yield sse(error_reply(exc)[1], event="error")
            return
        answer = opened.response
        yield sse(
            Outcome(
                model=answer.model,
                finish_reason=answer.finish_reason.value,
                usage=TokenUsage.of(answer.usage),
                failed_attempts=FailedAttempt.all_of(answer.failed_attempts),
            ),
            event="done",
        )


# --------------------------------------------------------------------------- the app


def create_app() -> FastAPI:
    """A new app; the spec is read from `MAJORDOMO_SPEC` when it starts."""
    application = FastAPI(title="majordomo_async example", lifespan=lifespan)
    application.include_router(router)
    application.exception_handler(MajordomoError)(library_error)
    return application


app = create_app()

if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=8000)
