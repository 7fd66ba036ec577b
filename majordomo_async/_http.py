"""The HTTP transport every provider shares: timeouts, requests, streams, error mapping.

Providers build URLs, headers and bodies and decode replies; everything between the
socket and those bytes lives here, so that every provider times out, closes its
connections and reports network failures the same way.

- `Timeouts`: connect, headers, generate, first-body and idle limits (the first-token
  limit on events is the chain's). aiohttp's default 300 s total limit never applies: a
  total limit would cut long streams; the chain owns the call deadline.
- `map_transport_errors()`: aiohttp, asyncio and OS errors become our `ProviderError`s
  (`raise Ours(...) from exc`). No aiohttp exception type escapes this module.
- `request_json()`: one request, one JSON reply. `open_stream()` + `iter_body()` (a
  `BodyReader`): a streamed reply, read chunk by chunk.

Time limits are aiohttp's own timers (`ClientTimeout.sock_connect` and `sock_read`),
which it arms for every request anyway: no cancel scope per request or per chunk.

Closing rule: after a body was read to the end, `release()` returns the connection to
the pool; on every other path (error status, transport error, cancellation, a consumer
that stops early) the sync, forceful `close()` drops it. Neither awaits, so cleanup
needs no shielded awaits and works while the task is being cancelled. Cancellation is
never caught here: it is a `BaseException` and passes through untouched.
"""

from __future__ import annotations

import importlib.util
import json
import math
import re
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import suppress
from types import ModuleType, TracebackType
from typing import TYPE_CHECKING, Any, Final, Literal, NoReturn, final

import anyio
import attrs

from . import _json as fast_json
from ._exceptions import (
    ConfigurationError,
    MajordomoError,
    ProviderConnectionError,
    ProviderError,
    ProviderTimeoutError,
    ResponseFormatError,
    StreamTruncatedError,
)
from ._retry_after import header_value


def _lazy(name: str) -> ModuleType:
    """`name`, imported on its first attribute access (`importlib.util.LazyLoader`).

    aiohttp and its multidict take most of the time `import majordomo_async` would
    otherwise take (about 230 of 390 ms on the benchmark machine), and a program that
    only parses specs, reads the configuration or runs the fake provider never needs
    them. A module imported already is returned as it is.
    """
    module = sys.modules.get(name)
    if module is not None:
        return module
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:  # not installed: the plain import says so
        return importlib.import_module(name)
    loader = importlib.util.LazyLoader(spec.loader)
    spec.loader = loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    loader.exec_module(module)
    return module


if TYPE_CHECKING:
    import aiohttp
    import multidict
else:
    aiohttp = _lazy("aiohttp")
    multidict = _lazy("multidict")


def load_transport() -> None:
    """Finish importing aiohttp now. An HTTP provider calls this when it is built, so
    that no call pays for the import (a few hundred milliseconds) inside its time
    limits, its probe lease or its deadline."""
    _ = aiohttp.ClientSession  # the first attribute read runs the lazy import


__all__ = [
    "HOSTED_TIMEOUTS",
    "MAX_ERROR_BODY",
    "ON_DEMAND_TIMEOUTS",
    "SELF_HOSTED_TIMEOUTS",
    "BodyReader",
    "ErrorMapper",
    "Timeouts",
    "iter_body",
    "load_transport",
    "map_transport_errors",
    "open_stream",
    "request_id_from",
    "request_json",
    "with_json_content_type",
]

ErrorMapper = Callable[[int, Mapping[str, str], str], ProviderError]
"""Turns an error reply into our error: `mapper(status, headers, body_text) -> error`.

Providers pass their own (provider-specific matchers, then `_providers._common.status_error`).
"""

MAX_ERROR_BODY: Final = 1 << 20
"""At most this many bytes (1 MiB) of an error reply are read: enough for any real error
body, and a misbehaving proxy cannot make us buffer gigabytes."""

# How much of an unparseable reply a ResponseFormatError quotes.
_QUOTE_CHARS: Final = 200


# --------------------------------------------------------------------------- timeouts


