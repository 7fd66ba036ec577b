"""A private redis-server for tests, and the worker process of the fleet test.

`RedisServer` runs Debian's `redis-server` on a free loopback port with no persistence
and no config file; `stop()` kills it (SIGKILL: a crash, as far as clients can tell) and
`start()` brings it back on the same port, empty.

`unavailable()` says why Redis tests cannot run here (no binary, no redis-py); the
session fixture skips on it, or fails when `MAJORDOMO_REQUIRE_REDIS=1` (CI).

`RedisCluster` runs three `redis-server`s in cluster mode on free loopback ports, with
the 16384 slots split between them (CLUSTER ADDSLOTSRANGE and MEET by hand: a second or
two, no `redis-cli --cluster` needed).

`store_factory`, `server_time`, `wait_until`, `eventually` and `lease_of` are what the
Redis test modules share (each keeps its own small fixtures on top of them).

Run as `python -m tests.helpers.redis_server HEAD_URL STORE PREFIX COOLDOWN CALLERS
[OPTIONS]`, this module is one replica of a service: a Registry with its own health store
(`STORE` is a Redis URL or "memory"; OPTIONS, a URL query, is added to it) calling the
chain "head/m,tail/m" from CALLERS concurrent loops until a line arrives on stdin, then
printing what it saw as one JSON line.

`run_budget_fleet` runs the other kind of replica, `budget_worker_command`'s: a
`LimitSet` on a `RedisBudget` of its own, admitting concurrent calls to one local
upstream (which records when each arrived) between a "go" and a "stop" line on stdin.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from majordomo_async import HealthConfig, RedisHealthStore

__all__ = [
    "REPOSITORY",
    "RedisCluster",
    "RedisServer",
    "budget_worker_command",
    "eventually",
    "lease_of",
    "redis_binary",
    "required",
    "run_budget_fleet",
    "run_fleet",
    "server_time",
    "store_factory",
    "unavailable",
    "wait_until",
    "worker_command",
]

REQUIRE_VARIABLE = "MAJORDOMO_REQUIRE_REDIS"
_START_TIMEOUT = 10.0


def redis_binary() -> str | None:
    """The `redis-server` executable, or None."""
    return shutil.which("redis-server") or next(
        (
            path
            for path in ("/usr/bin/redis-server", "/usr/sbin/redis-server")
            if os.access(path, os.X_OK)
        ),
        None,
    )


def unavailable() -> str | None:
    """Why the Redis tests cannot run on this machine, or None when they can."""
    if redis_binary() is None:
        return "redis-server is not installed (Debian: apt-get install redis-server)"
    if importlib.util.find_spec("redis") is None:
        return "redis-py is not installed (pip install 'majordomo-async[redis]')"
    return None


def required() -> bool:
    """True when Redis tests must run (CI sets MAJORDOMO_REQUIRE_REDIS=1)."""
    return os.environ.get(REQUIRE_VARIABLE, "") not in ("", "0")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """One redis-server process on 127.0.0.1 (`url` is stable across restarts)."""

    def __init__(self, binary: str | None = None) -> None:
        found = binary or redis_binary()
        if found is None:
            raise RuntimeError("redis-server is not installed")
        self.binary = found
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._dir = tempfile.TemporaryDirectory(prefix="majordomo-redis-")

    @property
    def url(self) -> str:
        """`redis://127.0.0.1:PORT/0`."""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> RedisServer:
        """Start on a free port (the first time) or on the same port (a restart)."""
        restart = bool(self.port)
        for _ in range(5):
            if not restart:
                self.port = _free_port()
            if self._spawn():
                return self
            time.sleep(0.05)  # a restart: the old process may still hold the port
        raise RuntimeError(f"redis-server did not start on 127.0.0.1:{self.port}")

    def _spawn(self) -> bool:
        self._process = subprocess.Popen(
            [
                self.binary,
                "--bind", "127.0.0.1",
                "--port", str(self.port),
                "--save", "",
                "--appendonly", "no",
                "--dir", self._dir.name,
                "--daemonize", "no",
                "--loglevel", "warning",
                "--logfile", "",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                return False  # the port was taken meanwhile
            if self.ping():
                return True
            time.sleep(0.01)
        self.stop()
        return False

    def ping(self) -> bool:
        """True when the server answers PING."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        """Kill the server (SIGKILL) and wait for it: its state is gone."""
        process = self._process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)

    def close(self) -> None:
        """Stop the server and remove its directory."""
        self.stop()
        self._process = None
        self._dir.cleanup()


# --------------------------------------------------------------------------- cluster

_SLOTS = 16384


class RedisCluster:
    """Three cluster-mode redis-servers on 127.0.0.1, the slots split between them.

    `url` names the first node (a cluster client finds the others). Started by hand: each
    node gets a third of the slots (CLUSTER ADDSLOTSRANGE), meets the first (CLUSTER
    MEET), and the cluster is ready once every node says `cluster_state:ok`.
    """

    def __init__(self, binary: str | None = None, nodes: int = 3) -> None:
        found = binary or redis_binary()
        if found is None:
            raise RuntimeError("redis-server is not installed")
        self.binary = found
        self.ports: list[int] = []
        self._count = nodes
        self._processes: list[subprocess.Popen[bytes]] = []
        self._dir = tempfile.TemporaryDirectory(prefix="majordomo-redis-cluster-")

    @property
    def url(self) -> str:
        """`redis://127.0.0.1:PORT` of the first node."""
        return f"redis://127.0.0.1:{self.ports[0]}"

    def start(self) -> RedisCluster:
        """Start the nodes and join them into one cluster covering every slot."""
        try:
            for index in range(self._count):
                self._spawn(index)
            share = _SLOTS // self._count
            for index, port in enumerate(self.ports):
                last = _SLOTS - 1 if index == self._count - 1 else (index + 1) * share - 1
                first = index * share
                reply = _command(port, "CLUSTER", "ADDSLOTSRANGE", str(first), str(last))
                if reply.startswith("-"):  # before Redis 7: one slot per argument
                    slots = [str(slot) for slot in range(first, last + 1)]
                    reply = _command(port, "CLUSTER", "ADDSLOTS", *slots)
                if reply != "+OK":
                    raise RuntimeError(f"CLUSTER ADDSLOTSRANGE on {port}: {reply}")
            for port in self.ports[1:]:
                _command(port, "CLUSTER", "MEET", "127.0.0.1", str(self.ports[0]))
            for port in self.ports:
                _wait_for(
                    lambda port=port: "cluster_state:ok" in _command(port, "CLUSTER", "INFO"),
                    "cluster_state:ok",
                )
        except BaseException:
            self.close()
            raise
        return self

    def _spawn(self, index: int) -> None:
        """Start node `index` on a free port whose cluster-bus port (+10000) is free too."""
        folder = Path(self._dir.name) / str(index)
        folder.mkdir()
        for _ in range(5):
            port = _free_cluster_port()
            command = [
                self.binary,
                "--bind", "127.0.0.1",
                "--port", str(port),
                "--cluster-enabled", "yes",
                "--cluster-config-file", str(folder / "nodes.conf"),
                "--cluster-node-timeout", "2000",
                "--save", "",
                "--appendonly", "no",
                "--dir", str(folder),
                "--daemonize", "no",
                "--loglevel", "warning",
                "--logfile", "",
            ]  # fmt: skip
            process = subprocess.Popen(
                command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            self._processes.append(process)
            deadline = time.monotonic() + _START_TIMEOUT
            while process.poll() is None and time.monotonic() < deadline:
                try:
                    if _command(port, "PING") == "+PONG":
                        self.ports.append(port)
                        return
                except OSError:
                    pass
                time.sleep(0.01)  # a separate process: nothing to await
            # A port taken meanwhile: the node exited. Try another.
        raise RuntimeError("a cluster node of redis-server did not start")

    def close(self) -> None:
        """Kill every node and remove their directories."""
        for process in self._processes:
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
                process.wait(timeout=10)
        self._processes.clear()
        self._dir.cleanup()


def _free_cluster_port() -> int:
    for _ in range(100):
        port = _free_port()
        if port + 10000 > 65535:
            continue
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind(("127.0.0.1", port + 10000))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


def _command(port: int, *words: str) -> str:
    """Send one command (RESP) and return the reply's text (a bulk string's body)."""
    payload = f"*{len(words)}\r\n".encode() + b"".join(
        f"${len(word.encode())}\r\n{word}\r\n".encode() for word in words
    )
    with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
        sock.sendall(payload)
        data = b""
        while True:
            header, found, body = data.partition(b"\r\n")
            if found and not header.startswith(b"$"):
                return header.decode(errors="replace")  # +OK, -ERR ..., :1
            if found and len(body) >= int(header[1:]) + 2:
                return body[: int(header[1:])].decode(errors="replace")
            chunk = sock.recv(65536)
            if not chunk:
                return data.decode(errors="replace")
            data += chunk


def _wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + _START_TIMEOUT
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except OSError:
            pass
        time.sleep(0.02)  # a separate process: nothing to await
    raise RuntimeError(f"the Redis cluster did not reach {what}")


# --------------------------------------------------------------------------- test helpers


@asynccontextmanager
async def store_factory(
    url: str, prefix: str | None = None
) -> AsyncIterator[Callable[..., RedisHealthStore]]:
    """Yields `make(config=None, **options)`: stores on `url` under `prefix` (one of its
    own by default) with a generous timeout (tests of sharing must not slip into the
    fallback on a loaded machine); closes them all on the way out."""
    from majordomo_async import RedisHealthStore

    prefix = prefix or f"test:{uuid.uuid4().hex[:8]}:"
    made: list[RedisHealthStore] = []

    def make(config: HealthConfig | None = None, **options: Any) -> RedisHealthStore:
        options.setdefault("prefix", prefix)
        options.setdefault("timeout", 2.0)
        store = RedisHealthStore(options.pop("url", url), config, **options)
        made.append(store)
        return store

    try:
        yield make
    finally:
        for store in made:
            await store.aclose()


async def server_time(redis: Redis) -> float:
    """The Redis server's clock, in seconds."""
    seconds, micros = await redis.time()
    return float(seconds) + float(micros) / 1e6


