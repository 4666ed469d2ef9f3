"""NoClone handles and TypeStateMessage, at run time and under mypy --strict."""

from __future__ import annotations

import copy
import pickle
import textwrap
from pathlib import Path

import pytest
from mypy import api as mypy_api

from sidecar import (
    AlreadyConsumed,
    Consumed,
    NoClone,
    Persisted,
    QueueMessageWithProvenance,
    TypeStateMessage,
)
from sidecar.wal import WriteAheadLog, record_to_dict, scan
from tests.core.helpers import block


def _item(mid: int = 1) -> QueueMessageWithProvenance:
    return QueueMessageWithProvenance(block(mid), mid, 0.0, "t")


def test_noclone_refuses_copy_deepcopy_and_pickle() -> None:
    h = NoClone(_item())
    for attempt in (copy.copy, copy.deepcopy, pickle.dumps):
        with pytest.raises(TypeError):
            attempt(h)


def test_noclone_hands_its_value_out_once() -> None:
    item = _item()
    h = NoClone(item)
    assert h.consume() is item
    assert h.consumed
    with pytest.raises(AlreadyConsumed):
        h.consume()


def test_type_states_move_forward_once_and_persist_writes_the_log(tmp_path: Path) -> None:
    wal, _ = WriteAheadLog.open(str(tmp_path / "t.wal"))
    queued = TypeStateMessage.new(_item(7))
    persisted = queued.persist(wal)
    assert persisted.state is Persisted
    records = [record_to_dict(r) for r in scan((tmp_path / "t.wal").read_bytes()).records]
    assert records[-1]["message_id"] == 7
    assert records[-1]["persisted"] is True
    with pytest.raises(AlreadyConsumed):
        queued.persist(wal)  # a repeated transition
    consumed = persisted.consume()
    assert consumed.state is Consumed
    with pytest.raises(AlreadyConsumed):
        persisted.consume()
    assert consumed.into_inner().message_id == 7
    with pytest.raises(AlreadyConsumed):
        consumed.into_inner()
    wal.close()


def test_wrong_state_call_raises_at_run_time(tmp_path: Path) -> None:
    queued = TypeStateMessage.new(_item())
    with pytest.raises(TypeError, match="Queued"):
        queued.consume()  # type: ignore[misc]
    with pytest.raises(TypeError):
        copy.copy(queued)


_PRELUDE = """
from sidecar import QueueMessage, QueueMessageWithProvenance, TypeStateMessage
from sidecar.wal import WriteAheadLog

def item() -> QueueMessageWithProvenance:
    raise NotImplementedError

def wal() -> WriteAheadLog:
    raise NotImplementedError

"""

_MUST_FAIL = {
    "consume_queued": "TypeStateMessage.new(item()).consume()",
    "into_inner_queued": "TypeStateMessage.new(item()).into_inner()",
    "persist_twice": "TypeStateMessage.new(item()).persist(wal()).persist(wal())",
    "into_inner_persisted": "TypeStateMessage.new(item()).persist(wal()).into_inner()",
    "consume_consumed": "TypeStateMessage.new(item()).persist(wal()).consume().consume()",
}
_MUST_PASS = """
def lifecycle() -> QueueMessageWithProvenance:
    queued = TypeStateMessage.new(item())
    persisted = queued.persist(wal())
    consumed = persisted.consume()
    return consumed.into_inner()
"""


def test_mypy_rejects_wrong_state_calls_and_accepts_the_lifecycle(tmp_path: Path) -> None:
    files = {}
    for name, body in _MUST_FAIL.items():
        path = tmp_path / f"fail_{name}.py"
        path.write_text(_PRELUDE + body + "\n")
        files[name] = path
    good = tmp_path / "pass_lifecycle.py"
    good.write_text(_PRELUDE + textwrap.dedent(_MUST_PASS))
    out, err, _status = mypy_api.run(
        [
            "--strict",
            "--no-error-summary",
            "--cache-dir",
            str(tmp_path / "mypy-cache"),  # fresh: a shared cache reports stale paths
            str(good),
            *map(str, files.values()),
        ]
    )
    assert not err, err
    errors_by_file = {
        p: [ln for ln in out.splitlines() if ln.startswith(str(p))] for p in [good, *files.values()]
    }
    assert errors_by_file[good] == [], out
    for name, path in files.items():
        assert errors_by_file[path], f"mypy accepted {name}: {_MUST_FAIL[name]}\n{out}"
        assert any("self" in ln or "Invalid" in ln for ln in errors_by_file[path]), errors_by_file[
            path
        ]
