"""The spec grammar: targets, chains, aliases (inline, recursive, de-duplicated) and cycles."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator, Mapping

import pytest
from hypothesis import given
from hypothesis import strategies as st

from majordomo_async._exceptions import AliasCycleError, ConfigurationError, SpecError
from majordomo_async._spec import parse_spec

# --------------------------------------------------------------------------- plain targets


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        pytest.param("openai/gpt-4o", [("openai", "gpt-4o")], id="single-target"),
        pytest.param(
            "openai/gpt-4o,anthropic/claude-sonnet-4-5,ollama/llama3",
            [("openai", "gpt-4o"), ("anthropic", "claude-sonnet-4-5"), ("ollama", "llama3")],
            id="chain-order-kept",
        ),
        pytest.param(
            "anthropic/claude-sonnet-4-5,openai/gpt-4o",
            [("anthropic", "claude-sonnet-4-5"), ("openai", "gpt-4o")],
            id="chain-order-kept-reversed",
        ),
        pytest.param(
            "openrouter/meta-llama/llama-3-70b",
            [("openrouter", "meta-llama/llama-3-70b")],
            id="model-id-with-slash",
        ),
        pytest.param(
            "together/a/b/c/, groq/x//y",
            [("together", "a/b/c/"), ("groq", "x//y")],
            id="model-id-slashes-kept-exactly",
        ),
        pytest.param(
            "  openai/gpt-4o ,\tanthropic/claude\n",
            [("openai", "gpt-4o"), ("anthropic", "claude")],
            id="whitespace-around-elements",
        ),
        pytest.param(
            "openai / gpt-4o,  anthropic\t/\tclaude",
            [("openai", "gpt-4o"), ("anthropic", "claude")],
            id="whitespace-around-slash",
        ),
        pytest.param("My_Prov/x", [("my-prov", "x")], id="provider-canonicalised"),
        pytest.param("OPENAI/gpt-4o", [("openai", "gpt-4o")], id="provider-lower-cased"),
        pytest.param("openai/GPT-4o-Mini", [("openai", "GPT-4o-Mini")], id="model-case-kept"),
        pytest.param("openai/my_model", [("openai", "my_model")], id="model-underscore-kept"),
        pytest.param(
            "openai/gpt 4o turbo", [("openai", "gpt 4o turbo")], id="inner-whitespace-kept"
        ),
        pytest.param(
            "fake/flaky?script=503*2+ok&latency=0.5",
            [("fake", "flaky?script=503*2+ok&latency=0.5")],
            id="model-id-with-query",
        ),
        pytest.param(
            "openai/gpt-4o, OpenAI/gpt-4o, open_ai/gpt-4o, open-ai/gpt-4o",
            [("openai", "gpt-4o"), ("open-ai", "gpt-4o")],
            id="duplicate-targets-once-at-first-position",
        ),
        pytest.param(
            "openai/gpt-4o, openai/GPT-4o",
            [("openai", "gpt-4o"), ("openai", "GPT-4o")],
            id="model-ids-differing-in-case-are-distinct",
        ),
    ],
)
def test_plain_targets(spec: str, expected: list[tuple[str, str]]) -> None:
    """Provider/model elements parse in order, trimmed, provider canonicalised, model kept."""
    assert parse_spec(spec, {}) == expected


def test_result_is_a_fresh_list_of_tuples() -> None:
    """parse_spec returns a new list of 2-tuples each call, and does not touch the aliases."""
    aliases = {"fast": "openai/gpt-4o-mini"}
    first = parse_spec("fast, openai/gpt-4o", aliases)
    second = parse_spec("fast, openai/gpt-4o", aliases)
    assert first == second == [("openai", "gpt-4o-mini"), ("openai", "gpt-4o")]
    assert first is not second
    assert all(type(target) is tuple and len(target) == 2 for target in first)
    first.append(("x", "y"))
    assert parse_spec("fast, openai/gpt-4o", aliases) == second
    assert aliases == {"fast": "openai/gpt-4o-mini"}


# --------------------------------------------------------------------------- malformed specs


@pytest.mark.parametrize(
    ("spec", "pattern"),
    [
        pytest.param("", r"empty model spec", id="empty"),
        pytest.param("   \t\n", r"empty model spec", id="whitespace-only"),
        pytest.param("a/b,,c/d", r"#2", id="empty-middle-element"),
        pytest.param("a/b, ,c/d", r"#2", id="blank-middle-element"),
        pytest.param("a/b,", r"#2", id="trailing-comma"),
        pytest.param("a/b, c/d ,  ", r"#3", id="trailing-comma-and-space"),
        pytest.param(",a/b", r"#1", id="leading-comma"),
        pytest.param(",", r"#1", id="lone-comma"),
        pytest.param("openai/", r"provider/model-id", id="provider-without-model"),
        pytest.param("openai/   ", r"provider/model-id", id="provider-with-blank-model"),
        pytest.param("/gpt-4o", r"provider/model-id", id="model-without-provider"),
        pytest.param("  /gpt-4o", r"provider/model-id", id="blank-provider"),
        pytest.param("/", r"provider/model-id", id="lone-slash"),
        pytest.param("a/b, /c", r"'/c'", id="second-element-missing-provider"),
    ],
)
def test_malformed_specs_raise_spec_error(spec: str, pattern: str) -> None:
    """Empty specs, empty elements and half targets raise SpecError saying which element."""
    with pytest.raises(SpecError, match=pattern) as info:
        parse_spec(spec, {})
    assert not isinstance(info.value, AliasCycleError)


def test_spec_error_is_a_configuration_and_value_error() -> None:
    """SpecError can be caught as ConfigurationError and as ValueError."""
    with pytest.raises(SpecError) as info:
        parse_spec("", {})
    assert isinstance(info.value, ConfigurationError)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("spec", [None, 42, b"openai/gpt-4o", ["openai/gpt-4o"]])
def test_non_string_spec_raises_spec_error(spec: object) -> None:
    """A spec that is not a str raises SpecError naming the type it got."""
    with pytest.raises(SpecError, match=type(spec).__name__):
        parse_spec(spec, {})  # type: ignore[arg-type]


# --------------------------------------------------------------------------- aliases


def test_alias_expands_inline_in_place() -> None:
    """An alias's targets replace the alias at its position in the chain."""
    aliases = {"cheap": "ollama/llama3, groq/llama-3-8b"}
    assert parse_spec("openai/gpt-4o, cheap, anthropic/claude", aliases) == [
        ("openai", "gpt-4o"),
        ("ollama", "llama3"),
        ("groq", "llama-3-8b"),
        ("anthropic", "claude"),
    ]


