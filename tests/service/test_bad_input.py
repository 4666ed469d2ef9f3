"""Malformed input through the wire: an error reply or a clean close, never a crash."""

from __future__ import annotations

from tests.service.conftest import Service, telemetry
from tests.service.rawchannel import RawChannel
from transport.protocol import HEADER


async def assert_server_still_serves(service: Service) -> None:
    async with service.connect() as other:
        result = await other.submit(telemetry(), "sync")
        assert result["persisted"] is True


async def test_oversize_length_prefix_gets_too_large_then_close(service: Service) -> None:
    raw = await RawChannel.open(service.port, service.keys.everything)
    raw.send_raw(HEADER.pack(0xFFFFFFFF) + b"{")
    reply = await raw.recv()
    assert reply is not None
    assert reply["id"] is None
    assert reply["error"]["code"] == "too_large"
    await raw.wait_closed()
    await raw.close()
    await assert_server_still_serves(service)


async def test_non_json_frame_gets_bad_request_and_channel_goes_on(service: Service) -> None:
    raw = await RawChannel.open(service.port, service.keys.everything)
    raw.send_body(b"\xff\xfenot json")
    reply = await raw.recv()
    assert reply is not None
    assert reply["error"]["code"] == "bad_request"
    raw.send({"id": 2, "method": "ping"})
    pong = await raw.recv()
    assert pong is not None
    assert pong["id"] == 2
    assert pong["result"]["pong"] is True
    await raw.close()


async def test_json_that_is_not_an_object_gets_bad_request(service: Service) -> None:
    raw = await RawChannel.open(service.port, service.keys.everything)
    for body in (b"[1,2,3]", b'"ping"', b"42", b"null"):
        raw.send_body(body)
        reply = await raw.recv()
        assert reply is not None
        assert reply["error"]["code"] == "bad_request"
    await raw.close()


async def test_unknown_method_names_the_known_ones(service: Service) -> None:
    raw = await RawChannel.open(service.port, service.keys.everything)
    raw.send({"id": "x1", "method": "drop_table", "params": {}})
    reply = await raw.recv()
    assert reply is not None
    assert reply["id"] == "x1"
    assert reply["error"]["code"] == "bad_request"
    assert "submit" in reply["error"]["message"]
    await raw.close()


async def test_wrong_param_types_get_bad_request_and_nothing_changes(service: Service) -> None:
    raw = await RawChannel.open(service.port, service.keys.everything)
    cases = [
        {"id": 1, "method": "submit", "params": {"message": telemetry(), "mode": 5}},
        {"id": 2, "method": "submit", "params": {"message": [1, 2]}},
        {"id": 3, "method": "submit", "params": "not an object"},
        {"id": 4, "method": "lease", "params": {"timeout": "soon"}},
        {"id": 5, "method": "ack", "params": {"lease_id": [1]}},
        {"id": 6, "method": "subscribe", "params": {"credit": True}},
        {"id": 7, "method": "submit_batch", "params": {"messages": {"a": 1}}},
        {"id": True, "method": "ping"},
        {"method": "ping"},
    ]
    for case in cases:
        raw.send(case)
    codes = []
    for _ in cases:
        reply = await raw.recv()
        assert reply is not None
        codes.append(reply["error"]["code"])
    assert set(codes) == {"bad_request"}
    await raw.close()
    async with service.connect() as client:
        assert await client.depth() == 0


async def test_unknown_kind_and_bad_fields_through_the_wire(service: Service) -> None:
    raw = await RawChannel.open(service.port, service.keys.everything)
    raw.send({"id": 1, "method": "submit", "params": {"message": {"kind": "nope"}}})
    raw.send({"id": 2, "method": "submit", "params": {"message": {"kind": "block_import", "x": 1}}})
    replies = {}
    for _ in range(2):
        reply = await raw.recv()
        assert reply is not None
        replies[reply["id"]] = reply["error"]["code"]
    assert replies == {1: "unknown_kind", 2: "bad_request"}
    await raw.close()


async def test_truncated_frame_then_eof_closes_cleanly(service: Service) -> None:
    raw = await RawChannel.open(service.port, service.keys.everything)
    raw.send({"id": 1, "method": "ping"})
    raw.send_raw(HEADER.pack(100) + b'{"id": 2, "meth')
    raw.chan.write_eof()
    reply = await raw.recv()
    assert reply is not None
    assert reply["id"] == 1
    await raw.wait_closed()
    await raw.close()
    await assert_server_still_serves(service)


async def test_ten_thousand_requests_in_flight_each_answered(service: Service) -> None:
    raw = await RawChannel.open(service.port, service.keys.everything)
    total = 10_000
    blob = b"".join(
        HEADER.pack(len(body)) + body
        for body in (
            b'{"id":%d,"method":"submit","params":{"message":{"kind":"gossip","topic":"t",'
            b'"data":"aGk="},"mode":"async"}}' % i
            for i in range(total)
        )
    )
    raw.send_raw(blob)
    seen = set()
    outcomes: dict[str, int] = {}
    for _ in range(total):
        reply = await raw.recv(60)
        assert reply is not None
        seen.add(reply["id"])
        key = reply["error"]["code"] if "error" in reply else "ok"
        outcomes[key] = outcomes.get(key, 0) + 1
    assert seen == set(range(total))
    assert set(outcomes) <= {"ok", "unavailable"}
    await raw.close()
    await assert_server_still_serves(service)
