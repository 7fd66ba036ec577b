"""Every Python code block of the README runs, as written, against local servers.

The blocks use the `openai` and `anthropic` providers as a user would; here their
`LLM_OPENAI` / `LLM_ANTHROPIC` DSNs point at wire emulators on 127.0.0.1 (the
environment wins over the built-in providers, as the README says), so the blocks run
unchanged, without keys or network. Each block runs on its own, with top-level `await`,
in a fresh namespace: it must import what it uses.
"""

from __future__ import annotations

import ast
import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from majordomo_async import Response, TextPart, ToolCall, ToolCallPart
from tests.helpers.servers import serve
from tests.helpers.wire import AnthropicWire, CallTool, OpenAIWire, Reply

README = Path(__file__).parent.parent / "README.md"
BLOCK = re.compile(r"^```python\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def python_blocks() -> list[Any]:
    text = README.read_text(encoding="utf-8")
    blocks = []
    for match in BLOCK.finditer(text):
        line = text.count("\n", 0, match.start()) + 2
        blocks.append(pytest.param(match.group(1), id=f"README.md:{line}"))
    return blocks


def test_the_readme_has_python_blocks() -> None:
    assert len(python_blocks()) >= 6


async def png(_: web.Request) -> web.Response:
    return web.Response(
        body=bytes.fromhex("89504e470d0a1a0a") + bytes(16), content_type="image/png"
    )


@pytest.fixture
async def providers(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[None]:
    """`openai` and `anthropic` served locally: a tool call first, then text, forever."""
    script = [CallTool("get_weather", {"city": "Oslo"}), Reply("Clear sky, 4 °C.")]
    openai = OpenAIWire(script * 50, key="sk-readme")
    anthropic = AnthropicWire([Reply("Sunny.")], key="sk-ant-readme")
    async with openai.running() as openai_dsn, anthropic.running() as anthropic_dsn:
        monkeypatch.setenv("LLM_OPENAI", openai_dsn)
        monkeypatch.setenv("LLM_ANTHROPIC", anthropic_dsn)
        yield


@pytest.mark.parametrize("source", python_blocks())
async def test_readme_block_runs(
    source: str, providers: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # blocks that write files write them here
    if "asyncio.run(" in source:
        # A script as a user would save it: it runs its own loop, so in a thread here.
        namespace_script: dict[str, Any] = {"__name__": "__main__"}
        await asyncio.to_thread(exec, compile(source, "README.md", "exec"), namespace_script)
        return
    async with serve({"/other-chart.png": png}) as images:
        source = source.replace("https://example.com", images)
        code = compile(source, "README.md", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
        namespace: dict[str, Any] = {"__name__": "readme_block"}
        result = eval(code, namespace)  # a coroutine when the block awaits
        if result is not None:
            await result


def test_response_message_replays_text_and_tool_calls() -> None:
    call = ToolCall("call_1", "f", "{}")
    message = Response(text="checking", tool_calls=[call]).message
    assert message.role == "assistant"
    assert message.parts == (TextPart("checking"), ToolCallPart(call))
    assert Response(tool_calls=[call]).message.parts == (ToolCallPart(call),)
