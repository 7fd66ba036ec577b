"""The `majordomo` command line, run as a real subprocess against the built-in fake provider."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from majordomo_async import __version__
from majordomo_async._cli import main

FAILOVER = "fake/head?script=503,fake/backup"
HEAD_FAILED = "failed: fake/head?script=503: OverloadedError: 503"
HEAD_RETRY_FAILED = "failed: fake/head?script=503 (attempt 2): OverloadedError: 503"


def _env(**extra: str) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("LLM_")}
    env["PYTHONWARNINGS"] = "error"
    for name in ("MAJORDOMO_DEBUG", "MAJORDOMO_CONFIG", "MAJORDOMO_HEALTH_STORE"):
        env.pop(name, None)
    env.update(extra)
    return env


def majordomo(
    *args: str, env: dict[str, str] | None = None, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    """Run `python -m majordomo_async ARGS` and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "majordomo_async", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env or _env(),
        timeout=30,
    )


def installed_script() -> str:
    """The `majordomo` console script of the running interpreter's environment."""
    beside = Path(sys.executable).with_name("majordomo")
    found = str(beside) if beside.exists() else shutil.which("majordomo")
    if found is None:
        pytest.skip("the majordomo console script is not installed")
    return found


def assert_one_error_line(stderr: str) -> None:
    """stderr is exactly one `majordomo: error:` line, with no traceback."""
    assert "Traceback" not in stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("majordomo: error: ")


def test_ask_prints_the_echoed_answer() -> None:
    """A plain call prints the answer alone on stdout and who answered on stderr."""
    result = majordomo("ask", "fake/echo", "hello world")
    assert result.returncode == 0
    assert result.stdout == "hello world\n"
    assert result.stderr == "answered by fake/echo\n"


def test_failover_through_the_installed_script() -> None:
    """The console script fails over: head's two attempts on stderr, then the backup's answer."""
    result = subprocess.run(
        [installed_script(), "ask", FAILOVER, "hi"],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=30,
    )
    assert result.returncode == 0
    assert result.stdout == "hi\n"
    lines = result.stderr.splitlines()
    assert len(lines) == 3, result.stderr
    assert lines[0].startswith(HEAD_FAILED)
    assert lines[1].startswith(HEAD_RETRY_FAILED)
    assert lines[2] == "answered by fake/backup"


def test_stream_prints_the_same_text_as_generate() -> None:
    """`--stream` writes exactly what the non-streaming call writes, failures first."""
    spec = "fake/head?script=503,fake/backup?reply=one two  three"
    plain = majordomo("ask", spec, "hi")
    streamed = majordomo("ask", "--stream", spec, "hi")
    assert plain.returncode == streamed.returncode == 0
    assert streamed.stdout == plain.stdout == "one two  three\n"
    assert streamed.stderr == plain.stderr
    assert streamed.stderr.splitlines()[-1].startswith("answered by fake/backup?reply=")


@pytest.mark.parametrize("stream", [False, True], ids=["generate", "stream"])
def test_json_output(stream: bool) -> None:
    """`--json` prints one parseable object with the answer, usage and failed attempts
    (with `--stream`, as the last of its JSON lines)."""
    flags = ["--json", "--stream"] if stream else ["--json"]
    result = majordomo("ask", *flags, FAILOVER, "two words")
    assert result.returncode == 0
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert len(lines) > 1 if stream else len(lines) == 1
    payload = json.loads(lines[-1])
    assert payload.pop("type", "response") == "response"
    assert payload["text"] == "two words"
    assert payload["model"] == "fake/backup"
    assert payload["usage"] == {
        "input_tokens": 2,
        "output_tokens": 2,
        "cached_input_tokens": 0,
        "cache_write_tokens": 0,
        "reasoning_tokens": 0,
    }
    assert payload["finish_reason"] == "stop"
    assert payload["tool_calls"] == []
    assert isinstance(payload["request_id"], str)
    assert [line[:40] for line in payload["failed_attempts"]] == [
        HEAD_FAILED.removeprefix("failed: ")[:40],
        HEAD_RETRY_FAILED.removeprefix("failed: ")[:40],
    ]


