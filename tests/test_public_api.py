"""The public surface: `__all__` is exact and sorted, exports are documented, no secret leaks."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path

import pytest

import majordomo_async
from majordomo_async import DSN, DSNError

EXPORTS = majordomo_async.__all__


def exported(predicate: Callable[[object], bool]) -> list[str]:
    return [name for name in EXPORTS if predicate(getattr(majordomo_async, name))]


def test_all_is_a_tuple_of_unique_names() -> None:
    """`__all__` is an immutable tuple with no name listed twice."""
    assert isinstance(EXPORTS, tuple)
    assert len(set(EXPORTS)) == len(EXPORTS)


def test_all_is_sorted() -> None:
    """`__all__` is in plain, case-sensitive `sorted()` order."""
    assert list(EXPORTS) == sorted(EXPORTS)


def test_all_matches_the_public_names_of_the_module() -> None:
    """Every public name defined in the package is exported, and nothing else (plus version).

    `dir()`, not `vars()`: a few names load on first use (`_ON_FIRST_USE`)."""
    public = {
        name
        for name in dir(majordomo_async)
        if not name.startswith("_") and not inspect.ismodule(getattr(majordomo_async, name))
    }

    assert set(EXPORTS) - {"__version__"} == public
    assert "__version__" in EXPORTS
    assert isinstance(majordomo_async.__version__, str) and majordomo_async.__version__


@pytest.mark.parametrize("name", exported(inspect.isclass))
def test_exported_classes_live_in_the_package(name: str) -> None:
    """Exported classes report `majordomo_async` as their module (clean tracebacks, pickling)."""
    assert getattr(majordomo_async, name).__module__ == "majordomo_async"


@pytest.mark.parametrize(
    "name", exported(lambda obj: inspect.isclass(obj) or inspect.isfunction(obj))
)
def test_exported_classes_and_functions_have_docstrings(name: str) -> None:
    """Every exported class and function carries its own docstring."""
    doc = getattr(majordomo_async, name).__doc__

    assert doc and doc.strip()


def test_package_ships_py_typed() -> None:
    """`py.typed` sits in the package directory so type checkers use the inline types."""
    assert (Path(majordomo_async.__file__).parent / "py.typed").is_file()


def test_dsn_repr_and_str_hide_the_credential() -> None:
    """A parsed DSN's repr and str never show the API key, yet keep the rest."""
    dsn = DSN.parse("openai://sk-secret-123@api.openai.com/v1")

    assert dsn.credential == "sk-secret-123"
    for text in (repr(dsn), str(dsn)):
        assert "sk-secret-123" not in text
        assert "api.openai.com/v1" in text


def test_dsn_error_hides_the_credential() -> None:
    """A DSN that fails to parse is reported without its API key."""
    with pytest.raises(DSNError) as caught:
        DSN.parse("openai://sk-secret-123@api.openai.com:notaport/v1")

    assert "sk-secret-123" not in str(caught.value)
    assert "sk-secret-123" not in repr(caught.value)
