"""docs/messages.md is the message reference: its tables and examples are checked
against the code's kind table (sidecar/messages.py)."""

from __future__ import annotations

import re

import orjson

from sidecar.messages import DEFAULT_MAX_MESSAGE_BYTES, Kind, QueueMessage, field_types
from tests.subprocesses import REPO

DOC = (REPO / "docs" / "messages.md").read_text()


def sections() -> dict[str, str]:
    """The text under each ``## `kind` `` heading."""
    parts = re.split(r"^## `(\w+)`\n", DOC, flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def test_every_kind_has_a_section_and_no_other() -> None:
    assert sorted(sections()) == sorted(k.value for k in Kind)


def test_the_priority_table_matches_the_code() -> None:
    rows = re.findall(r"^\| `(\w+)` \| `(\w+)` \| (\w+) \((\d+)\) \| (\w+) \|$", DOC, re.MULTILINE)
    assert {r[0]: r[1:] for r in rows} == {
        k.value: (k.serde_name, k.priority.name.lower(), str(int(k.priority)), k.default_mode.value)
        for k in Kind
    }


def test_each_section_states_priority_mode_and_fields_as_the_code_does() -> None:
    for name, text in sections().items():
        kind = Kind(name)
        line = (
            f"Priority {kind.priority.name.lower()} ({int(kind.priority)}), default mode "
            f"{kind.default_mode.value}, serde variant `{kind.serde_name}`."
        )
        assert line in text, name
        fields = re.findall(r"^\| `(\w+)` \| ([\w ]+) \| (yes|no) \|$", text, re.MULTILINE)
        assert {f: (t, req == "yes") for f, t, req in fields} == field_types(kind), name


def test_every_field_type_is_explained() -> None:
    used = {t for k in Kind for t, _ in field_types(k).values()}
    explained = set(re.findall(r"^\| ([\w ]+) \| ", DOC.split("## Field types")[1], re.M))
    assert used <= explained


def test_each_serde_example_gives_the_canonical_example() -> None:
    for name, text in sections().items():
        serde_text, canonical_text = re.findall(r"```json\n(.*?)\n```", text, re.DOTALL)
        serde, canonical = orjson.loads(serde_text), orjson.loads(canonical_text)
        assert list(serde) == [Kind(name).serde_name]
        assert QueueMessage.from_json(serde).to_json() == canonical, name
        assert QueueMessage.from_json(canonical).to_json() == canonical, name


def test_the_size_limit_stated_is_the_code_default() -> None:
    assert f"default 1 MiB,\n{DEFAULT_MAX_MESSAGE_BYTES} bytes" in DOC
