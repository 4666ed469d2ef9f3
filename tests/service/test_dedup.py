"""``dedup_id`` on ``submit``, ``submit_batch`` and ``qssh-queue submit --dedup-id``,
over real SSH to a real queue."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from sidecar.errors import SidecarError
from tests.service.conftest import Service, block_import, gossip
from tests.service.test_cli import qssh_home, qssh_queue

__all__ = ["qssh_home"]


async def test_a_resubmit_with_the_same_dedup_id_answers_the_first_id(service: Service) -> None:
    async with service.connect() as client:
        first = await client.submit(block_import(1), "sync", dedup_id="b1")
        again = await client.submit(block_import(1), "sync", dedup_id="b1")
        plain = await client.submit(block_import(1), "sync")
        assert first["duplicate"] is False
        assert again["duplicate"] is True
        assert again["message_id"] == first["message_id"]
        assert "duplicate" not in plain
    assert service.queue.depth()["total"] == 2


async def test_the_key_is_the_connection_principal(service: Service) -> None:
    async with service.connect(service.keys.producer) as producer:
        a = await producer.submit(block_import(1), dedup_id="same")
    async with service.connect(service.keys.everything) as everything:
        b = await everything.submit(block_import(1), dedup_id="same")
    assert a["message_id"] != b["message_id"]
    assert b["duplicate"] is False


async def test_a_batch_takes_one_dedup_id_per_message(service: Service) -> None:
    async with service.connect() as client:
        first = await client.submit_batch(
            [block_import(1), block_import(2), gossip(3)], "sync", dedup_ids=["a", None, "c"]
        )
        again = await client.submit_batch(
            [block_import(1), block_import(2), gossip(3)], "sync", dedup_ids=["a", None, "c"]
        )
    assert [r["duplicate"] for r in again if "duplicate" in r] == [True, True]
    assert again[0]["message_id"] == first[0]["message_id"]
    assert again[2]["message_id"] == first[2]["message_id"]
    assert again[1]["message_id"] != first[1]["message_id"]
    assert service.queue.depth()["total"] == 4


@pytest.mark.parametrize("bad", ["", "x" * 129, 12])
async def test_a_bad_dedup_id_is_a_bad_request_and_stores_nothing(
    service: Service, bad: object
) -> None:
    async with service.connect() as client:
        with pytest.raises(SidecarError, match="1-128 characters") as err:
            await client.call("submit", {"message": block_import(1), "dedup_id": bad})
        assert err.value.code == "bad_request"
        with pytest.raises(SidecarError, match="dedup_ids"):
            await client.call("submit_batch", {"messages": [gossip(1)], "dedup_ids": []})
    assert service.queue.depth()["total"] == 0


async def test_the_cli_takes_dedup_id(qssh_home: Path, service: Service) -> None:
    args = ("--json", "validator", "submit", "gossip", "topic=t", "data=aGk=", "--dedup-id", "g1")
    code, out, err = await qssh_queue(qssh_home, *args)
    assert code == 0, err
    first = orjson.loads(out)
    code, out, err = await qssh_queue(qssh_home, *args)
    assert code == 0, err
    again = orjson.loads(out)
    assert (first["duplicate"], again["duplicate"]) == (False, True)
    assert again["message_id"] == first["message_id"]
    assert service.queue.depth()["total"] == 1