def test_options_reach_the_request() -> None:
    """--system, --temperature, --max-tokens and --timeout apply (the system prompt is counted)."""
    result = majordomo(
        "ask",
        "--json",
        "--system",
        "be very brief",
        "--temperature",
        "0.5",
        "--max-tokens",
        "8",
        "--timeout",
        "10",
        "fake/x",
        "hi",
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["usage"]["input_tokens"] == 4


def test_every_target_failing_exits_1_and_lists_every_target() -> None:
    """An exhausted chain exits 1 with a line per attempt of every target and a summary."""
    result = majordomo("ask", "fake/a?script=503,fake/b?script=500", "hi")
    assert result.returncode == 1
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert [line.split(":")[0] for line in lines[:-1]] == ["failed"] * 4
    assert "fake/a?script=503" in lines[0] and "fake/b?script=500" in lines[2]
    assert lines[-1] == "majordomo: error: all chain targets failed (2 targets, 4 attempts)"


def test_permanent_error_exits_1_in_one_line() -> None:
    """A permanent provider error is not failed over: one line naming the target, exit 1."""
    result = majordomo("ask", "fake/x?script=auth,fake/backup", "hi")
    assert result.returncode == 1
    assert_one_error_line(result.stderr)
    assert "fake/x?script=auth: AuthenticationError: 401" in result.stderr


def test_deadline_exits_1() -> None:
    """--timeout bounds a hanging target; the chain reports it as a timeout."""
    result = majordomo("ask", "--timeout", "0.2", "fake/x?script=hang", "hi")
    assert result.returncode == 1
    assert "ProviderTimeoutError" in result.stderr
    assert "Traceback" not in result.stderr


def test_error_mid_stream_ends_the_line_and_exits_1() -> None:
    """A stream that breaks after content keeps what was printed, ends the line, exits 1."""
    result = majordomo("ask", "--stream", "fake/x?reply=a b c&break_after=1", "hi")
    assert result.returncode == 1
    assert result.stdout == "a \n"
    note, error = result.stderr.splitlines()
    assert note.endswith(
        "failed mid-stream, after 2 characters of text and 0 tool calls had been delivered"
    )
    assert_one_error_line(error)
    assert "ProviderConnectionError" in error


@pytest.mark.parametrize(
    ("args", "env", "needle"),
    [
        (["ask", "fake/a,,fake/b", "hi"], {}, "empty element #2"),
        (["ask", "nope/x", "hi"], {}, "LLM_NOPE"),
        (["ask", "bad/x", "hi"], {"LLM_BAD": "nonsense"}, "LLM_BAD"),
        (["ask", "--temperature", "5", "fake/x", "hi"], {}, "temperature"),
        (["ask", "fake/x?bogus=1", "hi"], {}, "bogus"),
        (["resolve", "nope/x"], {}, "LLM_NOPE"),
    ],
    ids=["empty-element", "unknown-provider", "bad-dsn", "temperature", "fake-key", "resolve"],
)
def test_configuration_errors_exit_2_in_one_line(
    args: list[str], env: dict[str, str], needle: str
) -> None:
    """Bad specs, unknown providers, malformed DSNs and bad options: exit 2, one line."""
    result = majordomo(*args, env=_env(**env))
    assert result.returncode == 2
    assert result.stdout == ""
    assert_one_error_line(result.stderr)
    assert needle in result.stderr


@pytest.mark.parametrize(
    "args",
    [[], ["ask", "fake/x"], ["frobnicate"], ["ask", "--temperature", "warm", "fake/x", "hi"]],
    ids=["no-command", "no-prompt", "unknown-command", "not-a-number"],
)
def test_argparse_misuse_exits_2(args: list[str]) -> None:
    """Command-line misuse gets argparse's usage message and exit 2, no traceback."""
    result = majordomo(*args)
    assert result.returncode == 2
    assert "usage: majordomo" in result.stderr
    assert "Traceback" not in result.stderr


# --------------------------------------------------------------------------- failover options

BAD_KEY_HEAD = "fake/head?script=401,fake/backup"


def test_advance_on_fails_over_the_named_permanent_errors() -> None:
    """`--advance-on AuthenticationError`: a head with a bad key advances to the backup.

    Needs `ChainConfig.advance_on`.
    """
    refused = majordomo("ask", BAD_KEY_HEAD, "hi")
    assert refused.returncode == 1  # by default a permanent error fails the call

    result = majordomo(
        "ask", "--advance-on", "ContentPolicyError,AuthenticationError", BAD_KEY_HEAD, "hi"
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout == "hi\n"
    assert result.stderr.startswith("failed: fake/head?script=401: AuthenticationError")
    assert result.stderr.endswith("answered by fake/backup\n")


def test_advance_on_other_classes_still_raises() -> None:
    """Only the named classes advance: a bad key still fails the call at once.

    Needs `ChainConfig.advance_on`.
    """
    result = majordomo("ask", "--advance-on", "ContentPolicyError", BAD_KEY_HEAD, "hi")

    assert result.returncode == 1
    assert_one_error_line(result.stderr)
    assert "AuthenticationError" in result.stderr


def test_advance_on_permanent_fails_over_any_permanent_error() -> None:
    """`--advance-on-permanent` advances past a bad request too."""
    result = majordomo("ask", "--advance-on-permanent", "fake/head?script=400,fake/backup", "hi")

    assert result.returncode == 0, result.stderr
    assert result.stdout == "hi\n"
    assert "BadRequestError" in result.stderr


def test_first_token_timeout_moves_on_from_a_slow_head() -> None:
    """`--first-token-timeout`: a head with nothing to show in time is left for the next."""
    result = majordomo(
        "ask", "--first-token-timeout", "0.2", "--stream", "fake/slow?latency=5,fake/backup", "hi"
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout == "hi\n"
    assert "first token timeout" in result.stderr
    assert "answered by fake/backup" in result.stderr


def test_interactive_uses_the_preset_and_restarts_a_broken_stream() -> None:
    """`--interactive`: `ChainConfig.interactive()`, so a stream cut mid-answer restarts on
    the next target."""
    spec = "fake/head?reply=a b c d&break_after=2,fake/backup?reply=whole"
    plain = majordomo("ask", "--stream", spec, "hi")
    assert plain.returncode != 0
    assert "ProviderConnectionError" in plain.stderr
    result = majordomo("ask", "--interactive", "--stream", spec, "hi")

    assert result.returncode == 0, result.stderr
    assert result.stdout.endswith("whole\n")


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ("AuthenticationError,NoSuchError", "not a provider error class: NoSuchError"),
        ("ConfigurationError", "not a provider error class: ConfigurationError"),
        ("TypeError", "not a provider error class: TypeError"),
        (" , ", "expected error class names"),
    ],
    ids=["unknown", "not-a-provider-error", "builtin", "empty"],
)
def test_advance_on_refuses_what_is_not_a_provider_error(value: str, needle: str) -> None:
    """A name that is not an exported ProviderError class is a usage error (exit 2) that
    lists the valid names."""
    result = majordomo("ask", "--advance-on", value, "fake/x", "hi")

    assert result.returncode == 2
    assert result.stdout == ""
    assert "usage: majordomo ask" in result.stderr
    assert "Traceback" not in result.stderr
    assert needle in result.stderr
    if "class:" in needle:
        assert "valid names: AuthenticationError, BadRequestError," in result.stderr


def test_prompt_from_stdin() -> None:
    """PROMPT `-` reads the prompt from stdin (its trailing newline dropped)."""
    result = majordomo("ask", "fake/x", "-", stdin="from stdin\n")
    assert result.returncode == 0
    assert result.stdout == "from stdin\n"


def test_empty_prompt_is_a_usage_error() -> None:
    """An empty prompt on stdin is refused before any provider is called."""
    result = majordomo("ask", "fake/x", "-", stdin="\n")
    assert result.returncode == 2
    assert_one_error_line(result.stderr)


def test_provider_from_environment_dsn() -> None:
    """`LLM_FLAKY=fake://?script=503` defines provider `flaky`; the chain fails over from it."""
    result = majordomo("ask", "flaky/x,fake/ok", "hi", env=_env(LLM_FLAKY="fake://?script=503"))
    assert result.returncode == 0
    assert result.stdout == "hi\n"
    lines = result.stderr.splitlines()
    assert [line[:17] for line in lines[:-1]] == ["failed: flaky/x: ", "failed: flaky/x ("]
    assert lines[-1] == "answered by fake/ok"


def test_resolve_lists_targets_in_order_with_health() -> None:
    """`resolve` prints each target of the chain in order, aligned, with its health."""
    result = majordomo("resolve", "fake/a , fake/long-name?script=503,fake/a,fake/c")
    assert result.returncode == 0
    assert result.stdout.splitlines() == [
        "fake/a                     healthy",
        "fake/long-name?script=503  healthy",
        "fake/c                     healthy",
    ]


def test_version() -> None:
    """`--version` prints the package version and exits 0."""
    result = majordomo("--version")
    assert result.returncode == 0
    assert result.stdout == f"majordomo {__version__}\n"


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_interrupt_exits_130_quietly() -> None:
    """Ctrl-C during a stream exits 130, ends the output line, and prints no traceback."""
    spec = "fake/x?reply=one two&chunk_delay=30"
    process = subprocess.Popen(
        [sys.executable, "-m", "majordomo_async", "ask", "--stream", spec, "hi"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(),
    )
    assert process.stdout is not None
    try:
        assert process.stdout.read(4) == b"one "  # the stream is open and waiting
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=10)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == 130
    assert stdout == b"\n"
    assert stderr == b""


def test_main_returns_the_exit_code(capsys: pytest.CaptureFixture[str]) -> None:
    """`main(argv)` returns the exit code instead of exiting, argparse errors included."""
    assert main(["--version"]) == 0
    assert main(["ask"]) == 2
    assert capsys.readouterr().out == f"majordomo {__version__}\n"


# --------------------------------------------------------------------------- images, models, health

PNG = b"\x89PNG\r\n\x1a\n" + bytes(16)


def test_ask_with_an_image_file(tmp_path: Path) -> None:
    image = tmp_path / "cat.png"
    image.write_bytes(PNG)
    result = majordomo("ask", "--image", str(image), "--json", "fake/echo", "what is this?")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["text"] == "what is this?"


@pytest.mark.parametrize(
    ("content", "needle"),
    [(None, "No such file"), (b"plain text", "not a PNG, JPEG, GIF, WEBP or HEIC image")],
)
def test_ask_with_a_bad_image_is_a_usage_error(
    tmp_path: Path, content: bytes | None, needle: str
) -> None:
    image = tmp_path / "notes.txt"
    if content is not None:
        image.write_bytes(content)
    result = majordomo("ask", "--image", str(image), "fake/echo", "hi")
    assert result.returncode == 2
    assert_one_error_line(result.stderr)
    assert needle in result.stderr


def test_health_lists_the_targets_of_a_spec() -> None:
    result = majordomo("health", "fake/a,fake/b")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["TARGET", "STATE", "FAILURES", "BENCHED", "UNTIL"]
    assert [line.split() for line in lines[1:]] == [
        ["fake/a", "healthy", "0", "-"],
        ["fake/b", "healthy", "0", "-"],
    ]


def test_health_without_a_spec_explains_the_empty_table() -> None:
    result = majordomo("health")
    assert result.returncode == 0
    assert result.stdout == ""
    assert "name a SPEC" in result.stderr


async def test_models_lists_a_servers_models() -> None:
    import anyio.to_thread
    from aiohttp import web

    from tests.helpers.servers import serve

    async def models(_: web.Request) -> web.Response:
        return web.json_response(
            {"object": "list", "data": [{"id": "zeta", "object": "model"}, {"id": "alpha"}]}
        )

    async with serve({"/v1/models": models}) as base:
        env = _env(LLM_LOCAL=f"openai+{base}/v1")
        result = await anyio.to_thread.run_sync(lambda: majordomo("models", "local", env=env))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["alpha", "zeta"]


def test_models_of_an_unknown_provider_is_a_usage_error() -> None:
    result = majordomo("models", "nope")
    assert result.returncode == 2
    assert "LLM_NOPE" in result.stderr


def test_reasoning_is_asked_for_and_shown_on_stderr() -> None:
    """`--reasoning` sends the option; `--show-reasoning` prints the reasoning to stderr,
    on its own line, and the answer alone to stdout."""
    spec = "fake/m?reasoning=let%20me%20think&reply=42"
    result = majordomo("ask", "--reasoning", "high", "--show-reasoning", "--stream", spec, "q")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "42\n"
    assert result.stderr.splitlines()[0] == "let me think"
    silent = majordomo("ask", "--reasoning", "none", "--show-reasoning", spec, "q")
    assert silent.stderr.splitlines()[0].startswith("answered by")
    as_json = json.loads(majordomo("ask", "--json", "--reasoning", "low", spec, "q").stdout)
    assert as_json["reasoning"] == "let me think"
    assert as_json["usage"]["reasoning_tokens"] == 3
    assert as_json["served_model"] == "m"


# --------------------------------------------------------------------------- JSON lines


def json_lines(stdout: str) -> list[dict[str, object]]:
    """Every line of `stdout` as a JSON object (each must be one)."""
    return [json.loads(line) for line in stdout.splitlines()]


def test_json_stream_prints_one_object_per_event_then_the_response() -> None:
    """`--json --stream`: JSON lines, one per event as it arrives, then the response."""
    spec = "fake/m?reasoning=let%20me%20think&reply=one two"
    result = majordomo("ask", "--json", "--stream", spec, "q")

    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    events = json_lines(result.stdout)
    assert [event["type"] for event in events] == [
        "start",
        "reasoning",
        "reasoning",
        "reasoning",
        "text",
        "text",
        "usage",
        "end",
        "response",
    ]
    start, *_, usage, end, response = events
    assert start == {"type": "start", "model": spec, "request_id": "fake-1", "served_model": "m"}
    assert "".join(str(e["text"]) for e in events if e["type"] == "reasoning") == "let me think"
    assert "".join(str(e["text"]) for e in events if e["type"] == "text") == "one two"
    assert usage["usage"] == response["usage"]
    assert end == {"type": "end", "finish_reason": "stop", "refusal": None}
    assert (response["text"], response["reasoning"]) == ("one two", "let me think")


def test_json_stream_tool_call_deltas() -> None:
    spec = 'fake/m?tool=get_weather&args={"city": "Oslo"}'
    events = json_lines(majordomo("ask", "--json", "--stream", spec, "q").stdout)

    deltas = [event for event in events if event["type"] == "tool_call"]
    assert deltas[0] == {
        "type": "tool_call",
        "index": 0,
        "id": "call_1",
        "name": "get_weather",
        "arguments": "",
    }
    assert "".join(str(delta["arguments"]) for delta in deltas) == '{"city": "Oslo"}'
    assert events[-1]["tool_calls"] == [
        {"id": "call_1", "name": "get_weather", "arguments": '{"city": "Oslo"}'}
    ]
    assert events[-1]["finish_reason"] == "tool_calls"


BREAKS = "fake/head?reply=a b c d&break_after=2,fake/backup?reply=whole"


def test_mid_stream_restart_is_a_restart_event() -> None:
    """`--mid-stream restart`: the broken head's text, a restart event, the backup's answer."""
    result = majordomo("ask", "--json", "--stream", "--mid-stream", "restart", BREAKS, "q")

    assert result.returncode == 0, result.stderr
    events = json_lines(result.stdout)
    types = [event["type"] for event in events]
    assert types == [
        "start",
        "text",
        "text",
        "restart",
        "start",
        "text",
        "usage",
        "end",
        "response",
    ]
    restart = events[3]
    assert restart["model"] == "fake/backup?reply=whole"
    assert restart["failed"] == "fake/head?reply=a b c d&break_after=2"
    assert str(restart["error"]).startswith("ProviderConnectionError: ")
    assert events[-1]["text"] == "whole"


def test_mid_stream_raise_overrides_the_interactive_preset() -> None:
    """Options after the preset win: `--interactive --mid-stream raise` does not restart."""
    result = majordomo("ask", "--stream", "--interactive", "--mid-stream", "raise", BREAKS, "q")

    assert result.returncode == 1
    assert result.stdout == "a b \n"
    assert "ProviderConnectionError" in result.stderr


def test_attempt_timeout_moves_on_from_a_slow_target() -> None:
    """`--attempt-timeout`: a generate slower than the limit fails over (the slow target
    would take 30 s; the call returns long before the subprocess timeout)."""
    result = majordomo("ask", "--attempt-timeout", "0.2", "fake/slow?latency=30,fake/backup", "hi")

    assert result.returncode == 0, result.stderr
    assert result.stdout == "hi\n"
    assert result.stderr.startswith("failed: fake/slow?latency=30: ProviderTimeoutError")
    assert result.stderr.endswith("answered by fake/backup\n")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--attempt-timeout", "0"], "ChainConfig.attempt_timeout must be positive"),
        (["--attempt-timeout", "soon"], "invalid float value: 'soon'"),
        (["--mid-stream", "retry"], "invalid choice: 'retry' (choose from 'raise', 'restart')"),
    ],
    ids=["attempt-timeout-zero", "attempt-timeout-word", "mid-stream-choice"],
)
def test_bad_failover_options_exit_2(args: list[str], needle: str) -> None:
    result = majordomo("ask", *args, "fake/x", "hi")

    assert result.returncode == 2
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    assert needle in result.stderr