async def wait_until(store: RedisHealthStore, when: float) -> None:
    """Wait until the server's clock (as `store` estimates it) passes `when`.

    The estimate can step back by up to half a round trip when a quicker one corrects it
    (early on, while the first connection is made): then this sleeps again.
    """
    import anyio

    for _ in range(10):
        await anyio.sleep(max(when - store.now(), 0.0) + 0.003)
        if store.now() > when:
            return
    raise AssertionError(f"the server's clock did not pass {when}")


async def eventually(condition: Callable[[], Awaitable[bool]], within: float) -> float:
    """Seconds until `condition()` holds (checked every 2 ms), failing after `within`."""
    import anyio

    started = time.monotonic()
    with anyio.fail_after(within):
        # Polling: the change comes from another store, a process, or a server restart,
        # none of which this test can await directly.
        while not await condition():  # noqa: ASYNC110
            await anyio.sleep(0.002)
    return time.monotonic() - started


async def lease_of(redis: Redis, keys: str, key: str) -> tuple[float | None, str | None]:
    """(end of the lease, token) of `key`'s probe, as stored in Redis under `keys`."""
    lease, token = await redis.hmget(f"{keys}t:{key}", ["p", "o"])
    return (float(lease) if lease else None), (str(token) if token else None)


# --------------------------------------------------------------------------- fleet runs

