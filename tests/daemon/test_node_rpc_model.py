"""Any bytes or JSON sent to the node endpoint get a well-formed JSON-RPC 2.0 answer.

Dispatch runs in-process against a real queue (real log in a temp dir), so the
property covers the real error mapping, not a stand-in.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar.daemon.app import Sidecar
from sidecar.daemon.config import DaemonConfig
from sidecar.daemon.node_rpc import NodeRpc

I64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
STANDARD = {-32700, -32600, -32601, -32602, -32603, -32000}
METHODS = [*NodeRpc.METHODS, "eth_call", "", "qssh_submitmessage"]

json_values = st.recursive(
    st.none() | st.booleans() | I64 | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
requests = st.fixed_dictionaries(
    {"jsonrpc": st.sampled_from(["2.0", "1.0", 2])},
    optional={
        "id": st.one_of(
            I64, st.floats(allow_nan=False), st.text(max_size=5), st.none(), st.booleans()
        ),
        "method": st.one_of(st.sampled_from(METHODS), json_values),
        "params": st.one_of(json_values, st.lists(json_values, max_size=2)),
    },
)


@pytest.fixture(scope="module")
def rpc(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[asyncio.AbstractEventLoop, NodeRpc]]:
    d: Path = tmp_path_factory.mktemp("model")
    loop = asyncio.new_event_loop()
    sidecar = Sidecar(DaemonConfig(data_dir=d, metrics=None))
    loop.run_until_complete(sidecar.queue.open())
    try:
        yield loop, NodeRpc(sidecar)
    finally:
        loop.run_until_complete(sidecar.queue.close())
        loop.close()


def _check_reply(reply: Any) -> None:
    assert isinstance(reply, dict)
    assert reply["jsonrpc"] == "2.0"
    assert "id" in reply
    assert ("result" in reply) != ("error" in reply)
    if "error" in reply:
        assert reply["error"]["code"] in STANDARD
        assert isinstance(reply["error"]["message"], str)


def _answer(rpc: tuple[asyncio.AbstractEventLoop, NodeRpc], body: bytes) -> Any:
    loop, node = rpc
    out = loop.run_until_complete(node.handle_body(body))
    return None if out is None else orjson.loads(out)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=st.binary(max_size=64))
def test_any_bytes_get_a_well_formed_answer(rpc: Any, body: bytes) -> None:
    reply = _answer(rpc, body)
    if reply is not None:
        for r in reply if isinstance(reply, list) else [reply]:
            _check_reply(r)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(req=st.one_of(requests, st.lists(requests, min_size=1, max_size=3), json_values))
def test_any_json_gets_a_well_formed_answer(rpc: Any, req: Any) -> None:
    reply = _answer(rpc, orjson.dumps(req))
    if reply is None:  # only notifications may go unanswered
        reqs = req if isinstance(req, list) else [req]
        assert all(
            isinstance(r, dict) and "id" not in r and r.get("jsonrpc") == "2.0" for r in reqs
        )
        return
    replies = reply if isinstance(reply, list) else [reply]
    for r in replies:
        _check_reply(r)
