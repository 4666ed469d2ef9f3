"""Errors of the crypto layer."""

from __future__ import annotations

from sidecar.errors import ErrorCode, SidecarError


class AlgorithmUnavailable(SidecarError):
    """No loaded provider implements the requested algorithm."""

    code = ErrorCode.UNAVAILABLE


class ProviderMismatch(SidecarError):
    """A provider reported sizes that differ from the algorithm's parameters."""

    code = ErrorCode.INTERNAL
