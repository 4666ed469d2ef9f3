"""Connection admission rules (no sockets): MaxStartups, per-source caps, penalties,
the authenticated cap, and the rate-limited refusal log."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transport.admission import (
    AdmissionLimits,
    ConnectionAdmission,
    Ending,
    Penalties,
    Refusal,
    Startups,
    parse_networks,
    parse_penalties,
    parse_startups,
)
from transport.refusal_log import RefusalLog


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def admission(clock: Clock | None = None, rand: float = 0.5, **kw: object) -> ConnectionAdmission:
    limits = AdmissionLimits(**kw)  # type: ignore[arg-type]
    return ConnectionAdmission(limits, max_sessions=3, clock=clock or Clock(), rand=lambda: rand)


def test_max_startups_drops_with_rising_probability_and_all_at_full() -> None:
    s = Startups(10, 30, 100)
    assert s.drop_probability(9) == 0
    assert s.drop_probability(10) == pytest.approx(0.30)
    assert s.drop_probability(55) == pytest.approx(0.65)
    assert s.drop_probability(100) == 1.0
    a = admission(rand=0.99, max_startups=Startups(2, 50, 4), per_source_max_startups=100)
    assert [a.arrive("10.0.0.1") for _ in range(5)] == [
        None,
        None,
        None,
        None,
        Refusal.FULL,
    ]
    b = admission(rand=0.0, max_startups=Startups(2, 50, 4), per_source_max_startups=100)
    assert [b.arrive("10.0.0.1") for _ in range(3)] == [None, None, Refusal.EARLY_DROP]


def test_per_source_cap_leaves_other_addresses_in() -> None:
    a = admission(per_source_max_startups=2)
    assert a.arrive("10.0.0.1") is None
    assert a.arrive("10.0.0.1") is None
    assert a.arrive("10.0.0.1") is Refusal.PER_SOURCE
    assert a.arrive("10.0.0.2") is None
    a.gone("10.0.0.1", Ending.NOAUTH)
    assert a.arrive("10.0.0.1") is None


def test_authenticated_cap_is_separate_from_unauthenticated_ones() -> None:
    a = admission(max_startups=Startups(5, 30, 5), per_source_max_startups=50)
    for _ in range(3):
        assert a.arrive("10.0.0.1") is None
        assert a.authenticated("10.0.0.1")
    assert a.sessions == 3
    assert a.unauthenticated == 0
    # strangers fill every unauthenticated slot: the sessions are untouched
    assert [a.arrive("10.0.0.9") for _ in range(6)][-1] is Refusal.FULL
    assert a.sessions == 3
    assert a.unauthenticated == 5
    # a fourth key holder authenticates while the sessions are full: refused, no penalty
    a.gone("10.0.0.9", Ending.NOAUTH)
    assert a.arrive("10.0.0.2") is None
    assert not a.authenticated("10.0.0.2")
    assert not a.penalized("10.0.0.2")
    a.gone("10.0.0.1", Ending.AUTHENTICATED)
    assert a.arrive("10.0.0.2") is None
    assert a.authenticated("10.0.0.2")


def test_penalties_accrue_enforce_at_min_and_expire() -> None:
    clock = Clock()
    a = admission(clock, penalties=Penalties(authfail=5, noauth=1, grace_exceeded=10, min=15))
    a.arrive("10.0.0.1")
    a.gone("10.0.0.1", Ending.GRACE_EXCEEDED)  # 10 s accrued: below min
    assert a.arrive("10.0.0.1") is None
    a.gone("10.0.0.1", Ending.AUTHFAIL)  # 15 s: enforced
    assert a.arrive("10.0.0.1") is Refusal.PENALIZED
    assert a.arrive("10.0.0.2") is None  # others unaffected
    assert a.penalized_sources() == 1
    clock.now += 14.9
    assert a.arrive("10.0.0.1") is Refusal.PENALIZED
    clock.now += 0.2
    assert a.arrive("10.0.0.1") is None


def test_penalty_is_capped_at_max_and_exempt_list_is_honoured() -> None:
    clock = Clock()
    a = admission(
        clock,
        per_source_max_startups=1000,
        max_startups=Startups(1000, 30, 1000),
        penalties=Penalties(grace_exceeded=100, min=15, max=300),
        penalty_exempt=parse_networks(["10.9.0.0/16"]),
    )
    for _ in range(50):
        a.arrive("10.0.0.1")
        a.arrive("10.9.1.1")
    for _ in range(50):
        a.gone("10.0.0.1", Ending.GRACE_EXCEEDED)
        a.gone("10.9.1.1", Ending.GRACE_EXCEEDED)
    assert a.arrive("10.9.1.1") is None
    clock.now += 299
    assert a.arrive("10.0.0.1") is Refusal.PENALIZED
    clock.now += 2
    assert a.arrive("10.0.0.1") is None


def test_penalty_table_is_bounded() -> None:
    a = admission(
        per_source_max_startups=1,
        max_startups=Startups(10_000, 30, 10_000),
        penalties=Penalties(authfail=20, min=15, max_sources=4),
    )
    for i in range(10):
        a.arrive(f"10.0.0.{i}")
        a.gone(f"10.0.0.{i}", Ending.AUTHFAIL)
    assert a.penalized_sources() == 4
    assert a.arrive("10.0.0.9") is None  # untracked: permissive, like OpenSSH's overflow


def test_disabled_penalties_never_refuse() -> None:
    a = admission(penalties=parse_penalties("no"))
    for _ in range(20):
        a.arrive("10.0.0.1")
        a.gone("10.0.0.1", Ending.AUTHFAIL)
    assert a.arrive("10.0.0.1") is None


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["arrive", "auth", "gone"]),
            st.integers(0, 3),
            st.sampled_from([e for e in Ending if e is not Ending.AUTHENTICATED]),
            st.floats(0, 30),
        ),
        max_size=200,
    )
)
def test_counts_stay_consistent_whatever_happens(
    steps: list[tuple[str, int, Ending, float]],
) -> None:
    """Counts never go negative or above their caps, and return to zero when every
    admitted connection has ended."""
    clock = Clock()
    a = admission(clock, max_startups=Startups(3, 30, 6), per_source_max_startups=2)
    live: list[tuple[str, bool]] = []  # (source, authenticated)
    for op, who, ending, dt in steps:
        clock.now += dt
        source = f"10.0.0.{who}"
        if op == "arrive" and a.arrive(source) is None:
            live.append((source, False))
        elif op == "auth" and any(not s for _, s in live):
            i = next(i for i, (_, s) in enumerate(live) if not s)
            src = live.pop(i)[0]
            if a.authenticated(src):
                live.append((src, True))
        elif op == "gone" and live:
            src, session = live.pop(0)
            a.gone(src, Ending.AUTHENTICATED if session else ending)
        assert 0 <= a.unauthenticated <= 6
        assert 0 <= a.sessions <= 3
        assert a.unauthenticated == sum(1 for _, s in live if not s)
        assert a.sessions == sum(1 for _, s in live if s)
    for src, session in live:
        a.gone(src, Ending.AUTHENTICATED if session else Ending.NOAUTH)
    assert a.unauthenticated == 0
    assert a.sessions == 0


def test_parsers_take_openssh_syntax_and_refuse_nonsense() -> None:
    assert parse_startups("10:30:100") == Startups(10, 30, 100)
    assert parse_startups("7") == Startups(7, 100, 7)
    p = parse_penalties("authfail:3s noauth:0 grace-exceeded:20 min:10 max:60 max-sources:99")
    assert (p.authfail, p.noauth, p.grace_exceeded, p.min, p.max, p.max_sources) == (
        3,
        0,
        20,
        10,
        60,
        99,
    )
    for bad in ("10:30", "a:b:c", "50:30:10", "10:130:100", "0"):
        with pytest.raises(ValueError, match="max_startups"):
            parse_startups(bad)
    for bad in ("crash:90", "authfail", "authfail:x", "min:20 max:10"):
        with pytest.raises(ValueError):
            parse_penalties(bad)


@pytest.mark.parametrize("word", ["authfail:nan", "noauth:inf", "grace-exceeded:-inf", "min:nan",
                                  "max:inf", "max-sources:inf"])  # fmt: skip
def test_penalties_must_be_finite_numbers(word: str) -> None:
    """float() reads "nan" and "inf"; nan passes every `< 0` check, and one failure
    charged "authfail:nan" put the address at the full ``max`` at once."""
    name = word.partition(":")[0]
    with pytest.raises(
        ValueError, match=f"per_source_penalties: '{word}': {name} must be a finite number"
    ):
        parse_penalties(word)
    with pytest.raises(ValueError, match="authfail must be a finite number"):
        Penalties(authfail=float("nan"))


def test_refusal_log_is_one_line_then_one_summary_per_interval() -> None:
    clock = Clock()
    rl = RefusalLog(10.0, clock, max_sources=3)
    first = rl.note("key", "10.0.0.1", "key SHA256:x as user 'bob' is not authorized")
    assert first is not None
    assert "10.0.0.1" in first
    assert "SHA256:x" in first
    lines = []
    for i in range(100_000):
        line = rl.note("full" if i % 2 else "per_source", f"10.0.1.{i % 50}")
        assert line is None
    clock.now += 10
    summary = rl.flush("2 addresses penalized")
    assert summary is not None
    lines.append(summary)
    assert "refused 100000 more" in summary
    assert "full 50000" in summary
    assert "per_source 50000" in summary
    assert "other addresses" in summary
    assert "2 addresses penalized" in summary
    assert rl.open  # the flood went on: the next interval is running
    clock.now += 10
    assert rl.flush() is None
    assert not rl.open
    assert rl.note("key", "10.0.0.1") is not None  # quiet again: the next one at once
