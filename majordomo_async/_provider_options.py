"""The escape hatch: extra body fields and headers for one provider family's wire.

`provider_options("openai", body={"seed": 7})` sends `seed` only to OpenAI-compatible
targets; `provider_options("anthropic", body={"top_k": 5})` only to Anthropic. A field
released yesterday can be sent today, without a release of this library. The values
never appear in a repr, a log line or an error: only the field names do.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from ._exceptions import ConfigurationError

__all__ = ["ProviderOptions", "merge_body"]


def _body(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(isinstance(key, str) for key in value):
        raise ConfigurationError("provider_options body must be a mapping of field names")
    return dict(value)


def _headers(value: Mapping[str, str] | None) -> Mapping[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(
        isinstance(key, str) and isinstance(item, str) for key, item in value.items()
    ):
        raise ConfigurationError("provider_options headers must map names to strings")
    return dict(value)


@attrs.frozen(repr=False)
class ProviderOptions:
    """Extra wire fields for one provider family (see `provider_options()`)."""

    body: Mapping[str, Any] = attrs.field(factory=dict, converter=_body, hash=False)
    """Merged into the request body, recursively (objects merge; anything else, yours
    wins). `None` removes a field the library would send."""
    headers: Mapping[str, str] = attrs.field(factory=dict, converter=_headers, hash=False)
    """Added to the request headers (they cannot replace the credential's header)."""

    def merged(self, other: ProviderOptions) -> ProviderOptions:
        """These options with `other`'s on top."""
        return ProviderOptions(
            merge_body(dict(self.body), other.body), {**self.headers, **other.headers}
        )

    def __repr__(self) -> str:
        # Names only: values may be secrets (a header) or large (a schema).
        return f"ProviderOptions(body={sorted(self.body)}, headers={sorted(self.headers)})"


def merge_body(body: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """`body` with `extra` merged in, in place: nested objects merge key by key,
    anything else in `extra` replaces, and a `None` in `extra` removes the field."""
    for key, value in extra.items():
        if value is None:
            body.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(body.get(key), dict):
            body[key] = merge_body(dict(body[key]), value)
        else:
            body[key] = value
    return body
