"""What the session tier enforces on submits (SPEC §6.1) through the wire."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sidecar.errors import TierRequired
from tests.service.conftest import Keys, gossip, start_service, stop_service


def transaction(value_usd: str) -> dict[str, Any]:
    return {"kind": "transaction", "tx_hash": "ab" * 32, "tx_data": "AAE=", "value_usd": value_usd}


async def test_high_value_transaction_needs_a_higher_tier(tmp_path: Path, keys: Keys) -> None:
    svc = await start_service(tmp_path, keys, tier=2)
    try:
        async with svc.connect() as client:
            ok = await client.submit(transaction("9999.99"), "sync")
            assert ok["persisted"] is True
            with pytest.raises(TierRequired, match="needs tier 3"):
                await client.submit(transaction("10000"))
            with pytest.raises(TierRequired, match="needs tier 4"):
                await client.submit(transaction("2000000"))
            assert await client.depth() == 1
    finally:
        await stop_service(svc)


async def test_tier_3_makes_async_submits_sync_and_says_so(tmp_path: Path, keys: Keys) -> None:
    svc = await start_service(tmp_path, keys, tier=3)
    try:
        async with svc.connect() as client:
            result = await client.submit(gossip(1), "async")
            assert result == {**result, "mode": "sync", "persisted": True, "upgraded": True}
            item = await client.pop()
        assert item is not None
        assert item["upgraded"] is True
        assert item["persisted"] is True
    finally:
        await stop_service(svc)


async def test_default_mode_follows_the_kind(tmp_path: Path, keys: Keys) -> None:
    svc = await start_service(tmp_path, keys, tier=2)
    try:
        async with svc.connect() as client:
            assert (await client.submit(gossip(1)))["mode"] == "async"
            assert (await client.submit(transaction("1")))["mode"] == "sync"
    finally:
        await stop_service(svc)
