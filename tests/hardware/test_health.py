from __future__ import annotations

import math
import os
import random
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hardware.health import (
    HealthParameters,
    HealthTest,
    apt_cutoff,
    binomial_critical_value,
    rct_cutoff,
)


@pytest.mark.parametrize(
    ("alpha", "h", "w", "rct", "apt"),
    [(2.0**-20, 8, 512, 4, 13), (2.0**-30, 1, 512, 31, 325)],
)
def test_cutoffs_match_the_known_values(alpha: float, h: float, w: int, rct: int, apt: int) -> None:
    assert rct_cutoff(alpha, h) == rct
    assert apt_cutoff(alpha, h, w) == apt


def brute_critbinom(n: int, p: Fraction, q: Fraction) -> int:
    """Smallest k with CDF(k) >= q, summing the pmf upward from 0 exactly."""
    cdf = Fraction(0)
    for k in range(n + 1):
        cdf += math.comb(n, k) * p**k * (1 - p) ** (n - k)
        if cdf >= q:
            return k
    return n


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(2, 80),
    h=st.integers(1, 8),
    alpha_log2=st.integers(1, 40),
)
def test_binomial_quantile_agrees_with_brute_force(n: int, h: int, alpha_log2: int) -> None:
    p, alpha = Fraction(1, 2**h), Fraction(1, 2**alpha_log2)
    assert binomial_critical_value(n, p, alpha) == brute_critbinom(n, p, 1 - alpha)


@pytest.mark.parametrize(("alpha_log2", "h"), [(20, 8), (30, 1), (40, 7), (40, 4)])
def test_default_window_apt_agrees_with_brute_force(alpha_log2: int, h: int) -> None:
    p, alpha = Fraction(1, 2**h), Fraction(1, 2**alpha_log2)
    assert apt_cutoff(2.0**-alpha_log2, h, 512) == 1 + brute_critbinom(512, p, 1 - alpha)


def test_rct_cutoff_is_smallest_run_rarer_than_alpha() -> None:
    for h in range(1, 9):
        c = rct_cutoff(2.0**-40, h)
        # a run of c identical samples has probability 2^-H(c-1) <= alpha; c-1 does not
        assert Fraction(2) ** (-h * (c - 1)) <= Fraction(2) ** -40
        assert Fraction(2) ** (-h * (c - 2)) > Fraction(2) ** -40


def test_defaults() -> None:
    p = HealthParameters()
    assert (p.rct_cutoff, p.apt_cutoff) == (7, 26)


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError):
        rct_cutoff(0.0, 7)
    with pytest.raises(ValueError):
        apt_cutoff(2.0**-40, 9, 512)


def test_stuck_stream_fails_both_tests() -> None:
    t = HealthTest()
    assert not t.feed(b"\x42" * 2048)
    assert t.counts.rct_failures >= 1
    assert t.counts.apt_failures >= 1


def test_biased_stream_fails() -> None:
    rnd = random.Random(7)
    data = bytes(0 if rnd.random() < 0.5 else rnd.randrange(256) for _ in range(4096))
    t = HealthTest()
    assert not t.feed(data)


def test_urandom_passes() -> None:
    # false-alarm probability per test is alpha = 2^-40 per sample: this cannot flake
    t = HealthTest()
    assert t.feed(os.urandom(64 * 1024))
    assert t.counts.samples == 64 * 1024
    assert not t.counts.failed


def test_state_carries_across_feeds() -> None:
    t = HealthTest()
    assert t.feed(os.urandom(100) + b"\x07" * 4)
    assert not t.feed(b"\x07" * 3)  # the run continues into the next chunk: 7 in a row