_COMPLETION = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1_900_000_000,
    "model": "m",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}
    ],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
}
_OVERLOADED = {"error": {"message": "overloaded", "type": "server_error", "code": None}}


class Head:
    """The chain's head: answers 503 while `down`, and records every attempt."""

    def __init__(self) -> None:
        self.down = True
        self.attempts: list[tuple[float, int]] = []

    async def handle(self, request: Any) -> Any:
        """Answer one chat completion (an aiohttp handler)."""
        from aiohttp import web

        await request.read()
        status = 503 if self.down else 200
        self.attempts.append((time.monotonic(), status))
        if status == 503:
            return web.json_response(_OVERLOADED, status=503)
        return web.json_response(_COMPLETION)


async def run_fleet(
    store: str,
    prefix: str,
    *,
    workers: int = 4,
    callers: int = 2,
    cooldown: float = 0.2,
    down: float = 2.0,
    up: float = 0.8,
    options: str = "",
) -> dict[str, Any]:
    """Run `workers` replica processes (`callers` concurrent loops each) against a head
    that is down for `down` s, then up for `up` s; what the head saw and what they saw.

    `store` is a Redis URL (with `options`, a query, added) or "memory" (each replica on
    its own). Every replica is ready (its Registry made) before the head's clock starts.
    `all_back_after`: seconds from the head's recovery until every replica had an answer
    from it (they share CLOCK_MONOTONIC: one host).
    """
    import asyncio

    import anyio

    from .servers import serve

    head = Head()
    env = {**os.environ, "PYTHONPATH": str(REPOSITORY)}
    async with serve({"/v1/chat/completions": head.handle}) as base:
        command = worker_command(
            base.removeprefix("http://"), store, prefix, cooldown, callers, options
        )
        processes = [
            await asyncio.create_subprocess_exec(
                *command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                cwd=REPOSITORY,
                env=env,
            )
            for _ in range(workers)
        ]
        try:
            for process in processes:
                assert process.stdout is not None
                with anyio.fail_after(60):
                    assert await process.stdout.readline() == b"ready\n"
            started = time.monotonic()
            await anyio.sleep(down)
            head.down = False
            up_at = time.monotonic()
            await anyio.sleep(up)
            summaries = []
            for process in processes:
                assert process.stdin is not None
                process.stdin.write(b"stop\n")
                await process.stdin.drain()
            for process in processes:
                assert process.stdout is not None
                with anyio.fail_after(30):
                    summaries.append(json.loads(await process.stdout.readline()))
                    assert await process.wait() == 0
        finally:
            for process in processes:
                if process.returncode is None:
                    process.kill()
                    await process.wait()
    failed = [at for at, status in head.attempts if status == 503]
    steady_from = started + 2 * cooldown
    steady = [at for at in failed if steady_from <= at < up_at]
    back = [summary["first_head_at"] for summary in summaries]
    return {
        "failed_attempts": len(failed),
        "all_back_after": max(back) - up_at if None not in back else None,
        "opening_attempts": len([at for at in failed if at < steady_from]),
        "steady_attempts": steady,
        "windows": (up_at - steady_from) / cooldown,
        "recovered": sum(summary["recovered"] for summary in summaries),
        "summaries": summaries,
    }


