"""What the four HTTP providers share: construction, the model cache, the key, requests.

`HTTPProvider` holds a provider's configuration (registry name, API key, base URL, the
Registry's session holder, timeouts, extra headers) and its per-id model cache; it builds
each request's headers, raising `AuthenticationError` that names the variable to set when
the key is missing, masks the key in error bodies, and sends requests through `_http`.
`HTTPModel` is one model of such a provider: its target key, its capabilities (from the
built-in table, computed once), `generate` and `stream` (build the body, send it, parse
the reply or hand the open response to the event translator), and a repr without secrets.

A provider module subclasses both and fills in its wire format. On the provider:
`_new_model`, `_map_error`, and where the API differs from the defaults `_auth_headers`
(default: a Bearer token), `_key_required` (default: always) and `_missing_key_message`.
On the model: `_body`, `_endpoint`, `_parse` and `_translator` (the stream's wire
format: a `StreamTranslator`, which also picks the body's decoder); the stream loop
itself is shared (`stream_events()` in `_translate`).
"""

from __future__ import annotations

import abc
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar, Final, Generic, TypeVar

from .._capabilities import Capabilities, builtin_capabilities
from .._exceptions import AuthenticationError, ProviderError
from .._http import (
    HOSTED_TIMEOUTS,
    BodyReader,
    ErrorMapper,
    Timeouts,
    iter_body,
    load_transport,
    open_stream,
    request_id_from,
    request_json,
    with_json_content_type,
)
from .._provider_options import ProviderOptions, merge_body
from .._request import Option, Request, as_request
from .._stream import Stream
from .._version import __version__
from ._translate import StreamTranslator, stream_events

if TYPE_CHECKING:
    import aiohttp

    from .._context import HTTPSessionHolder
    from .._events import StreamEvent
    from .._response import Response

__all__ = ["USER_AGENT", "HTTPModel", "HTTPProvider"]

USER_AGENT: Final = f"majordomo-async/{__version__}"
"""Sent on every request (a provider's `extra_headers` or `provider_options` headers can
replace it): providers see which client sends their traffic."""

ModelT = TypeVar("ModelT", bound="HTTPModel[Any]")
ProviderT = TypeVar("ProviderT", bound="HTTPProvider[Any]")


_CLIPPED_ENDS: Final = ("…", "...")
"""How a message cut to a length ends (`body_summary`, the providers' own clipping)."""
_MIN_KEY_PIECE: Final = 4
"""The shortest start of a key that a clipped message's end is masked for: a shorter
match is more likely a coincidence than a leak."""


def _mask(text: str, key: str) -> str:
    """`text` with every `key` masked, and a start of `key` cut off by clipping.

    Returns `text` itself when there is nothing to mask.
    """
    if key in text:
        text = text.replace(key, "***")
    if text.endswith(_CLIPPED_ENDS):
        ellipsis = "…" if text.endswith("…") else "..."
        body = text[: -len(ellipsis)]
        # The longest start of the key that the clipped text ends with.
        for size in range(min(len(key) - 1, len(body)), _MIN_KEY_PIECE - 1, -1):
            if body.endswith(key[:size]):
                return body[:-size] + "***" + ellipsis
    return text


