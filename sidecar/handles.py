"""`NoClone` (one-time handles) and `TypeStateMessage` (lifecycle checked by mypy).

Python cannot forbid copies at compile time, so `NoClone` refuses every copying
protocol at run time (copy, deepcopy, pickle) and hands its value out exactly once.
`TypeStateMessage` encodes its state in the type parameter; each transition is only
defined for the right state through a self-type annotation, so `mypy --strict`
rejects e.g. `consume()` on a `TypeStateMessage[Queued]` (tests/core/test_typestate.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Generic, NoReturn, TypeVar

from sidecar.errors import AlreadyConsumed
from sidecar.messages import QueueMessageWithProvenance

if TYPE_CHECKING:
    from sidecar.wal import WriteAheadLog

T = TypeVar("T")


class NoClone(Generic[T]):
    """A value that can be taken once and never copied."""

    __slots__ = ("_taken", "_value")

    def __init__(self, value: T) -> None:
        self._value: T | None = value
        self._taken = False

    def consume(self) -> T:
        if self._taken:
            raise AlreadyConsumed("this handle was already consumed")
        value = self._value
        self._taken, self._value = True, None
        return value  # type: ignore[return-value]

    @property
    def consumed(self) -> bool:
        return self._taken

    def _refuse(self, *_: Any) -> NoReturn:
        raise TypeError("NoClone handles cannot be copied or pickled")

    __copy__ = _refuse
    __deepcopy__ = _refuse
    __reduce__ = _refuse
    __reduce_ex__ = _refuse
    __getstate__ = _refuse

    def __repr__(self) -> str:
        return "NoClone(<consumed>)" if self._taken else f"NoClone({self._value!r})"


class Queued:
    """State: accepted in memory, not yet durable."""


class Persisted:
    """State: its submit record is fsync'd in the log."""


class Consumed:
    """State: taken out; terminal."""


S = TypeVar("S", Queued, Persisted, Consumed)


class TypeStateMessage(Generic[S]):
    """Queued → persist(wal) → Persisted → consume() → Consumed → into_inner()."""

    __slots__ = ("_item", "_moved", "_state")

    def __init__(self: TypeStateMessage[Queued], item: QueueMessageWithProvenance) -> None:
        self._item = item
        self._state: type = Queued
        self._moved = False

    @staticmethod
    def new(item: QueueMessageWithProvenance) -> TypeStateMessage[Queued]:
        return TypeStateMessage(item)

    def _advance(self, expected: type, new: type) -> QueueMessageWithProvenance:
        if self._moved:
            raise AlreadyConsumed(f"this {self._state.__name__} message was already moved on")
        if self._state is not expected:
            raise TypeError(
                f"cannot leave state {self._state.__name__} as if it were {expected.__name__}"
            )
        self._moved = True
        return self._item

    @staticmethod
    def _in(state: type, item: QueueMessageWithProvenance) -> Any:
        obj = object.__new__(TypeStateMessage)
        obj._item, obj._state, obj._moved = item, state, False
        return obj

    def persist(self: TypeStateMessage[Queued], wal: WriteAheadLog) -> TypeStateMessage[Persisted]:
        """Write the submit record and fsync it; then the message is Persisted."""
        from sidecar.wal import encode_frame, submit_record  # noqa: PLC0415 - NoClone alone stays light

        item = self._advance(Queued, Persisted)
        item.persisted = True
        try:
            wal.append_and_sync(encode_frame([submit_record(item)]))
        except BaseException:
            item.persisted = False
            self._moved = False
            raise
        result: TypeStateMessage[Persisted] = self._in(Persisted, item)
        return result

    def consume(self: TypeStateMessage[Persisted]) -> TypeStateMessage[Consumed]:
        result: TypeStateMessage[Consumed] = self._in(Consumed, self._advance(Persisted, Consumed))
        return result

    def into_inner(self: TypeStateMessage[Consumed]) -> QueueMessageWithProvenance:
        return self._advance(Consumed, Consumed)

    @property
    def state(self) -> type:
        return self._state

    def __copy__(self) -> NoReturn:
        raise TypeError("TypeStateMessage cannot be copied")

    def __deepcopy__(self, memo: Any) -> NoReturn:
        raise TypeError("TypeStateMessage cannot be copied")

    def __reduce_ex__(self, protocol: Any) -> NoReturn:
        raise TypeError("TypeStateMessage cannot be pickled")
