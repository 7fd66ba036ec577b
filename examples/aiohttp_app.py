"""An aiohttp.web service on majordomo_async: one `Registry` per process, answers and SSE streams.

The same service as `fastapi_app.py`, the aiohttp way: a cleanup context owns the
registry, a typed `web.AppKey` holds it, a middleware maps library errors to JSON, and
`web.StreamResponse` sends the server-sent events. Run it with no keys at all (the
default spec uses the built-in fake provider and fails over):

```bash
python examples/aiohttp_app.py          # http://127.0.0.1:8080
curl -s localhost:8080/ask -H 'content-type: application/json' -d '{"prompt": "Hello"}'
curl -sN localhost:8080/stream -H 'content-type: application/json' -d '{"prompt": "A story"}'
curl -s localhost:8080/health
```

Endpoints, events and error statuses are those of `fastapi_app.py`. Serve it with
`handler_cancellation=True` (as `main()` does): aiohttp then cancels a handler whose
client disconnected, and the cancellation closes the upstream provider call at once.
Without it the upstream call runs on until the next token fails to write.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import AsyncIterator, Iterable
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from majordomo_async import (
    Chain,
    ChainConfig,
    ChainExhaustedError,
    ConfigurationError,
    MajordomoError,
    Option,
    ProviderError,
    Registry,
    Response,
    Stream,
    StreamRestart,
    TargetFailure,
    TextDelta,
    Usage,
    max_tokens,
)

__all__ = ["DEFAULT_SPEC", "REGISTRY", "SPEC", "SPEC_VARIABLE", "create_app", "error_reply", "main"]

logger = logging.getLogger(__name__)

SPEC_VARIABLE = "MAJORDOMO_SPEC"
"""The environment variable holding the spec every endpoint answers with."""

DEFAULT_SPEC = "fake/head?script=503,fake/backup?chunk_delay=0.05"
"""A spec that needs no key and fails over: the head always answers 503."""

CALL_TIMEOUT = 120.0
"""Seconds for one call, failover and the whole stream included: a request never waits
on providers forever."""

REGISTRY = web.AppKey("registry", Registry)
"""The process's one `Registry`, set by `registry_context`."""
SPEC = web.AppKey("spec", str)
"""The spec the endpoints answer with, read from `MAJORDOMO_SPEC` at startup."""

JSON = dict[str, Any]

# Proxies (nginx) buffer responses by default, which would hold every token back.
SSE_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}


# --------------------------------------------------------------------------- the process's registry


async def registry_context(app: web.Application) -> AsyncIterator[None]:
    """Own the process's one `Registry`: created at startup, closed at cleanup.

    The registry holds the HTTP connection pool and the health state that every call
    shares; one per request would reconnect every time and forget every failure.
    """
    # The preset for streaming to people: a target that fails after it sent tokens is
    # replaced by the next one (announced to the client by a `restart` event, so the
    # stream still completes), and a silent or stalled target costs seconds, not minutes.
    config = ChainConfig.interactive(timeout=CALL_TIMEOUT)
    async with Registry(chain=config) as registry:
        app[REGISTRY] = registry
        app[SPEC] = os.environ.get(SPEC_VARIABLE, DEFAULT_SPEC)
        yield


def chain(request: web.Request) -> Chain:
    """The chain for the configured spec.

    Parsed per request on purpose: `parse()` does no I/O and caches per spec, and a bad
    spec then answers 500 with its reason while `/health` keeps working, rather than
    stopping the whole service at startup.
    """
    return request.app[REGISTRY].parse(request.app[SPEC])


# --------------------------------------------------------------------------- JSON shapes


