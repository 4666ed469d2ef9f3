"""Compare what the clients were told with what the log holds after many crashes.

Inputs: the journals of the producer and consumer processes (``tests.faults.worker``),
the moments the daemon was killed and started, the next id each start recovered,
and the live messages of the final log. All times are ``time.monotonic_ns()``, one
clock for every process on the machine.

The one outcome that cannot be seen from outside is an ack whose reply was lost: the
consume record may be in the log although the consumer never heard back. It is
allowed only for the ack a consumer had in flight when the daemon died (consumers
run loops that each ack one lease at a time), so at most one per consumer loop per
kill, and only if the message never came back afterwards.
"""

from __future__ import annotations

import bisect
import itertools
from dataclasses import dataclass, field

Journal = list[list[str]]


@dataclass
class Incarnation:
    ready_ns: int  # ``ready`` seen by the test
    next_id: int  # what recovery said
    killed_ns: int | None = None  # SIGKILL returned (None: the last one)


@dataclass
class Verdict:
    acked: int = 0
    consumed: int = 0
    live: int = 0
    leases: int = 0
    redelivered_unconsumed: int = 0  # legal: leased, then the daemon died before the ack
    ack_reply_lost: int = 0  # legal, accounted per consumer and kill
    logged_unacked: int = 0  # legal: submit reply lost at a kill
    problems: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"acked {self.acked}, consumed {self.consumed}, live {self.live}, leases "
            f"{self.leases}, redelivered-unconsumed {self.redelivered_unconsumed}, "
            f"ack-reply-lost {self.ack_reply_lost}, logged-unacked {self.logged_unacked}"
        )


def check(
    producers: list[Journal],
    consumers: list[Journal],
    incarnations: list[Incarnation],
    live: dict[int, dict[str, object]],
) -> Verdict:
    v = Verdict(live=len(live))
    bad = v.problems

    # -- producers: every acknowledged submit, one id per message and back
    ack_number: dict[int, int] = {}
    ack_sent: dict[int, int] = {}
    ack_time: dict[int, int] = {}
    numbers: set[int] = set()
    for journal in producers:
        for f in journal:
            if f[0] != "ACK":
                continue
            mid, number, sent, t = int(f[1]), int(f[2]), int(f[3]), int(f[4])
            if mid in ack_number:
                bad.append(f"id {mid} acknowledged for two submits ({ack_number[mid]}, {number})")
            if number in numbers:
                bad.append(f"block {number} acknowledged twice")
            ack_number[mid] = number
            ack_sent[mid] = sent
            ack_time[mid] = t
            numbers.add(number)
    v.acked = len(ack_number)

    # -- consumers: leases, acks
    consumed_at: dict[int, int] = {}
    leased_at: dict[int, list[int]] = {}
    unsure: list[tuple[int, int, int, int]] = []  # (consumer, loop, id, ACKING time)
    for c, journal in enumerate(consumers):
        acking: dict[int, tuple[int, int]] = {}  # loop slot -> (id, ACKING time)
        for f in journal:
            word = f[0]
            if word == "LEASED":
                mid, number, sent = int(f[1]), int(f[2]), int(f[3])
                v.leases += 1
                leased_at.setdefault(mid, []).append(sent)
                if mid in ack_number and ack_number[mid] != number:
                    bad.append(f"lease of id {mid} carried block {number}, not {ack_number[mid]}")
            elif word == "ACKING":
                acking[int(f[2])] = (int(f[1]), int(f[3]))
            elif word == "CONSUMED":
                mid, t = int(f[1]), int(f[3])
                if mid in consumed_at:
                    bad.append(f"id {mid} acknowledged as consumed twice")
                consumed_at[mid] = t
                acking.pop(int(f[2]), None)
            elif word == "ACKFAIL":
                slot = int(f[2])
                mid, when = acking.pop(slot)
                assert mid == int(f[1])
                if f[3] == "unavailable":  # connection lost: outcome unknown
                    unsure.append((c, slot, mid, when))
            elif word == "STOP":
                unsure += [(c, slot, mid, when) for slot, (mid, when) in acking.items()]
                acking = {}
    v.consumed = len(consumed_at)

    # -- consumed-redelivered: never leased again after its ack was confirmed
    for mid, t_consumed in consumed_at.items():
        later = [t for t in leased_at.get(mid, []) if t > t_consumed]
        if later:
            bad.append(f"id {mid} leased again after its ack was confirmed")
        if mid in live:
            bad.append(f"id {mid} was consumed but is still in the log")
    v.redelivered_unconsumed = sum(
        len(ts) - (1 if mid in consumed_at else 0) for mid, ts in leased_at.items()
    )

    # -- ack replies lost at a kill: at most one per consumer per kill, never seen again
    kills = [inc.killed_ns for inc in incarnations if inc.killed_ns is not None]
    lost_reply: set[int] = set()
    per_kill: set[tuple[int, int, int]] = set()
    for c, slot, mid, t in unsure:
        if mid in consumed_at or mid in live or any(x > t for x in leased_at.get(mid, [])):
            continue  # the ack did not take: the message came back (or is still there)
        k = bisect.bisect_left(kills, t)
        if k >= len(kills):
            bad.append(f"id {mid}: ack outcome unknown without a kill to explain it")
            continue
        if (c, slot, k) in per_kill:
            bad.append(f"consumer {c} loop {slot} lost two ack replies at kill {k}")
        per_kill.add((c, slot, k))
        lost_reply.add(mid)
    v.ack_reply_lost = len(lost_reply)

    # -- acked-lost: every acknowledged submit is live, consumed, or its ack reply was lost
    for mid, number in ack_number.items():
        if mid in live:
            logged = live[mid].get("block_number")
            if logged != number:
                bad.append(f"id {mid} acked for block {number}, the log has {logged}")
        elif mid not in consumed_at and mid not in lost_reply:
            bad.append(f"ACKED-LOST: id {mid} (block {number}) is not in the log")
    v.logged_unacked = len([mid for mid in live if mid not in ack_number])

    # -- ids strictly increasing across restarts. An ack received before kill k-1
    # returned was handed out by an earlier start: start k must begin above it. A
    # submit sent after start k was ready can only be answered by start k or later.
    for before, after in itertools.pairwise(incarnations):
        if after.next_id < before.next_id:
            bad.append(f"next id went back from {before.next_id} to {after.next_id}")
    for k in range(1, len(incarnations)):
        previous_kill = incarnations[k - 1].killed_ns
        assert previous_kill is not None
        inc = incarnations[k]
        prior_max = max((mid for mid, t in ack_time.items() if t < previous_kill), default=0)
        if prior_max >= inc.next_id:
            bad.append(f"start {k}: next id {inc.next_id} but id {prior_max} was acked before")
        for mid, sent in ack_sent.items():
            if sent > inc.ready_ns and mid < inc.next_id:
                bad.append(f"start {k}: id {mid} handed out again (next id {inc.next_id})")
    return v
