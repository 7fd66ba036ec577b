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
    env.pop("MAJORDOMO_DEBUG", None)
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
    """`--json` prints one parseable object with the answer, usage and failed attempts."""
    flags = ["--json", "--stream"] if stream else ["--json"]
    result = majordomo("ask", *flags, FAILOVER, "two words")
    assert result.returncode == 0
    assert result.stderr == ""
    payload = json.loads(result.stdout)
    assert payload["text"] == "two words"
    assert payload["model"] == "fake/backup"
    assert payload["usage"] == {"input_tokens": 2, "output_tokens": 2}
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
