"""Who may open an SSH connection now: OpenSSH's connection admission, without sockets.

- ``MaxStartups start:rate:full``: with ``start`` or more unauthenticated connections,
  a new one is dropped with probability ``rate``%, rising linearly to 100% at ``full``.
- ``PerSourceMaxStartups``: at most this many unauthenticated connections per address.
- ``PerSourcePenalties``: an address whose connections fail authentication, time out
  in the login grace time or close without authenticating accrues penalty seconds;
  once they reach ``min`` it is refused until they run out (at most ``max`` ahead).
- Authenticated connections have their own cap, ``max_sessions``: an unauthenticated
  connection never counts against it, and one that authenticates when it is full is
  refused.

The server calls :meth:`ConnectionAdmission.arrive` on accept,
:meth:`ConnectionAdmission.authenticated` on a successful login and
:meth:`ConnectionAdmission.gone` when the connection ends; the clock and the random
source are injected so the rules are testable without a network.
"""

from __future__ import annotations

import enum
import ipaddress
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

__all__ = [
    "AdmissionLimits",
    "ConnectionAdmission",
    "Ending",
    "Penalties",
    "Refusal",
    "Startups",
    "parse_networks",
    "parse_penalties",
    "parse_startups",
]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class Refusal(enum.StrEnum):
    """Why a connection was refused (the word in the refusal summary)."""

    PENALIZED = "penalized"  # the address is serving a penalty
    PER_SOURCE = "per_source"  # PerSourceMaxStartups reached for the address
    FULL = "full"  # MaxStartups full reached
    EARLY_DROP = "early_drop"  # MaxStartups random early drop
    SESSIONS = "sessions"  # authenticated, but max_sessions reached
    KEY = "key"  # key not in authorized_keys
    USERNAME = "username"  # SSH username neither empty, the principal nor the default
    SIGNATURE = "signature"  # an authorized key was offered, never with a valid signature
    AUTH_TRIES = "auth_tries"  # more keys tried on one connection than max_auth_tries
    REKEY = "rekey"  # a second key exchange before authentication


class Ending(enum.StrEnum):
    """How an unauthenticated connection ended (what its address is charged)."""

    AUTHENTICATED = "authenticated"  # no penalty
    AUTHFAIL = "authfail"  # it offered a key (any key) and never got in
    NOAUTH = "noauth"  # closed (or broke the protocol) before offering a key
    GRACE_EXCEEDED = "grace_exceeded"  # still not in after the login grace time


@dataclass(frozen=True, slots=True)
class Startups:
    """``MaxStartups start:rate:full``."""

    start: int = 10
    rate: int = 30
    full: int = 100

    def __post_init__(self) -> None:
        if not (1 <= self.start <= self.full and 0 <= self.rate <= 100):
            raise ValueError(
                f"max_startups {self}: needs 1 <= start <= full and rate 0-100 (e.g. 10:30:100)"
            )

    def __str__(self) -> str:
        return f"{self.start}:{self.rate}:{self.full}"

    def drop_probability(self, unauthenticated: int) -> float:
        if unauthenticated >= self.full:
            return 1.0
        if unauthenticated < self.start:
            return 0.0
        span = self.full - self.start
        return (self.rate + (100 - self.rate) * (unauthenticated - self.start) / span) / 100


def parse_startups(text: str) -> Startups:
    """``"10:30:100"`` (or ``"10"``: refuse every one past 10, as OpenSSH reads it)."""
    parts = text.split(":")
    try:
        numbers = [int(p) for p in parts]
    except ValueError:
        numbers = []
    if len(numbers) == 1 and numbers[0] >= 1:
        return Startups(numbers[0], 100, numbers[0])
    if len(numbers) != 3:
        raise ValueError(f"max_startups {text!r}: expected start:rate:full, e.g. 10:30:100")
    return Startups(*numbers)


