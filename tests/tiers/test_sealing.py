"""The sans-IO frame sealing of tier-4 sessions: bytes in, bytes out, every edge."""

from __future__ import annotations

import os

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from transport.protocol.sealing import (
    OVERHEAD,
    Aead,
    DirectionKeys,
    RekeyPolicy,
    SealedStream,
    SealError,
    derive_keys,
    is_sealed,
)

QKD_KEY = bytes(range(32))
BINDING = b"session-id-" + bytes(21)


def keys(epoch: int = 0, qkd_key: bytes = QKD_KEY, binding: bytes = BINDING) -> DirectionKeys:
    return derive_keys(
        qkd_key,
        binding,
        epoch=epoch,
        client_nonce=b"c" * 32,
        server_nonce=b"s" * 32,
        key_ids=["id-1"],
    )


def pair(aead: Aead = Aead.AES_256_GCM) -> tuple[SealedStream, SealedStream]:
    k = keys()
    return SealedStream("client", aead, k), SealedStream("server", aead, k)


@given(bodies=st.lists(st.binary(max_size=2048), max_size=20), aead=st.sampled_from(list(Aead)))
def test_every_frame_opens_in_order_in_both_directions(bodies: list[bytes], aead: Aead) -> None:
    client, server = pair(aead)
    for body in bodies:
        sealed = client.seal(body)
        assert len(sealed) == len(body) + OVERHEAD
        assert server.open(sealed) == body
        assert client.open(server.seal(body)) == body


def test_a_sealed_frame_is_not_json() -> None:
    client, _ = pair()
    body = orjson.dumps({"id": 1, "method": "submit", "params": {"secret": "plain"}})
    sealed = client.seal(body)
    assert is_sealed(sealed)
    assert b"plain" not in sealed
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(sealed)


def test_a_replayed_frame_is_refused() -> None:
    client, server = pair()
    first = client.seal(b"one")
    server.open(first)
    with pytest.raises(SealError, match="replayed"):
        server.open(first)


def test_a_reordered_frame_is_refused() -> None:
    client, server = pair()
    first, second = client.seal(b"one"), client.seal(b"two")
    with pytest.raises(SealError, match="out of order"):
        server.open(second)
    assert server.open(first) == b"one"  # nothing was consumed by the refusal


def test_a_forged_frame_is_refused() -> None:
    client, server = pair()
    sealed = bytearray(client.seal(b"pay 10"))
    sealed[-1] ^= 1
    with pytest.raises(SealError, match="failed authentication"):
        server.open(bytes(sealed))


def test_an_unsealed_frame_is_refused_on_a_sealed_stream() -> None:
    _, server = pair()
    with pytest.raises(SealError, match="unsealed"):
        server.open(orjson.dumps({"id": 1, "method": "ping"}))


def test_a_frame_cannot_be_reflected_to_its_sender() -> None:
    client, _ = pair()
    sealed = client.seal(b"to the server")
    other_client, _ = pair()  # same keys; its opener reads the server->client direction
    with pytest.raises(SealError, match="failed authentication"):
        other_client.open(sealed)


def test_keys_depend_on_the_session_binding_and_the_qkd_key() -> None:
    base = keys()
    assert keys(binding=b"another session").client_to_server != base.client_to_server
    assert keys(qkd_key=os.urandom(32)).client_to_server != base.client_to_server
    assert base.client_to_server != base.server_to_client
    assert "epoch=0" in repr(base)
    assert base.client_to_server.hex() not in repr(base)


def test_a_short_qkd_key_is_refused() -> None:
    with pytest.raises(SealError, match="too short"):
        keys(qkd_key=bytes(16))


def test_after_a_rekey_old_epoch_frames_are_refused() -> None:
    client, server = pair()
    old = client.seal(b"old")
    server.open(old)
    new_keys = keys(epoch=1, qkd_key=os.urandom(32))
    client.switch_send(new_keys)
    server.switch_receive(new_keys)
    assert server.open(client.seal(b"new")) == b"new"
    with pytest.raises(SealError, match="epoch 0 while epoch 1"):
        server.open(old)
    assert server.rekeys == 1


def test_a_rekey_must_go_to_the_next_epoch() -> None:
    client, _ = pair()
    with pytest.raises(SealError, match="rekey to epoch 2"):
        client.switch_send(keys(epoch=2))


def test_rekey_policy_counts_frames_and_age() -> None:
    client, _ = pair()
    policy = RekeyPolicy(frames=3, seconds=100.0, grace=2.0)
    assert not policy.due(client.sealer, client.opener)
    for _ in range(3):
        client.seal(b"x")
    assert policy.due(client.sealer, client.opener)
    assert not policy.overdue(client.sealer, client.opener)
    started = client.sealer.started
    assert policy.due(client.sealer, client.opener, now=started + 100.0)
    assert policy.overdue(client.sealer, client.opener, now=started + 200.0)


@given(
    ops=st.lists(
        st.one_of(
            st.just(("next", 0)),
            st.tuples(st.just("replay"), st.integers(0, 50)),
            st.tuples(st.just("skip"), st.integers(1, 3)),
        ),
        max_size=40,
    )
)
def test_the_opener_accepts_exactly_the_in_order_stream(ops: list[tuple[str, int]]) -> None:
    """Model: whatever a peer on the path replays or drops, the receiver takes each
    sealed frame once, in order, and refuses everything else without moving on."""
    client, server = pair()
    sent: list[bytes] = []
    accepted: list[bytes] = []
    for op, arg in ops:
        if op == "next":
            body = f"frame {len(sent)}".encode()
            sent.append(client.seal(body))
            expected_ok = len(accepted) == len(sent) - 1
            frame = sent[-1]
        elif op == "replay":
            if not sent:
                continue
            frame = sent[arg % len(sent)]
            expected_ok = sent.index(frame) == len(accepted)
        else:  # frames sealed but lost on the way, then the one after them arrives
            for _ in range(arg):
                sent.append(client.seal(f"frame {len(sent)}".encode()))
            frame = sent[-1]
            expected_ok = len(sent) - 1 == len(accepted)
        try:
            accepted.append(server.open(frame))
        except SealError:
            assert not expected_ok
        else:
            assert expected_ok
    assert accepted == [f"frame {i}".encode() for i in range(len(accepted))]
