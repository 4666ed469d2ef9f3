"""Typed access to a request's ``params``: a wrong type is a ``bad_request``."""

from __future__ import annotations

from typing import Any, TypeVar

from transport.protocol._errors import ProtocolError

T = TypeVar("T")

_MISSING = object()


class Params:
    """Reads each parameter once with its type; :meth:`finish` rejects the rest."""

    def __init__(self, raw: dict[str, Any], request_id: int | str | None = None) -> None:
        self._raw = raw
        self._seen: set[str] = set()
        self._id = request_id

    def _get(self, name: str) -> object:
        self._seen.add(name)
        return self._raw.get(name, _MISSING)

    def _fail(self, message: str) -> ProtocolError:
        return ProtocolError(message, self._id)

    def raw(self, name: str) -> Any:
        value = self._get(name)
        if value is _MISSING:
            raise self._fail(f"missing parameter '{name}'")
        return value

    def optional_raw(self, name: str) -> Any:
        value = self._get(name)
        return None if value is _MISSING else value

    def string(self, name: str, default: str | None = None, choices: tuple[str, ...] = ()) -> str:
        value = self._get(name)
        if value is _MISSING or value is None:
            if default is None:
                raise self._fail(f"missing parameter '{name}'")
            return default
        if not isinstance(value, str):
            raise self._fail(f"parameter '{name}' must be a string")
        if choices and value not in choices:
            raise self._fail(f"parameter '{name}' must be one of {', '.join(choices)}")
        return value

    def boolean(self, name: str, default: bool) -> bool:
        value = self._get(name)
        if value is _MISSING or value is None:
            return default
        if not isinstance(value, bool):
            raise self._fail(f"parameter '{name}' must be true or false")
        return value

    def integer(
        self, name: str, default: int | None = None, minimum: int = 0, maximum: int = 2**63
    ) -> int:
        value = self._get(name)
        if value is _MISSING or value is None:
            if default is None:
                raise self._fail(f"missing parameter '{name}'")
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._fail(f"parameter '{name}' must be an integer")
        if not minimum <= value <= maximum:
            raise self._fail(f"parameter '{name}' must be between {minimum} and {maximum}")
        return value

    def number(
        self, name: str, default: float | None = None, minimum: float = 0.0, maximum: float = 1e9
    ) -> float:
        value = self._get(name)
        if value is _MISSING or value is None:
            if default is None:
                raise self._fail(f"missing parameter '{name}'")
            return default
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self._fail(f"parameter '{name}' must be a number")
        if not minimum <= value <= maximum:
            raise self._fail(f"parameter '{name}' must be between {minimum} and {maximum}")
        return float(value)

    def obj(self, name: str) -> dict[str, Any]:
        value = self.raw(name)
        if not isinstance(value, dict):
            raise self._fail(f"parameter '{name}' must be an object")
        return value

    def array(self, name: str, max_items: int) -> list[Any]:
        value = self.raw(name)
        if not isinstance(value, list):
            raise self._fail(f"parameter '{name}' must be an array")
        if len(value) > max_items:
            raise self._fail(f"parameter '{name}' has {len(value)} items, limit {max_items}")
        return value

    def finish(self) -> None:
        extra = set(self._raw) - self._seen
        if extra:
            raise self._fail(f"unknown parameters: {sorted(extra)}")
