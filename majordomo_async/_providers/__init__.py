"""Built-in providers and DSN schemes.

Each wire format lives in its own module; this package only maps scheme names and
built-in provider names to factories, importing a module when it is first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .._context import ProviderContext, SchemeFactory
    from .._dsn import DSN
    from .._protocols import Provider

__all__ = ["builtin_provider", "builtin_provider_names", "builtin_schemes"]


def _fake(name: str, dsn: DSN, context: ProviderContext) -> Provider:
    from .fake import fake_factory

    return fake_factory(name, dsn, context)


_SCHEMES: dict[str, SchemeFactory] = {
    "fake": _fake,
}

# Built-in providers: registry name -> the DSN that builds them when nothing overrides it.
_BUILTINS: dict[str, str] = {
    "fake": "fake://",
}


def builtin_schemes() -> dict[str, SchemeFactory]:
    """A fresh copy of the built-in scheme -> factory table."""
    return dict(_SCHEMES)


def builtin_provider_names() -> tuple[str, ...]:
    """Names of the providers every Registry has without configuration."""
    return tuple(_BUILTINS)


def builtin_provider(name: str, context: ProviderContext) -> Provider:
    """Build built-in provider `name` (no I/O)."""
    from .._dsn import DSN

    dsn = DSN.parse(_BUILTINS[name])
    return _SCHEMES[dsn.scheme](name, dsn, context)