# --------------------------------------------------------------------------- fleet worker


def _worker(
    head: str, store: str, prefix: str, cooldown: float, callers: int, options: str
) -> None:
    import anyio

    from majordomo_async import ChainConfig, HealthConfig, Hooks, Registry

    class Counts(Hooks):
        recovered = 0
        benched = 0

        def target_recovered(self, key: str) -> None:
            if key == "head/m":
                self.recovered += 1

        def target_benched(self, key: str, *, until: object, error: object) -> None:
            if key == "head/m":
                self.benched += 1

    class Warnings(logging.Handler):
        seen: ClassVar[list[str]] = []

        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage().startswith("health store"):
                self.seen.append(record.getMessage())

    logging.getLogger("majordomo_async").addHandler(Warnings(logging.WARNING))
    answers = {"head/m": 0, "tail/m": 0}
    first_head: list[float] = []
    """When the head first answered this replica (time.monotonic: one clock per host)."""
    errors: list[str] = []
    counts = Counts()

    async def call_in_a_loop(chain: object) -> None:
        while True:
            try:
                response = await chain.generate("hi")  # type: ignore[attr-defined]
                answers[response.model] += 1
                if response.model == "head/m" and not first_head:
                    first_head.append(time.monotonic())
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}")

    async def main() -> None:
        env = {"LLM_HEAD": f"openai+http://{head}/v1", "LLM_TAIL": "fake://?latency=0.01"}
        if store != "memory":
            # A generous timeout: this run measures sharing, not the fallback, and two
            # cores shared by five processes can stall one for a moment.
            query = "&".join(part for part in (f"prefix={prefix}&timeout=2", options) if part)
            env["MAJORDOMO_HEALTH_STORE"] = f"{store}?{query}"
        config = HealthConfig(base_cooldown=cooldown, cooldown_factor=1, max_cooldown=cooldown)
        async with Registry(env=env, health=config, hooks=[counts], chain=ChainConfig()) as reg:
            chain = reg.parse("head/m,tail/m")
            print("ready", flush=True)
            async with anyio.create_task_group() as group:
                for _ in range(callers):
                    group.start_soon(call_in_a_loop, chain)
                await anyio.to_thread.run_sync(sys.stdin.readline)
                group.cancel_scope.cancel()
            degraded = getattr(reg.health.store, "degraded", None)
        summary = {
            "answers": answers,
            "errors": errors[:5],
            "error_count": len(errors),
            "recovered": counts.recovered,
            "first_head_at": first_head[0] if first_head else None,
            "benched": counts.benched,
            "degraded": degraded,
            "store_warnings": Warnings.seen,
        }
        print(json.dumps(summary), flush=True)

    anyio.run(main)