# --------------------------------------------------------------------------- keys, models


def _without_keys(**extra: str) -> dict[str, str]:
    """The environment without any provider key variable."""
    env = _env(**extra)
    for name in ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY"):
        if name not in extra:
            env.pop(name, None)
    return env


def test_resolve_says_no_key_for_a_target_without_one() -> None:
    result = majordomo("resolve", "anthropic/claude-haiku-4-5,fake/b", env=_without_keys())

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "anthropic/claude-haiku-4-5  no key (set ANTHROPIC_API_KEY)",
        "fake/b                      healthy",
    ]
    keyed = majordomo(
        "resolve", "anthropic/claude-haiku-4-5", env=_without_keys(ANTHROPIC_API_KEY="k")
    )
    assert keyed.stdout == "anthropic/claude-haiku-4-5  healthy\n"


def test_a_missing_key_in_ask_is_a_configuration_error() -> None:
    """No key: exit 2 (the user's configuration), not 1 (a provider's failure); nothing
    is sent."""
    result = majordomo("ask", "anthropic/claude-haiku-4-5", "hi", env=_without_keys())

    assert result.returncode == 2
    assert result.stdout == ""
    assert_one_error_line(result.stderr)
    assert "anthropic/claude-haiku-4-5: no API key for provider 'anthropic'" in result.stderr
    assert "ANTHROPIC_API_KEY" in result.stderr


