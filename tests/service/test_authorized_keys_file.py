"""The authorized_keys file as OpenSSH reads it, and what a stranger can make of it:
a broken edit is reported once per change of the file (never once per key a
stranger offers), and the previous keys stay in force."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import asyncssh
import pytest

from tests.service.conftest import Keys, authorized_keys_text
from transport.auth import AuthorizedKeys, Role


def line(key: asyncssh.SSHKey, options: str, comment: str) -> str:
    alg, b64 = key.export_public_key().decode().split()[:2]
    return f"{options} {alg} {b64} {comment}".strip() + "\n"


def reload_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "cannot reload" in r.getMessage()]


def test_a_broken_edit_is_reported_once_per_change_and_keeps_the_previous_keys(
    tmp_path: Path, keys: Keys, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "authorized_keys"
    path.write_text(authorized_keys_text(keys))
    ak = AuthorizedKeys(path)
    caplog.set_level(logging.INFO)
    parses = 0
    real_parse = AuthorizedKeys.parse

    def counting(text: str, where: str = "authorized_keys") -> object:
        nonlocal parses
        parses += 1
        return real_parse(text, where)

    ak.parse = counting  # type: ignore[assignment, method-assign]
    path.write_text(path.read_text() + line(keys.unknown, 'roles="producr"', "typo"))
    for _ in range(5):  # a stranger offering key after key
        assert ak.lookup(keys.unknown) is None
        assert ak.lookup(keys.producer) is not None  # the previous keys stay
    assert len(reload_errors(caplog)) == 1, reload_errors(caplog)
    assert "producr" in reload_errors(caplog)[0]
    assert parses == 1

    # the next change is read again: broken differently, reported once more
    path.write_text(path.read_text() + "# still broken\n")
    for _ in range(3):
        assert ak.lookup(keys.producer) is not None
    assert len(reload_errors(caplog)) == 2
    assert parses == 2

    # fixed: the new file counts
    path.write_text(line(keys.unknown, 'roles="producer"', "fixed"))
    assert ak.lookup(keys.unknown) is not None
    assert ak.lookup(keys.producer) is None
    assert len(reload_errors(caplog)) == 2


def test_a_vanished_file_is_reported_once_and_keeps_the_previous_keys(
    tmp_path: Path, keys: Keys, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "authorized_keys"
    path.write_text(authorized_keys_text(keys))
    ak = AuthorizedKeys(path)
    caplog.set_level(logging.INFO)
    os.rename(path, tmp_path / "moved")
    for _ in range(5):
        assert ak.lookup(keys.producer) is not None
        assert ak.lookup(keys.unknown) is None
    assert len(reload_errors(caplog)) == 1, reload_errors(caplog)
    path.write_text(line(keys.unknown, 'roles="producer"', "back"))
    assert ak.lookup(keys.unknown) is not None


def test_a_key_listed_twice_keeps_its_first_line_and_warns(
    keys: Keys, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    text = (
        line(keys.producer, 'roles="producer",principal="alice"', "")
        + line(keys.consumer, 'roles="consumer"', "consumer")
        + line(keys.producer, 'roles="admin,consumer",principal="bob"', "")
    )
    entries = AuthorizedKeys.parse(text, "ak")
    producer = entries[keys.producer.identity]
    assert (producer.principal, producer.roles) == ("alice", frozenset({Role.PRODUCER}))
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warned == ["ak:3: skipped, the same key as line 1 (only a key's first line counts)"]


def test_a_later_line_does_not_stand_in_for_a_skipped_first_line(
    keys: Keys, caplog: pytest.LogCaptureFixture
) -> None:
    text = line(keys.producer, 'roles="admin",principal="not a name"', "") + line(
        keys.producer, 'roles="admin"', "second"
    )
    assert AuthorizedKeys.parse(text, "ak") == {}
    assert sum("skipped" in r.getMessage() for r in caplog.records) == 2
