"""``qssh_submitMessage`` with a ``dedup_id`` (and ``broadcast``) on a real daemon's node
socket: the node's plain form still answers a bare id."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.subprocesses import child_env, free_port

from .harness import Daemon, call_line

BLOCK = {"BlockImport": {"block_hash": [7] * 32, "block_number": 7, "timestamp": 1_700_000_000}}


@pytest.fixture(scope="module")
def sock(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    cwd = tmp_path_factory.mktemp("node-dedup")
    d = Daemon(["--port", str(free_port()), "--data-dir", "d", "--metrics", ""], child_env(), cwd)
    try:
        d.wait_ready()
        yield cwd / "d" / "node.sock"
    finally:
        assert d.stop() == 0


def test_positional_and_named_options_dedup_on_the_node_principal(sock: Path) -> None:
    first = call_line(sock, "qssh_submitMessage", [BLOCK, {"dedup_id": "n-1"}])["result"]
    named = call_line(sock, "qssh_submitMessage", {"message": BLOCK, "dedup_id": "n-1"})
    assert first["duplicate"] is False
    assert named["result"] == {"message_id": first["message_id"], "duplicate": True}
    plain = call_line(sock, "qssh_submitMessage", [BLOCK])["result"]
    assert isinstance(plain, int)
    assert plain != first["message_id"]
    assert call_line(sock, "qssh_getQueueDepth")["result"] == 2
    popped = call_line(sock, "qssh_popMessage")["result"]
    assert popped["message_id"] == first["message_id"]


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ({"dedup_id": ""}, "1-128 characters"),
        ({"dedup_id": "x" * 129}, "1-128 characters"),
        ({"broadcast": "yes"}, "broadcast must be true or false"),
        ({"priority": 1}, "unknown option(s) priority"),
    ],
)
def test_bad_options_are_invalid_params_and_store_nothing(
    sock: Path, options: dict[str, object], says: str
) -> None:
    before = call_line(sock, "qssh_getQueueDepth")["result"]
    reply = call_line(sock, "qssh_submitMessage", [BLOCK, options])
    assert reply["error"]["code"] == -32602
    assert says in reply["error"]["message"]
    assert call_line(sock, "qssh_getQueueDepth")["result"] == before


def test_broadcast_marks_the_message_for_the_peers(sock: Path) -> None:
    mid = call_line(sock, "qssh_submitMessage", [BLOCK, {"broadcast": True}])["result"]
    while (popped := call_line(sock, "qssh_popMessage")["result"]) is not None:
        if popped["message_id"] == mid:
            break
    assert popped is not None
    assert popped["broadcast"] is True
