"""A canary credential never leaks: not in errors, reprs, log records or CLI output.

The canary is configured through every route a key can take:

- an `LLM_<NAME>` DSN credential, for each of the four wire formats;
- each built-in key variable, through `Registry(env=...)`: `OPENAI_API_KEY` (for the
  `openai://` scheme, which only speaks TLS: a local emulator with a throwaway
  certificate), `ANTHROPIC_API_KEY`, `GEMINI_API_KEY`, `GOOGLE_API_KEY`, `OLLAMA_API_KEY`;
- a provider object constructed directly and registered.

For every route, every fault of the fault matrix (`tests/test_fault_matrix.FAULTS`) is
served in both modes by an emulator that also quotes the key in each error message it
sends (as some servers and proxies do). After each call the canary must not appear in:
the error (str, repr, notes, every attribute, the whole chain of causes, contexts and
group members, and the printed traceback), the response or stream and their failures,
the reprs of the registry, provider, model, chain and health snapshot, or any log
record (all loggers, DEBUG and up, formatted with tracebacks, and every record field).
The CLI is run as a subprocess with the canary in its `LLM_<NAME>` DSNs and key
variables, and every fault of the matrix reaches its output at least once.
"""

from __future__ import annotations

import logging
import os
import shutil
import ssl
import subprocess
import sys
import traceback
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, Final

import aiohttp
import anyio
import attrs
import pytest

from majordomo_async import DSN, Provider, Registry
from majordomo_async._http import Timeouts
from majordomo_async._providers.anthropic import AnthropicProvider
from majordomo_async._providers.gemini import GeminiProvider
from majordomo_async._providers.ollama import OllamaProvider
from majordomo_async._providers.openai import OpenAIProvider

from .helpers.servers import closed_port_url
from .helpers.wire import (
    AnthropicWire,
    Behaviour,
    GeminiWire,
    OllamaWire,
    OpenAIWire,
    Wire,
)
from .test_fault_matrix import (
    CHAIN,
    FAULTS,
    WIRES,
    Fault,
    Mode,
    Outcome,
    RealTimeManualClock,
    Result,
    call,
)

CANARY: Final = "sk-CANARY-7f3a9"
CORE: Final = "CANARY-7f3a9"
"""What is searched for: the canary without its common prefix, so a partly masked
key ("sk-***") passes and anything more of it fails."""

TIMEOUT: Final = 0.3
"""Seconds: every time limit of every route (silent faults cost this)."""
QUERY: Final = (
    "?"
    + "&".join(f"{key}={TIMEOUT:g}" for key in ("headers", "generate", "idle"))
    # The first token counts from the request, connect included: room for a loaded
    # machine running every cell at once.
    + "".join(f"&{key}={4 * TIMEOUT:g}" for key in ("first_token", "reasoning_first_token"))
)
MODES: Final[Sequence[Mode]] = ("generate", "stream")

pytestmark = pytest.mark.usefixtures("no_leaked_tasks")


# --------------------------------------------------------------------------- finding leaks


def exception_texts(error: BaseException) -> Iterator[tuple[str, str]]:
    """(where, text) for everything an error shows, through its whole graph."""
    yield "traceback", "".join(traceback.format_exception(error))
    seen: set[int] = set()
    pending: list[BaseException] = [error]
    while pending:
        exc = pending.pop()
        if id(exc) in seen:
            continue
        seen.add(id(exc))
        name = type(exc).__name__
        yield f"str({name})", str(exc)
        yield f"repr({name})", repr(exc)
        for note in getattr(exc, "__notes__", ()):
            yield f"{name}.__notes__", str(note)
        for field, value in getattr(exc, "__dict__", {}).items():
            yield f"{name}.{field}", repr(value)
        pending.extend(linked for linked in (exc.__cause__, exc.__context__) if linked)
        if isinstance(exc, BaseExceptionGroup):
            pending.extend(exc.exceptions)


_FORMAT = logging.Formatter("%(name)s %(levelname)s %(message)s")


def record_texts(records: Iterable[logging.LogRecord]) -> Iterator[tuple[str, str]]:
    """The formatted record (traceback included) and every field of it."""
    for record in records:
        yield f"log {record.name}", _FORMAT.format(record)
        yield f"log {record.name} fields", repr(vars(record))


def leaks(texts: Iterable[tuple[str, str]]) -> list[str]:
    """Where the canary shows, with some context."""
    found = []
    for where, text in texts:
        at = text.find(CORE)
        if at >= 0:
            found.append(f"{where}: ...{text[max(0, at - 80) : at + 40]}...")
    return found