def test_aliases_expand_recursively_in_place() -> None:
    """Aliases naming aliases expand depth first, each at the position that named it."""
    aliases = {
        "fast": "a/1, cheap, b/2",
        "cheap": "c/3, local",
        "local": "ollama/llama3",
    }
    assert parse_spec("x/0, fast, y/9", aliases) == [
        ("x", "0"),
        ("a", "1"),
        ("c", "3"),
        ("ollama", "llama3"),
        ("b", "2"),
        ("y", "9"),
    ]


def test_duplicates_from_aliases_appear_once_at_first_position() -> None:
    """A target repeated by alias expansion keeps only its first position."""
    aliases = {"fast": "openai/gpt-4o-mini, anthropic/haiku", "smart": "openai/gpt-4o, fast"}
    assert parse_spec("anthropic/haiku, smart, fast, openai/gpt-4o", aliases) == [
        ("anthropic", "haiku"),
        ("openai", "gpt-4o"),
        ("openai", "gpt-4o-mini"),
    ]


def test_alias_used_twice_is_not_a_cycle() -> None:
    """Naming the same alias twice in a chain is a repeat, not a cycle."""
    assert parse_spec("fast, fast", {"fast": "a/1"}) == [("a", "1")]


@pytest.mark.parametrize("name", ["fast", "FAST", "Fast", "  fast  "])
def test_alias_names_are_case_insensitive(name: str) -> None:
    """Alias names match regardless of case and surrounding whitespace."""
    assert parse_spec(f"{name}, b/2", {"fast": "a/1"}) == [("a", "1"), ("b", "2")]


