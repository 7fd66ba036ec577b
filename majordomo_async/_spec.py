"""The spec grammar: from `"fast, anthropic/claude-sonnet-4-5"` to ordered, unique targets.

```
spec    := element ("," element)*
element := provider "/" model-id     split on the first "/": model ids may contain "/"
         | alias                     a bare name, expanded inline and recursively
```

Whitespace around elements and around the `/` is ignored; empty elements are an error.
Provider and alias names are case-insensitive and treat `_` and `-` alike; model ids are
kept exactly. A target that alias expansion repeats appears once, at its first position.
"""

from __future__ import annotations

from collections.abc import Mapping

from ._dsn import canonical_name
from ._exceptions import AliasCycleError, SpecError

__all__ = ["parse_spec", "spec_type_message"]


def parse_spec(spec: str, aliases: Mapping[str, str]) -> list[tuple[str, str]]:
    """Expand `spec` into `(provider, model_id)` pairs, in order, without duplicates.

    Args:
        spec: the spec string.
        aliases: canonical alias name -> spec.

    Raises:
        SpecError: the spec is empty, has an empty element, or names an unknown alias.
        AliasCycleError: an alias expands to itself; the error names the cycle.
    """
    if not isinstance(spec, str):
        raise SpecError(spec_type_message(spec))
    targets: dict[tuple[str, str], None] = {}
    _expand(spec, aliases, (), targets, spec, set())
    return list(targets)


def spec_type_message(spec: object) -> str:
    """What `SpecError` says about a spec that is not a string (a list of targets?)."""
    return (
        f'a model spec is a string such as "openai/gpt-4o,anthropic/claude-sonnet-4-5" '
        f"(targets joined by commas, or an alias name), not {type(spec).__name__}"
    )


_MAX_ALIAS_DEPTH = 64
"""Aliases of aliases this deep are a configuration mistake; deeper would hit Python's
recursion limit."""


def _expand(
    spec: str,
    aliases: Mapping[str, str],
    stack: tuple[str, ...],
    out: dict[tuple[str, str], None],
    original: str,
    expanded: set[str],
) -> None:
    where = f" (from alias {stack[-1]!r})" if stack else ""
    if not spec.strip():
        raise SpecError(f"empty model spec{where}")
    for position, raw in enumerate(spec.split(","), start=1):
        element = raw.strip()
        if not element:
            raise SpecError(f"empty element #{position} in model spec {spec!r}{where}")
        provider, slash, model_id = element.partition("/")
        if slash:
            provider, model_id = canonical_name(provider), model_id.strip()
            if not provider or not model_id:
                raise SpecError(
                    f"element {element!r} of model spec {spec!r}{where} needs both a provider "
                    "and a model id: provider/model-id"
                )
            out.setdefault((provider, model_id), None)
            continue
        name = canonical_name(element)
        if name in stack:
            raise AliasCycleError((*stack[stack.index(name) :], name))
        if name in expanded:
            # Its targets are already in `out`, at earlier positions: expanding a shared
            # alias again would add nothing and cost exponential time on deep diamonds.
            continue
        expansion = aliases.get(name)
        if expansion is None:
            raise SpecError(
                f"unknown alias {element!r} in model spec {original!r}{where}: register it "
                "with Registry.register_alias, or write provider/model-id"
            )
        if len(stack) >= _MAX_ALIAS_DEPTH:
            raise SpecError(
                f"aliases nest more than {_MAX_ALIAS_DEPTH} levels deep in model spec "
                f"{original!r} (at {element!r}): flatten the alias definitions"
            )
        _expand(expansion, aliases, (*stack, name), out, original, expanded)
        expanded.add(name)
