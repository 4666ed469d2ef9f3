"""The server's rekey limits in its qkd_hello reply are checked like any other field of
it: a zero or negative limit is a QKD failure (the session goes on as documented for
one), not an uncaught error in the client."""

from __future__ import annotations

from typing import Any

import pytest

from transport.client_sealing import ClientSealing, _Pending
from transport.qkd import NONCE_BYTES, QKDFailed, QKDSettings, b64


class _NoKME:  # the reply is handled without the KME
    pass


def _sealing() -> ClientSealing:
    settings = QKDSettings(kme=_NoKME(), sae_id="A", peer_sae_id="B")  # type: ignore[arg-type]
    sealing = ClientSealing(settings, conn=None, send=lambda frame: None)
    sealing._hello = _Pending(key=bytes(range(32)), key_ids=["k-1"], nonce=b"c" * NONCE_BYTES)
    sealing._binding = b"session binding of an SSH connection"
    return sealing


def _reply(frames: Any, seconds: Any) -> dict[str, Any]:
    return {"nonce": b64(b"s" * NONCE_BYTES), "rekey_frames": frames, "rekey_seconds": seconds}


@pytest.mark.parametrize(
    ("frames", "seconds"), [(0, 600), (-1, 600), (100, 0), (100, float("nan"))]
)
async def test_a_non_positive_server_rekey_limit_is_a_qkd_failure(
    frames: Any, seconds: Any
) -> None:
    sealing = _sealing()
    with pytest.raises(QKDFailed, match="rekey limits must be positive"):
        sealing.accepted(_reply(frames, seconds))
    assert not sealing.sealed


async def test_positive_server_rekey_limits_tighten_the_clients() -> None:
    sealing = _sealing()
    sealing.accepted(_reply(20, 30))
    try:
        assert sealing.sealed
        assert (sealing.policy.frames, sealing.policy.seconds) == (20, 30.0)
    finally:
        for task in list(sealing._tasks):
            task.cancel()
