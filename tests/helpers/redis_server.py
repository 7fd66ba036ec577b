"""A private redis-server for tests, and the worker process of the fleet test.

`RedisServer` runs Debian's `redis-server` on a free loopback port with no persistence
and no config file; `stop()` kills it (SIGKILL: a crash, as far as clients can tell) and
`start()` brings it back on the same port, empty.

`unavailable()` says why Redis tests cannot run here (no binary, no redis-py); the
session fixture skips on it, or fails when `MAJORDOMO_REQUIRE_REDIS=1` (CI).

Run as `python -m tests.helpers.redis_server HEAD_URL STORE PREFIX COOLDOWN CALLERS`, this
module is one replica of a service: a Registry with its own health store (`STORE` is a
Redis URL or "memory") calling the chain "head/m,tail/m" from CALLERS concurrent loops
until a line arrives on stdin, then printing what it saw as one JSON line.
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
from pathlib import Path
from typing import ClassVar

__all__ = ["REPOSITORY", "RedisServer", "redis_binary", "required", "unavailable", "worker_command"]

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


# --------------------------------------------------------------------------- fleet worker


def _worker(head: str, store: str, prefix: str, cooldown: float, callers: int) -> None:
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
    errors: list[str] = []
    counts = Counts()

    async def call_in_a_loop(chain: object) -> None:
        while True:
            try:
                response = await chain.generate("hi")  # type: ignore[attr-defined]
                answers[response.model] += 1
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}")

    async def main() -> None:
        env = {"LLM_HEAD": f"openai+http://{head}/v1", "LLM_TAIL": "fake://?latency=0.01"}
        if store != "memory":
            # A generous timeout: this run measures sharing, not the fallback, and two
            # cores shared by five processes can stall one for a moment.
            options = f"prefix={prefix}&refresh_interval=0.05&timeout=2"
            env["MAJORDOMO_HEALTH_STORE"] = f"{store}?{options}"
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
            "benched": counts.benched,
            "degraded": degraded,
            "store_warnings": Warnings.seen,
        }
        print(json.dumps(summary), flush=True)

    anyio.run(main)


def worker_command(head: str, store: str, prefix: str, cooldown: float, callers: int) -> list[str]:
    """The command line of one fleet worker."""
    return [
        sys.executable,
        "-m",
        "tests.helpers.redis_server",
        head,
        store,
        prefix,
        repr(cooldown),
        str(callers),
    ]


REPOSITORY = Path(__file__).resolve().parents[2]
"""Where workers run (so `tests.helpers` imports)."""


if __name__ == "__main__":
    _head, _store, _prefix, _cooldown, _callers = sys.argv[1:6]
    _worker(_head, _store, _prefix, float(_cooldown), int(_callers))
