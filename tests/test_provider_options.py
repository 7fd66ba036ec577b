"""The escape hatch and the User-Agent on the wire, through real local servers: extra
body fields and headers reach only the family (or preset) they name, merge into what the
library sends, never replace the credential, and never show in errors or reprs."""

from __future__ import annotations

from typing import Any

import pytest

from majordomo_async import (
    AuthenticationError,
    Registry,
    Request,
    provider_options,
)
from majordomo_async._providers._base import USER_AGENT

from .helpers.servers import LocalServer, local_server, respond

CHAT = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1,
    "model": "m-served",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "ok", "refusal": None},
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
}
MESSAGE = {
    "id": "msg_1",
    "type": "message",
    "role": "assistant",
    "model": "claude-x",
    "content": [{"type": "text", "text": "ok"}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {"input_tokens": 1, "output_tokens": 1},
}


async def ask(server: LocalServer, spec: str, env: dict[str, str], *options: Any) -> Any:
    async with Registry(env=env) as registry:
        return await registry.parse(spec).generate(Request("hi"), *options)


@pytest.fixture
async def openai_server() -> Any:
    async with local_server() as server:
        server.handler = respond(200, CHAT)
        yield server


async def test_body_fields_merge_into_the_named_family_only(openai_server: LocalServer) -> None:
    env = {"LLM_O": f"openai+http://sk-o@{openai_server.url.removeprefix('http://')}/v1"}
    await ask(
        openai_server,
        "o/m",
        env,
        provider_options("openai", body={"seed": 7, "stream_options": None, "user": "u1"}),
        provider_options("anthropic", body={"top_k": 5}),
        provider_options("groq", body={"service_tier": "flex"}),  # another preset: not here
    )
    body = openai_server.requests[0].json()
    assert body["seed"] == 7 and body["user"] == "u1"
    assert "top_k" not in body and "service_tier" not in body
    assert body["messages"] == [{"role": "user", "content": "hi"}]


async def test_a_preset_gets_the_wire_options_then_its_own() -> None:
    async with local_server() as server:
        server.handler = respond(200, CHAT)
        env = {"LLM_G": f"groq+http://k@{server.url.removeprefix('http://')}/v1"}
        await ask(
            server,
            "g/m",
            env,
            provider_options("openai", body={"seed": 1, "temperature": 0.1}),
            provider_options("groq", body={"seed": 2}),
        )
        body = server.requests[0].json()
    assert (body["seed"], body["temperature"]) == (2, 0.1)


async def test_nested_objects_merge_and_none_removes() -> None:
    async with local_server() as server:
        server.handler = respond(200, MESSAGE)
        env = {"LLM_A": f"anthropic+http://sk-a@{server.url.removeprefix('http://')}"}
        await ask(
            server,
            "a/claude-x",
            env,
            provider_options(
                "anthropic", body={"metadata": {"user_id": "u-9"}, "max_tokens": None}
            ),
        )
        body = server.requests[0].json()
    assert body["metadata"] == {"user_id": "u-9"}
    assert "max_tokens" not in body


async def test_headers_are_added_but_never_replace_the_credential(
    openai_server: LocalServer,
) -> None:
    env = {"LLM_O": f"openai+http://sk-real@{openai_server.url.removeprefix('http://')}/v1"}
    await ask(
        openai_server,
        "o/m",
        env,
        provider_options(
            "openai",
            headers={"Authorization": "Bearer sk-evil", "OpenAI-Beta": "x", "User-Agent": "mine/1"},
        ),
    )
    headers = openai_server.requests[0].headers
    assert headers["Authorization"] == "Bearer sk-real"
    assert headers["OpenAI-Beta"] == "x"
    assert headers["User-Agent"] == "mine/1"  # a request may replace the User-Agent


async def test_a_requests_own_headers_stay_with_that_request(
    openai_server: LocalServer,
) -> None:
    """The headers of a plain request are built once per provider and shared: a request
    with headers of its own, before or after, neither changes them nor keeps its own."""
    env = {"LLM_O": f"openai+http://sk-real@{openai_server.url.removeprefix('http://')}/v1"}
    own = provider_options("openai", headers={"X-Trace": "t-1", "User-Agent": "mine/1"})
    async with Registry(env=env) as registry:
        model = registry.parse("o/m")
        for options in ((), (own,), (), (own,), ()):
            await model.generate(Request("hi"), *options)
    sent = [request.headers for request in openai_server.requests]
    assert [headers.get("X-Trace") for headers in sent] == [None, "t-1", None, "t-1", None]
    assert [headers["User-Agent"] for headers in sent] == [
        USER_AGENT,
        "mine/1",
        USER_AGENT,
        "mine/1",
        USER_AGENT,
    ]
    assert all(headers["Authorization"] == "Bearer sk-real" for headers in sent)


async def test_every_request_says_who_sends_it(openai_server: LocalServer) -> None:
    env = {"LLM_O": f"openai+http://sk-o@{openai_server.url.removeprefix('http://')}/v1"}
    await ask(openai_server, "o/m", env)
    assert openai_server.requests[0].headers["User-Agent"] == USER_AGENT
    assert USER_AGENT.startswith("majordomo-async/")


async def test_option_values_never_reach_an_error() -> None:
    async with local_server() as server:
        server.handler = respond(401, {"error": {"message": "bad key", "type": "auth"}})
        env = {"LLM_O": f"openai+http://sk-o@{server.url.removeprefix('http://')}/v1"}
        secret = "hdr-secret-7731"
        with pytest.raises(AuthenticationError) as info:
            await ask(server, "o/m", env, provider_options("openai", headers={"X-T": secret}))
    notes = getattr(info.value, "__notes__", [])
    assert secret not in f"{info.value} {info.value!r} {notes}"
