"""The clients under test, each behind one small interface, against the same mock server.

Every contender answers the same request (one user message, no options) and does the
least work a real caller needs: the reply text for a call, every content chunk for a
stream. `raw aiohttp` is the floor: it posts JSON, decodes the JSON reply, and for a
stream iterates the body, splits SSE lines and decodes each `data:` line (any client
must decode a chunk to find its text).

Peers (`openai`, `litellm`) are imported only when their contender starts, so the
harness runs with only the project's own dependencies installed; `missing_modules()`
tells which contenders cannot run here.

Choices that keep the comparison fair (see benchmarks/README.md):

- No contender retries a failed call on its own: the openai SDK gets `max_retries=0`,
  LiteLLM `max_retries=0` and Router `num_retries=0`; majordomo's failover row disables
  same-target retries. Only the failover rows fail over, once, to a healthy backup.
- The failover rows attempt the failing head on every call: majordomo's health tracker
  gets an unreachable failure threshold and LiteLLM's Router `disable_cooldowns=True`.
  (With defaults both would bench the head and skip it, which the "2 heads benched" row
  measures for majordomo.)
- HTTP pools keep their library defaults (aiohttp: 100 connections per session; httpx in
  the openai SDK: 1,000), except that the memory scenario lifts aiohttp's limit for raw
  aiohttp and majordomo (a borrowed session) so that 1,000 streams can be in flight.
"""

from __future__ import annotations

import abc
import importlib
import importlib.util
import json
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Final

import aiohttp

from majordomo_async import ChainConfig, HealthConfig, Registry, TextDelta

API_KEY: Final = "sk-bench"
MODEL: Final = "gpt-bench"
"""The healthy model id (the server answers it normally)."""
FAILING_MODEL: Final = "fail-503"
"""A head that always answers 503 (a transient error for every client)."""
HOLD_MODEL: Final = "hold"
"""Streams that pause after their first content chunk until the server is told to go on."""
PROMPT: Final = "Say hello in one word."
MESSAGES: Final = ({"role": "user", "content": PROMPT},)

AfterFirst = Callable[[], Awaitable[None]]
"""Awaited once a stream delivered its first content chunk (the memory scenario holds
every stream there)."""


@dataclass(frozen=True)
class Server:
    """Where the mock server listens."""

    host: str
    port: int

    @property
    def openai_base(self) -> str:
        """The OpenAI API root ("http://127.0.0.1:PORT/v1")."""
        return f"http://{self.host}:{self.port}/v1"

    @property
    def root(self) -> str:
        """The server root (the Anthropic API root)."""
        return f"http://{self.host}:{self.port}"


