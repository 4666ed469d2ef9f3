"""Provenance is the key's, never the client's: ``submitted_by`` is the key's principal
from authorized_keys and its fingerprint; the SSH username can only be empty, the
principal or the default, so it can never claim ``node:`` or ``peer:``."""

from __future__ import annotations

import logging
from pathlib import Path

import asyncssh
import pytest

from tests.service.conftest import Keys, Service, gossip, start_service, stop_service
from transport.auth import DEFAULT_USERNAME, UNNAMED, AuthorizedKeys
from transport.client import AuthRefused


def line(key: asyncssh.SSHKey, options: str, comment: str) -> str:
    alg, b64 = key.export_public_key().decode().split()[:2]
    return f"{options} {alg} {b64} {comment}".strip() + "\n"


async def submitted_by(svc: Service, key: asyncssh.SSHKey, username: str | None) -> str:
    async with svc.connect(key, username=username) as c:
        pong = await c.ping()
        assert pong["user"] == (DEFAULT_USERNAME if username is None else username)
        await c.submit(gossip(1), "sync")
        item = await c.pop()
    assert item is not None
    assert item["submitted_by"].startswith(f"{pong['principal']} SHA256:")
    return str(item["submitted_by"])


@pytest.fixture
async def named(tmp_path: Path, keys: Keys) -> Service:
    """The service with the producer key named by a principal option, the consumer key
    by its comment only."""
    svc = await start_service(tmp_path, keys)
    svc.server.authorized_keys.path.write_text(
        line(
            keys.everything, 'roles="producer,consumer,admin",principal="indexer-7"', "laptop@home"
        )
        + line(keys.producer, 'roles="producer,consumer"', "alice@host")
        + line(keys.consumer, 'roles="producer,consumer"', "")
    )
    return svc


@pytest.mark.parametrize("username", [None, "", DEFAULT_USERNAME, "indexer-7"])
async def test_submitted_by_is_the_principal_option_and_fingerprint(
    named: Service, username: str | None
) -> None:
    try:
        fp = named.keys.everything.get_fingerprint("sha256")
        assert await submitted_by(named, named.keys.everything, username) == f"indexer-7 {fp}"
    finally:
        await stop_service(named)


async def test_without_the_option_the_comment_is_the_principal(named: Service) -> None:
    try:
        keys = named.keys
        fp = keys.producer.get_fingerprint("sha256")
        assert await submitted_by(named, keys.producer, "alice@host") == f"alice@host {fp}"
        fp = keys.consumer.get_fingerprint("sha256")
        assert await submitted_by(named, keys.consumer, None) == f"{UNNAMED} {fp}"
    finally:
        await stop_service(named)


@pytest.mark.parametrize(
    "username", ["node:alice", "peer:bob", "laptop@home", "indexer-7 ", "root", "alice@host"]
)
async def test_any_other_username_is_refused_at_auth_with_a_clear_line(
    named: Service, username: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="transport.server")
    try:
        with pytest.raises(AuthRefused):
            async with named.connect(named.keys.everything, username=username):
                pass
        async with named.connect(named.keys.everything) as c:
            assert (await c.stats())["service"]["refused"] == {"username": 1}
            assert await c.depth() == 0
    finally:
        await stop_service(named)
    lines = [r.getMessage() for r in caplog.records if "refused connection" in r.getMessage()]
    assert len(lines) == 1, lines
    assert f"user {username!r}" in lines[0]
    assert named.keys.everything.get_fingerprint("sha256") in lines[0]
    assert "'indexer-7'" in lines[0]
    assert "must be empty" in lines[0]


async def test_a_strangers_long_username_is_cut_in_the_refusal_line(
    named: Service, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="transport.server")
    username = "u" * 1000  # asyncssh refuses 1024 bytes and more
    try:
        with pytest.raises(AuthRefused):
            async with named.connect(named.keys.everything, username=username):
                pass
    finally:
        await stop_service(named)
    lines = [r.getMessage() for r in caplog.records if "refused connection" in r.getMessage()]
    assert len(lines) == 1, lines
    assert f"user {'u' * 64!r}… (1000 characters)" in lines[0]
    assert len(lines[0]) < 400


def test_a_principal_option_that_is_not_a_name_skips_the_line(
    tmp_path: Path, keys: Keys, caplog: pytest.LogCaptureFixture
) -> None:
    text = "".join(
        line(keys.producer, f'roles="producer",principal="{bad}"', "ok")
        for bad in ("node:alice", "peer:bob", "two words", "", "x" * 65, "-dash")
    ) + line(keys.consumer, 'roles="consumer"', "node:mallory")
    parsed = AuthorizedKeys.parse(text)
    assert [e.principal for e in parsed.values()] == [UNNAMED]  # only the comment line
    assert sum("skipped" in r.getMessage() for r in caplog.records) == 6
    assert not any(":" in e.principal for e in parsed.values())
