"""The node's JSON-RPC 2.0 endpoint, through a real unix socket and 127.0.0.1 HTTP."""

from __future__ import annotations

import grp
import os
import socket
import stat
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from sidecar.daemon.config import ConfigError, parse_endpoint
from tests.subprocesses import child_env, free_port

from .harness import Daemon, http_tcp, http_unix, rpc_line

BLOCK = {"BlockImport": {"block_hash": [1] * 32, "block_number": 42, "timestamp": 1_700_000_000}}
VOTE = {"Vote": {"validator": "bob", "block_hash": [2] * 32, "signature": [9, 8, 7]}}
TX_HIGH_VALUE = {"Transaction": {"tx_hash": [3] * 32, "tx_data": [1, 2], "value_usd": "5000000"}}


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Daemon, Path, int]]:
    cwd = tmp_path_factory.mktemp("node")
    d = Daemon(
        [
            "--port",
            str(free_port()),
            "--data-dir",
            "d",
            "--metrics",
            "",
            "--node-http",
            f"127.0.0.1:{free_port()}",
        ],
        child_env(),
        cwd,
    )
    try:
        d.wait_ready()
        yield d, cwd / "d" / "node.sock", d.port("node_http")
    finally:
        assert d.stop() == 0


Transport = str
TRANSPORTS = ("unix-line", "unix-http", "tcp-http")


def rpc(node: tuple[Daemon, Path, int], how: Transport, body: bytes) -> Any:
    _, sock, port = node
    if how == "unix-line":
        return rpc_line(sock, body)
    status, payload = http_unix(sock, body) if how == "unix-http" else http_tcp(port, body)
    assert status == 200, (status, payload)
    return orjson.loads(payload)


def call(node: Any, how: Transport, method: str, params: Any = None, req_id: Any = 1) -> Any:
    req: dict[str, Any] = {"jsonrpc": "2.0", "id": req_id, "method": method}
    if params is not None:
        req["params"] = params
    reply = rpc(node, how, orjson.dumps(req))
    assert reply["jsonrpc"] == "2.0"
    assert reply["id"] == req_id
    return reply


def drain(node: Any) -> None:
    for _ in range(1000):
        if call(node, "unix-line", "qssh_popMessage")["result"] is None:
            return
    raise AssertionError("queue did not drain")


@pytest.mark.parametrize("how", TRANSPORTS)
def test_each_method_with_the_serde_form(node: Any, how: Transport) -> None:
    drain(node)
    assert call(node, how, "qssh_getValidatorName")["result"] == "alice"
    assert call(node, how, "qssh_getQueueDepth")["result"] == 0
    vote_id = call(node, how, "qssh_submitMessage", [VOTE])["result"]
    block_id = call(node, how, "qssh_submitMessage", {"message": BLOCK})["result"]
    assert isinstance(vote_id, int)
    assert block_id > vote_id
    assert call(node, how, "qssh_getQueueDepth")["result"] == 2
    metrics = call(node, how, "qssh_getMetrics")["result"]
    assert metrics["instance"] == "alice"
    assert metrics["tier"] == 2
    assert metrics["queue"]["depth"]["critical"] == 2
    first = call(node, how, "qssh_popMessage")["result"]
    assert first["message"] == VOTE  # same priority: FIFO by id
    assert first["message_id"] == vote_id
    assert first["submitted_by"] == "node:alice"
    assert first["persisted"] is True
    assert first["mode"] == "sync"
    assert call(node, how, "qssh_popMessage")["result"]["message"] == BLOCK
    assert call(node, how, "qssh_popMessage")["result"] is None


def test_canonical_form_is_accepted_too(node: Any) -> None:
    drain(node)
    msg = {"kind": "telemetry", "name": "cpu", "value": 0.5}
    call(node, "tcp-http", "qssh_submitMessage", [msg])
    popped = call(node, "tcp-http", "qssh_popMessage")["result"]
    assert popped["message"] == {"Telemetry": {"name": "cpu", "value": 0.5}}
    assert popped["mode"] == "async"
    assert popped["persisted"] is False


