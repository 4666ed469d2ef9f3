"""The docs stand on their own: nothing points at the specification kept outside the
repository, and every relative link resolves."""

from __future__ import annotations

import re

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
