"""Fitting a request to each target: images, tools, JSON, context windows, in the chain."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from majordomo_async import (
    Capabilities,
    Chain,
    ChainConfig,
    ChainExhaustedError,
    HealthConfig,
    HealthTracker,
    ImageDownloadError,
    ImagePart,
    ManualClock,
    Message,
    Request,
    Target,
    TargetSkippedError,
    TextPart,
    Tool,
    UnsupportedRequestError,
    json_mode,
)
from majordomo_async._fitting import RequestFitter, estimate_tokens
from tests.helpers.scripted import ScriptedModel

PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 24
URL = "https://images.example/cat.png?sig=SECRET"


class Fetcher:
    """Serves URLs from a dict and counts downloads (a URL not in the dict fails)."""

    def __init__(self, images: dict[str, ImagePart] | None = None) -> None:
        self.images = images or {}
        self.calls: list[tuple[str, int, float]] = []

    async def __call__(self, url: str, max_bytes: int, time_limit: float) -> ImagePart:
        self.calls.append((url, max_bytes, time_limit))
        image = self.images.get(url)
        if image is None:
            raise ImageDownloadError("could not download the image at https://images.example/x")
        return image


def image_request(*images: ImagePart) -> Request:
    return Request([Message.user("what is this?", *images)])


def fitter(request: Request, fetch: Fetcher | None = None, **kwargs: object) -> RequestFitter:
    return RequestFitter(
        request,
        fetch or Fetcher(),
        max_download_bytes=1000,
        download_timeout=5.0,
        **kwargs,  # type: ignore[arg-type]
    )


def images_of(request: Request) -> list[object]:
    return [part for part in request.messages[0].parts if not isinstance(part, TextPart)]


# --------------------------------------------------------------------------- RequestFitter


async def test_text_request_is_passed_through_unchanged() -> None:
    request = Request("hi")
    assert await fitter(request).fit("p/m", Capabilities(vision=False), streaming=False) is request


def finished_at_once(awaitable: Any) -> Any:
    """The value of a coroutine that must not suspend (it raises if it does)."""
    try:
        awaitable.send(None)
    except StopIteration as done:
        return done.value
    awaitable.close()
    raise AssertionError("the coroutine suspended")


def test_fit_answers_without_suspending_unless_images_need_fitting() -> None:
    """The healthy path: no image, or images already fitted for these capabilities."""
    text = Request("hi")
    assert finished_at_once(fitter(text).fit("p/m", Capabilities(), streaming=False)) is text
    with pytest.raises(UnsupportedRequestError, match="stream"):
        finished_at_once(fitter(text).fit("p/m", Capabilities(streaming=False), streaming=True))


async def test_fit_reuses_images_fitted_earlier() -> None:
    downloaded = ImagePart.from_bytes(PNG, "image/png")
    fetcher = Fetcher({URL: downloaded})
    fit = fitter(image_request(ImagePart.from_url(URL)), fetcher)
    inline_only = Capabilities(image_urls=False)
    fitted = await fit.fit("a/m", inline_only, streaming=False)
    assert finished_at_once(fit.fit("b/m", inline_only, streaming=False)) is fitted


async def test_inline_image_within_limits_is_kept() -> None:
    request = image_request(ImagePart.from_bytes(PNG, "image/png"))
    assert await fitter(request).fit("p/m", Capabilities(), streaming=False) is request


async def test_url_is_downloaded_for_inline_only_target_once_per_call() -> None:
    downloaded = ImagePart.from_bytes(PNG, "image/png")
    fetch = Fetcher({URL: downloaded})
    request = image_request(ImagePart.from_url(URL))
    fit = fitter(request, fetch)
    inline_only = Capabilities(image_urls=False)
    first = await fit.fit("a/m", inline_only, streaming=False)
    second = await fit.fit("b/m", attrs_evolve(inline_only, context_window=10**6), streaming=False)
    assert images_of(first) == [downloaded] == images_of(second)
    assert fetch.calls == [(URL, 1000, 5.0)]
    # A target that takes URLs gets the original request.
    assert await fit.fit("c/m", Capabilities(), streaming=False) is request


async def test_failed_download_is_remembered_and_names_each_target() -> None:
    fetch = Fetcher()
    fit = fitter(image_request(ImagePart.from_url(URL)), fetch)
    inline_only = Capabilities(image_urls=False)
    for key in ("a/m1", "b/m2"):
        with pytest.raises(ImageDownloadError) as info:
            await fit.fit(key, inline_only, streaming=False)
        assert (info.value.provider, info.value.model) == tuple(key.split("/"))
        assert "SECRET" not in str(info.value)
    assert len(fetch.calls) == 1


@pytest.mark.parametrize(
    ("capabilities", "image", "match"),
    [
        (Capabilities(vision=False), ImagePart.from_bytes(PNG, "image/png"), "not accept images"),
        (
            Capabilities(image_mime_types={"image/jpeg"}),
            ImagePart.from_bytes(PNG, "image/png"),
            "takes image/jpeg images, not image/png",
        ),
        (
            Capabilities(max_image_bytes=10),
            ImagePart.from_bytes(PNG, "image/png"),
            "up to 10 bytes, and this one has 32",
        ),
        (
            Capabilities(max_image_bytes=10),
            ImagePart.from_url("data:image/png;base64," + base64.b64encode(PNG).decode()),
            "this one has 32",
        ),
        (
            Capabilities(image_mime_types={"image/png"}),
            ImagePart.from_url("https://x.example/a.heic", mime_type="image/heic"),
            "not image/heic",
        ),
    ],
)
async def test_unacceptable_image_is_refused_with_a_fix(
    capabilities: Capabilities, image: ImagePart, match: str
) -> None:
    with pytest.raises(UnsupportedRequestError, match=match) as info:
        await fitter(image_request(image)).fit("ollama/llama3", capabilities, streaming=False)
    message = str(info.value)
    assert "Registry(capabilities={'ollama/llama3'" in message
    assert "unsupported_images='placeholder'" in message
    assert info.value.provider == "ollama"


async def test_placeholder_policy_replaces_refused_images() -> None:
    request = image_request(ImagePart.from_bytes(PNG, "image/png"))
    fitted = await fitter(request, policy="placeholder").fit(
        "p/m", Capabilities(vision=False), streaming=False
    )
    assert fitted.messages[0].parts == (
        TextPart("what is this?"),
        TextPart("[image omitted: this model does not accept images]"),
    )
    assert request.messages[0].parts[1] == ImagePart.from_bytes(PNG, "image/png")


async def test_jpg_alias_is_accepted_as_jpeg() -> None:
    request = image_request(ImagePart.from_bytes(b"\xff\xd8\xff\xe0", "image/jpg"))
    capabilities = Capabilities(image_mime_types={"image/jpeg"})
    assert await fitter(request).fit("p/m", capabilities, streaming=False) is request


@pytest.mark.parametrize(
    ("request_", "capabilities", "streaming", "match"),
    [
        (Request("hi", tools=[Tool("f")]), Capabilities(tools=False), False, "tools"),
        (
            Request([Message.tool_result("call_1", "{}")]),
            Capabilities(tools=False),
            False,
            "tools",
        ),
        (Request("hi").apply(json_mode()), Capabilities(json_mode=False), False, "JSON"),
        (Request("hi", system="be brief"), Capabilities(system_prompt=False), False, "system"),
        (Request("hi"), Capabilities(streaming=False), True, "does not stream"),
    ],
)
async def test_features_the_target_lacks_are_refused(
    request_: Request, capabilities: Capabilities, streaming: bool, match: str
) -> None:
    with pytest.raises(UnsupportedRequestError, match=match):
        await fitter(request_).fit("p/m", capabilities, streaming=streaming)


def test_estimate_is_rough_and_low() -> None:
    request = Request(
        [Message.user("x" * 4000, ImagePart.from_url(URL))],
        system="s" * 400,
        tools=[Tool("lookup", "d" * 40)],
    )
    estimate = estimate_tokens(request)
    assert 1100 + 85 <= estimate <= 1100 + 85 + 40


def test_too_large_only_when_the_window_is_known() -> None:
    fit = fitter(Request("x" * 4000))
    assert fit.too_large(Capabilities()) is None
    assert fit.too_large(Capabilities(context_window=1000)) is None
    reason = fit.too_large(Capabilities(context_window=999))
    assert reason is not None
    assert "about 1000 tokens" in reason
    assert "999-token context window" in reason


# --------------------------------------------------------------------------- in the chain


def chain_of(
    *models: ScriptedModel, clock: ManualClock, fetch: Fetcher | None = None, **config: object
) -> Chain:
    tracker = HealthTracker(HealthConfig(), clock=clock)
    return Chain(
        [Target(model.key, model) for model in models],
        tracker,
        ChainConfig(**config),  # type: ignore[arg-type]
        fetch_image=fetch or Fetcher(),
    )


async def test_chain_advances_past_a_target_without_vision_with_no_penalty(
    clock: ManualClock,
) -> None:
    blind = ScriptedModel("a/text", capabilities=Capabilities(vision=False))
    seeing = ScriptedModel("b/vision")
    chain = chain_of(blind, seeing, clock=clock)
    response = await chain.generate(image_request(ImagePart.from_bytes(PNG, "image/png")))
    assert response.model == "b/vision"
    assert blind.calls == 0
    [failure] = response.failed_attempts
    assert failure.key == "a/text"
    assert isinstance(failure.error, UnsupportedRequestError)
    assert "a/text" not in await chain._tracker.snapshot()  # no health penalty


async def test_chain_sends_each_target_its_own_fitted_request(clock: ManualClock) -> None:
    downloaded = ImagePart.from_bytes(PNG, "image/png")
    fetch = Fetcher({URL: downloaded})
    inline_only = ScriptedModel(
        "a/local",
        [UnsupportedRequestError("busy", provider="a", model="local")],
        capabilities=Capabilities(image_urls=False),
    )
    inline_too = ScriptedModel("b/local", capabilities=Capabilities(image_urls=False))
    chain = chain_of(inline_only, inline_too, clock=clock, fetch=fetch)
    response = await chain.generate(image_request(ImagePart.from_url(URL)))
    assert response.model == "b/local"
    assert images_of(inline_only.requests[0]) == [downloaded]
    assert images_of(inline_too.requests[0]) == [downloaded]
    assert len(fetch.calls) == 1  # once per call, shared across attempts


async def test_chain_download_failure_moves_to_a_target_taking_urls(clock: ManualClock) -> None:
    inline_only = ScriptedModel("a/local", capabilities=Capabilities(image_urls=False))
    takes_urls = ScriptedModel("b/cloud")
    chain = chain_of(inline_only, takes_urls, clock=clock)
    request = image_request(ImagePart.from_url(URL))
    response = await chain.generate(request)
    assert response.model == "b/cloud"
    assert takes_urls.requests == [request]
    assert isinstance(response.failed_attempts[0].error, ImageDownloadError)


async def test_chain_skips_a_target_whose_context_window_is_too_small(clock: ManualClock) -> None:
    small = ScriptedModel("a/small", capabilities=Capabilities(context_window=10))
    large = ScriptedModel("b/large", capabilities=Capabilities(context_window=10_000))
    chain = chain_of(small, large, clock=clock)
    response = await chain.generate("y" * 400)
    assert response.model == "b/large"
    assert small.calls == 0
    [skip] = response.failed_attempts
    assert skip.skipped
    assert isinstance(skip.error, TargetSkippedError)
    assert "10-token context window" in str(skip.error)


async def test_chain_exhausted_when_no_target_fits(clock: ManualClock) -> None:
    chain = chain_of(
        ScriptedModel("a/m", capabilities=Capabilities(vision=False)),
        ScriptedModel("b/m", capabilities=Capabilities(context_window=1)),
        clock=clock,
    )
    with pytest.raises(ChainExhaustedError) as info:
        await chain.generate(image_request(ImagePart.from_bytes(PNG, "image/png")))
    assert [failure.key for failure in info.value.failures] == ["a/m", "b/m"]
    assert [failure.skipped for failure in info.value.failures] == [False, True]


async def test_chain_placeholder_policy_lets_a_blind_head_answer(clock: ManualClock) -> None:
    blind = ScriptedModel("a/text", capabilities=Capabilities(vision=False))
    chain = chain_of(blind, clock=clock, unsupported_images="placeholder")
    response = await chain.generate(image_request(ImagePart.from_bytes(PNG, "image/png")))
    assert response.model == "a/text"
    assert "[image omitted" in blind.requests[0].messages[0].parts[1].text  # type: ignore[union-attr]


async def test_stream_skips_a_target_that_cannot_stream(clock: ManualClock) -> None:
    no_stream = ScriptedModel("a/batch", capabilities=Capabilities(streaming=False))
    streams = ScriptedModel("b/live")
    chain = chain_of(no_stream, streams, clock=clock)
    async with await chain.stream("hi") as stream:
        response = await stream.collect()
    assert response.model == "b/live"
    assert no_stream.calls == 0
    # generate() still uses it.
    assert (await chain.generate("hi")).model == "a/batch"


async def test_target_override_wins_over_the_model(clock: ManualClock) -> None:
    model = ScriptedModel("a/m")
    target = Target("a/m", model, Capabilities(vision=False))
    assert target.capabilities == Capabilities(vision=False)
    chain = Chain(
        [target, Target("b/m", ScriptedModel("b/m"))],
        HealthTracker(HealthConfig(), clock=clock),
        ChainConfig(),
    )
    assert chain.capabilities == Capabilities(vision=False)
    response = await chain.generate(image_request(ImagePart.from_bytes(PNG, "image/png")))
    assert response.model == "b/m"


def attrs_evolve(capabilities: Capabilities, **changes: object) -> Capabilities:
    import attrs

    return attrs.evolve(capabilities, **changes)


async def test_the_refusal_names_the_missing_feature_not_another() -> None:
    lacking_all = Capabilities(tools=False, json_mode=False, system_prompt=False)
    with pytest.raises(UnsupportedRequestError, match="JSON output"):
        await fitter(Request("hi").apply(json_mode())).fit("p/m", lacking_all, streaming=False)
    with pytest.raises(UnsupportedRequestError, match="system prompt"):
        await fitter(Request("hi", system="s")).fit("p/m", lacking_all, streaming=False)