class Contender(abc.ABC):
    """One client configuration: open once, then `call()` and `stream()` many times."""

    label: ClassVar[str]
    """The row name in the results."""
    requires: ClassVar[tuple[str, ...]] = ()
    """Modules that must be importable (peers are optional)."""

    def __init__(
        self, server: Server, *, model: str = MODEL, connection_limit: int | None = None
    ) -> None:
        self.server = server
        self.model = model
        self.connection_limit = connection_limit
        """aiohttp connector limit (0: none); None keeps the library's default."""

    @abc.abstractmethod
    async def start(self) -> None:
        """Create clients and sessions (no request is sent)."""

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Release everything `start()` created."""

    @abc.abstractmethod
    async def call(self) -> int:
        """One non-streaming completion; returns the length of the reply text."""

    @abc.abstractmethod
    async def stream(self, after_first: AfterFirst | None = None) -> int:
        """Consume one streamed completion; returns the number of content chunks."""

    def _connector(self) -> aiohttp.TCPConnector | None:
        if self.connection_limit is None:
            return None
        return aiohttp.TCPConnector(limit=self.connection_limit)


# --------------------------------------------------------------------------- the floor


class RawAiohttp(Contender):
    """The floor: post JSON with aiohttp, decode the reply; split SSE lines for streams."""

    label = "raw aiohttp"
    _heads: tuple[str, ...] = ()
    """Models tried (and expected to fail) before `self.model`: the manual failover row."""

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(connector=self._connector())
        self._url = self.server.openai_base + "/chat/completions"
        self._headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}

    async def aclose(self) -> None:
        await self._session.close()

    async def call(self) -> int:
        for head in self._heads:
            await self._post_expecting_failure(head, stream=False)
        body = json.dumps({"model": self.model, "messages": MESSAGES}).encode()
        async with self._session.post(self._url, data=body, headers=self._headers) as response:
            data = await response.read()
            if response.status != 200:
                raise RuntimeError(f"HTTP {response.status}")
        return len(json.loads(data)["choices"][0]["message"]["content"])

    async def stream(self, after_first: AfterFirst | None = None) -> int:
        for head in self._heads:
            await self._post_expecting_failure(head, stream=True)
        body = json.dumps(
            {
                "model": self.model,
                "messages": MESSAGES,
                "stream": True,
                "stream_options": {"include_usage": True},
            }
        ).encode()
        chunks = 0
        async with self._session.post(self._url, data=body, headers=self._headers) as response:
            if response.status != 200:
                raise RuntimeError(f"HTTP {response.status}")
            pending = b""
            async for data in response.content.iter_any():
                *lines, pending = (pending + data).split(b"\n")
                for line in lines:
                    if not line.startswith(b"data: ") or line == b"data: [DONE]":
                        continue
                    choices = json.loads(line[6:])["choices"]
                    if choices and choices[0]["delta"].get("content"):
                        chunks += 1
                        if chunks == 1 and after_first is not None:
                            await after_first()
        return chunks

    async def _post_expecting_failure(self, model: str, *, stream: bool) -> None:
        body = json.dumps({"model": model, "messages": MESSAGES, "stream": stream}).encode()
        async with self._session.post(self._url, data=body, headers=self._headers) as response:
            await response.read()
            if response.status < 500:
                raise RuntimeError(f"expected a 5xx from {model}, got {response.status}")


class RawAiohttpFailover(RawAiohttp):
    """Raw aiohttp that tries a 503 head first: the floor of a failover (two requests)."""

    label = "raw aiohttp, failover from a 503 head"
    _heads = (FAILING_MODEL,)


# --------------------------------------------------------------------------- majordomo


class Majordomo(Contender):
    """A one-target chain: `registry.parse(spec)` per call, as a service would."""

    label = "majordomo 1-target chain"
    _spec_models: tuple[str, ...] = ()
    """Models in front of `self.model` in the spec."""

    def _registry_options(self) -> dict[str, Any]:
        return {}

    def _env(self) -> dict[str, str]:
        return {"LLM_BENCH": f"openai+http://{API_KEY}@{self.server.host}:{self.server.port}/v1"}

    def _spec(self) -> str:
        return ",".join(f"bench/{model}" for model in (*self._spec_models, self.model))

    async def start(self) -> None:
        connector = self._connector()
        # A borrowed session only when the pool limit must change (memory scenario);
        # otherwise the registry's own session, as users get it.
        self._session = aiohttp.ClientSession(connector=connector) if connector else None
        self._registry = Registry(
            env=self._env(), session=self._session, **self._registry_options()
        )
        self._spec_text = self._spec()
        self._registry.parse(self._spec_text)  # resolve providers outside the timed path

    async def aclose(self) -> None:
        await self._registry.aclose()
        if self._session is not None:
            await self._session.close()

    async def call(self) -> int:
        response = await self._registry.parse(self._spec_text).generate(PROMPT)
        return len(response.text)

    async def stream(self, after_first: AfterFirst | None = None) -> int:
        chunks = 0
        async with await self._registry.parse(self._spec_text).stream(PROMPT) as stream:
            async for event in stream:
                if type(event) is TextDelta:
                    chunks += 1
                    if chunks == 1 and after_first is not None:
                        await after_first()
        return chunks


class MajordomoBenched(Majordomo):
    """A three-target chain whose two heads are benched: the healthy path past skips."""

    label = "majordomo 3-target chain, 2 heads benched"
    _spec_models = ("down-a", "down-b")

    def _registry_options(self) -> dict[str, Any]:
        # One failure benches a head for an hour: it stays skipped for the whole run.
        return {"health": HealthConfig(failure_threshold=1, base_cooldown=3600, max_cooldown=3600)}

    async def start(self) -> None:
        await super().start()
        for model in self._spec_models:
            await self._registry.health.report_failure(f"bench/{model}")


class MajordomoFailover(Majordomo):
    """Every call tries a 503 head, then its healthy backup (no retry, no benching)."""

    label = "majordomo failover from a 503 head"
    _spec_models = (FAILING_MODEL,)

    def _registry_options(self) -> dict[str, Any]:
        return {
            "health": HealthConfig(failure_threshold=1_000_000_000),
            "chain": ChainConfig(transient_retries=-1),
        }


class MajordomoAnthropic(Majordomo):
    """A one-target chain over the Anthropic messages wire."""

    label = "majordomo 1-target chain, Anthropic wire"

    def _env(self) -> dict[str, str]:
        return {"LLM_BENCH": f"anthropic+http://{API_KEY}@{self.server.host}:{self.server.port}"}


# --------------------------------------------------------------------------- peers


def _version(module: str) -> str:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:
        return "?"


class OpenAISDK(Contender):
    """The official `openai` SDK's `AsyncOpenAI`, `max_retries=0`."""

    label = "openai SDK"
    requires = ("openai",)

    async def start(self) -> None:
        openai = importlib.import_module("openai")
        self._client: Any = openai.AsyncOpenAI(
            api_key=API_KEY, base_url=self.server.openai_base, max_retries=0
        )

    async def aclose(self) -> None:
        await self._client.close()

    async def call(self) -> int:
        completion = await self._client.chat.completions.create(
            model=self.model, messages=list(MESSAGES)
        )
        return len(completion.choices[0].message.content)

    async def stream(self, after_first: AfterFirst | None = None) -> int:
        chunks = 0
        stream = await self._client.chat.completions.create(
            model=self.model,
            messages=list(MESSAGES),
            stream=True,
            stream_options={"include_usage": True},
        )
        async with stream:
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    chunks += 1
                    if chunks == 1 and after_first is not None:
                        await after_first()
        return chunks