@pytest.mark.parametrize("name", ["my-alias", "my_alias", "MY_ALIAS", "My-Alias"])
def test_alias_names_treat_underscore_and_dash_alike(name: str) -> None:
    """`my_alias`, `MY_ALIAS` and `my-alias` all name the alias registered as `my-alias`."""
    assert parse_spec(name, {"my-alias": "a/1"}) == [("a", "1")]


def test_alias_expansion_canonicalises_its_providers() -> None:
    """Targets inside an alias's spec are canonicalised like top-level ones."""
    assert parse_spec("fast", {"fast": " My_Prov / Model_X "}) == [("my-prov", "Model_X")]


def test_unknown_alias_mentions_register_alias() -> None:
    """A bare name that is not an alias raises SpecError pointing at register_alias."""
    with pytest.raises(SpecError, match="register_alias") as info:
        parse_spec("openai/gpt-4o, nosuch", {"fast": "a/1"})
    assert "nosuch" in str(info.value)
    assert not isinstance(info.value, AliasCycleError)


def test_unknown_alias_inside_an_alias_names_the_alias() -> None:
    """An unknown name inside an alias's expansion names the alias it came from."""
    with pytest.raises(SpecError, match="register_alias") as info:
        parse_spec("fast", {"fast": "a/1, missing"})
    message = str(info.value)
    assert "missing" in message
    assert "'fast'" in message


@pytest.mark.parametrize(
    ("expansion", "pattern"),
    [
        ("", "empty model spec"),
        ("a/1,,b/2", "#2"),
        ("a/1, /b", "provider/model-id"),
    ],
)
def test_malformed_alias_expansion_names_the_alias(expansion: str, pattern: str) -> None:
    """A malformed alias expansion raises SpecError naming the alias it came from."""
    with pytest.raises(SpecError, match=pattern) as info:
        parse_spec("x/0, broken", {"broken": expansion})
    assert "from alias 'broken'" in str(info.value)


# --------------------------------------------------------------------------- cycles


@pytest.mark.parametrize(
    ("spec", "aliases", "cycle"),
    [
        pytest.param("a", {"a": "b", "b": "a"}, ("a", "b", "a"), id="two-step"),
        pytest.param("b", {"a": "b", "b": "a"}, ("b", "a", "b"), id="two-step-from-b"),
        pytest.param("a", {"a": "a"}, ("a", "a"), id="self-cycle"),
        pytest.param("a", {"a": "x/1, a"}, ("a", "a"), id="self-cycle-after-a-target"),
        pytest.param(
            "p/m, fast",
            {"fast": "cheap", "cheap": "q/n, slow", "slow": "x/1, cheap"},
            ("cheap", "slow", "cheap"),
            id="cycle-deep-in-a-chain-excludes-the-entry-path",
        ),
        pytest.param(
            "a",
            {"a": "b", "b": "c", "c": "d", "d": "b"},
            ("b", "c", "d", "b"),
            id="cycle-reached-through-a-prefix",
        ),
        pytest.param("A", {"a": "My_B", "my-b": "a"}, ("a", "my-b", "a"), id="names-canonicalised"),
    ],
)
def test_alias_cycles(spec: str, aliases: dict[str, str], cycle: tuple[str, ...]) -> None:
    """An alias that expands to itself raises AliasCycleError naming exactly the cycle."""
    with pytest.raises(AliasCycleError) as info:
        parse_spec(spec, aliases)
    assert info.value.cycle == cycle
    assert str(info.value) == "alias cycle: " + " -> ".join(cycle)
    assert isinstance(info.value, SpecError)


def test_two_step_cycle_message() -> None:
    """The a -> b -> a cycle is rendered as "a -> b -> a" in the message."""
    with pytest.raises(AliasCycleError, match=re.escape("a -> b -> a")):
        parse_spec("a", {"a": "b", "b": "a"})


