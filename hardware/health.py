"""NIST SP 800-90B §4.4 continuous health tests on byte-wide samples.

Repetition count test (RCT, §4.4.1) and adaptive proportion test (APT, §4.4.2). The
APT cutoff is the exact binomial quantile, computed with integers only: with
p = 2^-H written as a/b, P(X = k) = C(W, k) a^k (b - a)^(W - k) / b^W, so the tail is
compared against alpha without any rounding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction

DEFAULT_ALPHA = 2.0**-40
DEFAULT_H = 7.0
DEFAULT_WINDOW = 512


def rct_cutoff(alpha: float, entropy_bits: float) -> int:
    """C = 1 + ceil(-log2(alpha) / H)."""
    _check(alpha, entropy_bits)
    return 1 + math.ceil(Fraction(-math.log2(alpha)) / Fraction(entropy_bits))


def binomial_critical_value(n: int, p: Fraction, alpha: Fraction) -> int:
    """Smallest k with P(X <= k) >= 1 - alpha for X ~ Binomial(n, p) (Excel CRITBINOM)."""
    a, b = p.numerator, p.denominator
    scale = b**n
    limit = alpha * scale  # compare integer tail numerators against alpha * b^n
    tail = 0  # numerator of P(X > k), starting at k = n
    k = n
    while k > 0:
        term = math.comb(n, k) * a**k * (b - a) ** (n - k)
        if tail + term > limit:
            break
        tail += term
        k -= 1
    return k


def apt_cutoff(alpha: float, entropy_bits: float, window: int) -> int:
    """C = 1 + CRITBINOM(W, 2^-H, 1 - alpha)."""
    _check(alpha, entropy_bits)
    if window < 2:
        raise ValueError("APT window must be at least 2 samples")
    p = Fraction(2) ** -int(entropy_bits) if float(entropy_bits).is_integer() else None
    if p is None:
        p = Fraction(2.0**-entropy_bits)
    return 1 + binomial_critical_value(window, p, Fraction(alpha))


def _check(alpha: float, entropy_bits: float) -> None:
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if not 0.0 < entropy_bits <= 8.0:
        raise ValueError(f"H must be in (0, 8] bits per byte, got {entropy_bits}")


@dataclass(frozen=True)
class HealthParameters:
    alpha: float = DEFAULT_ALPHA
    entropy_bits: float = DEFAULT_H
    window: int = DEFAULT_WINDOW
    startup_samples: int = 1024  # SP 800-90B §4.3: at least 1024 samples before use

    @property
    def rct_cutoff(self) -> int:
        return rct_cutoff(self.alpha, self.entropy_bits)

    @property
    def apt_cutoff(self) -> int:
        return apt_cutoff(self.alpha, self.entropy_bits, self.window)


@dataclass
class HealthCounts:
    samples: int = 0
    rct_failures: int = 0
    apt_failures: int = 0
    longest_run: int = 0
    highest_window_count: int = 0
    windows: int = 0

    @property
    def failed(self) -> bool:
        return self.rct_failures > 0 or self.apt_failures > 0

    def as_dict(self) -> dict[str, int]:
        return {
            "samples": self.samples,
            "rct_failures": self.rct_failures,
            "apt_failures": self.apt_failures,
            "longest_run": self.longest_run,
            "highest_window_count": self.highest_window_count,
            "windows": self.windows,
        }


@dataclass
class HealthTest:
    """Both continuous tests over a byte stream; state carries across `feed` calls."""

    params: HealthParameters = field(default_factory=HealthParameters)
    counts: HealthCounts = field(default_factory=HealthCounts)

    def __post_init__(self) -> None:
        self._rct_c = self.params.rct_cutoff
        self._apt_c = self.params.apt_cutoff
        self._last: int | None = None
        self._run = 0
        self._apt_ref: int | None = None
        self._apt_seen = 0
        self._apt_count = 0

    def feed(self, data: bytes) -> bool:
        """Test `data`; return False if any failure happened in it."""
        before = self.counts.rct_failures + self.counts.apt_failures
        c = self.counts
        window = self.params.window
        for x in data:
            c.samples += 1
            if x == self._last:
                self._run += 1
                if self._run == self._rct_c:  # count one failure per run
                    c.rct_failures += 1
            else:
                self._last = x
                self._run = 1
            c.longest_run = max(c.longest_run, self._run)
            if self._apt_ref is None:
                self._apt_ref, self._apt_seen, self._apt_count = x, 1, 1
                continue
            self._apt_seen += 1
            if x == self._apt_ref:
                self._apt_count += 1
                if self._apt_count == self._apt_c:
                    c.apt_failures += 1
            if self._apt_seen == window:
                c.windows += 1
                c.highest_window_count = max(c.highest_window_count, self._apt_count)
                self._apt_ref = None
        return self.counts.rct_failures + self.counts.apt_failures == before