def import_litellm() -> Any:
    """LiteLLM, kept off the network and quiet.

    Without `LITELLM_LOCAL_MODEL_COST_MAP` it downloads its model price map at import
    (and retries for seconds on a machine without internet access).
    """
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    litellm: Any = importlib.import_module("litellm")
    litellm.suppress_debug_info = True
    litellm.set_verbose = False
    for name in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy", "litellm"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    return litellm


async def _close_litellm(litellm: Any) -> None:
    close = getattr(litellm, "close_litellm_async_clients", None)
    if close is not None:
        await close()


async def _consume_litellm(stream: Any, after_first: AfterFirst | None) -> int:
    chunks = 0
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            chunks += 1
            if chunks == 1 and after_first is not None:
                await after_first()
    return chunks


class LiteLLM(Contender):
    """`litellm.acompletion` pointed at the mock with `api_base`."""

    label = "litellm acompletion"
    requires = ("litellm",)

    async def start(self) -> None:
        self._litellm = import_litellm()
        self._params = {
            "model": f"openai/{self.model}",
            "api_base": self.server.openai_base,
            "api_key": API_KEY,
            "max_retries": 0,
        }

    async def aclose(self) -> None:
        await _close_litellm(self._litellm)

    async def call(self) -> int:
        response = await self._litellm.acompletion(messages=list(MESSAGES), **self._params)
        return len(response.choices[0].message.content)

    async def stream(self, after_first: AfterFirst | None = None) -> int:
        stream = await self._litellm.acompletion(
            messages=list(MESSAGES),
            stream=True,
            stream_options={"include_usage": True},
            **self._params,
        )
        return await _consume_litellm(stream, after_first)


class LiteLLMRouter(LiteLLM):
    """LiteLLM's `Router` with a healthy primary and a fallback configured."""

    label = "litellm Router"
    _primary_model: str | None = None
    """The primary's model id (None: `self.model`, healthy)."""

    async def start(self) -> None:
        await super().start()
        failing = self._primary_model is not None

        def deployment(name: str, model: str) -> dict[str, Any]:
            return {
                "model_name": name,
                "litellm_params": {
                    "model": f"openai/{model}",
                    "api_base": self.server.openai_base,
                    "api_key": API_KEY,
                    "max_retries": 0,
                },
            }

        self._router = self._litellm.Router(
            model_list=[
                deployment("primary", self._primary_model or self.model),
                deployment("backup", self.model),
            ],
            fallbacks=[{"primary": ["backup"]}],
            num_retries=0,
            # The failover row must hit the failing primary on every call (see module doc).
            disable_cooldowns=failing,
        )

    async def aclose(self) -> None:
        aclose = getattr(self._router, "aclose", None)
        if aclose is not None:
            await aclose()
        await super().aclose()

    async def call(self) -> int:
        response = await self._router.acompletion(model="primary", messages=list(MESSAGES))
        return len(response.choices[0].message.content)

    async def stream(self, after_first: AfterFirst | None = None) -> int:
        stream = await self._router.acompletion(
            model="primary",
            messages=list(MESSAGES),
            stream=True,
            stream_options={"include_usage": True},
        )
        return await _consume_litellm(stream, after_first)


class LiteLLMRouterFailover(LiteLLMRouter):
    """LiteLLM's `Router` whose primary always answers 503: every call falls back."""

    label = "litellm Router, failover from a 503 head"
    _primary_model = FAILING_MODEL


# --------------------------------------------------------------------------- catalogue

CONTENDERS: Final[dict[str, type[Contender]]] = {
    "raw": RawAiohttp,
    "md-1": Majordomo,
    "md-3": MajordomoBenched,
    "md-anthropic": MajordomoAnthropic,
    "openai": OpenAISDK,
    "litellm": LiteLLM,
    "router": LiteLLMRouter,
    "raw-failover": RawAiohttpFailover,
    "md-failover": MajordomoFailover,
    "router-failover": LiteLLMRouterFailover,
}
"""Contender ids (the CLI's `--contenders`) in report order."""

FLOOR: Final = "raw"
"""The contender every ratio is taken against."""


def missing_modules(name: str) -> list[str]:
    """The modules contender `name` needs that are not installed here."""
    return [
        module for module in CONTENDERS[name].requires if importlib.util.find_spec(module) is None
    ]


def label(name: str) -> str:
    """The row label of contender `name`, with the peer's version where it has one."""
    cls = CONTENDERS[name]
    if cls.requires and not missing_modules(name):
        return cls.label.replace(
            cls.requires[0], f"{cls.requires[0]} {_version(cls.requires[0])}", 1
        )
    return cls.label