def worker_command(
    head: str, store: str, prefix: str, cooldown: float, callers: int, options: str = ""
) -> list[str]:
    """The command line of one fleet worker (`options`: a query added to the store's URL)."""
    return [
        sys.executable,
        "-m",
        "tests.helpers.redis_server",
        head,
        store,
        prefix,
        repr(cooldown),
        str(callers),
        options,
    ]


REPOSITORY = Path(__file__).resolve().parents[2]
"""Where workers run (so `tests.helpers` imports)."""


# --------------------------------------------------------------------------- budget fleet


class Upstream:
    """One chat completions endpoint for a whole fleet: records when each request
    arrived (time.monotonic: one clock for every process of the host)."""

    def __init__(self) -> None:
        self.arrivals: list[float] = []

    async def handle(self, request: Any) -> Any:
        """Answer one chat completion (an aiohttp handler)."""
        from aiohttp import web

        self.arrivals.append(time.monotonic())
        await request.read()
        return web.json_response(_COMPLETION)


async def run_budget_fleet(
    url: str, prefix: str, *, rpm: int, workers: int = 4, callers: int = 8, run: float = 3.0
) -> dict[str, Any]:
    """Run `workers` processes, each with `callers` concurrent loops through a
    `LimitSet` with `Limits(rpm=rpm)` on "up/m" and a `RedisBudget` on `url` (under
    `prefix`), against one upstream, for `run` seconds once every one is ready.

    Returns the upstream's `arrivals`, when the run `started` and `stopped`
    (time.monotonic), and each worker's summary.
    """
    import asyncio

    import anyio

    from .servers import serve

    upstream = Upstream()
    env = {**os.environ, "PYTHONPATH": str(REPOSITORY)}
    async with serve({"/v1/chat/completions": upstream.handle}) as base:
        command = budget_worker_command(base, url, prefix, rpm, callers)
        processes = [
            await asyncio.create_subprocess_exec(
                *command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=REPOSITORY, env=env
            )
            for _ in range(workers)
        ]
        try:
            for process in processes:
                assert process.stdout is not None
                with anyio.fail_after(60):
                    assert await process.stdout.readline() == b"ready\n"
            started = time.monotonic()
            for process in processes:  # all at once: they compete for the budget
                assert process.stdin is not None
                process.stdin.write(b"go\n")
                await process.stdin.drain()
            await anyio.sleep(run)
            for process in processes:
                assert process.stdin is not None
                process.stdin.write(b"stop\n")
                await process.stdin.drain()
            stopped = time.monotonic()
            summaries = []
            for process in processes:
                assert process.stdout is not None
                with anyio.fail_after(30):
                    summaries.append(json.loads(await process.stdout.readline()))
                    assert await process.wait() == 0
        finally:
            for process in processes:
                if process.returncode is None:
                    process.kill()
                    await process.wait()
    return {
        "arrivals": sorted(upstream.arrivals),
        "started": started,
        "stopped": stopped,
        "summaries": summaries,
    }


