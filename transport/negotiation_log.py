"""What to log when an SSH algorithm negotiation fails: both sides' offers, bounded.

asyncssh raises ``KeyExchangeFailed`` when a client shares no key exchange, host-key,
cipher or MAC algorithm with us, and says so only through its own logger, which the
daemon caps at WARNING. An operator needs the peer and both algorithm lists to see why
a client (a stock OpenSSH, an older OQS-OpenSSH) cannot connect. A stranger controls
its lists, so each is cut to ``MAX_NAMES`` names of ``MAX_NAME_CHARS``; the line rate is
bounded by the server's ``RefusalLog``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from asyncssh.packet import PacketDecodeError, SSHPacket

from sidecar.logs import printable

MAX_NAMES = 16
MAX_NAME_CHARS = 64
MAX_REASON_CHARS = 200


@dataclass(frozen=True, slots=True)
class Offer:
    """The key exchange and host-key algorithms one side's KEXINIT offered."""

    kex: tuple[str, ...]
    host_keys: tuple[str, ...]


def parse_kexinit(payload: bytes | None) -> Offer | None:
    """The first two name lists of a KEXINIT message (type byte included), or None."""
    if not payload:
        return None
    try:
        packet = SSHPacket(payload)
        packet.get_byte()  # MSG_KEXINIT
        packet.get_bytes(16)  # cookie
        kex = packet.get_namelist()
        host_keys = packet.get_namelist()
    except PacketDecodeError:
        return None
    return Offer(_names(kex), _names(host_keys))


def _names(raw: Sequence[bytes]) -> tuple[str, ...]:
    return tuple(printable(n.decode("ascii", "replace")) for n in raw)


# names in the kex list that announce extensions, not algorithms (RFC 8308, strict KEX)
_PSEUDO_KEX = ("ext-info-", "kex-strict-")


def mismatch(theirs: Offer | None, ours: Offer | None) -> str | None:
    """Why these offers cannot agree on a key exchange or host key, or None if they can
    (or one is missing). For a peer that hangs up before asyncssh says so itself."""
    if theirs is None or ours is None:
        return None
    kex = [k for k in theirs.kex if not k.startswith(_PSEUDO_KEX)]
    if not set(kex) & set(ours.kex):
        return "no matching key exchange algorithm"
    if not set(theirs.host_keys) & set(ours.host_keys):
        return "no matching host key algorithm"
    return None


def shown(names: Sequence[str] | None) -> str:
    """A name list for one log line, cut to ``MAX_NAMES`` names of ``MAX_NAME_CHARS``."""
    if names is None:
        return "(not received)"
    cut = [n if len(n) <= MAX_NAME_CHARS else n[:MAX_NAME_CHARS] + "…" for n in names]
    text = ",".join(cut[:MAX_NAMES]) or "(none)"
    if len(names) > MAX_NAMES:
        text += f",…(+{len(names) - MAX_NAMES} more)"
    return text


def describe(peer: str, reason: str, theirs: Offer | None, ours: Offer | None) -> str:
    """One bounded line: who, why, and both sides' key exchange and host-key lists."""
    return (
        f"{peer}: {printable(reason[:MAX_REASON_CHARS])}; "
        f"client offered kex={shown(theirs.kex if theirs else None)} "
        f"host_keys={shown(theirs.host_keys if theirs else None)}; "
        f"we offer kex={shown(ours.kex if ours else None)} "
        f"host_keys={shown(ours.host_keys if ours else None)}"
    )
