"""aioresponses, made to work with the installed aiohttp.

aioresponses 0.7.9 builds `ClientResponse` objects without the `stream_writer` argument
that aiohttp 3.14 requires, so every mocked reply fails with a TypeError. Passing this
class as `response_class` supplies a harmless one.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import aiohttp
from yarl import URL


class CompatResponse(aiohttp.ClientResponse):
    """A `ClientResponse` that aioresponses can construct."""

    def __init__(self, method: str, url: URL, **kwargs: Any) -> None:
        kwargs.setdefault("stream_writer", SimpleNamespace(output_size=0))
        super().__init__(method, url, **kwargs)