def _budget_worker(upstream: str, url: str, prefix: str, rpm: int, callers: int) -> None:
    import aiohttp
    import anyio

    from majordomo_async import MonotonicClock, RedisHealthStore
    from majordomo_async._limits import Lease, Limits, LimitSet
    from majordomo_async._redis_limits import RedisBudget

    class Fallbacks(logging.Handler):
        """The limiter's DEBUG line when the shared budget fails (it must not, here)."""

        seen: ClassVar[list[str]] = []

        def emit(self, record: logging.LogRecord) -> None:
            if "shared budget" in record.getMessage():
                self.seen.append(record.getMessage())

    package_logger = logging.getLogger("majordomo_async")
    package_logger.setLevel(logging.DEBUG)
    package_logger.addHandler(Fallbacks(logging.DEBUG))
    counts = {"admitted": 0, "refused": 0, "answered": 0}
    errors: list[str] = []

    async def call_in_a_loop(limits: LimitSet, session: aiohttp.ClientSession) -> None:
        while True:
            outcome = await limits.acquire("up/m", 1, wait_until=limits.clock.now() + 0.5)
            if not isinstance(outcome, Lease):
                counts["refused"] += 1
                # The window frees in about a minute, past wait_until: ask again soon,
                # so the fleet keeps more demand on the budget than it grants.
                await anyio.sleep(0.05)
                continue
            counts["admitted"] += 1
            try:
                async with session.post(
                    f"{upstream}/v1/chat/completions", json={"model": "m"}
                ) as response:
                    await response.read()
                    if response.status == 200:
                        counts["answered"] += 1
            except aiohttp.ClientError as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
            finally:
                outcome.release()

    async def main() -> None:
        async with (
            RedisHealthStore(url, prefix=prefix, timeout=2) as store,
            aiohttp.ClientSession() as session,
        ):
            limits = LimitSet(MonotonicClock(), RedisBudget(store))
            limits.set("up/m", Limits(rpm=rpm))
            print("ready", flush=True)
            await anyio.to_thread.run_sync(sys.stdin.readline)  # "go"
            async with anyio.create_task_group() as group:
                for _ in range(callers):
                    group.start_soon(call_in_a_loop, limits, session)
                await anyio.to_thread.run_sync(sys.stdin.readline)  # "stop"
                group.cancel_scope.cancel()
        summary = {**counts, "errors": errors[:5], "budget_failures": Fallbacks.seen[:5]}
        print(json.dumps(summary), flush=True)

    anyio.run(main)


def budget_worker_command(
    upstream: str, url: str, prefix: str, rpm: int, callers: int
) -> list[str]:
    """The command line of one budget fleet worker (`upstream`: the base URL)."""
    code = (
        "import sys; from tests.helpers.redis_server import _budget_worker; "
        "_budget_worker(*sys.argv[1:4], int(sys.argv[4]), int(sys.argv[5]))"
    )
    return [sys.executable, "-c", code, upstream, url, prefix, str(rpm), str(callers)]


if __name__ == "__main__":
    _head, _store, _prefix, _cooldown, _callers = sys.argv[1:6]
    _options = sys.argv[6] if len(sys.argv) > 6 else ""
    _worker(_head, _store, _prefix, float(_cooldown), int(_callers), _options)
