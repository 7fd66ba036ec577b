"""Fitting one call's request to each target it is tried on (media normalisation).

A chain tries targets with different capabilities, so the request is adapted per
attempt, from the original each time:

- an image URL becomes inline bytes for a target that does not take URLs; the download
  happens once per call and is shared by every attempt that needs it;
- an image the target cannot take (no vision, wrong type, too large) is refused with an
  `UnsupportedRequestError` (the chain moves on without a health penalty) or, when the
  user chose `unsupported_images="placeholder"`, replaced by a short text placeholder;
- tools, JSON output, a system prompt or streaming that the target lacks are refused;
- a reasoning option for a target that cannot reason is dropped (it is a way to answer,
  not part of the question): never sent raw to an API that would reject it;
- a request whose rough size estimate exceeds the target's context window is reported
  up front, so the chain skips the target without calling it.
"""

from __future__ import annotations

import json
from typing import Final, Literal, TypeAlias

import attrs

from ._capabilities import Capabilities
from ._data_url import DataURLError, size_of_data_url
from ._download import ImageFetcher
from ._exceptions import ImageDownloadError, UnsupportedRequestError
from ._messages import ImagePart, Message, Part, TextPart, ToolCallPart, ToolResultPart
from ._request import Request

__all__ = ["ImagePolicy", "RequestFitter", "estimate_tokens"]

ImagePolicy: TypeAlias = Literal["error", "placeholder"]
"""What a chain does with an image a target cannot take: refuse the target ("error"),
or send the request with the image replaced by a text placeholder ("placeholder")."""

_CHARS_PER_TOKEN: Final = 4
# The fewest tokens any provider bills for an image (OpenAI's low-detail tile): the
# estimate must never exceed the true size, or a target that fits would be skipped.
_TOKENS_PER_IMAGE: Final = 85
_MIME_ALIASES: Final = {"image/jpg": "image/jpeg", "image/pjpeg": "image/jpeg"}


def estimate_tokens(request: Request) -> int:
    """A rough, deliberately low estimate of the request's prompt size in tokens.

    Four characters of text per token (fewer tokens than real tokenisers count for
    almost any text) and 85 tokens per image.
    """
    chars = len(request.system or "")
    images = 0
    for message in request.messages:
        for part in message.parts:
            if isinstance(part, TextPart):
                chars += len(part.text)
            elif isinstance(part, ImagePart):
                images += 1
            elif isinstance(part, ToolCallPart):
                chars += len(part.call.name) + len(part.call.arguments)
            elif isinstance(part, ToolResultPart):
                chars += len(part.content)
            else:  # reasoning sent back
                chars += len(part.text) + len(part.signature or "") + len(part.redacted or "")
    for tool in request.tools:
        chars += len(tool.name) + len(tool.description) + len(json.dumps(tool.parameters))
    return chars // _CHARS_PER_TOKEN + images * _TOKENS_PER_IMAGE


