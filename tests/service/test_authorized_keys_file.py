"""The authorized_keys file as OpenSSH reads it, and what a stranger can make of it:
a broken edit is reported once per change of the file (never once per key a
stranger offers), and the previous keys stay in force."""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime
from pathlib import Path

import asyncssh
import pytest

from tests.service.conftest import Keys, authorized_keys_text, start_service, stop_service
from tests.service.test_admission_live import connect_from
from transport.auth import AuthorizedKey, AuthorizedKeys, Role, parse_expiry_time
from transport.client import AuthRefused


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


# ----- from= and expiry-time= are enforced; any option we do not enforce skips its line


async def test_from_and_expiry_time_are_enforced_by_the_server(tmp_path: Path, keys: Keys) -> None:
    svc = await start_service(tmp_path, keys)
    svc.server.authorized_keys.path.write_text(
        line(keys.admin, 'from="10.99.99.99",roles="admin"', "pinned")
        + line(keys.producer, 'expiry-time="19800101",roles="producer"', "expired")
        + line(
            keys.consumer,
            'from="127.0.7.0/24,!127.0.7.66",expiry-time="29991231",roles="consumer"',
            "consumer",
        )
        + line(keys.everything, 'from="127.0.7.?",roles="admin"', "everything")
    )

    async def gets_in(key: asyncssh.SSHKey, source: str) -> bool:
        try:
            async with connect_from(svc, source, key=key) as c:  # type: ignore[attr-defined]
                await c.ping()
        except AuthRefused:
            return False
        return True

    try:
        assert not await gets_in(keys.admin, "127.0.7.1")
        assert not await gets_in(keys.producer, "127.0.7.1")
        assert await gets_in(keys.consumer, "127.0.7.2")
        assert not await gets_in(keys.consumer, "127.0.7.66")  # negated
        assert await gets_in(keys.everything, "127.0.7.3")  # wildcard on the address
        assert not await gets_in(keys.everything, "127.0.7.33")
    finally:
        await stop_service(svc)


def entry_for(key: asyncssh.SSHKey, options: str) -> AuthorizedKey:
    entries = AuthorizedKeys.parse(line(key, options, "k"))
    assert len(entries) == 1, options
    return next(iter(entries.values()))


@pytest.mark.parametrize(
    ("patterns", "source", "allowed"),
    [
        ("10.0.0.0/8", "10.1.2.3", True),
        ("10.0.0.0/8", "11.1.2.3", False),
        ("10.0.0.0/8", "::ffff:10.1.2.3", True),  # a dual-stack listener's IPv4 peer
        ("10.0.0.0/8,!10.0.0.9", "10.0.0.9", False),
        ("!10.0.0.9", "10.0.0.8", False),  # a negation alone allows nothing
        ("192.168.1.*,fe80::/10", "fe80::1%eth0", True),
        ("192.168.1.?", "192.168.1.10", False),
        ("*.example.org", "10.0.0.1", False),  # no DNS: a name never matches
        ("*", "unknown", False),  # an address we do not know passes no from=
        ("*", None, False),
    ],
)
def test_from_is_an_openssh_pattern_list_on_the_address(
    keys: Keys, patterns: str, source: str | None, allowed: bool
) -> None:
    assert entry_for(keys.producer, f'from="{patterns}"').permits_from(source) is allowed


def test_two_from_options_must_both_match(keys: Keys) -> None:
    entry = entry_for(keys.producer, 'from="10.0.0.0/8",from="10.0.0.0/24"')
    assert entry.permits_from("10.0.0.7")
    assert not entry.permits_from("10.0.1.7")


def test_expiry_time_as_sshd_reads_it(keys: Keys) -> None:
    assert parse_expiry_time("20250102") == datetime(2025, 1, 2).timestamp()  # local time
    assert parse_expiry_time("202501020304") == datetime(2025, 1, 2, 3, 4).timestamp()
    assert (
        parse_expiry_time("20250102030405Z")
        == datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC).timestamp()
    )
    for bad in ("2025010", "20251301", "2025-01-02", "20250102030", "202501020304056", "x"):
        with pytest.raises(ValueError, match="expiry-time"):
            parse_expiry_time(bad)
    # the earliest of two counts; refused once it is past
    entry = entry_for(keys.producer, 'expiry-time="29991231",expiry-time="20250102Z"')
    limit = datetime(2025, 1, 2, tzinfo=UTC).timestamp()
    assert entry.expires == limit
    assert not entry.expired(limit)
    assert entry.expired(limit + 1)


def test_a_line_with_an_option_we_do_not_enforce_is_skipped_with_a_warning(
    keys: Keys, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    text = (
        line(keys.producer, 'command="/bin/false",roles="producer"', "forced")
        + line(keys.consumer, 'FROM="10.0.0.1",roles="consumer"', "shouting")
        + line(keys.admin, 'no-touch-required,verify-required,roles="admin"', "fido")
        + line(keys.unknown, 'expiry-time="tomorrow"', "vague")
        + line(keys.unknown, "from", "bare")
        + line(keys.everything, 'restrict,no-pty,No-X11-Forwarding,roles="admin"', "ok")
        + line(keys.producer, 'roles="producer"', "second")  # never stands in for line 1
    )
    entries = AuthorizedKeys.parse(text, "ak")
    assert list(entries) == [keys.everything.identity]  # type: ignore[attr-defined]
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 6, warned
    assert warned[0].startswith("ak:1: skipped, option command not supported here")
    assert warned[1].startswith("ak:2: skipped, option FROM not supported here")
    assert warned[2].startswith("ak:3: skipped, option no-touch-required, verify-required")
    assert warned[3].startswith('ak:4: skipped, expiry-time="tomorrow"')
    assert warned[4].startswith("ak:5: skipped, from must be")
    assert warned[5].startswith("ak:7: skipped, the same key as line 1")


def test_a_bare_principal_flag_is_not_a_name(keys: Keys) -> None:
    assert AuthorizedKeys.parse(line(keys.producer, "principal", "comment")) == {}
