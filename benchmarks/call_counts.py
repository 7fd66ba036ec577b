"""Python function calls per call and per stream, layer by layer: a noise-free overhead.

    python -m benchmarks.call_counts [--calls 500] [--chunks 20]

CPU time on a shared machine moves by 20-30 % between runs; the number of Python-level
function calls (builtins included) a call makes does not. This counts them with cProfile
against the mock server, for each layer that stands between a caller and the socket:

- raw aiohttp (the harness's floor);
- `http`: our transport alone (`request_json` / `open_stream` + `iter_body`);
- `provider`: one provider model (`model.generate` / `model.stream`), typed
  `Request` in, typed `Response` / events out;
- `chain`: a one-target chain over that model (health gate, fitting, bookkeeping);
- `registry`: `registry.parse(spec)` on every call, then the chain (what services do);
- `raw failover` and `failover`: the same pair for a call whose first target answers
  503: raw aiohttp posting twice by hand, and a two-target chain through the registry
  (no same-target retry, a head that is never benched), as the harness's failover rows.

A count is not a time (a call into C costs less than a Python frame), but a change that
adds work shows up here at once, where the timed harness needs several rounds to see it.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import pstats
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager

import aiohttp

from benchmarks.contenders import (
    API_KEY,
    MESSAGES,
    MODEL,
    PROMPT,
    Majordomo,
    MajordomoFailover,
    RawAiohttp,
    RawAiohttpFailover,
    Server,
)
from benchmarks.run import MockServer
from majordomo_async import Stream, TextDelta
from majordomo_async._exceptions import ProviderError
from majordomo_async._http import Timeouts, iter_body, open_stream, request_json
from majordomo_async._providers._common import status_error

Call = Callable[[], Awaitable[int]]


def _mapper(status: int, headers: Mapping[str, str], body_text: str) -> ProviderError:
    return status_error(
        provider="p", model="m", status=status, headers=headers, body_text=body_text
    )


OWN_CODE = "/majordomo_async/"
"""`--own` counts only the calls of functions defined in the library itself: those do not
move with how the event loop splits a body into reads in aiohttp's code (the totals do,
by a few dozen per stream on a busy machine)."""


async def _count(call: Call, calls: int, own: bool = False) -> float:
    """Function calls per `call()`, after a warm-up (caches, connections, lazy imports);
    with `own`, only calls of the library's own functions."""
    for _ in range(max(calls // 5, 20)):
        await call()
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(calls):
        await call()
    profiler.disable()
    stats = pstats.Stats(profiler)
    if own:
        # pstats keeps its table in an attribute typeshed does not declare:
        # {(filename, line, name): (primitive calls, calls, tottime, cumtime, callers)}.
        table = stats.stats  # type: ignore[attr-defined]
        mine: int = sum(entry[1] for key, entry in table.items() if OWN_CODE in key[0])
        return mine / calls
    # pstats keeps the total in an attribute typeshed does not declare.
    total: int = stats.total_calls  # type: ignore[attr-defined]
    return total / calls


@asynccontextmanager
async def layer_calls(port: int) -> AsyncIterator[dict[str, dict[str, Call]]]:
    """`{"generate": {layer: call}, "stream": {layer: call}}` against the mock server on
    `port`, each call one generate (or one stream read to its end); closed on exit."""
    server = Server("127.0.0.1", port)
    raw, md = RawAiohttp(server), Majordomo(server)
    raw_failover, md_failover = RawAiohttpFailover(server), MajordomoFailover(server)
    for contender in (raw, md, raw_failover, md_failover):
        await contender.start()
    session = aiohttp.ClientSession()
    try:
        chain = md._registry.parse(md._spec_text)
        model = chain._targets[0].model
        url = server.openai_base + "/chat/completions"
        headers = {"Authorization": f"Bearer {API_KEY}"}
        timeouts = Timeouts()

        async def http_generate() -> int:
            data, _ = await request_json(
                session,
                "POST",
                url,
                headers=headers,
                json_body={"model": MODEL, "messages": MESSAGES},
                provider="p",
                model="m",
                timeouts=timeouts,
                error_mapper=_mapper,
            )
            return len(data["choices"][0]["message"]["content"])

        async def http_stream() -> int:
            body = {"model": MODEL, "messages": MESSAGES, "stream": True}
            response = await open_stream(
                session,
                "POST",
                url,
                headers=headers,
                json_body=body,
                provider="p",
                model="m",
                timeouts=timeouts,
                error_mapper=_mapper,
            )
            reader = iter_body(response, provider="p", model="m", timeouts=timeouts)
            size = 0
            async for chunk in reader:
                size += len(chunk)
            return size

        async def provider_generate() -> int:
            return len((await model.generate(PROMPT)).text)

        async def chain_generate() -> int:
            return len((await chain.generate(PROMPT)).text)

        async def provider_stream() -> int:
            return await _text_deltas(await model.stream(PROMPT))

        async def chain_stream() -> int:
            return await _text_deltas(await chain.stream(PROMPT))

        yield {
            "generate": {
                "raw aiohttp": raw.call,
                "http": http_generate,
                "provider": provider_generate,
                "chain": chain_generate,
                "registry": md.call,
                "raw failover": raw_failover.call,
                "failover": md_failover.call,
            },
            "stream": {
                "raw aiohttp": raw.stream,
                "http": http_stream,
                "provider": provider_stream,
                "chain": chain_stream,
                "registry": md.stream,
                "raw failover": raw_failover.stream,
                "failover": md_failover.stream,
            },
        }
    finally:
        await session.close()
        for contender in (md_failover, raw_failover, md, raw):
            await contender.aclose()


async def measure(port: int, calls: int, own: bool = False) -> dict[str, dict[str, float]]:
    """`{"generate": {layer: calls per call}, "stream": {layer: calls per stream}}`."""
    async with layer_calls(port) as layers:
        return {
            mode: {name: await _count(call, calls, own) for name, call in calls_by_layer.items()}
            for mode, calls_by_layer in layers.items()
        }


async def _text_deltas(stream: Stream) -> int:
    count = 0
    async with stream:
        async for event in stream:
            if type(event) is TextDelta:
                count += 1
    return count


FLOORS = frozenset({"raw aiohttp", "raw failover"})
"""Layers that start a comparison: no step over the row before them."""


def report(counts: dict[str, dict[str, float]]) -> str:
    """The counts as a Markdown table, each layer with its step over the one before
    (`failover` over `raw failover`)."""
    lines = [
        "| layer | calls per generate | step | calls per stream | step |",
        "|---|---|---|---|---|",
    ]
    generate, stream = counts["generate"], counts["stream"]
    previous: tuple[float, float] | None = None
    for name in generate:
        g, s = generate[name], stream[name]
        steps = ("", "")
        if previous is not None and name not in FLOORS:
            steps = (f"{g - previous[0]:+.0f}", f"{s - previous[1]:+.0f}")
        lines.append(f"| {name} | {g:.0f} | {steps[0]} | {s:.0f} | {steps[1]} |")
        previous = (g, s)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=500, help="profiled calls per layer")
    parser.add_argument("--chunks", type=int, default=20, help="content chunks per stream")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--own", action="store_true", help="count only calls of the library's own functions"
    )
    args = parser.parse_args(argv)
    server = MockServer(chunks=args.chunks, cpu=None)
    try:
        counts = asyncio.run(measure(server.port, args.calls, args.own))
    finally:
        server.stop()
    print(json.dumps(counts) if args.json else report(counts))


if __name__ == "__main__":
    main()
