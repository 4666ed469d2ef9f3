"""The links' reconnect delay: exponential, capped, with jitter."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from sidecar.daemon.peers_config import RelaySettings
from sidecar.daemon.relay import backoff_delay

SETTINGS = RelaySettings(reconnect_min=0.5, reconnect_max=30.0)


def test_the_delay_doubles_per_failure_up_to_the_maximum() -> None:
    ceilings = [backoff_delay(n, SETTINGS, 0.999999) for n in range(1, 10)]
    assert [round(c, 3) for c in ceilings] == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]


@given(failures=st.integers(1, 10_000), jitter=st.floats(0.0, 1.0, exclude_max=True))
def test_the_jitter_keeps_the_delay_within_half_and_all_of_its_ceiling(
    failures: int, jitter: float
) -> None:
    ceiling = min(30.0, 0.5 * 2 ** min(failures - 1, 30))
    assert ceiling / 2 <= backoff_delay(failures, SETTINGS, jitter) < ceiling + 1e-9