@dataclass(frozen=True, slots=True)
class Penalties:
    """``PerSourcePenalties``: seconds charged per ending, and when they are enforced."""

    authfail: float = 5.0
    noauth: float = 1.0
    grace_exceeded: float = 10.0
    min: float = 15.0
    max: float = 600.0
    max_sources: int = 65536  # addresses tracked at once; more are not tracked
    enabled: bool = True

    def __post_init__(self) -> None:
        for name in ("authfail", "noauth", "grace_exceeded", "min", "max"):
            if not math.isfinite(getattr(self, name)):  # nan passes every comparison
                raise ValueError(f"penalties: {name} must be a finite number of seconds")
        charges = (self.authfail, self.noauth, self.grace_exceeded)
        if min(charges) < 0 or not 0 <= self.min <= self.max or self.max_sources < 1:
            raise ValueError("penalties: charges >= 0, 0 <= min <= max, max_sources >= 1")

    def charge(self, ending: Ending) -> float:
        return {
            Ending.AUTHFAIL: self.authfail,
            Ending.NOAUTH: self.noauth,
            Ending.GRACE_EXCEEDED: self.grace_exceeded,
        }.get(ending, 0.0)


PENALTY_WORDS = {
    "authfail": "authfail",
    "noauth": "noauth",
    "grace-exceeded": "grace_exceeded",
    "min": "min",
    "max": "max",
    "max-sources": "max_sources",
}


def parse_penalties(text: str) -> Penalties:
    """OpenSSH's ``PerSourcePenalties`` syntax: ``"authfail:5 noauth:1 grace-exceeded:10
    min:15 max:600 max-sources:65536"`` (any subset; the rest keep their defaults), or
    ``"no"`` to turn penalties off."""
    words = text.split()
    if words == ["no"]:
        return Penalties(enabled=False)
    values: dict[str, float | int] = {}
    for word in words:
        name, _, value = word.partition(":")
        field_name = PENALTY_WORDS.get(name)
        try:
            number = float(value.removesuffix("s"))
        except ValueError:
            field_name = None
        if field_name is None:
            known = ", ".join(f"{w}:N" for w in PENALTY_WORDS)
            raise ValueError(f"per_source_penalties: {word!r} is not one of {known}, or 'no'")
        if not math.isfinite(number):  # "nan", "inf": float() takes them
            raise ValueError(f"per_source_penalties: {word!r}: {name} must be a finite number")
        values[field_name] = int(number) if field_name == "max_sources" else number
    return Penalties(**values)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class AdmissionLimits:
    """Every admission setting, with the OpenSSH name it mirrors (docs/operations.md)."""

    max_startups: Startups = field(default_factory=Startups)  # MaxStartups
    per_source_max_startups: int = 10  # PerSourceMaxStartups
    login_grace_seconds: float = 10.0  # LoginGraceTime
    max_auth_tries: int = 6  # MaxAuthTries: keys tried per connection
    penalties: Penalties = field(default_factory=Penalties)  # PerSourcePenalties
    penalty_exempt: tuple[Network, ...] = ()  # PerSourcePenaltyExemptList
    refusal_log_seconds: float = 10.0  # one refusal summary line per interval at most

    def __post_init__(self) -> None:
        # named by their [admission] keys (docs/operations.md), not the field names
        if self.per_source_max_startups < 1:
            raise ValueError("per_source_max_startups: must be >= 1")
        if self.max_auth_tries < 1:
            raise ValueError("max_auth_tries: must be >= 1")
        if not 0 < self.login_grace_seconds <= 600:
            raise ValueError("login_grace_time: must be in (0, 600] seconds")
        if self.refusal_log_seconds <= 0:
            raise ValueError("refusal_log_interval: must be positive (seconds)")


def parse_networks(values: Sequence[str]) -> tuple[Network, ...]:
    """``["127.0.0.1", "10.0.0.0/8"]`` as networks; a bad entry raises ValueError."""
    return tuple(ipaddress.ip_network(v, strict=False) for v in values)