def test_the_leak_finder_finds_a_leak() -> None:
    """The checks below can fail: a canary deep in a chained error is found."""
    try:
        try:
            raise KeyError(f"Authorization: Bearer {CANARY}")
        except KeyError as inner:
            raise RuntimeError("wrapped") from inner
    except RuntimeError as outer:
        error = outer
    group = ExceptionGroup("all failed", [error])

    found = leaks(exception_texts(group))

    assert any(where.startswith("str(KeyError)") for where in found)
    assert any(where.startswith("traceback:") for where in found)
    assert leaks([("log", f"sent {CANARY[:3]}***")]) == []


@pytest.fixture
def log_records() -> Iterator[list[logging.LogRecord]]:
    """Every log record of every logger at DEBUG and above, while the test runs."""
    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Collect(logging.DEBUG)
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield records
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


# --------------------------------------------------------------------------- the routes


@attrs.frozen
class Setup:
    """A registry with the canary configured one way, and the spec of its target."""

    registry: Registry
    spec: str
    provider: str


@attrs.frozen
class Route:
    """One way of configuring the key: how to build the registry for a server at `base`."""

    name: str
    wire: type[Wire]
    build: Callable[[Wire, str, RealTimeManualClock, aiohttp.ClientSession | None], Setup]
    tls: bool = False
    """The route's scheme speaks only HTTPS: the emulator serves TLS."""


def by_dsn(wire: Wire, base: str, clock: RealTimeManualClock, _: Any) -> Setup:
    """`LLM_CANARY=<scheme>://sk-CANARY-...@host/...`."""
    env = {"LLM_CANARY": wire.dsn(base) + QUERY}
    return Setup(Registry(env=env, clock=clock, chain=CHAIN), "canary/m1", "canary")


def by_variable(variable: str, provider: str, scheme: str) -> Callable[..., Setup]:
    """The built-in provider's key variable; its `LLM_<NAME>` DSN (no key) moves its host."""

    def build(
        wire: Wire, base: str, clock: RealTimeManualClock, session: aiohttp.ClientSession | None
    ) -> Setup:
        env = {
            f"LLM_{provider.upper()}": wire.dsn(base, scheme=scheme, with_key=False) + QUERY,
            variable: CANARY,
        }
        registry = Registry(env=env, clock=clock, chain=CHAIN, session=session)
        return Setup(registry, f"{provider}/m1", provider)

    return build


def direct(
    factory: Callable[..., Provider], path: str = ""
) -> Callable[[Wire, str, RealTimeManualClock, Any], Setup]:
    """A provider object built by hand with `api_key=CANARY` and registered."""

    def build(wire: Wire, base: str, clock: RealTimeManualClock, _: Any) -> Setup:
        registry = Registry(env={}, clock=clock, chain=CHAIN)
        provider = factory(
            "direct",
            api_key=CANARY,
            base_url=base + path,
            http=registry._http,
            timeouts=Timeouts(
                headers=TIMEOUT,
                generate=TIMEOUT,
                first_token=TIMEOUT,
                reasoning_first_token=TIMEOUT,
                idle=TIMEOUT,
            ),
        )
        registry.register_provider(provider)
        return Setup(registry, "direct/m1", "direct")

    return build


ROUTES: Final[Sequence[Route]] = (
    Route("dsn-openai", OpenAIWire, by_dsn),
    Route("dsn-anthropic", AnthropicWire, by_dsn),
    Route("dsn-gemini", GeminiWire, by_dsn),
    Route("dsn-ollama", OllamaWire, by_dsn),
    Route(
        "env-OPENAI_API_KEY",
        OpenAIWire,
        by_variable("OPENAI_API_KEY", "openai", "openai"),
        tls=True,
    ),
    Route(
        "env-ANTHROPIC_API_KEY",
        AnthropicWire,
        by_variable("ANTHROPIC_API_KEY", "anthropic", "anthropic+http"),
    ),
    Route("env-GEMINI_API_KEY", GeminiWire, by_variable("GEMINI_API_KEY", "gemini", "gemini+http")),
    Route("env-GOOGLE_API_KEY", GeminiWire, by_variable("GOOGLE_API_KEY", "gemini", "gemini+http")),
    Route("env-OLLAMA_API_KEY", OllamaWire, by_variable("OLLAMA_API_KEY", "ollama", "ollama+http")),
    Route("explicit-openai", OpenAIWire, direct(OpenAIProvider, "/v1")),
    Route("explicit-anthropic", AnthropicWire, direct(AnthropicProvider)),
    Route("explicit-gemini", GeminiWire, direct(GeminiProvider, "/v1beta")),
    Route("explicit-ollama", OllamaWire, direct(OllamaProvider)),
)


# --------------------------------------------------------------------------- TLS for openai://