@pytest.mark.parametrize("how", TRANSPORTS)
@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b'{"jsonrpc": "2.0", "id": 1, "method": ', -32700),
        (b"[]", -32600),
        (b'{"id": 1, "method": "qssh_getQueueDepth"}', -32600),
        (b'{"jsonrpc": "2.0", "id": 1}', -32600),
        (b'{"jsonrpc": "2.0", "id": {"a": 1}, "method": "qssh_getQueueDepth"}', -32600),
        (b'{"jsonrpc": "2.0", "id": 1, "method": "eth_call"}', -32601),
        (b'{"jsonrpc": "2.0", "id": 1, "method": "qssh_submitMessage", "params": 5}', -32600),
        (b'{"jsonrpc": "2.0", "id": 1, "method": "qssh_submitMessage", "params": []}', -32602),
        (b'{"jsonrpc": "2.0", "id": 1, "method": "qssh_getQueueDepth", "params": [1]}', -32602),
    ],
)
def test_bad_requests_get_standard_error_objects(
    node: Any, how: Transport, body: bytes, code: int
) -> None:
    reply = rpc(node, how, body)
    assert reply["jsonrpc"] == "2.0"
    assert reply["error"]["code"] == code
    assert isinstance(reply["error"]["message"], str)
    assert reply["error"]["message"]
    assert "result" not in reply


@pytest.mark.parametrize("how", TRANSPORTS)
@pytest.mark.parametrize("req_id", [1.5, -2.25, 7.0, "7", 0, None])
def test_any_string_number_or_null_id_is_echoed(node: Any, how: Transport, req_id: Any) -> None:
    """JSON-RPC 2.0, Request object: the id is a String, Number or Null (Numbers SHOULD
    NOT, so may, have fractional parts), and the reply MUST carry the same value."""
    reply = call(node, how, "qssh_getValidatorName", req_id=req_id)
    assert reply["result"] == "alice"
    assert type(reply["id"]) is type(req_id)


@pytest.mark.parametrize("how", TRANSPORTS)
@pytest.mark.parametrize("literal", [b"18446744073709551616", b"-9223372036854775809", b"1e300"])
def test_an_id_that_cannot_be_echoed_exactly_is_invalid(
    node: Any, how: Transport, literal: bytes
) -> None:
    """An integer beyond 64 bits parses as a rounded float: echoing it would answer
    another id. It is -32600 with a null id (JSON-RPC 2.0: the id could not be
    detected), not a reply the client might take for a different request's."""
    body = b'{"jsonrpc": "2.0", "id": %s, "method": "qssh_getValidatorName"}' % literal
    reply = rpc(node, how, body)
    assert reply["error"]["code"] == -32600
    assert reply["id"] is None


@pytest.mark.parametrize("method", ["qssh_unsubscribeMessages", "qssh_unsubscribeTier"])
@pytest.mark.parametrize("sub_id", ["qssh-999999", 7])
def test_unsubscribing_an_unknown_subscription_id_is_false(
    node: Any, method: str, sub_id: object
) -> None:
    """A subscription id is a string or a number (jsonrpsee's SubscriptionId, which
    @polkadot/rpc-provider matches either way); one this connection does not hold is
    answered ``false``, as jsonrpsee answers it, not an error."""
    assert call(node, "unix-line", method, [sub_id])["result"] is False


def _connect(node: Any, how: Transport) -> socket.socket:
    _, sock, port = node
    if how == "unix-http":
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(20)
        s.connect(str(sock))
        return s
    return socket.create_connection(("127.0.0.1", port), timeout=20)


def _read_head(s: socket.socket) -> bytes:
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(1)
        if not chunk:
            break
        head += chunk
    return head


@pytest.mark.parametrize("how", ["unix-http", "tcp-http"])
def test_expect_100_continue_is_answered_before_the_body(node: Any, how: Transport) -> None:
    """RFC 9110 10.1.1: a request with ``Expect: 100-continue`` gets an immediate 100
    (Continue), or an immediate final status when its head decides it. curl sends it for
    a body over 1 MiB and waits for it (1 s) before sending the body; a client that
    waits for it longer would get 408 once node.first_request_timeout runs out."""
    body = _req("qssh_getValidatorName")
    expect = b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
    expect += b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n"
    with _connect(node, how) as s:
        s.sendall(expect % len(body))
        assert _read_head(s).startswith(b"HTTP/1.1 100 ")
        s.sendall(body)
        head = _read_head(s)
        assert head.startswith(b"HTTP/1.1 200 "), head
        length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        payload = b""
        while len(payload) < length:
            payload += s.recv(length - len(payload))
        assert orjson.loads(payload)["result"] == "alice"
    with _connect(node, how) as s:  # over node.max_body_bytes: 413 at once, no 100
        s.sendall(expect % (64 * 1024 * 1024))
        assert _read_head(s).startswith(b"HTTP/1.1 413 ")


@pytest.mark.parametrize(
    ("message", "data_code"),
    [
        ({"Nope": {}}, "unknown_kind"),
        (
            {"BlockImport": {"block_hash": [1] * 31, "block_number": 1, "timestamp": 1}},
            "bad_request",
        ),
        ({"Gossip": {"topic": "t", "data": [1], "extra": 1}}, "bad_request"),
    ],
)
def test_invalid_messages_are_invalid_params_and_change_nothing(
    node: Any, message: Any, data_code: str
) -> None:
    drain(node)
    reply = call(node, "unix-line", "qssh_submitMessage", [message])
    assert reply["error"]["code"] == -32602
    assert reply["error"]["data"]["code"] == data_code
    assert call(node, "unix-line", "qssh_getQueueDepth")["result"] == 0


