"""ETSI GS QKD 014 (v1.1.1) REST client over mutual TLS.

Key material only ever lives in `Key.key`; `Key.__repr__` hides it and nothing here
logs it.
"""

from __future__ import annotations

import base64
import binascii
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import quote

import httpx
import orjson

from hardware.errors import (
    KMEBadRequest,
    KMEConnectionError,
    KMEHTTPError,
    KMEProtocolError,
    KMETimeout,
    KMETLSError,
    KMEUnauthorized,
    KMEUnavailable,
)

API = "/api/v1/keys"
MAX_RESPONSE_BYTES = 1 << 20  # a KME answer larger than this is refused unread
MAX_KEYS = 1024  # keys in one answer, at most (and never more than asked for)
MAX_KEY_BYTES = 8192  # one key (65,536 bits), at most, when no size was asked
MAX_KEY_ID_CHARS = 256
MAX_ERROR_CHARS = 300  # of an ETSI error message, kept (it reaches logs and peers)
MAX_ERROR_DETAILS = 10


@dataclass(frozen=True)
class KeyStatus:
    source_KME_ID: str
    target_KME_ID: str
    master_SAE_ID: str
    slave_SAE_ID: str
    key_size: int
    stored_key_count: int
    max_key_count: int
    max_key_per_request: int
    max_key_size: int
    min_key_size: int
    max_SAE_ID_count: int
    extensions: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, body: Any) -> KeyStatus:
        if not isinstance(body, dict):
            raise KMEProtocolError("status: response is not a JSON object")
        try:
            return cls(
                source_KME_ID=_str(body, "source_KME_ID"),
                target_KME_ID=_str(body, "target_KME_ID"),
                master_SAE_ID=_str(body, "master_SAE_ID"),
                slave_SAE_ID=_str(body, "slave_SAE_ID"),
                key_size=_int(body, "key_size"),
                stored_key_count=_int(body, "stored_key_count"),
                max_key_count=_int(body, "max_key_count"),
                max_key_per_request=_int(body, "max_key_per_request"),
                max_key_size=_int(body, "max_key_size"),
                min_key_size=_int(body, "min_key_size"),
                max_SAE_ID_count=int(body.get("max_SAE_ID_count", 0)),
                extensions=_extension(body.get("status_extension")),
            )
        except (TypeError, ValueError) as exc:
            raise KMEProtocolError(f"status: {exc}") from exc


@dataclass(frozen=True)
class Key:
    key_ID: str
    key: bytes = field(repr=False)

    def __repr__(self) -> str:
        return f"Key(key_ID={self.key_ID!r}, {len(self.key) * 8} bits)"


def _str(body: Mapping[str, Any], name: str) -> str:
    v = body.get(name)
    if not isinstance(v, str):
        raise ValueError(f"field {name} missing or not a string")
    return v


def _int(body: Mapping[str, Any], name: str) -> int:
    v = body.get(name)
    if not isinstance(v, int) or isinstance(v, bool):
        raise ValueError(f"field {name} missing or not an integer")
    return v


def _extension(value: Any) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError("status_extension is not an object")
    return value