def _positive_or_none(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is None:
        return
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ConfigurationError(
            f"Timeouts.{attribute.name} must be a positive number of seconds or None, got {value!r}"
        )


@attrs.frozen
class Timeouts:
    """One provider's time limits, in seconds; None disables one.

    The model in one sentence: an attempt must connect within `connect` and get its
    response headers within `headers` (a generate: its whole reply within `generate`);
    a stream must deliver its first content within `first_token` of the request (a
    model that reasons first: `reasoning_first_token`) and then never fall silent for
    longer than `idle`; the chain's call deadline bounds all of it, retries, waits and
    the whole reading of a stream included. The README has the table of defaults per
    provider family and the reason for each (`HOSTED_TIMEOUTS`, `SELF_HOSTED_TIMEOUTS`,
    `ON_DEMAND_TIMEOUTS`).

    There is deliberately no total limit per request: a long stream that keeps talking
    is healthy, and the call's deadline (the chain's) bounds a whole call.

    Example:
        >>> Timeouts(first_token=120.0)  # long prompts on a slow machine
        Timeouts(connect=10.0, headers=15.0, generate=600.0, first_token=120.0, \
reasoning_first_token=300.0, idle=30.0)
    """

    connect: float | None = attrs.field(default=10.0, validator=_positive_or_none)
    """TCP connect plus TLS handshake."""
    headers: float | None = attrs.field(default=15.0, validator=_positive_or_none)
    """From sending a stream request to its response headers. Servers that serve a
    loaded model send them at once, before the model runs: a target that sends none in
    this time has failed. Waiting for a free pooled connection does not count: it says
    nothing about the provider."""
    generate: float | None = attrs.field(default=600.0, validator=_positive_or_none)
    """From sending a generate (non-streamed) request to its response headers, which come
    only when the whole answer is ready: the longest answer a model may take."""
    first_token: float | None = attrs.field(default=30.0, validator=_positive_or_none)
    """From sending a stream request to its first content event (text, a tool call, or
    the end), for a model that does not reason before answering. The chain enforces it,
    because only it sees events (`ChainConfig.first_token_timeout` overrides it);
    keep-alive comments and role-only chunks are not content."""
    reasoning_first_token: float | None = attrs.field(default=300.0, validator=_positive_or_none)
    """`first_token` for a model that reasons before its first token (the capability
    table's `reasoning`). Also the transport's own limit from a stream's headers to its
    first body bytes, for a stream read without a chain."""
    idle: float | None = attrs.field(default=30.0, validator=_positive_or_none)
    """Longest silence between body bytes of a stream after its first, and while reading
    a reply body (measured at the socket, so keep-alive bytes such as SSE comments count
    as life)."""
    _client: tuple[aiohttp.ClientTimeout, aiohttp.ClientTimeout] | None = attrs.field(
        init=False, default=None, eq=False, repr=False
    )
    """aiohttp's timeouts for (a stream, a generate): built on the first request (not at
    construction: the module-level defaults would import aiohttp with the library)."""

    def _for_aiohttp(self, streaming: bool) -> aiohttp.ClientTimeout:
        client = self._client
        if client is None:
            client = (
                _client_timeout(self.connect, self.headers),
                _client_timeout(self.connect, self.generate),
            )
            object.__setattr__(self, "_client", client)
        return client[0] if streaming else client[1]

    def first_token_for(self, reasoning: bool) -> float | None:
        """The first-token limit for a model that reasons first, or not."""
        return self.reasoning_first_token if reasoning else self.first_token

    @property
    def first_body(self) -> float | None:
        """The socket limit from a stream's headers to its first body bytes: the longer
        first-token limit (the chain's event-level limit fires first)."""
        first, reasoning = self.first_token, self.reasoning_first_token
        if first is None or reasoning is None:
            return None
        return max(first, reasoning)


def _client_timeout(connect: float | None, until_headers: float | None) -> aiohttp.ClientTimeout:
    """aiohttp's per-request timeout: the limit until the headers on the socket.

    aiohttp's `sock_read` timer starts once the request is written and is re-armed by
    every byte that arrives; after the headers, `_enter_phase()` moves it to the next
    limit (the first body bytes of a stream, or `idle` for a reply body). aiohttp's own
    timers cost nothing extra per request, unlike a cancel scope around the request
    (that was measured at several microseconds a call).

    Waiting for a free pooled connection is not limited here (`connect=None`): it says
    nothing about the provider. The chain's deadline bounds it.
    """
    return aiohttp.ClientTimeout(
        total=None, connect=None, sock_connect=connect, sock_read=until_headers
    )


def _enter_phase(response: aiohttp.ClientResponse, limit: float | None) -> None:
    """From now on, silence on the socket is limited by `limit` (None: unlimited).

    The timer armed by the bytes just received is re-armed at `limit`, so the very next
    gap is measured against it. Nothing to do when it is the limit in force already.
    """
    connection = response.connection
    protocol = connection.protocol if connection is not None else None
    if protocol is not None and protocol.read_timeout != limit:
        protocol.read_timeout = limit
        protocol.start_timeout()  # re-arm from now (None: no timer)


HOSTED_TIMEOUTS: Final = Timeouts()
"""Hosted APIs (OpenAI, Anthropic, Gemini, every OpenAI-compatible preset, generic
`openai+http(s)://` endpoints): stream headers at once; first token within 30 s unless
the model reasons first; a 30 s gap in a stream means it broke."""
SELF_HOSTED_TIMEOUTS: Final = Timeouts(
    first_token=120.0, reasoning_first_token=600.0, idle=60.0, generate=900.0
)
"""Servers that serve an already-loaded model on your own hardware (vllm, llamacpp):
headers at once, but processing a long prompt on a modest GPU or a CPU takes minutes."""
ON_DEMAND_TIMEOUTS: Final = Timeouts(
    headers=300.0, generate=900.0, first_token=600.0, reasoning_first_token=900.0, idle=60.0
)
"""Servers that load a model on demand (ollama, lmstudio): the headers wait for the load
(minutes for a large model from disk), and the hardware is yours."""


def _seconds(value: float | None) -> str:
    return "unlimited" if value is None else f"{value:g} s"


# --------------------------------------------------------------------------- error mapping

# Query strings and user info can carry credentials (`?key=` for Gemini, `user:pass@`):
# aiohttp puts URLs into some messages, so they are scrubbed before we quote them.
_URL_SECRETS = re.compile(
    r"(?P<scheme>https?://)"  # kept
    r"(?:[^/\s@]*@)?"  # user info: dropped
    r"(?P<rest>[^\s?#'\"]*)"  # host, port and path: kept
    r"(?:\?[^\s'\"#]*)?"  # query string: dropped
)


def _scrub(text: str) -> str:
    """`text` with URL user info and query strings removed."""
    return _URL_SECRETS.sub(r"\g<scheme>\g<rest>", text)


def _where(exc: aiohttp.ClientConnectorError) -> str:
    return f"{exc.host}:{exc.port}" if exc.port is not None else exc.host


def _translate(
    exc: BaseException, provider: str, model: str, timeouts: Timeouts | None
) -> ProviderError | None:
    """Our error for a transport failure, or None when `exc` is not one (leave it alone).

    Subclasses are tested before their bases: every TLS error is a `ClientConnectorError`,
    every aiohttp timeout an `asyncio.TimeoutError`.
    """
    if isinstance(exc, MajordomoError) or not isinstance(exc, Exception):
        # Already ours (nested mapping), or cancellation / exit: never touched.
        return None
    ctx: dict[str, Any] = {"provider": provider, "model": model}
    connect = timeouts.connect if timeouts is not None else None
    idle = timeouts.idle if timeouts is not None else None

    # TLS: a bad certificate or handshake does not fix itself, so no retry.
    if isinstance(exc, aiohttp.ClientSSLError):
        detail = getattr(exc, "certificate_error", None) or exc.os_error
        return ProviderConnectionError(
            f"TLS error connecting to {_where(exc)}: {type(detail).__name__}: "
            f"{_scrub(str(detail))}",
            should_retry=False,
            **ctx,
        )
    if isinstance(exc, aiohttp.ServerFingerprintMismatch):
        return ProviderConnectionError(
            f"TLS certificate of {exc.host}:{exc.port} does not match the pinned fingerprint",
            should_retry=False,
            **ctx,
        )
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return ProviderConnectionError(
            f"cannot resolve host {exc.host!r} (DNS: {exc.os_error.strerror or exc.os_error})",
            **ctx,
        )
    if isinstance(exc, aiohttp.ClientConnectorError):
        what = "proxy" if isinstance(exc, aiohttp.ClientProxyConnectionError) else "server"
        reason = exc.os_error.strerror or type(exc.os_error).__name__
        verdict = (
            "refused the connection (is it running?)"
            if isinstance(exc.os_error, ConnectionRefusedError)
            else "is unreachable"
        )
        return ProviderConnectionError(f"the {what} at {_where(exc)} {verdict} [{reason}]", **ctx)
    # Timeouts (all aiohttp ones are also asyncio.TimeoutError, i.e. TimeoutError).
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return ProviderTimeoutError(
            f"connect timeout: no connection within {_seconds(connect)} "
            "(TCP connect + TLS handshake)",
            limit="connect",
            **ctx,
        )
    if isinstance(exc, aiohttp.SocketTimeoutError):
        return ProviderTimeoutError(
            f"idle timeout: the server sent nothing for {_seconds(idle)}",
            limit="idle",
            **ctx,
        )
    if isinstance(exc, aiohttp.ServerTimeoutError):
        return ProviderTimeoutError(f"read timeout: {_scrub(str(exc)) or 'no data'}", **ctx)
    if isinstance(exc, aiohttp.ClientPayloadError):
        return StreamTruncatedError(
            f"the response body ended early: {_scrub(str(exc)) or type(exc).__name__}", **ctx
        )
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return ProviderConnectionError(
            "the server closed the connection before the response was complete", **ctx
        )
    if isinstance(exc, ConnectionResetError):  # includes ClientConnectionResetError
        return ProviderConnectionError("the connection was reset", **ctx)
    if isinstance(exc, aiohttp.InvalidURL | aiohttp.NonHttpUrlClientError):
        # A malformed base URL: configuration, not the network. Never retried.
        return ProviderConnectionError(
            f"invalid URL: {_scrub(str(exc))}", should_retry=False, **ctx
        )
    if isinstance(exc, aiohttp.ClientResponseError):
        # Raised for a reply aiohttp could not parse as HTTP (we never raise_for_status).
        reason = " ".join(str(exc.message).split())  # aiohttp's parser messages span lines
        return ProviderConnectionError(f"invalid HTTP response: {_scrub(reason)}", **ctx)
    if isinstance(exc, aiohttp.ClientError):  # ClientOSError, ClientConnectionError, ...
        return ProviderConnectionError(
            f"connection error: {type(exc).__name__}: {_scrub(str(exc))}", **ctx
        )
    if isinstance(exc, TimeoutError):  # asyncio.TimeoutError is TimeoutError on 3.11+
        return ProviderTimeoutError("timed out", **ctx)
    import ssl  # only on a failure: aiohttp has imported it by then

    if isinstance(exc, ssl.SSLError):
        return ProviderConnectionError(f"TLS error: {_scrub(str(exc))}", should_retry=False, **ctx)
    if isinstance(exc, OSError):  # ConnectionError, BrokenPipeError, ... raised bare
        return ProviderConnectionError(
            f"connection error: {type(exc).__name__}: {_scrub(str(exc))}", **ctx
        )
    return None  # not a transport failure: ValueError, TypeError, ... propagate as they are


class map_transport_errors:
    """Convert aiohttp, asyncio and OS errors raised inside into our errors.

    `raise Ours(...) from exc` keeps the original as `__cause__`. Our own errors, other
    exceptions (a `ValueError` is a bug, not the network) and cancellation pass through.

    | raised inside                                    | becomes                       |
    |--------------------------------------------------|-------------------------------|
    | `ClientSSLError` (certificate, handshake)        | ProviderConnectionError (1)   |
    | `ServerFingerprintMismatch`                      | ProviderConnectionError (1)   |
    | `ClientConnectorDNSError`                        | ProviderConnectionError       |
    | `ClientConnectorError` (refused, unreachable)    | ProviderConnectionError       |
    | `ConnectionTimeoutError`                         | ProviderTimeoutError (connect) |
    | `SocketTimeoutError`, `ServerTimeoutError`       | ProviderTimeoutError (read)   |
    | `asyncio.TimeoutError` / `TimeoutError`          | ProviderTimeoutError          |
    | `ClientPayloadError`                             | StreamTruncatedError          |
    | `ServerDisconnectedError`, `ClientOSError`, reset | ProviderConnectionError      |
    | `InvalidURL`                                     | ProviderConnectionError (1)   |
    | other `aiohttp.ClientError`, `OSError`           | ProviderConnectionError       |

    (1) with `should_retry=False`: a bad certificate or URL does not fix itself.

    Args:
        provider: the provider's registry name, for the error.
        model: the model id, for the error.
        timeouts: the limits in force, quoted in timeout messages.
        awaiting: "headers" (a stream) or "generate" while the response headers are
            awaited: a socket timeout then is that limit running out. Set `awaiting` to
            None once they arrived.

    A class rather than a `@contextmanager` generator: it wraps every request, and a
    generator-based manager costs a generator object and two resumptions each time.
    """

    __slots__ = ("_model", "_provider", "_timeouts", "awaiting")

    def __init__(
        self,
        provider: str,
        model: str,
        *,
        timeouts: Timeouts | None = None,
        awaiting: Literal["headers", "generate"] | None = None,
    ) -> None:
        self._provider = provider
        self._model = model
        self._timeouts = timeouts
        self.awaiting = awaiting

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None or not isinstance(exc, Exception):
            return  # success, or cancellation and other BaseExceptions: pass through
        timeouts = self._timeouts
        if self.awaiting and timeouts and isinstance(exc, aiohttp.SocketTimeoutError):
            streaming = self.awaiting == "headers"
            raise _headers_timeout(timeouts, streaming, self._provider, self._model) from exc
        ours = _translate(exc, self._provider, self._model, timeouts)
        if ours is None:
            return
        if isinstance(exc, aiohttp.ClientResponseError):
            _scrub_request_info(exc)
        try:
            raise ours from exc
        finally:
            # The error's traceback holds this frame: a local naming the error would
            # make a cycle that keeps both until the cyclic collector runs.
            del ours


def _scrub_request_info(exc: aiohttp.ClientResponseError) -> None:
    """Drop the request headers (the API key) and URL query from aiohttp's error.

    Its `repr()` shows `request_info`, and it stays reachable as our error's cause (and
    as the context of anything raised while it is handled), so a logger using `%r` or a
    crash reporter walking the chain would otherwise print the key.
    """
    # Typed as always set, but aiohttp's own constructors accept None.
    info: aiohttp.RequestInfo | None = exc.request_info
    if info is None:
        return
    exc.request_info = aiohttp.RequestInfo(
        info.url.with_user(None).with_query(None),
        info.method,
        multidict.CIMultiDictProxy(multidict.CIMultiDict()),
        info.real_url.with_user(None).with_query(None),
    )


# --------------------------------------------------------------------------- requests


_ENCODER: Final = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
"""Built once: `json.dumps` with any option builds a new encoder per call (~4 µs of a
request body's ~8 µs, measured with timeit)."""
_ASCII_ENCODER: Final = json.JSONEncoder(separators=(",", ":"), allow_nan=False)


def _encode(json_body: Any) -> bytes:
    """The request body, serialised once, compactly (NaN is refused: it is not JSON)."""
    text = _ENCODER.encode(json_body)
    try:
        return text.encode()
    except UnicodeEncodeError:
        # A lone surrogate (text sliced from broken input) has no UTF-8 form; JSON's
        # \uXXXX escapes can still carry it, so let the server decide.
        return _ASCII_ENCODER.encode(json_body).encode()


def with_json_content_type(headers: Mapping[str, str]) -> Mapping[str, str]:
    """`headers` with `Content-Type: application/json` unless they name a content type
    (in any case); `headers` themselves when they spell it `Content-Type`, as the
    providers' prebuilt headers do (no copy per request)."""
    if "Content-Type" in headers:
        return headers
    merged = dict(headers)
    if not any(name.lower() == "content-type" for name in merged):
        merged["Content-Type"] = "application/json"
    return merged


def _send(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    headers: Mapping[str, str],
    json_body: Any,
    timeouts: Timeouts,
    streaming: bool,
) -> Awaitable[aiohttp.ClientResponse]:
    """Send the request: aiohttp's own awaitable, which gives the response once its
    headers arrived.

    Not a coroutine of ours: every resumption of a call (the pool's wait, the headers)
    passes through each coroutine frame on its stack, so the callers await aiohttp
    directly and check the outcome themselves (`map_transport_errors(awaiting=...)`,
    `_raise_error_status`).
    The limit until the headers (`headers` for a stream, `generate` otherwise) is
    aiohttp's socket read timer (see `_client_timeout`); a timeout there closes the
    connection inside aiohttp and raises `aiohttp.SocketTimeoutError`.
    """
    data: bytes | None = None
    send_headers: Mapping[str, str] = headers
    if json_body is not None:
        data = _encode(json_body)
        send_headers = with_json_content_type(headers)
    # Redirects are not followed: aiohttp strips only Authorization and Cookie on a
    # cross-origin redirect, and our providers also send keys as x-api-key or
    # x-goog-api-key. A 3xx reaches the error mapper instead.
    return session.request(
        method,
        url,
        headers=send_headers,
        data=data,
        timeout=timeouts._for_aiohttp(streaming),
        allow_redirects=False,
    )


def _headers_timeout(
    timeouts: Timeouts, streaming: bool, provider: str, model: str
) -> ProviderTimeoutError:
    if streaming:
        return ProviderTimeoutError(
            f"headers timeout: no response headers within {_seconds(timeouts.headers)} "
            "of sending the stream request (a server with a loaded model sends them at once)",
            limit="headers",
            provider=provider,
            model=model,
        )
    return ProviderTimeoutError(
        f"generate timeout: no reply within {_seconds(timeouts.generate)} of sending the "
        "request (a reply's headers come with the whole answer; stream for long answers)",
        limit="generate",
        provider=provider,
        model=model,
    )


async def _read_error_body(response: aiohttp.ClientResponse) -> str:
    """Up to `MAX_ERROR_BODY` bytes of an error reply, decoded leniently."""
    chunks: list[bytes] = []
    size = 0
    content = response.content
    # `read(n)` directly: an `async for` over `iter_any()` costs an async generator.
    while size < MAX_ERROR_BODY and (chunk := await content.read(MAX_ERROR_BODY - size)):
        chunks.append(chunk)
        size += len(chunk)
    data = b"".join(chunks)
    encoding = response.charset or "utf-8"
    try:
        return data.decode(encoding, errors="replace")
    except LookupError:  # a charset Python does not know
        return data.decode("utf-8", errors="replace")


async def _raise_error_status(
    response: aiohttp.ClientResponse, error_mapper: ErrorMapper, timeouts: Timeouts
) -> NoReturn:
    """Raise the mapped error for a reply that is not a success; give the connection
    back first (to the pool when its body was read to the end; closed on any error or
    cancellation while reading it)."""
    try:
        if not response.content.is_eof():  # a short error body came with its headers
            _enter_phase(response, timeouts.idle)
        body_text = await _read_error_body(response)
        _finish(response)
    except BaseException:
        response.close()
        raise
    raise error_mapper(response.status, response.headers, body_text)


def _finish(response: aiohttp.ClientResponse) -> None:
    """Give the connection back: to the pool after a full read, else close it."""
    if response.content.at_eof():
        response.release()
    else:
        response.close()


def _decode_json(body: bytes, provider: str, model: str) -> Any:
    try:
        return fast_json.loads_bytes(body)
    # JSONDecodeError, UnicodeDecodeError for bad bytes, RecursionError for absurd nesting
    except (ValueError, RecursionError) as exc:
        quoted = body[: _QUOTE_CHARS * 4].decode("utf-8", errors="replace")[:_QUOTE_CHARS]
        raise ResponseFormatError(
            f"the reply is not valid JSON ({exc}); it starts {quoted!r}"
            if body.strip()
            else "the reply is empty, expected JSON",
            provider=provider,
            model=model,
        ) from exc


async def request_json(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    headers: Mapping[str, str],
    json_body: Any = None,
    provider: str,
    model: str,
    timeouts: Timeouts,
    error_mapper: ErrorMapper,
) -> tuple[Any, Mapping[str, str]]:
    """Send one request and decode its JSON reply.

    Args:
        session: the Registry's session (borrowed; never closed here).
        method: "POST", "GET", ...
        url: the full URL.
        headers: request headers (credentials included; they never reach a message).
        json_body: serialised once as compact JSON with `Content-Type: application/json`;
            None sends no body.
        provider: the provider's registry name, for errors.
        model: the model id, for errors.
        timeouts: connect / generate (until the headers) / idle (while reading the body).
        error_mapper: builds the error for a status >= 300 (redirects are not followed).

    Returns:
        `(decoded JSON, response headers)`; the headers match names case-insensitively.

    Raises:
        ProviderError: the mapper's error for an error status; `ResponseFormatError` for
            a body that is not JSON; transport errors as `map_transport_errors` maps them.
    """
    guard = map_transport_errors(provider, model, timeouts=timeouts, awaiting="generate")
    with guard:
        response = await _send(session, method, url, headers, json_body, timeouts, False)
        guard.awaiting = None
        if response.status >= 300:  # checked here: a success awaits nothing more
            await _raise_error_status(response, error_mapper, timeouts)
        try:
            if not response.content.is_eof():  # a small reply came whole with its headers
                _enter_phase(response, timeouts.idle)
            body = await response.read()
        except BaseException:
            response.close()  # error or cancellation mid-body: drop the connection
            raise
    response.release()  # fully read: the connection goes back to the pool
    return _decode_json(body, provider, model), response.headers


async def open_stream(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    headers: Mapping[str, str],
    json_body: Any,
    provider: str,
    model: str,
    timeouts: Timeouts,
    error_mapper: ErrorMapper,
) -> aiohttp.ClientResponse:
    """Send a streaming request; return the open response once success headers arrived.

    The caller owns the response: read it with `iter_body()`, which closes it, or close
    it with `response.close()`. The first body bytes must follow the headers within
    `timeouts.first_body` (the chain's first-token limit, which sees events, is tighter).

    Args and raises are those of `request_json()`; the error body of a failed status is
    read (at most `MAX_ERROR_BODY` bytes) and the response closed before raising.
    """
    guard = map_transport_errors(provider, model, timeouts=timeouts, awaiting="headers")
    with guard:
        response = await _send(session, method, url, headers, json_body, timeouts, True)
        guard.awaiting = None
        if response.status >= 300:
            await _raise_error_status(response, error_mapper, timeouts)
    _enter_phase(response, timeouts.first_body)
    return response


AFTER_END_GRACE: Final = 0.1
"""Seconds a stream's body may stay open after the provider's terminal event.

The end of the body (the chunked terminator) normally arrives with the terminal event;
reading it returns the connection to the pool. A server that keeps the body open after
a complete answer must not hold the consumer: after this grace the connection is closed.
"""


@final
class BodyReader:
    """The raw body chunks of a streamed response, as they arrive (`iter_body()`).

    Read with `async for` or `await read()`. Wait limits: the first chunk must follow
    the headers within `timeouts.first_body`, every later one must come within
    `timeouts.idle` of the bytes before it (aiohttp's socket read timer, re-armed by
    every byte: nothing per chunk on our side). A stalled stream raises
    `ProviderTimeoutError`; it never hangs.

    Closing rule: the end of the body returns the connection to the pool; an error
    while reading closes it; `close()` / `aclose()` (idempotent) drops an unfinished
    body, whose unread rest would corrupt the next request. Always close the reader
    (`contextlib.aclosing`, or the `Stream` that owns it).

    A class rather than an async generator: a stream reads every chunk through it, and
    an awaited method is one frame per chunk where a generator layer costs three.

    Raises (from `read()` and iteration):
        ProviderTimeoutError: the first chunk or a later one did not arrive in time.
        StreamTruncatedError: the body ended before its declared end (Content-Length or
            the chunked terminator): the server or a proxy cut it.
        ProviderConnectionError: the connection broke.
    """

    __slots__ = ("_content", "_first", "_model", "_provider", "_response", "_timeouts")

    def __init__(
        self, response: aiohttp.ClientResponse, *, provider: str, model: str, timeouts: Timeouts
    ) -> None:
        self._response = response
        self._content = response.content
        self._provider = provider
        self._model = model
        self._timeouts = timeouts
        self._first = True

    def __aiter__(self) -> BodyReader:
        return self

    async def __anext__(self) -> bytes:
        chunk = await self.read()
        if not chunk:
            raise StopAsyncIteration
        return chunk

    async def read(self) -> bytes:
        """The next non-empty chunk, or b"" at the end of the body (then the connection
        is back in the pool)."""
        try:
            chunk = await self._content.readany()
        except BaseException as exc:
            # Error or cancellation: sync close, so nothing here can be interrupted.
            self._response.close()
            ours = self._translate(exc) if isinstance(exc, Exception) else None
            if ours is None:
                raise  # cancellation, or not a transport failure
            if isinstance(exc, aiohttp.ClientResponseError):
                # Its request_info holds the request headers (the API key) and shows them
                # in its repr: never keep it as the cause. Our message says what failed.
                raise ours from None
            raise ours from exc
        if not chunk:
            self._response.release()
        elif self._first:
            self._first = False
            _enter_phase(self._response, self._timeouts.idle)
        return chunk

    def _translate(self, exc: Exception) -> ProviderError | None:
        """Our error for a failed read, or None when `exc` is not a transport failure."""
        timeouts = self._timeouts
        if self._first and isinstance(exc, aiohttp.SocketTimeoutError):
            return ProviderTimeoutError(
                f"first token timeout: no response body within "
                f"{_seconds(timeouts.first_body)} of the headers",
                limit="first_token",
                provider=self._provider,
                model=self._model,
            )
        return _translate(exc, self._provider, self._model, timeouts)

    async def drain(self) -> None:
        """Read what follows the provider's terminal event, for `AFTER_END_GRACE` at most.

        Usually the end of the body came with the terminal event, and this returns the
        connection to the pool at once. Failures are ignored: the answer is complete.
        """
        if self._content.at_eof():
            self._response.release()
            return
        with anyio.move_on_after(AFTER_END_GRACE), suppress(ProviderError):
            while await self.read():
                pass
        self._response.close()  # harmless after a release

    def close(self) -> None:
        """Drop the response unless it was read to the end (sync, idempotent)."""
        self._response.close()

    async def aclose(self) -> None:
        """`close()`, for `contextlib.aclosing`."""
        self._response.close()


def iter_body(
    response: aiohttp.ClientResponse,
    *,
    provider: str,
    model: str,
    timeouts: Timeouts,
) -> BodyReader:
    """A `BodyReader` over a response `open_stream()` returned."""
    return BodyReader(response, provider=provider, model=model, timeouts=timeouts)


def request_id_from(headers: Mapping[str, str], names: Sequence[str]) -> str | None:
    """The first non-empty header among `names` (e.g. ("x-request-id",)), or None.

    Names match case-insensitively, in aiohttp's headers and in a plain dict alike
    (`header_value`).
    """
    for name in names:
        value = header_value(headers, name.lower())
        if value and value.strip():
            return value.strip()
    return None