class RequestFitter:
    """Fits one call's request to each target's capabilities; one per call.

    Args:
        request: the call's request, as the caller built it.
        fetch: downloads an image URL for targets that need inline data.
        policy: what to do with an image a target cannot take.
        max_download_bytes: the largest image downloaded.
        download_timeout: seconds for one image download.
    """

    __slots__ = (
        "_download_timeout",
        "_downloads",
        "_fetch",
        "_fitted",
        "_images",
        "_max_download_bytes",
        "_policy",
        "_request",
        "_tokens",
        "_tool_parts",
    )

    def __init__(
        self,
        request: Request,
        fetch: ImageFetcher,
        *,
        policy: ImagePolicy = "error",
        max_download_bytes: int,
        download_timeout: float,
    ) -> None:
        self._request = request
        self._fetch = fetch
        self._policy = policy
        self._max_download_bytes = max_download_bytes
        self._download_timeout = download_timeout
        # What the request contains, found on first use.
        self._images: bool | None = None
        self._tool_parts = False
        self._tokens: int | None = None
        self._fitted: dict[Capabilities, Request] = {}
        self._downloads: dict[str, ImagePart | str] = {}
        """URL -> the downloaded image, or why the download failed (both reused)."""

    def too_large(self, capabilities: Capabilities) -> str | None:
        """Why the request cannot fit the target's context window, or None if it may."""
        window = capabilities.context_window
        if window is None:
            return None
        if self._tokens is None:
            self._tokens = estimate_tokens(self._request)
        if self._tokens <= window:
            return None
        return (
            f"skipped (the request is about {self._tokens} tokens by a rough estimate, "
            f"over the model's {window}-token context window)"
        )

    def tokens(self) -> int:
        """What a tokens-per-minute budget reserves for this request before it is sent: the
        prompt's rough size plus the answer's `max_tokens` (corrected to the provider's
        reported usage afterwards)."""
        if self._tokens is None:
            self._tokens = estimate_tokens(self._request)
        return self._tokens + (self._request.max_tokens or 0)

    async def fit(self, key: str, capabilities: Capabilities, *, streaming: bool) -> Request:
        """The request as target `key` should get it (answered without suspending unless
        an image must be fitted: the usual request is returned as it is).

        Raises:
            UnsupportedRequestError: the target cannot take the request.
            ImageDownloadError: an image URL the target needs inline could not be fetched.
        """
        request = self._request
        if self._images is None:
            self._scan_request()
        if (
            (streaming and not capabilities.streaming)
            or ((request.tools or self._tool_parts) and not capabilities.tools)
            or (request.response_format is not None and not capabilities.json_mode)
            or (request.system and not capabilities.system_prompt)
        ):
            raise self._missing_feature(key, capabilities, streaming=streaming)
        if not self._images:
            if request.reasoning is not None and not capabilities.reasoning:
                return _without_reasoning(request)
            return request
        fitted = self._fitted.get(capabilities)
        if fitted is None:
            fitted = await self._fit_images(_Refusal(key), capabilities)
            if fitted.reasoning is not None and not capabilities.reasoning:
                fitted = _without_reasoning(fitted)
            self._fitted[capabilities] = fitted
        return fitted

    # ----------------------------------------------------------------- internals

    def _scan_request(self) -> None:
        images = tool_parts = False
        for message in self._request.messages:
            for part in message.parts:
                if isinstance(part, ImagePart):
                    images = True
                elif isinstance(part, ToolCallPart | ToolResultPart):
                    tool_parts = True
        self._images, self._tool_parts = images, tool_parts

    def _missing_feature(
        self, key: str, capabilities: Capabilities, *, streaming: bool
    ) -> UnsupportedRequestError:
        refuse, request = _Refusal(key), self._request
        if streaming and not capabilities.streaming:
            return refuse("does not stream", "streaming", True)
        if (request.tools or self._tool_parts) and not capabilities.tools:
            return refuse("does not take tools", "tools", True)
        if request.response_format is not None and not capabilities.json_mode:
            return refuse("does not support JSON output", "json_mode", True)
        return refuse("does not take a system prompt", "system_prompt", True)

    async def _fit_images(self, refuse: _Refusal, capabilities: Capabilities) -> Request:
        messages: list[Message] = []
        changed = False
        for message in self._request.messages:
            parts: list[Part] = []
            for part in message.parts:
                if isinstance(part, ImagePart):
                    parts.append(await self._fit_image(part, refuse, capabilities))
                else:
                    parts.append(part)
            if any(new is not old for new, old in zip(parts, message.parts, strict=True)):
                message = attrs.evolve(message, parts=tuple(parts))
                changed = True
            messages.append(message)
        if not changed:
            return self._request
        return attrs.evolve(self._request, messages=tuple(messages))

    async def _fit_image(
        self, image: ImagePart, refuse: _Refusal, capabilities: Capabilities
    ) -> ImagePart | TextPart:
        if not capabilities.vision:
            return self._refused(refuse, "does not accept images", "vision", True)
        if image.data is not None:
            return self._check_inline(image, image.mime_type, len(image.data), refuse, capabilities)
        url = image.url or ""
        scheme = url[:8].partition(":")[0].lower()
        if scheme == "data":
            try:
                mime_type, size = size_of_data_url(url)
            except DataURLError:
                return image  # malformed: the provider explains
            mime_type = mime_type or image.mime_type
            return self._check_inline(image, mime_type, size, refuse, capabilities)
        if scheme not in ("http", "https"):
            return image  # the provider explains which URL schemes it takes
        if capabilities.image_urls:
            if image.mime_type and _mime(image.mime_type) not in capabilities.image_mime_types:
                return self._refused_type(refuse, image.mime_type, capabilities)
            return image
        inline = await self._download(url, refuse)
        assert inline.data is not None
        return self._check_inline(inline, inline.mime_type, len(inline.data), refuse, capabilities)

    def _check_inline(
        self,
        image: ImagePart,
        mime_type: str | None,
        size: int,
        refuse: _Refusal,
        capabilities: Capabilities,
    ) -> ImagePart | TextPart:
        if mime_type is not None and _mime(mime_type) not in capabilities.image_mime_types:
            return self._refused_type(refuse, mime_type, capabilities)
        limit = capabilities.max_image_bytes
        if limit is not None and size > limit:
            problem = f"takes images up to {limit} bytes, and this one has {size}"
            return self._refused(refuse, problem, "max_image_bytes", size)
        return image

    def _refused(self, refuse: _Refusal, problem: str, field: str, value: object) -> TextPart:
        """A placeholder for the image, or the target's refusal, per the policy."""
        if self._policy == "placeholder":
            return TextPart(f"[image omitted: this model {problem}]")
        raise refuse(problem, field, value)

    def _refused_type(
        self, refuse: _Refusal, mime_type: str, capabilities: Capabilities
    ) -> TextPart:
        accepted = ", ".join(sorted(capabilities.image_mime_types)) or "no image types"
        widened = sorted({*capabilities.image_mime_types, _mime(mime_type)})
        problem = f"takes {accepted} images, not {mime_type}"
        return self._refused(refuse, problem, "image_mime_types", widened)

    async def _download(self, url: str, refuse: _Refusal) -> ImagePart:
        found = self._downloads.get(url)
        if found is None:
            try:
                found = await self._fetch(url, self._max_download_bytes, self._download_timeout)
            except ImageDownloadError as exc:
                found = exc.message
            self._downloads[url] = found
        if isinstance(found, str):
            raise ImageDownloadError(
                f"{found}; {refuse.key} takes images only inline, so the chain downloads them",
                provider=refuse.provider,
                model=refuse.model,
            )
        return found


class _Refusal:
    """Builds the `UnsupportedRequestError` for one target, with a hint that fixes it."""

    __slots__ = ("key", "model", "provider")

    def __init__(self, key: str) -> None:
        self.key = key
        self.provider, _, self.model = key.partition("/")

    def __call__(self, problem: str, field: str, value: object) -> UnsupportedRequestError:
        hint = f"Registry(capabilities={{{self.key!r}: {{{field!r}: {value!r}}}}})"
        if field in ("vision", "max_image_bytes", "image_mime_types"):
            hint += " or ChainConfig(unsupported_images='placeholder') to send a placeholder"
        return UnsupportedRequestError(
            f"{self.key} {problem} (per majordomo's capability table; if that is wrong, "
            f"override it with {hint})",
            provider=self.provider,
            model=self.model,
        )


def _mime(value: str) -> str:
    mime_type = value.partition(";")[0].strip().lower()
    return _MIME_ALIASES.get(mime_type, mime_type)


def _without_reasoning(request: Request) -> Request:
    """`request` for a target that cannot reason: the option is dropped, not refused
    (reasoning is a way to answer, not part of the question), and never sent raw."""
    return attrs.evolve(request, reasoning=None)