def test_a_chain_that_fails_only_for_missing_keys_exits_2() -> None:
    result = majordomo(
        "ask",
        "--advance-on",
        "AuthenticationError",
        "anthropic/claude-haiku-4-5,openai/gpt-4o-mini",
        "hi",
        env=_without_keys(),
    )

    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == (
        "majordomo: error: all chain targets failed (2 targets, 2 attempts)"
    )


def test_models_of_the_fake_says_it_has_no_list() -> None:
    """The fake provider takes any model id: `models fake` says so, and exits 0."""
    result = majordomo("models", "fake")

    assert result.returncode == 0
    assert result.stdout == ""
    assert result.stderr == (
        "provider 'fake' is a fake: it has no model list and takes any model id "
        "(fake/NAME?key=value; see docs/fake-provider.md)\n"
    )


# --------------------------------------------------------------------------- --config

CONFIG = """\
[providers.canned]
dsn = "fake://?reply=from%20the%20file"

[providers.locked]
dsn = "fake://"
key_env = "LOCKED_KEY"

[aliases]
fast = "locked/a, canned/b"

[chain]
advance_on = ["AuthenticationError"]
mid_stream = "restart"
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "majordomo.toml"
    path.write_text(CONFIG, encoding="utf-8")
    return path


def test_ask_with_a_config_file(config: Path) -> None:
    """The file's providers, alias and chain policy: the keyless head advances (the
    file's advance_on), and the backup answers."""
    result = majordomo("ask", "--config", str(config), "fast", "hi")

    assert result.returncode == 0, result.stderr
    assert result.stdout == "from the file\n"
    failed, answered = result.stderr.splitlines()
    assert failed.startswith("failed: locked/a: AuthenticationError: no API key for provider")
    assert "set LOCKED_KEY (named by key_env in" in failed
    assert answered == "answered by canned/b"
    with_key = majordomo("--config", str(config), "ask", "fast", "hi", env=_env(LOCKED_KEY="k"))
    assert with_key.stdout == "hi\n"  # the head echoes, now that it has its key