def test_diamond_is_not_a_cycle() -> None:
    """Two aliases sharing a third is fine: the shared targets appear once."""
    aliases = {"top": "left, right", "left": "l/1, shared", "right": "shared, r/2", "shared": "s/0"}
    assert parse_spec("top", aliases) == [("l", "1"), ("s", "0"), ("r", "2")]


def test_alias_reused_in_sibling_branches_is_not_a_cycle() -> None:
    """An alias met again after its own expansion finished is not on the stack."""
    aliases = {"a": "b, c", "b": "x/1", "c": "b, y/2"}
    assert parse_spec("a, b, c", aliases) == [("x", "1"), ("y", "2")]


# --------------------------------------------------------------------------- properties

names = st.from_regex(r"[a-z][a-z0-9-]{0,10}", fullmatch=True)
_WEIGHT_TAIL = re.compile(r"\*\s*([0-9]+(\.[0-9]*)?|\.[0-9]+)\s*\Z")
# Model ids: printable, no ',' or '|', no leading/trailing whitespace, not empty, and not
# ending in what reads as a weight ("*2").
model_ids = st.text(
    st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters=",|"),
    min_size=1,
    max_size=20,
).filter(lambda text: text == text.strip() and text != "" and not _WEIGHT_TAIL.search(text))


@given(st.text(), st.dictionaries(st.text(max_size=8), st.text(max_size=30), max_size=5))
def test_arbitrary_input_returns_targets_or_raises_spec_error(
    spec: str, aliases: dict[str, str]
) -> None:
    """For any text and alias map, parse_spec returns targets or raises SpecError, nothing else."""
    try:
        targets = parse_spec(spec, aliases)
    except SpecError:
        return
    assert targets
    assert len(set(targets)) == len(targets)
    for provider, model_id in targets:
        assert provider and model_id
        assert provider == provider.strip() and model_id == model_id.strip()
        assert "," not in provider + model_id


spec_alphabet = st.text(alphabet="ab_AB/,| *2\t", max_size=24)


@given(spec_alphabet, st.dictionaries(st.sampled_from(["a", "b", "a-b", "ab"]), spec_alphabet))
def test_dense_grammar_input_returns_targets_or_raises_spec_error(
    spec: str, aliases: dict[str, str]
) -> None:
    """Specs and aliases drawn from the grammar's own characters never raise other errors."""
    try:
        targets = parse_spec(spec, aliases)
    except AliasCycleError as exc:
        assert exc.cycle[0] == exc.cycle[-1]
        assert all(name in aliases for name in exc.cycle)
        return
    except SpecError:
        return
    assert targets
    assert len(set(targets)) == len(targets)
    for provider, model_id in targets:
        assert provider and model_id == model_id.strip() and model_id
        assert provider == provider.lower().replace("_", "-")


@given(st.lists(st.tuples(names, model_ids), min_size=1, max_size=8))
def test_generated_chains_parse_back_deduplicated_in_order(
    pairs: list[tuple[str, str]],
) -> None:
    """Joining generated `p/m` pairs with ', ' parses back to them, de-duplicated, in order."""
    spec = ", ".join(f"{provider}/{model_id}" for provider, model_id in pairs)
    assert parse_spec(spec, {}) == list(dict.fromkeys(pairs))


Target = tuple[str, str]
Node = str | Target
"""An alias name, or a (provider, model-id) leaf."""
Graph = dict[str, list[Node]]
Dag = tuple[str, dict[str, str], Graph]


def _variants(name: str) -> st.SearchStrategy[str]:
    """Spellings of an alias name that must all resolve to it."""
    return st.sampled_from([name, name.upper(), name.replace("-", "_"), f"  {name} "])


