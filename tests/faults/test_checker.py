"""The SIGKILL checker finds each kind of broken promise (synthetic journals)."""

from __future__ import annotations

from .checker import Incarnation, Journal, check

NUMBER = 10_000_000


def ack(mid: int, sent: int, got: int) -> list[str]:
    return ["ACK", str(mid), str(NUMBER + mid), str(sent), str(got)]


def leased(mid: int, sent: int) -> list[str]:
    return ["LEASED", str(mid), str(NUMBER + mid), str(sent), str(sent + 1)]


def acking(mid: int, t: int, slot: int = 0) -> list[str]:
    return ["ACKING", str(mid), str(slot), str(t)]


def consumed(mid: int, t: int, slot: int = 0) -> list[str]:
    return ["CONSUMED", str(mid), str(slot), str(t)]


def ackfail(mid: int, t: int, slot: int = 0, code: str = "unavailable") -> list[str]:
    return ["ACKFAIL", str(mid), str(slot), code, str(t)]


# start 0 ready at 0, killed at 100; start 1 (next id 3) ready at 200
STARTS = [Incarnation(0, 1, 100), Incarnation(200, 3)]
LOG: dict[int, dict[str, object]] = {
    1: {"block_number": NUMBER + 1},
    2: {"block_number": NUMBER + 2},
}


def verdict(
    producers: list[Journal],
    consumers: list[Journal],
    live: dict[int, dict[str, object]] | None = None,
    starts: list[Incarnation] | None = None,
) -> list[str]:
    return check(producers, consumers, starts or STARTS, LOG if live is None else live).problems


def test_a_clean_history_passes() -> None:
    assert verdict([[ack(1, 10, 11), ack(2, 12, 13)]], []) == []


def test_an_acked_submit_missing_from_the_log_is_found() -> None:
    problems = verdict([[ack(1, 10, 11), ack(2, 12, 13)]], [], live={1: LOG[1]})
    assert any("ACKED-LOST: id 2" in p for p in problems)


def test_a_consumed_message_leased_again_is_found() -> None:
    consumer = [leased(1, 20), acking(1, 21), consumed(1, 22), leased(1, 300)]
    problems = verdict([[ack(1, 10, 11), ack(2, 12, 13)]], [consumer], live={2: LOG[2]})
    assert any("leased again" in p for p in problems)


def test_a_consumed_message_still_in_the_log_is_found() -> None:
    consumer = [leased(1, 20), acking(1, 21), consumed(1, 22)]
    problems = verdict([[ack(1, 10, 11), ack(2, 12, 13)]], [consumer])
    assert any("still in the log" in p for p in problems)


def test_one_lost_ack_reply_per_loop_and_kill_is_accounted_not_two() -> None:
    one = [leased(1, 20), acking(1, 21), ackfail(1, 101)]
    assert verdict([[ack(1, 10, 11), ack(2, 12, 13)]], [one], live={2: LOG[2]}) == []
    two = [*one, leased(2, 22), acking(2, 23), ackfail(2, 102)]
    problems = verdict([[ack(1, 10, 11), ack(2, 12, 13)]], [two], live={})
    assert any("lost two ack replies" in p for p in problems)


def test_an_ack_refused_with_a_definite_error_does_not_excuse_a_loss() -> None:
    consumer = [leased(1, 20), acking(1, 21), ackfail(1, 22, code="lease_expired")]
    problems = verdict([[ack(1, 10, 11), ack(2, 12, 13)]], [consumer], live={2: LOG[2]})
    assert any("ACKED-LOST: id 1" in p for p in problems)


def test_an_id_handed_out_twice_is_found() -> None:
    problems = verdict([[ack(1, 10, 11), ack(2, 12, 13)], [["ACK", "2", "7", "14", "15"]]], [])
    assert any("acknowledged for two submits" in p for p in problems)


def test_a_restart_that_goes_back_in_ids_is_found() -> None:
    starts = [Incarnation(0, 1, 100), Incarnation(200, 2)]
    problems = verdict([[ack(1, 10, 11), ack(2, 12, 13)]], [], starts=starts)
    assert any("was acked before" in p for p in problems)
    late = [[ack(1, 10, 11), ack(2, 210, 211)]]
    problems = verdict(late, [], starts=[Incarnation(0, 1, 100), Incarnation(200, 3)])
    assert any("handed out again" in p for p in problems)
