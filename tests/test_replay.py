"""The recorded-response corpus, replayed through real local servers.

Every body in `tests/fixtures/replay/` (see its README for where each shape comes from)
is served by an aiohttp server on 127.0.0.1 with its recorded status and headers, whole
and one byte per write, and read by the library through a `Registry` whose `LLM_REPLAY`
DSN points at that server. What comes out (text, tool calls, finish reason, the five
`Usage` fields, served model, reasoning, refusal, or the error class with its status and
retry hint) must equal the case's `.expect.json`, which states what the provider's own
SDK would surface, mapped onto our types (README: "Reasoning, cached tokens and the
escape hatch").

`PENDING` lists the cases that fail only because a provider feature is not wired yet:
they run as strict xfails, so a case starts failing the day its feature lands, and its
line here is then deleted.
"""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from .helpers.replay import (
    CORPUS,
    Case,
    check_request,
    expected_outcome,
    load_cases,
    replay,
    run_library,
)

CASES = load_cases()

PENDING: Mapping[str, str] = {}
"""`Case.id` (or "provider/case" for all of a case's bodies and modes) -> the missing
feature. Strict xfails: delete a line when its feature lands."""


def _pending(case: Case) -> str | None:
    return PENDING.get(case.id) or PENDING.get(f"{case.provider}/{case.name}")


def _params() -> list[object]:
    params: list[object] = []
    for case in CASES:
        reason = _pending(case)
        marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
        params.append(pytest.param(case, id=case.id, marks=marks))
    return params


@pytest.mark.parametrize("bytewise", [False, True], ids=["whole", "bytewise"])
@pytest.mark.parametrize("case", _params())
async def test_replay(case: Case, bytewise: bool) -> None:
    async with replay(case, bytewise=bytewise) as server:
        outcome, _ = await run_library(case, server)
    check_request(case, server)
    assert outcome.as_dict() == expected_outcome(case).as_dict()


def test_corpus_is_complete() -> None:
    """Every expectation has a body, every body an expectation, and every answer is
    recorded both as a generate reply and as a stream (or its `stream_only` says why)."""
    names: dict[tuple[str, str], set[str]] = {}
    for case in CASES:
        names.setdefault((case.provider, case.name), set()).add(case.body_path.suffix)
    for (provider, name), suffixes in names.items():
        spec = next(c.spec for c in CASES if (c.provider, c.name) == (provider, name))
        if spec.get("status", 200) < 400 and "error" not in spec["expect"]:
            assert len(suffixes) == 2 or spec.get("stream_only"), (
                f"{provider}/{name} has only {suffixes}: record both a generate and a stream"
            )
    assert {case.provider for case in CASES} == {"openai", "anthropic", "gemini", "ollama"}
    for path in sorted(CORPUS.glob("*/*.expect.json")):
        provider, name = path.parent.name, path.name.removesuffix(".expect.json")
        assert (provider, name) in names, f"{path} has no body"


def test_pending_names_real_cases() -> None:
    known = {case.id for case in CASES} | {f"{case.provider}/{case.name}" for case in CASES}
    assert set(PENDING) <= known, f"PENDING names no case: {set(PENDING) - known}"