class HTTPProvider(abc.ABC, Generic[ModelT]):
    """The configuration and plumbing every HTTP provider shares.

    Construction does no I/O and never fails for a missing key: a call without one
    raises `AuthenticationError` naming the variable to set. The key appears in no
    repr, and is masked in any error body that echoes it.

    Args:
        name: the registry name (the first half of each target key).
        api_key: the API key, or None ("" counts as None).
        base_url: the API root; a trailing slash is dropped.
        http: the Registry's session holder (`http.get()` is called at request time).
        timeouts: the time limits of every request (default: the provider family's).
        extra_headers: more headers for every request; never shown.
    """

    __slots__ = (
        "_api_key",
        "_base_url",
        "_extra_headers",
        "_http",
        "_models",
        "_name",
        "_ready_headers",
        "_timeouts",
    )

    _FAMILY: ClassVar[str]
    _WIRE: ClassVar[str]
    """The wire format ("openai", "anthropic", "gemini", "ollama"): the key of
    `provider_options` every target speaking it gets."""
    """The capability table's family of this wire format ("anthropic", ...)."""
    _KEY_ENV_VARS: ClassVar[tuple[str, ...]] = ()
    """Variables a missing key's error tells the user to set, in order."""
    _DSN_KEY_EXAMPLE: ClassVar[str] = "scheme://KEY@host"
    """How a missing key's error shows a key written into the DSN."""
    _DEFAULT_TIMEOUTS: ClassVar[Timeouts] = HOSTED_TIMEOUTS
    """The timeouts used when the constructor gets none (the family's defaults)."""

    def __init__(
        self,
        name: str,
        *,
        api_key: str | None,
        base_url: str,
        http: HTTPSessionHolder,
        timeouts: Timeouts | None = None,
        extra_headers: Mapping[str, str] | None = None,
    ) -> None:
        self._name = name
        self._api_key = api_key or None
        self._base_url = base_url.rstrip("/")
        self._http = http
        self._timeouts = timeouts if timeouts is not None else self._DEFAULT_TIMEOUTS
        self._extra_headers = dict(extra_headers or {})
        self._ready_headers: Mapping[str, str] | None = None
        """The headers of a request that brings none of its own, once built."""
        self._models: dict[str, ModelT] = {}
        load_transport()

    @property
    def name(self) -> str:
        """The registry name."""
        return self._name

    @property
    def base_url(self) -> str:
        """The API root requests go to (no trailing slash)."""
        return self._base_url

    @property
    def http(self) -> HTTPSessionHolder:
        """The session holder requests borrow their session from."""
        return self._http

    @property
    def timeouts(self) -> Timeouts:
        """The time limits of every request (see `Timeouts`)."""
        return self._timeouts

    @property
    def family(self) -> str:
        """The family its models are looked up under in the built-in capability table."""
        return self._FAMILY

    def model(self, model_id: str) -> ModelT:
        """The model `model_id`, cached per id; no I/O."""
        model = self._models.get(model_id)
        if model is None:
            model = self._models.setdefault(model_id, self._new_model(model_id))
        return model

    @abc.abstractmethod
    def _new_model(self, model_id: str) -> ModelT:
        """A new model object for `model_id` (called once per id, by `model()`)."""

    # ----------------------------------------------------------------------- credentials

    def _key_required(self) -> bool:
        """Whether a call without a key must fail before it is sent (default: yes)."""
        return True

    def _key_variables(self) -> tuple[str, ...]:
        """The variables a missing key's error names."""
        return self._KEY_ENV_VARS

    def _missing_key_message(self) -> str:
        variables = " or ".join(self._key_variables()) or "an API key variable"
        return (
            f"no API key for provider {self._name!r}: set {variables}, "
            f"or put the key in the provider's DSN ({self._DSN_KEY_EXAMPLE})"
        )

    def _auth_headers(self, api_key: str) -> dict[str, str]:
        """The headers that carry the key (default: `Authorization: Bearer KEY`)."""
        return {"Authorization": f"Bearer {api_key}"}

    def _headers(
        self, model_id: str, *, stream: bool = False, extra: Mapping[str, str] | None = None
    ) -> Mapping[str, str]:
        """Headers for one request about `model_id`, the credential included (read-only:
        the headers of a request without its own are built once and shared).

        `stream` says whether the request asks for a stream (for an `Accept` header);
        `extra` holds the request's own headers (`provider_options`), which may replace
        the User-Agent and the provider's extra headers, never the credential's.

        Raises:
            AuthenticationError: no key is configured and `_key_required()`.
        """
        del stream  # the default headers are the same for both
        if not extra and (ready := self._ready_headers) is not None:
            return ready  # nearly every request: built once (read-only: callers copy)
        headers = {"User-Agent": USER_AGENT, **self._extra_headers}
        if extra:
            headers.update(extra)  # a request's own headers; never the credential's
        if self._api_key is not None:
            headers.update(self._auth_headers(self._api_key))
        elif self._key_required():
            raise AuthenticationError(
                self._missing_key_message(), provider=self._name, model=model_id
            )
        if not extra:
            # With the body's content type: `_send` then sends them as they are.
            ready = self._ready_headers = with_json_content_type(headers)
            return ready
        return headers

    def _redact(self, text: str) -> str:
        """`text` without the API key: a server or proxy may echo a credential back."""
        key = self._api_key
        return text.replace(key, "***") if key and key in text else text

    def _redact_error(self, exc: BaseException) -> None:
        """Mask the API key in an error built from a reply (an in-band error echoing it).

        HTTP error bodies are masked before mapping (`_error_mapper`); errors found
        inside 200 replies and streams (every translator's in-band errors) pass here on
        their way out: it is the one place those are masked. A message clipped in the
        middle of the key ("...sk-ab…") loses that start of the key too.
        """
        key = self._api_key
        if not key or not isinstance(exc, ProviderError):
            return
        message = _mask(exc.message, key)
        code = _mask(exc.code, key) if exc.code else exc.code
        if message is not exc.message or code is not exc.code:
            exc.message, exc.code = message, code
            exc.args = (exc._render(),)

    # ----------------------------------------------------------------------- requests

    def _url(self, path: str) -> str:
        """The full URL of an API path ("/chat/completions")."""
        return self._base_url + path

    def _error_mapper(self, model_id: str) -> ErrorMapper:
        """The `error_mapper` for requests about `model_id`: `_map_error`, key masked.

        A `partial` rather than a closure: one object per request for the collector where
        a closure makes three, and requests in flight by the thousand keep theirs alive."""
        return partial(self._masked_error, model_id)

    def _masked_error(
        self, model_id: str, status: int, headers: Mapping[str, str], body_text: str
    ) -> ProviderError:
        return self._map_error(model_id, status, headers, self._redact(body_text))

    @abc.abstractmethod
    def _map_error(
        self, model_id: str, status: int, headers: Mapping[str, str], body_text: str
    ) -> ProviderError:
        """The typed error for an HTTP error reply (`body_text` has the key masked)."""

    def _options(self, request: Request) -> ProviderOptions | None:
        """The request's escape-hatch options for this provider: its wire family's, with
        its preset's (`family`, when it is another name) on top."""
        chosen = request.provider_options
        if not chosen:
            return None
        wire = chosen.get(self._WIRE)
        family = self.family
        preset = chosen.get(family) if family != self._WIRE else None
        if wire is None:
            return preset
        return wire if preset is None else wire.merged(preset)

    def _request_json(
        self,
        method: str,
        url: str,
        *,
        model_id: str,
        body: Any = None,
        extra_headers: Mapping[str, str] | None = None,
    ) -> Awaitable[tuple[Any, Mapping[str, str]]]:
        """Send one request about `model_id`; await its decoded JSON and its headers.

        The transport's own coroutine is returned, not wrapped in one of ours: a frame
        less on every call.

        Raises:
            AuthenticationError: no key is configured (at the call: nothing is sent).
            ProviderError: as `request_json()` raises, mapped by `_map_error`.
        """
        headers = self._headers(model_id, extra=extra_headers)
        return request_json(
            self._http.get(),
            method,
            url,
            headers=headers,
            json_body=body,
            provider=self._name,
            model=model_id,
            timeouts=self._timeouts,
            error_mapper=self._error_mapper(model_id),
        )

    def _open_stream(
        self,
        url: str,
        *,
        model_id: str,
        body: Any,
        extra_headers: Mapping[str, str] | None = None,
    ) -> Awaitable[aiohttp.ClientResponse]:
        """POST a streaming request; await the response once success headers arrived
        (the transport's coroutine, as `_request_json` returns it).

        The caller owns the response: read it with `_iter_body()` or close it.

        Raises:
            AuthenticationError: no key is configured (at the call: nothing is sent).
            ProviderError: as `open_stream()` raises, mapped by `_map_error`.
        """
        headers = self._headers(model_id, stream=True, extra=extra_headers)
        return open_stream(
            self._http.get(),
            "POST",
            url,
            headers=headers,
            json_body=body,
            provider=self._name,
            model=model_id,
            timeouts=self._timeouts,
            error_mapper=self._error_mapper(model_id),
        )

    def _iter_body(self, response: aiohttp.ClientResponse, *, model_id: str) -> BodyReader:
        """The body chunks of a stream `_open_stream()` opened (see `iter_body()`)."""
        return iter_body(response, provider=self._name, model=model_id, timeouts=self._timeouts)

    def __repr__(self) -> str:
        # Never the key: only whether there is one.
        key = "set" if self._api_key else "none"
        return f"{type(self).__name__}({self._name!r}, base_url={self._base_url!r}, api_key={key})"


