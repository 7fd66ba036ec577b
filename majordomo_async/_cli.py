"""The `majordomo` command line: ask a model through a failover chain, or show a chain.

```
majordomo ask SPEC PROMPT [--stream] [--json] [--system TEXT] [--temperature F]
                          [--max-tokens N] [--timeout SECONDS] [--image PATH|URL]...
                          [--advance-on NAME[,NAME...]]... [--advance-on-permanent]
majordomo resolve SPEC
majordomo models PROVIDER
majordomo health [SPEC]...
```

The answer goes to stdout, so it can be piped; failed attempts and the answering target
go to stderr. Exit codes: 0 answered, 1 the call failed, 2 usage or configuration error,
130 interrupted. Errors are one line (`majordomo: error: ...`), never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import mimetypes
import os
import sys
from collections.abc import Sequence
from typing import Any

import attrs

from ._chain import ChainConfig
from ._download import sniff_image_type
from ._events import ReasoningDelta, TextDelta
from ._exceptions import (
    ChainExhaustedError,
    ConfigurationError,
    MajordomoError,
    ProviderError,
    TargetFailure,
)
from ._health import TargetHealth
from ._messages import ImagePart, Message
from ._registry import Registry
from ._request import (
    Option,
    Request,
    first_token_timeout,
    max_tokens,
    reasoning,
    system,
    temperature,
    timeout,
)
from ._response import Response
from ._version import __version__

__all__ = ["main"]

PROG = "majordomo"
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line on `argv` (default: `sys.argv[1:]`) and return the exit code."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # argparse: --help, --version, or a usage error (already shown)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        return _run(args)
    except ChainExhaustedError as exc:
        _report(exc.failures)
        attempts = _plural(sum(not failure.skipped for failure in exc.failures), "attempt")
        targets = _plural(len({failure.key for failure in exc.failures}), "target")
        _error(f"all chain targets failed ({targets}, {attempts})")
        return EXIT_FAILED
    except ConfigurationError as exc:
        _error(str(exc))
        return EXIT_USAGE
    except ProviderError as exc:
        for note in getattr(exc, "__notes__", ()):  # the chain's earlier attempts, if any
            _note(note)
        _error(f"{exc.key}: {type(exc).__name__}: {exc}")
        return EXIT_FAILED
    except MajordomoError as exc:
        _error(f"{type(exc).__name__}: {exc}")
        return EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly, and keep the interpreter from
        # failing again when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED
    except Exception as exc:
        if os.environ.get("MAJORDOMO_DEBUG"):
            raise
        _error(f"internal error: {type(exc).__name__}: {exc} (MAJORDOMO_DEBUG=1 shows a traceback)")
        return EXIT_FAILED


def _run(args: argparse.Namespace) -> int:
    """Run the parsed command; `main` turns its errors into messages and exit codes."""
    if args.command == "ask":
        return asyncio.run(_ask(args, _request(args)))
    if args.command == "models":
        return asyncio.run(_models(args.provider))
    if args.command == "health":
        return asyncio.run(_health(args.specs))
    return asyncio.run(_resolve(args.spec))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Ask a language model through a failover chain of targets.",
        epilog="Providers come from LLM_<NAME>=<DSN> environment variables; "
        "'fake' is built in. Exit codes: 0 answered, 1 the call failed, 2 usage or "
        "configuration error.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    ask = commands.add_parser("ask", help="answer a prompt", description="Answer a prompt.")
    ask.add_argument("spec", metavar="SPEC", help='targets or aliases, e.g. "fake/a,fake/b"')
    ask.add_argument("prompt", metavar="PROMPT", help="the prompt; '-' reads it from stdin")
    ask.add_argument("--stream", action="store_true", help="print the answer as it arrives")
    ask.add_argument("--json", action="store_true", help="print the response as one JSON object")
    ask.add_argument("--system", metavar="TEXT", help="the system prompt")
    ask.add_argument("--temperature", type=float, metavar="F", help="sampling temperature, 0-2")
    ask.add_argument("--max-tokens", type=int, metavar="N", help="upper bound on output tokens")
    ask.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        help="deadline for the whole call, failover and reading the stream included",
    )
    ask.add_argument(
        "--first-token-timeout",
        type=float,
        metavar="SECONDS",
        help="seconds each attempt may take to its first content before the chain moves on",
    )
    ask.add_argument(
        "--reasoning",
        choices=("none", "minimal", "low", "medium", "high"),
        metavar="EFFORT",
        help="ask the model to reason first: none, minimal, low, medium or high",
    )
    ask.add_argument(
        "--show-reasoning",
        action="store_true",
        help="print the model's reasoning (when it shows it) to stderr",
    )
    ask.add_argument(
        "--interactive",
        action="store_true",
        help="use the preset for answers people watch arrive (ChainConfig.interactive(): "
        "restart mid-stream, first token 10 s, 20 s between events, a 300 s deadline)",
    )
    ask.add_argument(
        "--image",
        action="append",
        default=[],
        metavar="PATH|URL",
        help="attach an image file or http(s)/data: URL (repeatable)",
    )
    ask.add_argument(
        "--advance-on",
        action="append",
        default=[],
        type=_error_classes,
        metavar="NAME[,NAME...]",
        help="permanent provider errors that advance to the next target instead of "
        "failing the call, by class name, e.g. AuthenticationError,ContentPolicyError "
        "(repeatable)",
    )
    ask.add_argument(
        "--advance-on-permanent",
        action="store_true",
        help="advance to the next target on every permanent error",
    )

    resolve = commands.add_parser(
        "resolve",
        help="show a spec's chain and each target's health",
        description="Show a spec's targets in the order they are tried, with their health.",
    )
    resolve.add_argument("spec", metavar="SPEC")

    models = commands.add_parser(
        "models",
        help="list the models a provider serves",
        description="List the model ids a provider serves for its credential.",
    )
    models.add_argument("provider", metavar="PROVIDER", help='a provider name, e.g. "openai"')

    health = commands.add_parser(
        "health",
        help="show the health of targets as a table",
        description="Show every target with recorded health, plus the targets of each SPEC.",
    )
    health.add_argument("specs", metavar="SPEC", nargs="*")
    return parser


def _error_classes(text: str) -> tuple[type[ProviderError], ...]:
    """An `--advance-on` value: provider error classes exported by `majordomo_async`."""
    known = _provider_error_classes()
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError("expected error class names, e.g. AuthenticationError")
    unknown = [name for name in names if name not in known]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"not a provider error class: {', '.join(unknown)} "
            f"(valid names: {', '.join(sorted(known))})"
        )
    return tuple(known[name] for name in names)


def _provider_error_classes() -> dict[str, type[ProviderError]]:
    """`ProviderError` and its subclasses that the package exports, by name."""
    import majordomo_async  # the public names; deferred: this module is part of it

    found: dict[str, type[ProviderError]] = {}
    for name in majordomo_async.__all__:
        value = getattr(majordomo_async, name, None)
        if isinstance(value, type) and issubclass(value, ProviderError):
            found[name] = value
    return found


def _chain_config(args: argparse.Namespace) -> ChainConfig | None:
    """The failover policy the `ask` options ask for, or None for the default."""
    options: dict[str, Any] = {}
    if args.interactive:
        options.update(attrs.asdict(ChainConfig.interactive(), recurse=False))
    if args.advance_on_permanent:
        options["advance_on_permanent"] = True
    # Repeated options and names: each class once, in the order given.
    advance_on = tuple(dict.fromkeys(error for group in args.advance_on for error in group))
    if advance_on:
        options["advance_on"] = advance_on
    return ChainConfig(**options) if options else None


def _request(args: argparse.Namespace) -> Request:
    """The request `ask` sends, validated before any provider is touched."""
    prompt: str = sys.stdin.read().rstrip("\n") if args.prompt == "-" else args.prompt
    if not prompt.strip():
        raise ConfigurationError("the prompt is empty")
    options: list[Option] = []
    if args.system is not None:
        options.append(system(args.system))
    if args.temperature is not None:
        options.append(temperature(args.temperature))
    if args.max_tokens is not None:
        options.append(max_tokens(args.max_tokens))
    if args.timeout is not None:
        options.append(timeout(args.timeout))
    if args.first_token_timeout is not None:
        options.append(first_token_timeout(args.first_token_timeout))
    if args.reasoning is not None:
        options.append(reasoning(args.reasoning))
    images = [_image(value) for value in args.image]
    return Request([Message.user(prompt, *images)]).apply(*options)


def _image(value: str) -> ImagePart:
    """An `--image` argument: a URL as it is, or a local file read and typed."""
    if value.partition(":")[0].lower() in ("http", "https", "data"):
        return ImagePart.from_url(value)
    try:
        with open(value, "rb") as file:
            data = file.read()
    except OSError as exc:
        raise ConfigurationError(f"--image {value}: {exc.strerror or exc}") from None
    mime_type = sniff_image_type(data) or mimetypes.guess_type(value)[0]
    if not data or mime_type is None or not mime_type.startswith("image/"):
        raise ConfigurationError(f"--image {value}: not a PNG, JPEG, GIF, WEBP or HEIC image")
    return ImagePart.from_bytes(data, mime_type)


async def _ask(args: argparse.Namespace, request: Request) -> int:
    """`majordomo ask`: print the answer (or the JSON response) and who gave it."""
    verbose = not args.json
    async with Registry(chain=_chain_config(args)) as registry:
        model = registry.parse(args.spec)
        if args.stream:
            stream = await model.stream(request)
            async with stream:
                if args.json:
                    response = await stream.collect()
                else:
                    _report(stream.failed_attempts)
                    thinking = False  # reasoning was shown: end its line before the answer
                    try:
                        async for event in stream:
                            if isinstance(event, TextDelta):
                                if thinking:
                                    thinking = False
                                    _note("")
                                sys.stdout.write(event.text)
                                sys.stdout.flush()
                            elif isinstance(event, ReasoningDelta) and args.show_reasoning:
                                thinking = True
                                sys.stderr.write(event.text)
                                sys.stderr.flush()
                    finally:
                        print(flush=True)
                    response = stream.response
        else:
            response = await model.generate(request)
            if verbose:
                _report(response.failed_attempts)
                if args.show_reasoning and response.reasoning:
                    _note(response.reasoning)
                print(response.text, flush=True)
    if args.json:
        print(json.dumps(_as_json(response)), flush=True)
    else:
        _note(f"answered by {response.model}")
    return EXIT_OK


async def _resolve(spec: str) -> int:
    """`majordomo resolve`: the chain's targets in order, each with its health."""
    async with Registry() as registry:
        targets = registry.parse(spec).targets
        health = await registry.health.snapshot()
    width = max(map(len, targets))
    for key in targets:
        print(f"{key:<{width}}  {_health_text(health.get(key))}".rstrip())
    return EXIT_OK


