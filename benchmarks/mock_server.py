"""A local mock LLM server for the benchmarks: OpenAI chat completions and Anthropic messages.

Runs as its own process so that its CPU never counts as the client's:

    python -m benchmarks.mock_server [--host 127.0.0.1] [--port 0] [--chunks 20] [--cpu 1]

With `--port 0` the kernel picks a free port; the server prints `PORT <number>` on
stdout once it accepts connections. SIGTERM or SIGINT stops it.

Endpoints:

- `POST /v1/chat/completions`: OpenAI chat completions, JSON or SSE (`"stream": true`,
  usage chunk when `stream_options.include_usage` is set).
- `POST /v1/messages`: Anthropic messages, JSON or SSE.
- `GET /stats`: this process's CPU seconds (user, system) and request count, so the
  client can report the server's share of a run.
- `POST /control/hold`: from now on every stream pauses after its first content chunk
  (the memory scenario holds 1,000 streams in flight that way).
- `POST /control/release`: lets every held stream finish, and ends hold mode.

Behaviour is chosen by the model id, `_`-separated tokens (any other id answers normally):

| token        | effect                                                                   |
|--------------|--------------------------------------------------------------------------|
| `fail-503`   | answer with that HTTP status and the wire's error body (any 4xx/5xx)     |
| `fail-429-ra1` | status 429 with `Retry-After: 1` (seconds)                             |
| `slow-200ms` | wait that long before answering                                          |
| `chunks-50`  | stream 50 content chunks instead of the server's `--chunks`              |
| `hold`       | stream the first content chunk, then wait for `POST /control/release`    |

Every reply body is built once per (wire, model id, stream, usage) and cached, so a
request costs the server one JSON decode of the request and a few socket writes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import os
import re
import resource
import signal
import socket
import sys
from dataclasses import dataclass, field
from typing import Any, Final

from aiohttp import web

OPENAI_PATH: Final = "/v1/chat/completions"
ANTHROPIC_PATH: Final = "/v1/messages"
DEFAULT_CHUNKS: Final = 20
# A held stream never waits longer than this, so a crashed client cannot wedge the server.
HOLD_LIMIT_S: Final = 300.0
CREATED: Final = 1_700_000_000
WORD: Final = "token "

_TOKEN = re.compile(
    r"fail-(?P<status>[45]\d\d)(?:-ra(?P<retry_after>\d+(?:\.\d+)?))?"
    r"|slow-(?P<delay_ms>\d+)ms"
    r"|chunks-(?P<chunks>\d+)"
    r"|(?P<hold>hold)"
)


@dataclass(frozen=True)
class Behaviour:
    """What the model id asks the server to do."""

    status: int = 200
    retry_after: str | None = None
    delay_s: float = 0.0
    chunks: int | None = None
    hold: bool = False


def parse_behaviour(model: str) -> Behaviour:
    """The behaviour a model id selects (unknown tokens are ignored: a plain model name).

    >>> parse_behaviour("fail-429-ra1")
    Behaviour(status=429, retry_after='1', delay_s=0.0, chunks=None, hold=False)
    """
    status, retry_after, delay_s, chunks, hold = 200, None, 0.0, None, False
    for token in model.split("_"):
        match = _TOKEN.fullmatch(token)
        if match is None:
            continue
        if match["status"]:
            status, retry_after = int(match["status"]), match["retry_after"]
        elif match["delay_ms"]:
            delay_s = int(match["delay_ms"]) / 1000
        elif match["chunks"]:
            chunks = int(match["chunks"])
        elif match["hold"]:
            hold = True
    return Behaviour(status, retry_after, delay_s, chunks, hold)


@dataclass
class Reply:
    """A prebuilt answer: an error, a JSON body, or the SSE frames of a stream."""

    behaviour: Behaviour
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    frames: tuple[bytes, ...] = ()
    hold_after: int = 0
    """With `hold`: how many frames are sent before waiting for the release."""


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _sse(data: Any, event: str | None = None) -> bytes:
    prefix = f"event: {event}\n" if event else ""
    text = data if isinstance(data, str) else _dumps(data)
    return f"{prefix}data: {text}\n\n".encode()


# --------------------------------------------------------------------------- OpenAI wire


def _openai_error(status: int) -> bytes:
    kind = "rate_limit_exceeded" if status == 429 else "server_error"
    return _dumps(
        {"error": {"message": f"benchmark fault {status}", "type": kind, "code": None}}
    ).encode()


def _openai_json(model: str, chunks: int) -> bytes:
    return _dumps(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": CREATED,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": WORD * chunks},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": 10,
                "completion_tokens": chunks,
                "total_tokens": 10 + chunks,
            },
        }
    ).encode()


def _openai_frames(model: str, chunks: int, usage: bool) -> tuple[bytes, ...]:
    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        return _sse(
            {
                "id": "chatcmpl-bench",
                "object": "chat.completion.chunk",
                "created": CREATED,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
        )

    frames = [chunk({"role": "assistant", "content": ""})]
    frames += [chunk({"content": WORD}) for _ in range(chunks)]
    frames.append(chunk({}, "stop"))
    if usage:
        frames.append(
            _sse(
                {
                    "id": "chatcmpl-bench",
                    "object": "chat.completion.chunk",
                    "created": CREATED,
                    "model": model,
                    "choices": [],
                    "usage": {
                        "prompt_tokens": 10,
                        "completion_tokens": chunks,
                        "total_tokens": 10 + chunks,
                    },
                }
            )
        )
    frames.append(_sse("[DONE]"))
    return tuple(frames)


# --------------------------------------------------------------------------- Anthropic wire


def _anthropic_error(status: int) -> bytes:
    kind = {429: "rate_limit_error", 529: "overloaded_error"}.get(status, "api_error")
    return _dumps(
        {"type": "error", "error": {"type": kind, "message": f"benchmark fault {status}"}}
    ).encode()


def _anthropic_json(model: str, chunks: int) -> bytes:
    return _dumps(
        {
            "id": "msg_bench",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": WORD * chunks}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": 10, "output_tokens": chunks},
        }
    ).encode()


def _anthropic_frames(model: str, chunks: int) -> tuple[bytes, ...]:
    start = {
        "type": "message_start",
        "message": {
            "id": "msg_bench",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 10, "output_tokens": 1},
        },
    }
    frames = [
        _sse(start, "message_start"),
        _sse(
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
            "content_block_start",
        ),
    ]
    delta = {
        "type": "content_block_delta",
        "index": 0,
        "delta": {"type": "text_delta", "text": WORD},
    }
    frames += [_sse(delta, "content_block_delta") for _ in range(chunks)]
    frames += [
        _sse({"type": "content_block_stop", "index": 0}, "content_block_stop"),
        _sse(
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": chunks},
            },
            "message_delta",
        ),
        _sse({"type": "message_stop"}, "message_stop"),
    ]
    return tuple(frames)


# --------------------------------------------------------------------------- server state


class MockState:
    """Reply cache, counters and the release event of held streams."""

    def __init__(self, default_chunks: int) -> None:
        self.default_chunks = default_chunks
        self.requests = 0
        self.holding = False
        """Hold mode: every new stream pauses after its first content chunk."""
        self.release = asyncio.Event()
        self._replies: dict[tuple[str, str, bool, bool], Reply] = {}

    def reply(self, path: str, model: str, stream: bool, usage: bool) -> Reply:
        """The prebuilt reply for this request shape (built on first use)."""
        key = (path, model, stream, usage)
        reply = self._replies.get(key)
        if reply is None:
            reply = self._replies[key] = self._build(path, model, stream, usage)
        return reply

    def _build(self, path: str, model: str, stream: bool, usage: bool) -> Reply:
        behaviour = parse_behaviour(model)
        openai = path == OPENAI_PATH
        if behaviour.status != 200:
            headers = {"Content-Type": "application/json"}
            if behaviour.retry_after is not None:
                headers["Retry-After"] = behaviour.retry_after
            body = _openai_error(behaviour.status) if openai else _anthropic_error(behaviour.status)
            return Reply(behaviour, behaviour.status, headers, body)
        chunks = behaviour.chunks if behaviour.chunks is not None else self.default_chunks
        if not stream:
            body = _openai_json(model, chunks) if openai else _anthropic_json(model, chunks)
            return Reply(behaviour, body=body)
        frames = (
            _openai_frames(model, chunks, usage) if openai else _anthropic_frames(model, chunks)
        )
        # Hold after the preamble and the first content chunk: the client has established
        # its stream by then (OpenAI: role chunk + content; Anthropic: start, block start,
        # first delta).
        return Reply(behaviour, frames=frames, hold_after=2 if openai else 3)

    def released(self) -> None:
        """Let every held stream go on and end hold mode; later holds wait anew."""
        self.holding = False
        self.release.set()
        self.release = asyncio.Event()


STATE_KEY: Final = web.AppKey("state", MockState)


async def _completion(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    state.requests += 1
    payload = json.loads(await request.read())
    stream = bool(payload.get("stream"))
    options = payload.get("stream_options")
    usage = isinstance(options, dict) and bool(options.get("include_usage"))
    reply = state.reply(request.path, str(payload.get("model", "")), stream, usage)
    if reply.behaviour.delay_s:
        await asyncio.sleep(reply.behaviour.delay_s)
    if reply.status != 200 or not stream:
        return web.Response(
            body=reply.body,
            status=reply.status,
            headers=reply.headers or {"Content-Type": "application/json"},
        )
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    release = state.release
    hold_at = reply.hold_after if reply.behaviour.hold or state.holding else -1
    try:
        for index, frame in enumerate(reply.frames):
            if index == hold_at:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(HOLD_LIMIT_S):
                        await release.wait()
            await response.write(frame)
        await response.write_eof()
    except ConnectionResetError:
        pass  # the client went away mid-stream (a client that stops early): not our error
    return response


async def _stats(request: web.Request) -> web.Response:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    state = request.app[STATE_KEY]
    return web.json_response(
        {
            "pid": os.getpid(),
            "cpu_user_s": usage.ru_utime,
            "cpu_system_s": usage.ru_stime,
            "requests": state.requests,
            "max_rss_kib": usage.ru_maxrss,
        }
    )


async def _hold(request: web.Request) -> web.Response:
    request.app[STATE_KEY].holding = True
    return web.json_response({"holding": True})


async def _release(request: web.Request) -> web.Response:
    request.app[STATE_KEY].released()
    return web.json_response({"released": True})


def build_app(chunks: int = DEFAULT_CHUNKS) -> web.Application:
    """The mock application (also usable in process, with `aiohttp.test_utils`)."""
    app = web.Application()
    app[STATE_KEY] = MockState(chunks)
    app.router.add_post(OPENAI_PATH, _completion)
    app.router.add_post(ANTHROPIC_PATH, _completion)
    app.router.add_get("/stats", _stats)
    app.router.add_post("/control/hold", _hold)
    app.router.add_post("/control/release", _release)
    return app


async def serve(host: str, port: int, chunks: int) -> None:
    """Serve until SIGTERM or SIGINT; print `PORT <n>` once listening."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    runner = web.AppRunner(build_app(chunks), access_log=None, handle_signals=False)
    await runner.setup()
    # A deep backlog: thousands of clients connect at once in the concurrency scenarios.
    site = web.SockSite(runner, sock, backlog=4096)
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    print(f"PORT {sock.getsockname()[1]}", flush=True)
    try:
        await stop.wait()
    finally:
        runner.app[STATE_KEY].released()  # held streams would delay the shutdown
        await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description="Mock OpenAI/Anthropic server for benchmarks.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: pick a free port and print it")
    parser.add_argument("--chunks", type=int, default=DEFAULT_CHUNKS, help="content chunks/stream")
    parser.add_argument("--cpu", type=int, default=None, help="pin this process to one CPU")
    parser.add_argument(
        "--no-uvloop", action="store_true", help="use asyncio's loop even if uvloop is installed"
    )
    args = parser.parse_args(argv)
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    runner: Any = asyncio.run
    if not args.no_uvloop:
        # The server is not under test: the faster loop keeps it from being the bottleneck.
        with contextlib.suppress(ImportError):
            runner = importlib.import_module("uvloop").run
    try:
        runner(serve(args.host, args.port, args.chunks))
    except KeyboardInterrupt:  # pragma: no cover - a second Ctrl-C
        sys.exit(130)


if __name__ == "__main__":
    main()