@attrs.frozen
class TLS:
    server: ssl.SSLContext
    client: ssl.SSLContext


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TLS:
    """A throwaway self-signed certificate for 127.0.0.1, and contexts that use it."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is needed to make a certificate for the TLS emulator")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            *(openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"),
            *("-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"),
            *("-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert, key)
    return TLS(server, ssl.create_default_context(cafile=str(cert)))


# --------------------------------------------------------------------------- in process


def scripts(fault: Fault) -> Iterator[tuple[Mode, tuple[Behaviour, ...]]]:
    for mode in MODES:
        script = fault.script(mode)
        if script is not None:
            yield mode, script


@asynccontextmanager
async def bench(route: Route, request: pytest.FixtureRequest) -> AsyncIterator[Bench]:
    """The route's client side: its session and server certificate, if it speaks TLS."""
    if not route.tls:
        yield Bench(route, None, None)
        return
    tls: TLS = request.getfixturevalue("tls")
    connector = aiohttp.TCPConnector(ssl=tls.client)
    async with aiohttp.ClientSession(connector=connector) as session:
        yield Bench(route, session, tls.server)


@attrs.frozen
class Bench:
    route: Route
    session: aiohttp.ClientSession | None
    server_tls: ssl.SSLContext | None

    async def leaks_of(self, fault: Fault, mode: Mode) -> tuple[list[str], Wire]:
        """Serve `fault` in `mode` through a fresh emulator (quoting the canary in its
        errors) and registry: where the canary showed, and the emulator."""
        script = fault.script(mode)
        assert script is not None
        wire = self.route.wire(script, key=CANARY, echo_key=True)
        async with AsyncExitStack() as stack:
            if fault.refused:
                scheme = "https" if self.route.tls else "http"
                base = closed_port_url().replace("http", scheme, 1)
            else:
                base = await stack.enter_async_context(wire.serving(tls=self.server_tls))
            setup = self.route.build(wire, base, RealTimeManualClock(), self.session)
            return await try_once(setup, mode), wire


@pytest.mark.parametrize("route", ROUTES, ids=[route.name for route in ROUTES])
async def test_canary_never_leaks(
    route: Route, log_records: list[logging.LogRecord], request: pytest.FixtureRequest
) -> None:
    """Every fault, both modes: nothing the library shows or logs holds the key.

    The cells run concurrently, each on its own emulator.
    """
    leaked: list[str] = []
    wires: list[Wire] = []

    async def check(served: Bench, fault: Fault, mode: Mode) -> None:
        found, wire = await served.leaks_of(fault, mode)
        leaked.extend(f"{fault.name} ({mode}): {where}" for where in found)
        wires.append(wire)

    async with bench(route, request) as served, anyio.create_task_group() as group:
        for fault in FAULTS:
            for mode, _ in scripts(fault):
                group.start_soon(check, served, fault, mode)
    assert leaked == []
    assert len(wires) >= 45
    # The canary did reach the wire: the route really configured it.
    assert any(CANARY in str(sent.headers) for wire in wires for sent in wire.requests)
    assert log_records, "nothing was logged: is the capture working?"
    assert leaks(record_texts(log_records)) == []


async def try_once(setup: Setup, mode: Mode) -> list[str]:
    """One call through `setup`; where the canary showed, if anywhere."""
    async with setup.registry as registry:
        chain = registry.parse(setup.spec)
        result = await call(chain, mode)
        provider = registry.provider(setup.provider)
        texts = [
            ("repr(registry)", repr(registry)),
            ("repr(chain)", repr(chain)),
            ("repr(provider)", repr(provider)),
            ("repr(model)", repr(provider.model("m1"))),
            ("repr(health)", repr(await registry.health.snapshot())),
            *result_texts(result),
        ]
    return leaks(texts)


def result_texts(result: Result) -> Iterator[tuple[str, str]]:
    if result.error is not None:
        yield from exception_texts(result.error)
    if result.response is not None:
        yield "repr(response)", repr(result.response)
        for failure in result.response.failed_attempts:
            yield from exception_texts(failure.error)
    if result.stream is not None:
        yield "repr(stream)", repr(result.stream)
        yield "repr(stream.failed_attempts)", repr(result.stream.failed_attempts)


def test_dsn_repr_and_str_hide_the_canary() -> None:
    """The parsed DSN itself never shows the credential."""
    dsn = DSN.parse(f"openai+http://{CANARY}@127.0.0.1:8000/v1?idle=3")
    assert dsn.credential == CANARY
    assert leaks([("repr", repr(dsn)), ("str", str(dsn))]) == []


# --------------------------------------------------------------------------- the CLI

