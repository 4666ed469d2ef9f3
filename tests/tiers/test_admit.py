"""`admit()`: the one rule that decides every submit's mode and tier (SPEC §3, §6.1)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sidecar.daemon.app import Sidecar
from sidecar.daemon.config import DaemonConfig, Durability, Limits
from sidecar.errors import InvalidMessage, MessageTooLarge, TierRequired
from sidecar.messages import Kind, Mode, QueueMessage
from tests.service.conftest import Keys, block_import, gossip
from tests.tiers.conftest import start_tier_service, stop_tier_service, transaction
from transport.tiers import DEFAULT_POLICY, Admission, TierInfo, admit, message_from_wire

MESSAGES = {
    Kind.BLOCK_IMPORT: block_import(1),
    Kind.GOSSIP: gossip(1),
    Kind.TRANSACTION: transaction("1"),
}


def test_default_mode_comes_from_the_kind_table() -> None:
    for kind, raw in MESSAGES.items():
        msg = QueueMessage.from_json(raw)
        assert admit(msg, "default", TierInfo(1)) == Admission(kind.default_mode, False)
        assert admit(msg, None, TierInfo(1)) == Admission(kind.default_mode, False)


@given(
    kind=st.sampled_from(sorted(MESSAGES)),
    requested=st.sampled_from(["sync", "async", "default", None]),
    level=st.integers(1, 4),
    always_sync=st.booleans(),
)
def test_async_is_kept_only_where_no_rule_forces_sync(
    kind: Kind, requested: str | None, level: int, always_sync: bool
) -> None:
    msg = QueueMessage.from_json(MESSAGES[kind])
    policy = replace(DEFAULT_POLICY, always_sync=always_sync)
    got = admit(msg, requested, TierInfo(level), policy)
    asked = kind.default_mode if requested in (None, "default") else Mode(requested)
    forced = always_sync or level >= 3 or kind.default_mode is Mode.SYNC
    want = Mode.SYNC if forced else asked
    assert got == Admission(want, want is not asked)


def test_value_escalation_names_the_tier_and_the_reason() -> None:
    msg = QueueMessage.from_json(transaction("2000000"))
    with pytest.raises(TierRequired, match=r"needs tier 4 \(QuantumSecured\).*tier 3.*unsealed"):
        admit(msg, "sync", TierInfo(3, ("unsealed",)))
    assert admit(msg, "sync", TierInfo(4)) == Admission(Mode.SYNC, False)


def test_max_message_bytes_is_applied_to_a_message_already_parsed() -> None:
    msg = QueueMessage.from_json(gossip(1))
    small = replace(DEFAULT_POLICY, max_message_bytes=msg.encoded_size - 1)
    with pytest.raises(MessageTooLarge, match=f"{msg.encoded_size - 1}-byte limit"):
        admit(msg, "async", TierInfo(1), small)
    with pytest.raises(MessageTooLarge):
        message_from_wire(gossip(1), small)
    exact = replace(DEFAULT_POLICY, max_message_bytes=msg.encoded_size)
    assert admit(message_from_wire(gossip(1), exact), "async", TierInfo(1), exact).mode == "async"


@pytest.mark.parametrize("raw", [[1, 2], 7, None, b"{}"])
def test_a_message_that_is_not_an_object_is_refused(raw: object) -> None:
    with pytest.raises(InvalidMessage, match="JSON object"):
        message_from_wire(raw)


def test_an_unknown_mode_is_refused() -> None:
    with pytest.raises(InvalidMessage, match="mode must be sync, async or default"):
        admit(QueueMessage.from_json(gossip(1)), "later", TierInfo(1))


async def test_every_ssh_submit_path_applies_the_same_admission(tmp_path: Path, keys: Keys) -> None:
    limit = QueueMessage.from_json(gossip(1)).encoded_size
    policy = replace(DEFAULT_POLICY, always_sync=True, max_message_bytes=limit)
    svc = await start_tier_service(tmp_path, keys, node=2, policy=policy)
    big = {"kind": "gossip", "topic": "t" * 64, "data": "AAE="}
    try:
        async with svc.connect() as c:
            reply = await c.submit(gossip(1), "async")
            assert reply == {**reply, "mode": "sync", "persisted": True, "upgraded": True}
            with pytest.raises(MessageTooLarge, match=f"{limit}-byte limit"):
                await c.submit(big)
            ok, refused = await c.submit_batch([gossip(3), big], "async")
            assert ok["upgraded"] is True
            assert refused["error"]["code"] == "too_large"
            assert await c.depth() == 2
    finally:
        await stop_tier_service(svc)


async def test_the_node_endpoint_applies_the_same_admission(tmp_path: Path) -> None:
    limit = QueueMessage.from_json(transaction("2000000")).encoded_size
    cfg = DaemonConfig(
        data_dir=tmp_path,
        metrics=None,
        limits=Limits(max_message_bytes=limit),
        durability=Durability(policy="sync"),
    )
    sidecar = Sidecar(cfg)
    await sidecar.queue.open()
    try:
        assert (await sidecar.queue.submit_from_node(gossip(1))).message_id == 1
        with pytest.raises(MessageTooLarge, match=f"{limit}-byte limit"):
            await sidecar.queue.submit_from_node({**gossip(2), "topic": "t" * limit})
        with pytest.raises(TierRequired, match="needs tier 4"):
            await sidecar.queue.submit_from_node(transaction("2000000"))
        item = await sidecar.queue.pop_for_node()
        assert item is not None
        assert (item["mode"], item["upgraded"], item["persisted"]) == ("sync", True, True)
    finally:
        await sidecar.queue.close()
