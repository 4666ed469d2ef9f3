"""Message model: the seven kinds, validation, canonical JSON and the Rust serde form."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sidecar import (
    InvalidMessage,
    Kind,
    MessageTooLarge,
    Mode,
    Priority,
    QueueMessage,
    QueueMessageWithProvenance,
    UnknownKind,
)
from sidecar.errors import ErrorCode

H = "ab" * 32


def test_priorities_and_default_modes_follow_the_spec_table() -> None:
    table = {
        Kind.BLOCK_IMPORT: (100, Mode.SYNC),
        Kind.VOTE: (100, Mode.SYNC),
        Kind.TRANSACTION: (75, Mode.SYNC),
        Kind.ENTROPY_SHARE: (75, Mode.SYNC),
        Kind.GOSSIP: (50, Mode.ASYNC),
        Kind.PEER_DISCOVERY: (50, Mode.ASYNC),
        Kind.TELEMETRY: (25, Mode.ASYNC),
    }
    for kind, (prio, mode) in table.items():
        assert kind.priority == prio
        assert kind.default_mode is mode
    assert Priority.CRITICAL > Priority.HIGH > Priority.NORMAL > Priority.LOW


def test_canonical_form_uses_lowercase_hex_for_hashes_and_base64_for_bytes() -> None:
    m = QueueMessage.from_json(
        {"kind": "vote", "validator": "alice", "block_hash": H.upper(), "signature": "AAEC"}
    )
    assert m.to_json() == {
        "kind": "vote",
        "validator": "alice",
        "block_hash": H,
        "signature": "AAEC",
    }
    assert m.get("signature") == b"\x00\x01\x02"
    assert m.get("block_hash") == bytes.fromhex(H)
    assert orjson.loads(m.to_json_bytes()) == m.to_json()


def test_rust_serde_form_is_accepted() -> None:
    m = QueueMessage.from_json(
        b'{"BlockImport": {"block_hash": [' + b",".join([b"1"] * 32) + b'], "block_number": 100,'
        b' "timestamp": 1698509123}}'
    )
    assert m.kind is Kind.BLOCK_IMPORT
    assert m.to_json()["block_hash"] == "01" * 32
    g = QueueMessage.from_json({"Gossip": {"topic": "peers", "data": [1, 2, 3]}})
    assert g.get("data") == b"\x01\x02\x03"
    for name in ("Vote", "Transaction", "EntropyShare", "PeerDiscovery", "Telemetry"):
        assert Kind[_snake(name).upper()].serde_name == name


def _snake(name: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in name).lstrip("_")


@pytest.mark.parametrize(
    ("obj", "error"),
    [
        ({"kind": "nope"}, UnknownKind),
        ({"Nope": {}}, UnknownKind),
        ({"kind": "gossip", "topic": "t"}, InvalidMessage),  # missing data
        ({"kind": "gossip", "topic": "t", "data": "", "extra": 1}, InvalidMessage),
        ({"kind": "gossip", "topic": 5, "data": ""}, InvalidMessage),
        ({"kind": "gossip", "topic": "t", "data": "!!notbase64"}, InvalidMessage),
        (
            {"kind": "block_import", "block_hash": "ab" * 31, "block_number": 1, "timestamp": 1},
            InvalidMessage,
        ),
        (
            {"kind": "block_import", "block_hash": H, "block_number": -1, "timestamp": 1},
            InvalidMessage,
        ),
        (
            {"kind": "block_import", "block_hash": H, "block_number": 2**64, "timestamp": 1},
            InvalidMessage,
        ),
        (
            {"kind": "block_import", "block_hash": H, "block_number": True, "timestamp": 1},
            InvalidMessage,
        ),
        (
            {"kind": "block_import", "block_hash": H, "block_number": 1.5, "timestamp": 1},
            InvalidMessage,
        ),
        (
            {"BlockImport": {"block_hash": [1] * 31, "block_number": 1, "timestamp": 1}},
            InvalidMessage,
        ),
        (
            {"BlockImport": {"block_hash": [256] * 32, "block_number": 1, "timestamp": 1}},
            InvalidMessage,
        ),
        (
            {"kind": "entropy_share", "device_id": "q", "entropy": "", "qber_percent": 100.5},
            InvalidMessage,
        ),
        (
            {"kind": "entropy_share", "device_id": "q", "entropy": "", "qber_percent": -1},
            InvalidMessage,
        ),
        ({"kind": "transaction", "tx_hash": H, "tx_data": "", "value_usd": "1e5"}, InvalidMessage),
        ({"kind": "transaction", "tx_hash": H, "tx_data": "", "value_usd": 100.0}, InvalidMessage),
        ({"kind": "transaction", "tx_hash": H, "tx_data": "", "value_usd": -1}, InvalidMessage),
        ({"kind": "transaction", "tx_hash": H, "tx_data": "", "value_usd": True}, InvalidMessage),
        ({"kind": "peer_discovery", "peer_id": "p", "addresses": ["a", 1]}, InvalidMessage),
        ({"kind": "telemetry", "name": "n", "value": "1"}, InvalidMessage),
        ({"kind": "telemetry", "name": "n", "value": 1, "labels": {"a": 1}}, InvalidMessage),
        ({"kind": "gossip", "topic": "t", "data": "", "kind2": 1}, InvalidMessage),
        ({"a": 1, "b": 2}, InvalidMessage),
    ],
)
def test_bad_input_is_refused_with_a_code(obj: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error) as info:
        QueueMessage.from_json(obj)
    assert isinstance(info.value, InvalidMessage)
    assert info.value.code in (ErrorCode.BAD_REQUEST, ErrorCode.UNKNOWN_KIND)


def test_malformed_json_and_non_objects_are_invalid() -> None:
    for raw in (b"{", "[]", b'"x"', b"\xff"):
        with pytest.raises(InvalidMessage):
            QueueMessage.from_json(raw)


def test_oversize_message_is_too_large() -> None:
    data = base64.b64encode(b"x" * (1024 * 1024)).decode()
    with pytest.raises(MessageTooLarge) as info:
        QueueMessage.from_json({"kind": "gossip", "topic": "t", "data": data})
    assert info.value.code is ErrorCode.TOO_LARGE
    with pytest.raises(MessageTooLarge):
        QueueMessage.from_json({"kind": "gossip", "topic": "t", "data": "AAAA"}, max_size=20)
    with pytest.raises(MessageTooLarge):
        QueueMessage.from_json(b" " * (5 * 1024 * 1024))


def test_optional_fields_may_be_absent_or_null() -> None:
    t = QueueMessage.from_json(
        {"kind": "transaction", "tx_hash": H, "tx_data": "", "value_usd": None}
    )
    assert "value_usd" not in t.to_json()
    t2 = QueueMessage.create("transaction", tx_hash=bytes(32), tx_data=b"x", value_usd="1250.50")
    assert t2.get("value_usd") == "1250.50"


# --- hypothesis: every valid message round-trips through both JSON forms ---------------
_text = st.text(max_size=20)
_blob = st.binary(max_size=64)
_hash = st.binary(min_size=32, max_size=32)
_u64 = st.integers(0, 2**64 - 1)
_messages = st.one_of(
    st.builds(
        lambda h, n, t: QueueMessage.create(
            "block_import", block_hash=h, block_number=n, timestamp=t
        ),
        _hash,
        _u64,
        _u64,
    ),
    st.builds(
        lambda v, h, s: QueueMessage.create("vote", validator=v, block_hash=h, signature=s),
        _text,
        _hash,
        _blob,
    ),
    st.builds(
        lambda h, d, v: QueueMessage.create("transaction", tx_hash=h, tx_data=d, value_usd=v),
        _hash,
        _blob,
        st.none() | st.from_regex(r"(0|[1-9][0-9]{0,8})(\.[0-9]{1,4})?", fullmatch=True),
    ),
    st.builds(
        lambda d, e, q: QueueMessage.create(
            "entropy_share", device_id=d, entropy=e, qber_percent=q
        ),
        _text,
        _blob,
        st.floats(0, 100) | st.integers(0, 100),
    ),
    st.builds(lambda t, d: QueueMessage.create("gossip", topic=t, data=d), _text, _blob),
    st.builds(
        lambda p, a: QueueMessage.create("peer_discovery", peer_id=p, addresses=a),
        _text,
        st.lists(_text, max_size=4),
    ),
    st.builds(
        lambda n, v, lab: QueueMessage.create("telemetry", name=n, value=v, labels=lab),
        _text,
        st.integers(-(2**53), 2**53) | st.floats(allow_nan=False, allow_infinity=False),
        st.none() | st.dictionaries(_text, _text, max_size=3),
    ),
)


@given(_messages)
def test_canonical_json_round_trips(m: QueueMessage) -> None:
    assert QueueMessage.from_json(m.to_json()) == m
    assert QueueMessage.from_json(m.to_json_bytes()) == m
    assert QueueMessage.from_json(orjson.dumps(m.to_json()).decode()) == m


@given(_messages)
def test_serde_form_round_trips(m: QueueMessage) -> None:
    assert QueueMessage.from_json(m.to_serde()) == m


@given(_messages, st.integers(1, 2**64 - 1), st.booleans(), st.integers(0, 5))
def test_provenance_round_trips(m: QueueMessage, mid: int, bc: bool, dc: int) -> None:
    p = QueueMessageWithProvenance(
        m, mid, 1.5, "key:SHA256:x", persisted=True, broadcast=bc, delivery_count=dc
    )
    back = QueueMessageWithProvenance.from_json(orjson.loads(orjson.dumps(p.to_json())))
    assert back.to_json() == p.to_json()
    assert back.priority == m.priority


@pytest.mark.parametrize(("given", "canonical"), [(2000000, "2000000"), ("1250.50", "1250.50")])
def test_value_usd_takes_an_integer_or_a_decimal_string(given: object, canonical: str) -> None:
    t = QueueMessage.from_json(
        {"kind": "transaction", "tx_hash": H, "tx_data": "", "value_usd": given}
    )
    assert t.get("value_usd") == canonical
    assert t.to_json()["value_usd"] == canonical


def test_a_float_value_usd_is_refused_with_a_hint() -> None:
    with pytest.raises(InvalidMessage, match=r"money is never a float.*decimal string"):
        QueueMessage.from_json(
            {"kind": "transaction", "tx_hash": H, "tx_data": "", "value_usd": 1250.5}
        )
