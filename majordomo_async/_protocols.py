"""The adapter contract: `AsyncModel` and `Provider`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from ._capabilities import Capabilities
    from ._request import Option, Request
    from ._response import Response
    from ._stream import Stream

__all__ = ["AsyncModel", "ModelLister", "Provider"]


@runtime_checkable
class AsyncModel(Protocol):
    """Anything that answers requests: one provider's model, or a failover `Chain`."""

    @property
    def capabilities(self) -> Capabilities:
        """What this model accepts (a chain reports its head target's)."""
        ...

    async def generate(self, request: Request | str, *options: Option) -> Response:
        """Answer `request` (a str is one user message) with options applied."""
        ...

    async def stream(self, request: Request | str, *options: Option) -> Stream:
        """Start answering `request` as a stream of events.

        The returned `Stream` is open; use it with `async with` so it is always closed.
        """
        ...


@runtime_checkable
class Provider(Protocol):
    """A named source of models: one API endpoint with one credential."""

    @property
    def name(self) -> str:
        """The registry name ("openai", "m1"): the first half of each target key."""
        ...

    def model(self, model_id: str) -> AsyncModel:
        """The model `model_id`. Cheap and without I/O: no request is made here."""
        ...


@runtime_checkable
class ModelLister(Protocol):
    """A provider that can list the models it serves."""

    async def list_models(self) -> list[str]:
        """The model ids the provider serves for this credential."""
        ...