@st.composite
def alias_dags(draw: st.DrawFn) -> Dag:
    """A random acyclic alias graph: alias i may only name aliases j > i, or targets."""
    count = draw(st.integers(1, 6))
    alias_names = [f"al-{i}" for i in range(count)]
    leaves = draw(st.lists(st.tuples(names, names), min_size=1, max_size=5))
    graph: Graph = {}
    aliases: dict[str, str] = {}
    for index, name in enumerate(alias_names):
        later = alias_names[index + 1 :]
        choices: st.SearchStrategy[Node] = st.sampled_from(leaves)
        if later:
            choices |= st.sampled_from(later)
        children = draw(st.lists(choices, max_size=3))
        if not children:
            children = [draw(st.sampled_from(leaves))]
        graph[name] = children
        aliases[name] = ", ".join(
            draw(_variants(child)) if isinstance(child, str) else f"{child[0]}/{child[1]}"
            for child in children
        )
    everything: st.SearchStrategy[Node] = st.sampled_from(alias_names) | st.sampled_from(leaves)
    top = draw(st.lists(everything, min_size=1))
    spec = ", ".join(
        draw(_variants(item)) if isinstance(item, str) else f"{item[0]}/{item[1]}" for item in top
    )
    graph[""] = top
    return spec, aliases, graph


def _reference_expansion(graph: Mapping[str, list[Node]], node: str) -> Iterator[Target]:
    for child in graph[node]:
        if isinstance(child, str):
            yield from _reference_expansion(graph, child)
        else:
            yield child


@given(alias_dags())
def test_acyclic_alias_graphs_expand_to_leaf_targets(
    dag: Dag,
) -> None:
    """Random acyclic alias graphs terminate and yield exactly the leaf targets, in DFS order."""
    spec, aliases, graph = dag
    targets = parse_spec(spec, aliases)
    leaves = {
        child for children in graph.values() for child in children if isinstance(child, tuple)
    }
    assert set(targets) <= leaves
    assert targets == list(dict.fromkeys(_reference_expansion(graph, "")))


@given(
    st.integers(1, 6).flatmap(
        lambda n: st.tuples(
            st.just(n),
            st.lists(st.lists(st.integers(0, n - 1), max_size=3), min_size=n, max_size=n),
            st.integers(0, n - 1),
        )
    )
)
def test_cyclic_alias_graphs_report_a_real_cycle(
    graph_spec: tuple[int, list[list[int]], int],
) -> None:
    """In any alias graph, parse succeeds iff no cycle is reachable, else names a real one."""
    count, edges, start = graph_spec
    name = [f"n{i}" for i in range(count)]
    aliases = {
        name[i]: ", ".join([f"leaf/{i}", *(name[j] for j in edges[i])]) for i in range(count)
    }

    def reaches_cycle(node: int, path: tuple[int, ...]) -> bool:
        if node in path:
            return True
        return any(reaches_cycle(child, (*path, node)) for child in edges[node])

    try:
        targets = parse_spec(name[start], aliases)
    except AliasCycleError as exc:
        assert reaches_cycle(start, ())
        cycle = exc.cycle
        assert len(cycle) >= 2 and cycle[0] == cycle[-1]
        assert len(set(cycle[:-1])) == len(cycle) - 1
        for here, there in itertools.pairwise(cycle):
            assert int(there[1:]) in edges[int(here[1:])]
        assert str(exc) == "alias cycle: " + " -> ".join(cycle)
    else:
        assert not reaches_cycle(start, ())
        assert targets[0] == ("leaf", str(start))


class _CountingAliases(dict[str, str]):
    """An alias map that counts how often it is consulted."""

    lookups = 0

    def get(self, key, default=None):
        self.lookups += 1
        return super().get(key, default)

    def __getitem__(self, key: str) -> str:
        self.lookups += 1
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        self.lookups += 1
        return super().__contains__(key)


def test_shared_aliases_are_expanded_once() -> None:
    """A ladder of diamonds (a_i -> a_i+1, a_i+1) costs linear, not exponential, lookups."""
    depth = 12
    aliases = _CountingAliases({f"a{i}": f"a{i + 1}, a{i + 1}" for i in range(depth)})
    aliases[f"a{depth}"] = "p/m"
    assert parse_spec("a0", aliases) == [("p", "m")]
    assert aliases.lookups <= 4 * len(aliases)