class HTTPModel(abc.ABC, Generic[ProviderT]):
    """One model of an `HTTPProvider`: its target key, capabilities, `generate` and `stream`.

    Get it with `provider.model(model_id)`; construction does no I/O.
    """

    __slots__ = ("_capabilities", "_key", "_model_id", "_provider")

    _REQUEST_ID_HEADERS: ClassVar[tuple[str, ...]] = ()
    """Response headers that carry the provider's request id, in order of preference."""

    def __init__(self, provider: ProviderT, model_id: str) -> None:
        self._provider = provider
        self._model_id = model_id
        self._key = f"{provider.name}/{model_id}"
        self._capabilities: Capabilities | None = None

    @property
    def key(self) -> str:
        """The "provider/model-id" key of this target."""
        return self._key

    @property
    def timeouts(self) -> Timeouts:
        """The provider's time limits (a chain reads its first-token defaults here)."""
        return self._provider._timeouts

    @property
    def capabilities(self) -> Capabilities:
        """What this model accepts, from the built-in table by the provider's family.

        Looked up on the first read and kept: a chain reads it before every attempt.
        """
        capabilities = self._capabilities
        if capabilities is None:
            capabilities = builtin_capabilities(self._provider.family, self._model_id)
            self._capabilities = capabilities
        return capabilities

    async def generate(self, request: Request | str, *options: Option) -> Response:
        """Answer `request` in one reply.

        Args:
            request: the request, or a plain prompt (one user message).
            *options: request options, applied in order.

        Returns:
            The answer, with usage, the finish reason and the provider's request id.

        Raises:
            AuthenticationError: no API key is configured (the message names the variable
                to set; nothing was sent), or the server refused the key.
            UnsupportedRequestError: the request holds something this API cannot take.
            ProviderError: any other failure, typed by what went wrong.
        """
        request = as_request(request).apply(*options)
        body, extra_headers = self._wire_body(request, stream=False)
        data, headers = await self._provider._request_json(
            "POST",
            self._endpoint(stream=False),
            model_id=self._model_id,
            body=body,
            extra_headers=extra_headers,
        )
        try:
            return self._parse(data, headers)
        except ProviderError as exc:
            self._provider._redact_error(exc)
            raise

    async def stream(self, request: Request | str, *options: Option) -> Stream:
        """Start answering `request` as a stream of events.

        An error status raises here, before any event, so a chain can still fail over;
        errors inside the body (in-band error events, a cut body) raise while iterating.

        Args:
            request: the request, or a plain prompt (one user message).
            *options: request options, applied in order.

        Returns:
            An open `Stream` (close it: `async with`): `StreamStart`, `TextDelta` and
            `ToolCallDelta` pieces, `UsageUpdate`, then `StreamEnd` once the provider's
            terminal signal arrived.

        Raises:
            AuthenticationError: no API key is configured, or the server refused the key.
            UnsupportedRequestError: the request holds something this API cannot take.
            ProviderError: the server answered with an error status, or the transport failed.
        """
        request = as_request(request).apply(*options)
        body, extra_headers = self._wire_body(request, stream=True)
        response = await self._provider._open_stream(
            self._endpoint(stream=True),
            model_id=self._model_id,
            body=body,
            extra_headers=extra_headers,
        )
        request_id = request_id_from(response.headers, self._REQUEST_ID_HEADERS)
        # `on_close`: a stream closed before its generator ever ran still drops the response.
        return Stream(
            self._events(response, request_id),
            model=self._key,
            request_id=request_id,
            on_close=response.close,
            on_error=self._provider._redact_error,
        )

    def _wire_body(
        self, request: Request, *, stream: bool
    ) -> tuple[dict[str, Any], Mapping[str, str] | None]:
        """The JSON body and the request's extra headers: `_body`, with the request's
        `provider_options` for this provider merged in (the escape hatch)."""
        body = self._body(request, stream=stream)
        options = self._provider._options(request)
        if options is None:
            return body, None
        return merge_body(body, options.body), options.headers or None

    @abc.abstractmethod
    def _body(self, request: Request, *, stream: bool) -> dict[str, Any]:
        """The JSON body of a request for `request` (pure; raises for what cannot be sent)."""

    @abc.abstractmethod
    def _endpoint(self, *, stream: bool) -> str:
        """Where a generate (`stream=False`) or stream request goes."""

    @abc.abstractmethod
    def _parse(self, data: Any, headers: Mapping[str, str]) -> Response:
        """The `Response` for a decoded reply and its headers."""

    @abc.abstractmethod
    def _translator(
        self, headers: Mapping[str, str], request_id: str | None
    ) -> StreamTranslator[Any]:
        """A new translator for one stream (its response's headers and request id)."""

    def _not_a_stream(
        self, response: aiohttp.ClientResponse
    ) -> Callable[[BodyReader], Awaitable[ProviderError]] | None:
        """How to read a 200 reply that is not a stream into its error, or None (default).

        A provider whose streams never come as `application/json` overrides this to
        read such a reply (a proxy's error, a server that ignored `stream`) as one body.
        """
        del response  # every body is decoded as the stream by default
        return None

    def _events(
        self, response: aiohttp.ClientResponse, request_id: str | None
    ) -> AsyncGenerator[StreamEvent, None]:
        """Our events from an open streamed response: `stream_events()` (see there for the
        terminal event, draining and the end of the body) with this model's translator.

        It returns the loop's generator itself, adding no layer per event; closing it
        closes the response.
        """
        return stream_events(
            self._translator(response.headers, request_id),
            self._provider._iter_body(response, model_id=self._model_id),
            not_a_stream=self._not_a_stream(response),
        )

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._key}>"