def parse_key_container(
    body: Any,
    number: int | None = None,
    size: int | None = None,
    key_ids: Sequence[str] | None = None,
) -> list[Key]:
    """The keys of an ETSI 014 key container, checked: exactly ``number`` keys (or exactly
    ``key_ids``, in any order), each of ``size`` bits when asked, distinct non-empty
    key_IDs, never more than :data:`MAX_KEYS` keys or :data:`MAX_KEY_BYTES` per key."""
    if not isinstance(body, dict) or not isinstance(body.get("keys"), list):
        raise KMEProtocolError("key container: no 'keys' list")
    items = body["keys"]
    want = len(key_ids) if key_ids is not None else number
    if len(items) > MAX_KEYS or (want is not None and len(items) != want):
        raise KMEProtocolError(f"key container: {len(items)} keys, asked for {want}")
    if size is not None and (size <= 0 or size % 8):
        raise KMEProtocolError(f"key container: cannot check a key size of {size} bits")
    key_bytes = size // 8 if size is not None else None
    keys: list[Key] = []
    seen: set[str] = set()
    for item in items:
        if not isinstance(item, dict):
            raise KMEProtocolError("key container: key entry is not an object")
        key_id, key_b64 = item.get("key_ID"), item.get("key")
        if not isinstance(key_id, str) or not isinstance(key_b64, str):
            raise KMEProtocolError("key container: key_ID/key missing")
        if not 0 < len(key_id) <= MAX_KEY_ID_CHARS:
            raise KMEProtocolError("key container: key_ID empty or too long")
        if key_id in seen:
            raise KMEProtocolError(f"key container: key_ID {key_id!r} twice")
        seen.add(key_id)
        # check the length before decoding: base64 of b bytes is 4 * ceil(b / 3) chars
        limit = 4 * -(-(key_bytes or MAX_KEY_BYTES) // 3)
        if not key_b64 or len(key_b64) > limit or (key_bytes and len(key_b64) != limit):
            raise KMEProtocolError(f"key container: key {key_id!r} has the wrong size")
        try:
            key = base64.b64decode(key_b64, validate=True)
        except binascii.Error as exc:
            raise KMEProtocolError(f"key container: key {key_id!r} is not base64") from exc
        if not key or (key_bytes is not None and len(key) != key_bytes):
            raise KMEProtocolError(
                f"key container: key {key_id!r} is {len(key) * 8} bits, asked for {size}"
            )
        keys.append(Key(key_ID=key_id, key=key))
    if key_ids is not None and seen != set(key_ids):
        raise KMEProtocolError("key container: other key_IDs than asked for")
    return keys


def client_tls_context(cert: str, key: str, ca: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    return ctx


class KMEClient:
    """One SAE talking to its own KME.

    `async with KMEClient(url, cert=..., key=..., ca=...) as kme: await kme.status(peer)`
    """

    def __init__(
        self,
        base_url: str,
        *,
        cert: str,
        key: str,
        ca: str,
        timeout: float = 5.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        if httpx.URL(self.base_url).scheme != "https":
            # keys travel in the answers: mutual TLS or nothing
            raise ValueError(f"KME URL must be https://, not {self.base_url!r}")
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            verify=client_tls_context(cert, key, ca),
            timeout=timeout,
            headers={"Accept": "application/json"},
            trust_env=False,  # no proxy or CA bundle from the environment
        )

    async def __aenter__(self) -> KMEClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    async def status(self, slave_sae_id: str) -> KeyStatus:
        return KeyStatus.from_json(await self._call("GET", f"{_sae(slave_sae_id)}/status"))

    async def enc_keys(
        self,
        slave_sae_id: str,
        number: int = 1,
        size: int | None = None,
        *,
        method: Literal["GET", "POST"] = "GET",
        additional_slave_sae_ids: Sequence[str] = (),
        extension_mandatory: Sequence[Mapping[str, Any]] = (),
        extension_optional: Sequence[Mapping[str, Any]] = (),
    ) -> list[Key]:
        path = f"{_sae(slave_sae_id)}/enc_keys"
        if method == "GET":
            if additional_slave_sae_ids or extension_mandatory or extension_optional:
                raise ValueError("additional slave SAE IDs and extensions need method='POST'")
            params: dict[str, int] = {"number": number}
            if size is not None:
                params["size"] = size
            body = await self._call("GET", path, params=params)
        else:
            req: dict[str, Any] = {"number": number}
            if size is not None:
                req["size"] = size
            if additional_slave_sae_ids:
                req["additional_slave_SAE_IDs"] = list(additional_slave_sae_ids)
            if extension_mandatory:
                req["extension_mandatory"] = [dict(e) for e in extension_mandatory]
            if extension_optional:
                req["extension_optional"] = [dict(e) for e in extension_optional]
            body = await self._call("POST", path, json=req)
        return parse_key_container(body, number=number, size=size)

    async def dec_keys(
        self,
        master_sae_id: str,
        key_ids: Sequence[str],
        *,
        method: Literal["GET", "POST"] = "POST",
    ) -> list[Key]:
        path = f"{_sae(master_sae_id)}/dec_keys"
        if method == "GET":
            if len(key_ids) != 1:
                raise ValueError("dec_keys GET carries exactly one key_ID; use POST")
            body = await self._call("GET", path, params={"key_ID": key_ids[0]})
        else:
            body = await self._call(
                "POST", path, json={"key_IDs": [{"key_ID": k} for k in key_ids]}
            )
        return parse_key_container(body, key_ids=key_ids)

    async def _call(
        self,
        method: str,
        path: str,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
    ) -> Any:
        url = f"{API}/{path}"
        try:
            request = self._client.build_request(method, url, params=params, json=json)
            resp = await self._client.send(request, stream=True)
            try:
                content = await _read_bounded(resp)
            finally:
                await resp.aclose()
        except ssl.SSLError as exc:  # an alert read after the handshake (TLS 1.3 client auth)
            raise KMETLSError(f"TLS with KME {self.base_url} failed: {exc}") from exc
        except httpx.TimeoutException as exc:
            raise KMETimeout(f"KME {self.base_url} did not answer in time") from exc
        except httpx.ConnectError as exc:
            if _is_tls(exc):
                raise KMETLSError(f"TLS with KME {self.base_url} failed: {_root(exc)}") from exc
            raise KMEConnectionError(f"cannot reach KME {self.base_url}: {_root(exc)}") from exc
        except httpx.HTTPError as exc:
            if _is_tls(exc):
                raise KMETLSError(f"TLS with KME {self.base_url} failed: {_root(exc)}") from exc
            raise KMEConnectionError(f"KME {self.base_url}: {_root(exc)}") from exc
        if content is None:
            raise KMEProtocolError(
                f"KME {self.base_url} sent more than {MAX_RESPONSE_BYTES} bytes; refused"
            )
        if resp.status_code != 200:
            raise _http_error(resp.status_code, resp.reason_phrase, content)
        try:
            return orjson.loads(content)
        except orjson.JSONDecodeError as exc:
            raise KMEProtocolError(f"KME {self.base_url} sent malformed JSON") from exc


def _sae(sae_id: str) -> str:
    return quote(sae_id, safe="")


def _root(exc: BaseException) -> str:
    while exc.__cause__ is not None or exc.__context__ is not None:
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return str(exc) or type(exc).__name__


def _is_tls(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError) or "SSL" in str(seen) or "TLS" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


async def _read_bounded(resp: httpx.Response) -> bytes | None:
    """The body, or None once it passes :data:`MAX_RESPONSE_BYTES` (the rest unread)."""
    declared = resp.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_RESPONSE_BYTES:
        return None
    chunks: list[bytes] = []
    total = 0
    async for chunk in resp.aiter_bytes():
        total += len(chunk)
        if total > MAX_RESPONSE_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _short(text: str) -> str:
    return text if len(text) <= MAX_ERROR_CHARS else text[:MAX_ERROR_CHARS] + "…"


def _http_error(status: int, reason: str, content: bytes) -> KMEHTTPError:
    """The ETSI error body, bounded: it reaches logs and, through QKD failures, peers."""
    message, details = reason or "error", []
    try:
        body = orjson.loads(content)
        if isinstance(body, dict):
            message = str(body.get("message", message))
            raw = body.get("details")
            if isinstance(raw, list):
                details = [
                    d if len(orjson.dumps(d)) <= MAX_ERROR_CHARS else _short(str(d))
                    for d in raw[:MAX_ERROR_DETAILS]
                ]
    except orjson.JSONDecodeError:
        pass
    cls = {400: KMEBadRequest, 401: KMEUnauthorized, 503: KMEUnavailable}.get(status, KMEHTTPError)
    return cls(status, _short(message), details)