def test_the_file_chain_policy_and_options_over_it(config: Path) -> None:
    """The file says mid_stream = "restart"; `--mid-stream raise` overrides it."""
    spec = "canned/head?reply=a b c d&break_after=2,fake/backup?reply=whole"
    restarted = majordomo("ask", "--config", str(config), "--stream", spec, "q")
    assert restarted.returncode == 0, restarted.stderr
    assert restarted.stdout.endswith("whole\n")
    raised = majordomo(
        "ask", "--config", str(config), "--mid-stream", "raise", "--stream", spec, "q"
    )
    assert raised.returncode == 1


def test_every_command_takes_config(config: Path) -> None:
    resolve = majordomo("resolve", "--config", str(config), "fast")
    assert resolve.stdout.splitlines() == ["locked/a  no key (set LOCKED_KEY)", "canned/b  healthy"]
    health = majordomo("--config", str(config), "health", "fast")
    assert [line.split()[:2] for line in health.stdout.splitlines()[1:]] == [
        ["locked/a", "healthy"],
        ["canned/b", "healthy"],
    ]
    models = majordomo("models", "--config", str(config), "locked")
    assert models.returncode == 2
    assert "set LOCKED_KEY" in models.stderr
    canned = majordomo("models", "--config", str(config), "canned")
    assert canned.returncode == 0
    assert "provider 'canned' is a fake" in canned.stderr


