"""The spec grammar: from `"fast, anthropic/claude-sonnet-4-5"` to ordered positions.

```
spec     := position ("," position)*
position := member ("|" member)*      a balanced group when it has two members or more
member   := provider "/" model-id ["*" weight]
          | alias                     a bare name, expanded inline and recursively
```

A chain tries its positions head to tail; the members of a group are equivalent targets
(one model on several deployments), ordered per call by the chain's strategy. Model ids are
split from the provider on the first "/" (they may contain "/"), and kept exactly, except
for a trailing `*N` (a positive number): the member's weight in its group (default 1).
An alias may expand to a target, a group or a chain; inside a group only to targets or
groups (a group of chains has no order to follow).

Whitespace around elements, `|`, `/` and `*` is ignored; empty elements are an error.
Provider and alias names are case-insensitive and treat `_` and `-` alike. A target that
appears twice appears once, at its first position (a group left empty by that is dropped).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

import attrs

from ._dsn import canonical_name
from ._exceptions import AliasCycleError, SpecError

__all__ = ["Member", "parse_positions", "parse_spec", "spec_type_message"]


@attrs.frozen
class Member:
    """One target of a spec position, with its weight in its group."""

    provider: str
    model_id: str
    weight: float = 1.0

    @property
    def key(self) -> str:
        """ "provider/model-id"."""
        return f"{self.provider}/{self.model_id}"


def parse_positions(spec: str, aliases: Mapping[str, str]) -> list[tuple[Member, ...]]:
    """Expand `spec` into positions, in order: each a tuple of one member (a target) or
    more (a balanced group), every target appearing once.

    Args:
        spec: the spec string.
        aliases: canonical alias name -> spec.

    Raises:
        SpecError: the spec is empty, has an empty element, a bad weight, names an unknown
            alias, or puts a chain inside a group.
        AliasCycleError: an alias expands to itself; the error names the cycle.
    """
    if not isinstance(spec, str):
        raise SpecError(spec_type_message(spec))
    expander = _Expander(aliases, spec)
    positions = expander.chain(spec, ())
    seen: set[str] = set()
    result: list[tuple[Member, ...]] = []
    for position in positions:
        kept: list[Member] = []
        for member in position:
            if member.key not in seen:
                seen.add(member.key)
                kept.append(member)
        if kept:
            result.append(tuple(kept))
    return result


def parse_spec(spec: str, aliases: Mapping[str, str]) -> list[tuple[str, str]]:
    """Every target of `spec` as `(provider, model_id)` pairs, in order (groups flattened)."""
    return [
        (member.provider, member.model_id)
        for position in parse_positions(spec, aliases)
        for member in position
    ]


def spec_type_message(spec: object) -> str:
    """What `SpecError` says about a spec that is not a string (a list of targets?)."""
    return (
        f'a model spec is a string such as "openai/gpt-4o,anthropic/claude-sonnet-4-5" '
        f"(targets joined by commas, or an alias name), not {type(spec).__name__}"
    )


_MAX_ALIAS_DEPTH = 64
"""Aliases of aliases this deep are a configuration mistake; deeper would hit Python's
recursion limit."""

_WEIGHT = re.compile(r"\*\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*\Z")
"""A member's trailing weight: `*3`, `*0.5`."""


class _Expander:
    """Expands a spec and its aliases; each alias is expanded once per spec (a shared
    alias on a deep diamond would otherwise cost exponential time)."""

    def __init__(self, aliases: Mapping[str, str], original: str) -> None:
        self.aliases = aliases
        self.original = original
        self.expanded: dict[str, list[tuple[Member, ...]]] = {}

    def chain(self, spec: str, stack: tuple[str, ...]) -> list[tuple[Member, ...]]:
        where = f" (from alias {stack[-1]!r})" if stack else ""
        if not spec.strip():
            raise SpecError(f"empty model spec{where}")
        positions: list[tuple[Member, ...]] = []
        for number, raw in enumerate(spec.split(","), start=1):
            element = raw.strip()
            if not element:
                raise SpecError(f"empty element #{number} in model spec {spec!r}{where}")
            if "|" not in element:
                positions.extend(self.member(element, spec, stack))
                continue
            group: list[Member] = []
            for part in element.split("|"):
                part = part.strip()
                if not part:
                    raise SpecError(
                        f"empty member in group {element!r} of model spec {spec!r}{where}"
                    )
                expansion = self.member(part, spec, stack)
                if len(expansion) > 1:
                    raise SpecError(
                        f"alias {part!r} in group {element!r} of model spec {self.original!r} "
                        f"is a chain of {len(expansion)} positions: a group's members must be "
                        'targets or groups ("a/x|b/y"), not chains'
                    )
                group.extend(expansion[0] if expansion else ())
            positions.append(tuple(group))
        return positions

    def member(self, element: str, spec: str, stack: tuple[str, ...]) -> list[tuple[Member, ...]]:
        """One element: a target (one position of one member) or an alias's positions."""
        where = f" (from alias {stack[-1]!r})" if stack else ""
        provider, slash, model_id = element.partition("/")
        if slash:
            weight = 1.0
            if (match := _WEIGHT.search(model_id)) is not None:
                weight = float(match.group(1))
                model_id = model_id[: match.start()]
                if not (weight > 0 and math.isfinite(weight)):
                    raise SpecError(
                        f"element {element!r} of model spec {spec!r}{where}: a weight "
                        "(*N after the model id) must be a positive number"
                    )
            provider, model_id = canonical_name(provider), model_id.strip()
            if not provider or not model_id:
                raise SpecError(
                    f"element {element!r} of model spec {spec!r}{where} needs both a provider "
                    "and a model id: provider/model-id"
                )
            return [(Member(provider, model_id, weight),)]
        name = canonical_name(element)
        if name in stack:
            raise AliasCycleError((*stack[stack.index(name) :], name))
        known = self.expanded.get(name)
        if known is not None:
            return known
        expansion = self.aliases.get(name)
        if expansion is None:
            raise SpecError(
                f"unknown alias {element!r} in model spec {self.original!r}{where}: register "
                "it with Registry.register_alias, or write provider/model-id"
            )
        if len(stack) >= _MAX_ALIAS_DEPTH:
            raise SpecError(
                f"aliases nest more than {_MAX_ALIAS_DEPTH} levels deep in model spec "
                f"{self.original!r} (at {element!r}): flatten the alias definitions"
            )
        positions = self.chain(expansion, (*stack, name))
        self.expanded[name] = positions
        return positions