def test_a_transaction_above_the_tier_is_refused(node: Any) -> None:
    reply = call(node, "unix-line", "qssh_submitMessage", [TX_HIGH_VALUE])
    assert reply["error"]["code"] == -32000
    assert reply["error"]["data"]["code"] == "tier_required"


def test_batch_and_notification(node: Any) -> None:
    drain(node)
    batch = [
        {"jsonrpc": "2.0", "id": 1, "method": "qssh_getValidatorName"},
        {"jsonrpc": "2.0", "method": "qssh_submitMessage", "params": [VOTE]},  # notification
        {"jsonrpc": "2.0", "id": 2, "method": "nope"},
    ]
    replies = rpc(node, "unix-http", orjson.dumps(batch))
    assert [r["id"] for r in replies] == [1, 2]
    assert replies[0]["result"] == "alice"
    assert replies[1]["error"]["code"] == -32601
    assert call(node, "unix-line", "qssh_getQueueDepth")["result"] == 1  # the notification ran


def test_http_requires_json_content_type(node: Any) -> None:
    _, _, port = node
    body = b'{"jsonrpc": "2.0", "id": 1, "method": "qssh_getValidatorName"}'
    status, _ = http_tcp(port, body, content_type="text/plain")
    assert status == 415


def test_socket_mode_is_0660(node: Any) -> None:
    _, sock, _ = node
    st = os.stat(sock)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o660


@pytest.mark.parametrize("addr", ["0.0.0.0:9944", "192.168.1.5:9944", "[::]:9944", "example.com:1"])
def test_non_loopback_node_http_is_refused_at_config_time(addr: str) -> None:
    with pytest.raises(ConfigError):
        parse_endpoint(addr, "node.http", loopback_only=True)


def test_sync_policy_upgrades_node_async_submits_and_socket_group_applies(
    tmp_path: Path,
) -> None:
    mport = free_port()
    (tmp_path / "c.toml").write_text(
        f'listen = "127.0.0.1:{free_port()}"\ndata_dir = "d"\n'
        '[durability]\npolicy = "sync"\n'
        f'[metrics]\nlisten = "127.0.0.1:{mport}"\n'
        '[node]\nsocket = "node.sock"\nsocket_group = "daemon"\n'
        "[hardware]\nuse_udev = false\nchar_devices = []\n"
    )
    d = Daemon(["--config", "c.toml"], child_env(), tmp_path)
    try:
        d.wait_ready()
        sock = tmp_path / "node.sock"
        assert os.stat(sock).st_gid == grp.getgrnam("daemon").gr_gid
        gossip = {"Gossip": {"topic": "t", "data": [1, 2, 3]}}
        assert rpc_line(sock, _req("qssh_submitMessage", [gossip]))["result"] >= 1
        item = rpc_line(sock, _req("qssh_popMessage"))["result"]
        assert item["mode"] == "sync"
        assert item["upgraded"] is True
        assert item["persisted"] is True
        with urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=10) as r:
            text = r.read().decode()
        assert "qssh_submit_upgrades_total 1.0" in text
    finally:
        assert d.stop() == 0


def _req(method: str, params: Any = None) -> bytes:
    req: dict[str, Any] = {"jsonrpc": "2.0", "id": 1, "method": method}
    if params is not None:
        req["params"] = params
    return orjson.dumps(req)


def test_http_keep_alive_serves_several_requests_on_one_connection(node: Any) -> None:
    _, _, port = node
    body = b'{"jsonrpc": "2.0", "id": 1, "method": "qssh_getValidatorName"}'
    head = (
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        f = s.makefile("rb")
        for _ in range(3):
            s.sendall(head + body)
            assert f.readline().startswith(b"HTTP/1.1 200")
            length = 0
            while (line := f.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            assert orjson.loads(f.read(length))["result"] == "alice"


@pytest.mark.parametrize("how", TRANSPORTS)
def test_a_large_message_in_serde_form(node: Any, how: Transport) -> None:
    drain(node)
    data = list(range(256)) * 2000  # 512 KB of bytes, ~2 MB as a serde int list
    assert call(node, how, "qssh_submitMessage", [{"Gossip": {"topic": "big", "data": data}}])[
        "result"
    ]
    assert call(node, how, "qssh_popMessage")["result"]["message"]["Gossip"]["data"] == data
