"""The sans-IO frame codec and request model: bytes in, requests out."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from transport.protocol import (
    HEADER,
    Event,
    FrameDecoder,
    FrameTooLarge,
    Params,
    ProtocolError,
    Reply,
    Request,
    encode_error,
    encode_event,
    encode_request,
    encode_result,
    encode_wire_frame,
    parse_reply,
    parse_request,
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
request_ids = st.integers(0, 2**64 - 1) | st.text(min_size=1, max_size=128)


@given(
    st.lists(st.dictionaries(st.text(max_size=8), json_values, max_size=4), max_size=10), st.data()
)
def test_frames_survive_any_split_of_the_stream(
    objs: list[dict[str, Any]], data: st.DataObject
) -> None:
    stream = b"".join(encode_wire_frame(o) for o in objs)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    decoder = FrameDecoder()
    bodies: list[bytes] = []
    start = 0
    for cut in [*cuts, len(stream)]:
        bodies += decoder.feed(stream[start:cut])
        start = cut
    assert [orjson.loads(b) for b in bodies] == objs
    assert decoder.pending_bytes == 0


def test_oversize_length_is_refused_before_buffering_the_body() -> None:
    decoder = FrameDecoder(max_frame_bytes=1024)
    with pytest.raises(FrameTooLarge) as info:
        decoder.feed(HEADER.pack(0xFFFFFFFF))
    assert info.value.code == "too_large"
    assert decoder.pending_bytes == 0
    with pytest.raises(FrameTooLarge):
        decoder.feed(encode_wire_frame({"id": 1}))


def test_frame_at_the_limit_is_accepted() -> None:
    decoder = FrameDecoder(max_frame_bytes=1024)
    body = b'"' + b"x" * 1022 + b'"'
    assert decoder.feed(HEADER.pack(len(body)) + body) == [body]


def test_truncated_frame_stays_pending() -> None:
    decoder = FrameDecoder()
    frame = encode_wire_frame({"id": 1, "method": "ping"})
    assert decoder.feed(frame[:-1]) == []
    assert decoder.pending_bytes == len(frame) - 1


@given(
    request_ids,
    st.text(min_size=1, max_size=20),
    st.dictionaries(st.text(max_size=8), json_values, max_size=4),
)
def test_request_round_trip(rid: int | str, method: str, params: dict[str, Any]) -> None:
    (body,) = FrameDecoder().feed(encode_request(rid, method, params))
    assert parse_request(body) == Request(rid, method, params)


@given(st.binary(max_size=200))
def test_any_bytes_parse_to_a_request_or_a_protocol_error(body: bytes) -> None:
    outcome: Request | ProtocolError
    try:
        outcome = parse_request(body)
    except ProtocolError as exc:
        outcome = exc
    if isinstance(outcome, ProtocolError):
        assert outcome.code == "bad_request"
    else:
        assert isinstance(outcome.method, str)


@pytest.mark.parametrize(
    ("body", "expected_id"),
    [
        (b"[1]", None),
        (b'{"id": true, "method": "ping"}', None),
        (b'{"id": -1, "method": "ping"}', None),
        (b'{"id": 7}', 7),
        (b'{"id": 7, "method": 3}', 7),
        (b'{"id": "a", "method": "ping", "params": [1]}', "a"),
        (b'{"id": 8, "method": "ping", "extra": 1}', 8),
    ],
)
def test_malformed_requests_name_the_id_when_readable(body: bytes, expected_id: Any) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_request(body)
    assert info.value.request_id == expected_id


def test_replies_and_events_parse_back() -> None:
    decoder = FrameDecoder()
    stream = (
        encode_result(1, {"x": 1})
        + encode_error(2, "forbidden", "no")
        + encode_event("delivery", {"subscription": 3})
    )
    frames = [parse_reply(b) for b in decoder.feed(stream)]
    assert frames[0] == Reply(1, result={"x": 1})
    assert frames[1] == Reply(2, error_code="forbidden", error_message="no")
    assert not frames[1].ok
    assert frames[2] == Event("delivery", {"subscription": 3})


def test_params_reject_wrong_types_and_unknown_names() -> None:
    params = Params({"n": True, "s": "x", "extra": 1}, 5)
    with pytest.raises(ProtocolError, match="integer"):
        params.integer("n")
    assert params.string("s") == "x"
    with pytest.raises(ProtocolError, match="extra") as info:
        params.finish()
    assert info.value.request_id == 5
    with pytest.raises(ProtocolError, match="between"):
        Params({"t": 1e12}).number("t", 1.0, 0.0, 10.0)
    with pytest.raises(ProtocolError, match="one of"):
        Params({"mode": "later"}).string("mode", "default", ("sync", "async"))
