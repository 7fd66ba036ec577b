"""What a release carries: the license, the metadata, and every file the README links to."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
README = (ROOT / "README.md").read_text(encoding="utf-8")
# Relative links in the README: `docs/fake-provider.md`, `examples/fastapi_app.py`, ...
LINKED = re.compile(
    r"`((?:docs|examples|benchmarks|tests|\.ci)/[\w./-]+)`|\]\(((?!https?:)[\w./-]+)\)"
)


def test_the_license_file_is_shipped_and_matches_the_metadata() -> None:
    project = PYPROJECT["project"]
    assert project["license"] == "MIT"
    assert project["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.startswith("MIT License") and "Copyright (c) 2026" in text
    assert "LICENSE" in PYPROJECT["tool"]["hatch"]["build"]["targets"]["sdist"]["include"]


def test_every_file_the_readme_names_exists_and_is_in_the_sdist() -> None:
    include = PYPROJECT["tool"]["hatch"]["build"]["targets"]["sdist"]["include"]
    linked = {a or b for a, b in LINKED.findall(README)}
    assert linked, "the README names no file: the pattern is stale"
    for path in sorted(linked):
        assert (ROOT / path).exists(), f"the README names {path}, which does not exist"
        top = path.split("/", 1)[0]
        assert top in include, f"{path} is named by the README but {top}/ is not in the sdist"


def test_the_metadata_points_somewhere_and_declares_the_pythons_tested() -> None:
    project = PYPROJECT["project"]
    assert project["urls"]
    assert all(url.startswith("https://") for url in project["urls"].values())
    classifiers = set(project["classifiers"])
    for version in ("3.11", "3.12", "3.13"):
        assert f"Programming Language :: Python :: {version}" in classifiers
