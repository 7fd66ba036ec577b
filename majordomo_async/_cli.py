"""The `majordomo` command line: ask a model through a failover chain, or show a chain.

```
majordomo [--config PATH] ask SPEC PROMPT [--stream] [--json] [--system TEXT]
                          [--temperature F] [--max-tokens N] [--timeout SECONDS]
                          [--image PATH|URL]... [--advance-on NAME[,NAME...]]...
                          [--advance-on-permanent] [--attempt-timeout SECONDS]
                          [--mid-stream raise|restart] [--first-token-timeout SECONDS]
                          [--interactive] [--reasoning EFFORT] [--show-reasoning]
majordomo resolve SPEC
majordomo models PROVIDER
majordomo health [SPEC]...
```

Every command takes `--config PATH` (a TOML configuration file, see
docs/configuration.md); without it, `MAJORDOMO_CONFIG` names one. The answer goes to
stdout, so it can be piped; failed attempts and the answering target go to stderr.
`--json --stream` prints one JSON object per line: one per stream event, then the
response. Exit codes: 0 answered, 1 the call failed, 2 usage or configuration error
(a missing API key included), 130 interrupted. Errors are one line
(`majordomo: error: ...`), never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import mimetypes
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from ._chain import ChainConfig
from ._config_file import CONFIG_VARIABLE, KeylessProvider, provider_error_classes
from ._download import sniff_image_type
from ._events import (
    ReasoningDelta,
    StreamEnd,
    StreamEvent,
    StreamRestart,
    StreamStart,
    TextDelta,
    ToolCallDelta,
    UsageUpdate,
)
from ._exceptions import (
    AuthenticationError,
    ChainExhaustedError,
    ConfigurationError,
    MajordomoError,
    ProviderError,
    TargetFailure,
)
from ._health import TargetHealth
from ._limits import Limits
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
from ._response import Response, Usage
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
        tried = [failure for failure in exc.failures if not failure.skipped]
        attempts = _plural(len(tried), "attempt")
        targets = _plural(len({failure.key for failure in exc.failures}), "target")
        _error(f"all chain targets failed ({targets}, {attempts})")
        # Every attempt stopped for want of a key: nothing was asked of any provider.
        if tried and all(_is_missing_key(failure.error) for failure in tried):
            return EXIT_USAGE
        return EXIT_FAILED
    except ConfigurationError as exc:
        _error(str(exc))
        return EXIT_USAGE
    except ProviderError as exc:
        for note in getattr(exc, "__notes__", ()):  # the chain's earlier attempts, if any
            _note(note)
        if _is_missing_key(exc):
            # No key is the user's configuration to fix, not a provider's failure.
            _error(f"{exc.key}: {exc}")
            return EXIT_USAGE
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
        return asyncio.run(_models(args, args.provider))
    if args.command == "health":
        return asyncio.run(_health(args, args.specs))
    return asyncio.run(_resolve(args, args.spec))


def _registry(args: argparse.Namespace) -> Registry:
    """The registry of `--config PATH`, or of the environment (and `MAJORDOMO_CONFIG`)."""
    path: str | None = args.config
    return Registry() if path is None else Registry.from_config(path)


_CONFIG_HELP = (
    f"a TOML configuration file (providers, aliases, chain and health settings); "
    f"default: the file {CONFIG_VARIABLE} names, if any"
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Ask a language model through a failover chain of targets.",
        epilog="Providers come from LLM_<NAME>=<DSN> environment variables and from a "
        f"configuration file (--config, or {CONFIG_VARIABLE}); 'fake' is built in. Exit "
        "codes: 0 answered, 1 the call failed, 2 usage or configuration error.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--config", metavar="PATH", help=_CONFIG_HELP)
    # Every command takes --config too (after its name). SUPPRESS: when it is not given
    # there, the parser's value (given before the command, or None) stays.
    config = argparse.ArgumentParser(add_help=False)
    config.add_argument("--config", metavar="PATH", default=argparse.SUPPRESS, help=_CONFIG_HELP)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    ask = commands.add_parser(
        "ask", help="answer a prompt", description="Answer a prompt.", parents=[config]
    )
    ask.add_argument("spec", metavar="SPEC", help='targets or aliases, e.g. "fake/a,fake/b"')
    ask.add_argument("prompt", metavar="PROMPT", help="the prompt; '-' reads it from stdin")
    ask.add_argument("--stream", action="store_true", help="print the answer as it arrives")
    ask.add_argument(
        "--json",
        action="store_true",
        help="print the response as one JSON object; with --stream, one JSON object per "
        "line: each event (text, tool_call, reasoning, usage, restart, end, ...), then "
        "the response",
    )
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
    ask.add_argument(
        "--attempt-timeout",
        type=float,
        metavar="SECONDS",
        help="seconds for one attempt (a generate, or a stream up to its first content); "
        "a target that exceeds it fails over",
    )
    ask.add_argument(
        "--mid-stream",
        choices=("raise", "restart"),
        help="a stream that breaks after content: raise the error, or restart the answer "
        "on the next target",
    )

    resolve = commands.add_parser(
        "resolve",
        help="show a spec's chain and each target's health",
        description="Show a spec's targets in the order they are tried, with their health "
        "(or 'no key' for a target whose provider has no API key).",
        parents=[config],
    )
    resolve.add_argument("spec", metavar="SPEC")

    models = commands.add_parser(
        "models",
        help="list the models a provider serves",
        description="List the model ids a provider serves for its credential. The "
        "built-in fake provider has no list (it takes any model id): it says so on stderr.",
        parents=[config],
    )
    models.add_argument("provider", metavar="PROVIDER", help='a provider name, e.g. "openai"')

    health = commands.add_parser(
        "health",
        help="show the health of targets as a table",
        description="Show every target with recorded health, plus the targets of each SPEC.",
        parents=[config],
    )
    health.add_argument("specs", metavar="SPEC", nargs="*")
    return parser


def _error_classes(text: str) -> tuple[type[ProviderError], ...]:
    """An `--advance-on` value: provider error classes exported by `majordomo_async`."""
    known = provider_error_classes()
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


def _chain_config(args: argparse.Namespace, base: ChainConfig) -> ChainConfig | None:
    """The failover policy the `ask` options ask for, over `base` (the registry's: the
    configuration file's, or the default), or None when no option changes it."""
    options: dict[str, Any] = {}
    if args.interactive:
        # The preset's values, over the file's: the command line is the last word.
        default, preset = ChainConfig(), ChainConfig.interactive()
        options.update(
            (field.name, getattr(preset, field.name))
            for field in attrs.fields(ChainConfig)
            if getattr(preset, field.name) != getattr(default, field.name)
        )
    if args.advance_on_permanent:
        options["advance_on_permanent"] = True
    # Repeated options and names: each class once, in the order given.
    advance_on = tuple(dict.fromkeys(error for group in args.advance_on for error in group))
    if advance_on:
        options["advance_on"] = advance_on
    if args.attempt_timeout is not None:
        options["attempt_timeout"] = args.attempt_timeout
    if args.mid_stream is not None:
        options["mid_stream"] = args.mid_stream
    return attrs.evolve(base, **options) if options else None


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
    async with _registry(args) as registry:
        model = registry.parse(args.spec, config=_chain_config(args, registry.chain_config))
        if args.stream:
            stream = await model.stream(request)
            async with stream:
                if args.json:
                    # JSON lines: each event as it arrives, then the response.
                    async for event in stream:
                        _print_json(_event_as_json(event))
                    response = stream.response
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
    if args.json and args.stream:
        _print_json({"type": "response", **_as_json(response)})
    elif args.json:
        _print_json(_as_json(response))
    else:
        _note(f"answered by {response.model}")
    return EXIT_OK


async def _resolve(args: argparse.Namespace, spec: str) -> int:
    """`majordomo resolve`: the chain's positions in order, each target with its health,
    a balanced group's members indented under it with their load, and "no key" for a
    target whose provider has no API key (its calls would fail before sending)."""
    async with _registry(args) as registry:
        chain = registry.parse(spec)
        health = await registry.health.snapshot()
        targets = chain.targets
        missing = {key: _missing_key(registry.provider(key.partition("/")[0])) for key in targets}
        limits = registry.limits
    indent = 2 if any(len(position) > 1 for position in chain.positions) else 0
    width = max(map(len, targets)) + indent
    for position in chain.positions:
        grouped = len(position) > 1
        if grouped:
            print(f"group of {len(position)} ({registry.chain_config.strategy}):")
        for key in position:
            entry = health.get(key)
            text = _health_text(entry)
            if grouped or key in limits or key.partition("/")[0] in limits:
                text += _load_text(entry, registry.limits, key)
            variables = missing[key]
            if variables:
                no_key = f"no key (set {' or '.join(variables)})"
                text = no_key if text == "healthy" else f"{text}  {no_key}"
            name = f"  {key}" if grouped else key
            print(f"{name:<{width}}  {text}".rstrip())
    return EXIT_OK


def _load_text(entry: TargetHealth | None, limits: Mapping[str, Limits], key: str) -> str:
    """A tracked target's load for `resolve`: calls in flight, latency, its limits."""
    in_flight = entry.in_flight if entry is not None else 0
    latency = entry.latency if entry is not None else None
    text = f"  in flight {in_flight}"
    text += f"  latency {latency:.3f} s" if latency is not None else "  latency -"
    for name in (key, key.partition("/")[0]):
        found = limits.get(name)
        if found is not None:
            caps = ", ".join(
                f"{field} {value}"
                for field, value in attrs.asdict(found).items()
                if value is not None
            )
            text += f"  limits of {name}: {caps}"
    return text


async def _models(args: argparse.Namespace, provider: str) -> int:
    """`majordomo models`: one model id per line, sorted; an empty list is said on stderr."""
    async with _registry(args) as registry:
        model_ids = sorted(await registry.list_models(provider))
        found = registry.provider(provider)
    for model_id in model_ids:
        print(model_id)
    if not model_ids:
        from ._providers.fake import FakeProvider

        if isinstance(found, FakeProvider):
            # It lists only the models this process made: none, in a fresh one.
            _note(
                f"provider {provider!r} is a fake: it has no model list and takes any "
                f"model id ({provider}/NAME?key=value; see docs/fake-provider.md)"
            )
        else:
            _note(f"provider {provider!r} lists no models")
    return EXIT_OK


async def _health(args: argparse.Namespace, specs: Sequence[str]) -> int:
    """`majordomo health`: a table of targets and their health."""
    async with _registry(args) as registry:
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


def _print_json(value: dict[str, Any]) -> None:
    """One JSON object on one line of stdout, flushed (a reader may act on each line)."""
    print(json.dumps(value), flush=True)


def _usage_as_json(usage: Usage) -> dict[str, int]:
    return {
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "cached_input_tokens": usage.cached_input_tokens,
        "cache_write_tokens": usage.cache_write_tokens,
        "reasoning_tokens": usage.reasoning_tokens,
    }


def _event_as_json(event: StreamEvent) -> dict[str, Any]:
    """One stream event as a JSON object whose "type" names the event.

    Reasoning signatures and redacted reasoning are left out: they are opaque tokens
    for the provider, not for a reader of the output.
    """
    if isinstance(event, TextDelta):
        return {"type": "text", "text": event.text}
    if isinstance(event, ToolCallDelta):
        return {
            "type": "tool_call",
            "index": event.index,
            "id": event.id,
            "name": event.name,
            "arguments": event.arguments,
        }
    if isinstance(event, ReasoningDelta):
        return {"type": "reasoning", "index": event.index, "text": event.text}
    if isinstance(event, UsageUpdate):
        return {"type": "usage", "usage": _usage_as_json(event.usage)}
    if isinstance(event, StreamRestart):
        error = event.error
        return {
            "type": "restart",
            "model": event.model,
            "failed": event.failed,
            "error": f"{type(error).__name__}: {error}",
        }
    if isinstance(event, StreamEnd):
        return {
            "type": "end",
            "finish_reason": event.finish_reason.value,
            "refusal": event.refusal,
        }
    assert isinstance(event, StreamStart)  # the last kind of StreamEvent
    return {
        "type": "start",
        "model": event.model,
        "request_id": event.request_id,
        "served_model": event.served_model,
    }


def _as_json(response: Response) -> dict[str, Any]:
    return {
        "text": response.text,
        "tool_calls": [
            {"id": call.id, "name": call.name, "arguments": call.arguments}
            for call in response.tool_calls
        ],
        "finish_reason": response.finish_reason.value,
        "usage": _usage_as_json(response.usage),
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


def _is_missing_key(error: BaseException) -> bool:
    """An `AuthenticationError` raised before anything was sent: no key is configured.

    A server's refusal of a key always has an HTTP status; the providers raise one
    without a status only when they have no key to send (as `KeylessProvider` does).
    """
    return isinstance(error, AuthenticationError) and error.status is None


def _missing_key(provider: object) -> tuple[str, ...] | None:
    """The variables that would give `provider` the API key it needs and lacks, or None
    when it has one (or needs none)."""
    if isinstance(provider, KeylessProvider):
        return provider.key_variables
    # The HTTP providers keep their key private and have no public "has a key" yet: read
    # their base class's members defensively. A provider without them is assumed to be
    # fine (a user's own, or the fake).
    required = getattr(provider, "_key_required", None)
    if getattr(provider, "_api_key", "") is not None or not callable(required):
        return None
    if not required():
        return None
    variables = getattr(provider, "_key_variables", None)
    found = tuple(variables()) if callable(variables) else ()
    return found or ("the provider's API key variable",)


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
