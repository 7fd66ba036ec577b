"""Built-in providers and DSN schemes.

Each wire format lives in its own module; this package only maps scheme names and
built-in provider names to factories, importing a module when it is first used (so
`import majordomo_async` pays for no provider it does not use).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .._context import ProviderContext, SchemeFactory
    from .._dsn import DSN
    from .._protocols import Provider

__all__ = ["builtin_provider", "builtin_provider_names", "builtin_schemes"]


def _lazy(module: str, factory: str) -> SchemeFactory:
    """A scheme factory that imports `module` on first use and calls its `factory`."""

    def build(name: str, dsn: DSN, context: ProviderContext) -> Provider:
        real: SchemeFactory = getattr(importlib.import_module(f".{module}", __name__), factory)
        return real(name, dsn, context)

    return build


def _lazy_preset(preset: str) -> SchemeFactory:
    """The scheme factory of an OpenAI-compatible preset, importing the module on use."""

    def build(name: str, dsn: DSN, context: ProviderContext) -> Provider:
        from .openai import openai_compatible_factory

        return openai_compatible_factory(preset)(name, dsn, context)

    return build


# OpenAI-compatible servers with a preset (base URL, key variable, wire quirks); kept in
# step with `openai.OPENAI_COMPATIBLE_PRESETS` by tests/test_provider_wiring.py.
_OPENAI_PRESETS = (
    "groq",
    "deepseek",
    "openrouter",
    "together",
    "mistral",
    "xai",
    "fireworks",
    "vllm",
    "llamacpp",
    "lmstudio",
)

# `+http` / `+https` variants pick the transport for a self-hosted or proxied endpoint.
_SCHEMES: dict[str, SchemeFactory] = {
    "fake": _lazy("fake", "fake_factory"),
    "anthropic": _lazy("anthropic", "anthropic_factory"),
    "anthropic+http": _lazy("anthropic", "anthropic_factory"),
    "anthropic+https": _lazy("anthropic", "anthropic_factory"),
    "gemini": _lazy("gemini", "gemini_factory"),
    "gemini+http": _lazy("gemini", "gemini_factory"),
    "gemini+https": _lazy("gemini", "gemini_factory"),
    "google": _lazy("gemini", "gemini_factory"),
    "ollama": _lazy("ollama", "ollama_factory"),
    "ollama+http": _lazy("ollama", "ollama_factory"),
    "ollama+https": _lazy("ollama", "ollama_factory"),
    "openai": _lazy("openai", "openai_factory"),
    "openai+http": _lazy("openai", "openai_factory"),
    "openai+https": _lazy("openai", "openai_factory"),
    **{f"azure{t}": _lazy("openai", "azure_factory") for t in ("", "+http", "+https")},
    **{
        f"{preset}{transport}": _lazy_preset(preset)
        for preset in _OPENAI_PRESETS
        for transport in ("", "+http", "+https")
    },
}

# Built-in providers: registry name -> the DSN that builds them when nothing overrides it
# (`LLM_<NAME>` replaces a built-in). Keys come from the usual environment variables.
_BUILTINS: dict[str, str] = {
    "fake": "fake://",
    "anthropic": "anthropic://",
    "gemini": "gemini://",
    "google": "gemini://",
    "ollama": "ollama://",
    "openai": "openai://",
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