def test_majordomo_config_names_the_file(config: Path) -> None:
    result = majordomo("ask", "fast", "hi", env=_env(MAJORDOMO_CONFIG=str(config)))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "from the file\n"


@pytest.mark.parametrize("command", [["ask", "fake/x", "hi"], ["resolve", "fake/x"], ["health"]])
def test_a_bad_config_file_exits_2_naming_the_file_and_line(
    tmp_path: Path, command: list[str]
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[chain]\nmid_stream = "retry"\n', encoding="utf-8")

    result = majordomo(command[0], "--config", str(path), *command[1:])

    assert result.returncode == 2
    assert result.stdout == ""
    assert_one_error_line(result.stderr)
    assert result.stderr == (
        f'majordomo: error: {path}, line 2: chain.mid_stream: expected "raise" or '
        '"restart", got the string "retry"\n'
    )


def test_a_secret_in_a_config_file_is_refused_unseen(tmp_path: Path) -> None:
    secret = "sk-ant-api03-NeverPrintThis0123456789"
    path = tmp_path / "leaky.toml"
    path.write_text(f'[providers.work]\ndsn = "anthropic://{secret}@"\n', encoding="utf-8")

    result = majordomo("resolve", "--config", str(path), "work/x")

    assert result.returncode == 2
    assert_one_error_line(result.stderr)
    assert "line 2: providers.work.dsn: the DSN holds a credential" in result.stderr
    assert secret[:10] not in result.stderr