@dataclass(slots=True)
class _Penalty:
    until: float  # monotonic time the accrued seconds run out
    enforced: bool = False  # reached ``min`` once: refused until ``until``


class ConnectionAdmission:
    """The admission state of one listener: counts per address, penalties, sessions."""

    def __init__(
        self,
        limits: AdmissionLimits,
        max_sessions: int,
        clock: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.limits = limits
        self.max_sessions = max_sessions
        self._clock = clock
        self._rand = rand
        self.unauthenticated = 0
        self.sessions = 0
        self._per_source: dict[str, int] = {}
        self._penalties: dict[str, _Penalty] = {}

    # ----- events

    def arrive(self, source: str) -> Refusal | None:
        """A new TCP connection from ``source``: None admits it (it is then counted
        as unauthenticated until :meth:`authenticated` or :meth:`gone`)."""
        if self.penalized(source):
            return Refusal.PENALIZED
        if self._per_source.get(source, 0) >= self.limits.per_source_max_startups:
            return Refusal.PER_SOURCE
        p = self.limits.max_startups.drop_probability(self.unauthenticated)
        if p >= 1.0:
            return Refusal.FULL
        if p > 0 and self._rand() < p:
            return Refusal.EARLY_DROP
        self.unauthenticated += 1
        self._per_source[source] = self._per_source.get(source, 0) + 1
        return None

    def authenticated(self, source: str) -> bool:
        """An admitted connection logged in; it no longer counts as unauthenticated.
        True if a session slot was free (it now holds one: call :meth:`gone` with
        AUTHENTICATED when it ends); false if not (the caller closes it, no penalty)."""
        self._leave_startups(source)
        if self.sessions >= self.max_sessions:
            return False
        self.sessions += 1
        return True

    def gone(self, source: str, ending: Ending) -> None:
        """An admitted connection ended: AUTHENTICATED for one holding a session slot;
        any other ending (of one still unauthenticated) charges its address."""
        if ending is Ending.AUTHENTICATED:
            self.sessions = max(0, self.sessions - 1)
            return
        self._leave_startups(source)
        self._charge(source, self.limits.penalties.charge(ending))

    # ----- penalties

    def penalized(self, source: str) -> bool:
        entry = self._penalties.get(source)
        if entry is None:
            return False
        if entry.until <= self._clock():
            del self._penalties[source]
            return False
        return entry.enforced

    def penalized_sources(self) -> int:
        now = self._clock()
        return sum(1 for e in self._penalties.values() if e.enforced and e.until > now)

    def _exempt(self, source: str) -> bool:
        if not self.limits.penalty_exempt:
            return False
        try:
            addr = ipaddress.ip_address(source)
        except ValueError:
            return False
        return any(addr in net for net in self.limits.penalty_exempt)

    def _charge(self, source: str, seconds: float) -> None:
        pen = self.limits.penalties
        if seconds <= 0 or not pen.enabled or self._exempt(source):
            return
        now = self._clock()
        entry = self._penalties.get(source)
        if entry is None or entry.until <= now:
            if len(self._penalties) >= pen.max_sources and not self._evict_expired(now):
                return  # table full of live penalties: this address goes untracked
            entry = self._penalties[source] = _Penalty(now)
        entry.until = min(now + pen.max, entry.until + seconds)
        if entry.until - now >= pen.min:
            entry.enforced = True

    def _evict_expired(self, now: float) -> bool:
        expired = [s for s, e in self._penalties.items() if e.until <= now]
        for s in expired:
            del self._penalties[s]
        return len(self._penalties) < self.limits.penalties.max_sources

    def _leave_startups(self, source: str) -> None:
        n = self._per_source.get(source, 0)
        if n <= 0:
            return
        self.unauthenticated -= 1
        if n == 1:
            del self._per_source[source]
        else:
            self._per_source[source] = n - 1