_CONCURRENT_RUNS: Final = 10
"""Runs at once: most of a run is waiting (backoffs, Retry-After, timeouts)."""


@attrs.frozen
class Target:
    """One target of a CLI run's chain: an emulator serving one fault."""

    fault: Fault
    provider: str
    wire: Wire


def _fails_over(fault: Fault, provider: str, mode: Mode) -> bool:
    """The chain goes on after this fault, rather than ending with it."""
    return fault.expected(provider, mode).outcome is Outcome.FAILOVER


def cli_runs() -> list[tuple[Mode, list[Target]]]:
    """Chains of emulators that put every fault of the matrix through the CLI once.

    Each fault is served by one wire format (taken in turn, skipping any with a known
    leak for it), in a mode where it fails over if it has one: such faults share out
    the heads of the runs' chains. A fault that answers or raises ends a chain, so each
    of those gets a run of its own (the
    modes taken in turn). Starting the interpreter is most of a run's cost.
    """
    names = list(WIRES)
    enders: list[tuple[Mode, Target]] = []
    heads: dict[Mode, list[Target]] = {mode: [] for mode in MODES}
    for number, fault in enumerate(FAULTS):
        modes = [mode for mode, _ in scripts(fault)]
        # Each fault on the next wire format in turn.
        provider = names[number % len(names)]
        passing = [mode for mode in modes if _fails_over(fault, provider, mode)]
        mode = passing[0] if passing else modes[len(enders) % len(modes)]
        script = fault.script(mode)
        assert script is not None
        target = Target(fault, provider, WIRES[provider](script, key=CANARY, echo_key=True))
        if passing:
            heads[mode].append(target)
        else:
            enders.append((mode, target))
    runs: list[tuple[Mode, list[Target]]] = [(mode, []) for mode, _ in enders]
    for mode in MODES:
        mine = [chain for run_mode, chain in runs if run_mode == mode]
        for number, target in enumerate(heads[mode]):
            mine[number % len(mine)].append(target)
    return [(mode, [*chain, ender]) for (mode, chain), (_, ender) in zip(runs, enders, strict=True)]


def cli_env(targets: Sequence[Target], bases: Mapping[int, str]) -> dict[str, str]:
    """No inherited LLM_*; `LLM_C<n>` with the canary in its DSN for each target."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("LLM_")}
    env.pop("MAJORDOMO_DEBUG", None)
    env["PYTHONWARNINGS"] = "error"
    for number, target in enumerate(targets):
        env[f"LLM_C{number}"] = target.wire.dsn(bases[id(target.wire)]) + QUERY
    for variable in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "OLLAMA_API_KEY"):
        env[variable] = CANARY
    return env


async def test_cli_output_never_shows_the_canary() -> None:
    """`python -m majordomo_async ask [--stream]`, every fault of the matrix: no canary."""
    runs = cli_runs()
    assert {mode for mode, _ in runs} == set(MODES)
    outputs: list[tuple[Mode, list[Target], subprocess.CompletedProcess[bytes]]] = []
    limit = anyio.Semaphore(_CONCURRENT_RUNS)

    async def run_one(mode: Mode, targets: list[Target], bases: Mapping[int, str]) -> None:
        spec = ",".join(f"c{number}/m1" for number in range(len(targets)))
        flags = ["--stream"] if mode == "stream" else []
        async with limit:
            done = await anyio.run_process(
                [sys.executable, "-m", "majordomo_async", "ask", *flags, spec, "Hallo?"],
                env=cli_env(targets, bases),
                check=False,
            )
        outputs.append((mode, targets, done))

    async with AsyncExitStack() as stack:
        bases: dict[int, str] = {}
        for _, targets in runs:
            for target in targets:
                bases[id(target.wire)] = (
                    closed_port_url()
                    if target.fault.refused
                    else await stack.enter_async_context(target.wire.serving())
                )
        async with anyio.create_task_group() as group:
            for mode, targets in runs:
                group.start_soon(run_one, mode, targets, bases)

    for mode, targets, done in outputs:
        out, err = done.stdout.decode(), done.stderr.decode()
        assert leaks([("stdout", out), ("stderr", err)]) == [], (mode, err)
        assert "Traceback" not in err, err
        assert done.returncode in (0, 1), err
        # The heads' failures were shown: as failed attempts, or as the error's notes.
        assert all(f"c{number}/m1" in err for number in range(len(targets) - 1)), err
    covered = {target.fault.name for _, targets, _ in outputs for target in targets}
    assert covered == {fault.name for fault in FAULTS}
    wires = [target.wire for _, targets, _ in outputs for target in targets]
    assert any(CANARY in str(sent.headers) for wire in wires for sent in wire.requests)