async def _models(provider: str) -> int:
    """`majordomo models`: one model id per line, sorted."""
    async with Registry() as registry:
        for model_id in sorted(await registry.list_models(provider)):
            print(model_id)
    return EXIT_OK


async def _health(specs: Sequence[str]) -> int:
    """`majordomo health`: a table of targets and their health."""
    async with Registry() as registry:
        keys: dict[str, None] = {}
        for spec in specs:
            keys.update(dict.fromkeys(registry.parse(spec).targets))
        health = await registry.health.snapshot()
    keys.update(dict.fromkeys(sorted(health)))
    if not keys:
        _note("no target has recorded health (this process's tracker is fresh; name a SPEC)")
        return EXIT_OK
    rows = [("TARGET", "STATE", "FAILURES", "BENCHED UNTIL")]
    for key in keys:
        entry = health.get(key)
        if entry is None:
            rows.append((key, "healthy", "0", "-"))
            continue
        until = entry.backed_off_until
        when = until.strftime("%H:%M:%S.%f")[:-3] if until else "-"
        rows.append((key, entry.state, str(entry.consecutive_failures), when))
    widths = [max(len(row[column]) for row in rows) for column in range(3)]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False))
            + "  "
            + row[3]
        )
    return EXIT_OK


def _as_json(response: Response) -> dict[str, Any]:
    return {
        "text": response.text,
        "tool_calls": [
            {"id": call.id, "name": call.name, "arguments": call.arguments}
            for call in response.tool_calls
        ],
        "finish_reason": response.finish_reason.value,
        "usage": {
            "input_tokens": response.usage.input_tokens,
            "output_tokens": response.usage.output_tokens,
            "cached_input_tokens": response.usage.cached_input_tokens,
            "cache_write_tokens": response.usage.cache_write_tokens,
            "reasoning_tokens": response.usage.reasoning_tokens,
        },
        "reasoning": response.reasoning,
        "refusal": response.refusal,
        "model": response.model,
        "served_model": response.served_model,
        "request_id": response.request_id,
        "failed_attempts": [str(failure) for failure in response.failed_attempts],
    }


def _health_text(health: TargetHealth | None) -> str:
    if health is None:
        return "healthy"
    until = health.backed_off_until
    if until is None:
        return health.state
    return f"{health.state:<8}  until {until.strftime('%H:%M:%S.%f')[:-3]}"


def _report(failures: Sequence[TargetFailure]) -> None:
    """One stderr line per failed attempt or skip, in order."""
    for failure in failures:
        _note(f"failed: {failure}")


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _note(line: str) -> None:
    """One line on stderr, kept to one line whatever the message holds."""
    print(" ".join(line.splitlines()), file=sys.stderr, flush=True)


def _error(message: str) -> None:
    _note(f"{PROG}: error: {message}")