def usage_json(usage: Usage) -> JSON:
    """Token counts of one answer."""
    return {"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens}


def failures_json(failures: Iterable[TargetFailure]) -> list[JSON]:
    """A call's failed attempts and skipped targets, in order."""
    return [
        {
            "target": failure.key,
            "attempt": failure.attempt,
            "error": type(failure.error).__name__,
            "reason": str(failure.error),
        }
        for failure in failures
    ]


def outcome_json(response: Response) -> JSON:
    """Who answered and what it cost: the end of an answer, streamed or not."""
    return {
        "model": response.model,
        "finish_reason": response.finish_reason.value,
        "usage": usage_json(response.usage),
        "failed_attempts": failures_json(response.failed_attempts),
    }


def error_reply(exc: MajordomoError) -> tuple[int, JSON]:
    """The HTTP status and JSON body a library error answers with."""
    if isinstance(exc, ChainExhaustedError):
        # Every target failed or is benched: the service is unavailable for now, and a
        # retry later may well succeed. Each target's reason helps whoever is on call.
        return 503, {
            "error": "chain_exhausted",
            "message": "every target of the chain failed",
            "failures": failures_json(exc.failures),
        }
    if isinstance(exc, ProviderError):
        # The chain raises only permanent errors itself (a bad key, a rejected request,
        # an exhausted quota): the upstream refused, and retrying will not change that.
        return 502, {
            "error": "provider_error",
            "message": f"{type(exc).__name__}: {exc}",
            "target": exc.key,
            "upstream_status": exc.status,
        }
    if isinstance(exc, ConfigurationError):
        # The service's own setup is wrong (spec, DSN): nothing the client can fix.
        logger.error("majordomo configuration error: %s", exc)
        return 500, {"error": "configuration_error", "message": str(exc)}
    return 500, {"error": "internal_error", "message": f"{type(exc).__name__}: {exc}"}


@web.middleware
async def library_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer every `MajordomoError` a handler raises with its status and JSON body."""
    try:
        return await handler(request)
    except MajordomoError as exc:
        status, body = error_reply(exc)
        return web.json_response(body, status=status)


async def read_prompt(request: web.Request) -> tuple[str, list[Option]]:
    """The prompt and options of a `/ask` or `/stream` body, or a 400."""
    try:
        body = await request.json()
    except ValueError:
        body = None
    prompt = body.get("prompt") if isinstance(body, dict) else None
    limit = body.get("max_tokens") if isinstance(body, dict) else None
    if not isinstance(prompt, str) or not prompt:
        raise bad_request("the body must be JSON with a non-empty string 'prompt'")
    if limit is None:
        return prompt, []
    if not isinstance(limit, int) or isinstance(limit, bool) or limit <= 0:
        raise bad_request("'max_tokens' must be a positive integer")
    return prompt, [max_tokens(limit)]


def bad_request(message: str) -> web.HTTPBadRequest:
    """A 400 with a JSON body like every other error of this service."""
    return web.HTTPBadRequest(
        text=json.dumps({"error": "bad_request", "message": message}),
        content_type="application/json",
    )


# --------------------------------------------------------------------------- endpoints

routes = web.RouteTableDef()


@routes.post("/ask")
async def ask(request: web.Request) -> web.Response:
    """Answer a prompt, failing over along the configured chain."""
    prompt, options = await read_prompt(request)
    response = await chain(request).generate(prompt, *options)
    return web.json_response({"text": response.text, **outcome_json(response)})


@routes.post("/stream")
async def stream(request: web.Request) -> web.StreamResponse:
    """Stream an answer as server-sent events."""
    prompt, options = await read_prompt(request)
    # Opened before the response is prepared: a chain fails over until its first
    # token, so a call that fails before then still answers with a real status (503,
    # 502, ...) through the middleware, not a 200 with an error event.
    opened = await chain(request).stream(prompt, *options)
    # On a disconnect, the cancellation (or the failed write) leaves this block, which
    # closes the upstream connection; a cancelled call never counts against a target.
    async with opened:
        response = web.StreamResponse(headers=SSE_HEADERS)
        await response.prepare(request)
        try:
            await send_events(opened, response)
            await response.write_eof()
        except ConnectionResetError:
            pass  # the client left (the server runs without handler cancellation)
    return response


async def send_events(opened: Stream, response: web.StreamResponse) -> None:
    """Write the stream's text deltas and restarts, then its `done` (or `error`) event."""
    try:
        async for event in opened:
            if isinstance(event, TextDelta):
                await response.write(sse({"text": event.text}))
            elif isinstance(event, StreamRestart):
                reason = str(event.error)
                restart = {"model": event.model, "failed": event.failed, "reason": reason}
                await response.write(sse(restart, event="restart"))
    except MajordomoError as exc:
        # The 200 and some tokens are already out: report the failure in-band.
        await response.write(sse(error_reply(exc)[1], event="error"))
        return
    await response.write(sse(outcome_json(opened.response), event="done"))


@routes.get("/health")
async def health(request: web.Request) -> web.Response:
    """The health tracker's view of every target it has seen fail."""
    snapshot = await request.app[REGISTRY].health.snapshot()
    targets = {
        key: {
            "state": entry.state,
            "consecutive_failures": entry.consecutive_failures,
            "benchings": entry.benchings,
            "backed_off_until": (
                entry.backed_off_until.isoformat() if entry.backed_off_until else None
            ),
        }
        for key, entry in snapshot.items()
    }
    return web.json_response({"spec": request.app[SPEC], "targets": targets})


def sse(data: JSON, event: str | None = None) -> bytes:
    """One server-sent event. Compact JSON has no raw newline, so one `data:` line holds it."""
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


# --------------------------------------------------------------------------- the app


def create_app() -> web.Application:
    """A new app; the spec is read from `MAJORDOMO_SPEC` when it starts."""
    app = web.Application(middlewares=[library_errors])
    app.cleanup_ctx.append(registry_context)
    app.add_routes(routes)
    return app


def main() -> None:
    """Serve on 127.0.0.1:8080 until interrupted."""
    # handler_cancellation: a client that disconnects cancels its handler, and with it
    # the upstream provider call (aiohttp leaves handlers running by default).
    web.run_app(create_app(), host="127.0.0.1", port=8080, handler_cancellation=True)


if __name__ == "__main__":
    main()
