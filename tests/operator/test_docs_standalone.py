"""The docs stand on their own: nothing points at the specification kept outside the
repository, and every relative link resolves."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests.subprocesses import REPO

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_no_reference_to_the_outside_specification(doc: object) -> None:
    text = doc.read_text()  # type: ignore[attr-defined]
    assert "shared/" not in text
    assert "SPEC §" not in text
    assert "SPEC.md" not in text


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_relative_links_resolve(doc: object) -> None:
    text = doc.read_text()  # type: ignore[attr-defined]
    for target in re.findall(r"\]\(([^)#:\s]+)(?:#[^)]*)?\)", text):
        assert (doc.parent / target).exists(), target  # type: ignore[attr-defined]


def _defined_names(path: Path) -> set[str]:
    """The module-level tests, classes and assignments (hypothesis TestCase aliases)."""
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return names


# `tests/x.py::test_name`, and `::test_name` alone for the file named last before it
TEST_REFERENCE = re.compile(r"`(tests/[\w/]+\.py)?(?:::(\w+))?(?:\[[^`\]]*\])?`")


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_test_a_doc_names_exists(doc: Path) -> None:
    """A promise's proof names a real test: a renamed or removed test fails here."""
    missing = []
    current: Path | None = None
    for m in TEST_REFERENCE.finditer(doc.read_text()):
        file, name = m.group(1), m.group(2)
        if file:
            current = REPO / file
            if not current.exists():
                missing.append(file)
                continue
        if not name or current is None or not current.exists():
            continue
        if name not in _defined_names(current):
            missing.append(f"{current.relative_to(REPO)}::{name}")
    assert not missing, f"{doc.name} names tests that do not exist: {missing}"
