"""A failed algorithm negotiation is logged at INFO with the peer and both lists, bounded."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket

import pytest
from asyncssh.packet import Byte, NameList
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.service.conftest import Service
from transport.client import ConnectFailed
from transport.negotiation_log import MAX_NAMES, Offer, describe, mismatch, parse_kexinit
from transport.server import NEGOTIATION

SERVER_LOG = "transport.server"


def _negotiation_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == SERVER_LOG and r.levelno == logging.INFO and NEGOTIATION in r.getMessage()
    ]


async def test_a_classical_kex_client_is_logged_with_both_lists(
    service: Service, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=SERVER_LOG)
    with pytest.raises(ConnectFailed):
        await service.connect(ssh_options={"kex_algs": ["curve25519-sha256"]})
    await service.server.close()  # the server end has seen the connection go
    (line,) = _negotiation_lines(caplog)
    assert "refused connection from 127.0.0.1" in line
    assert re.search(r"\(127\.0\.0\.1:\d+: ", line)  # the peer with its port
    assert "key exchange" in line
    assert "client offered kex=curve25519-sha256" in line
    assert "we offer kex=mlkem768x25519-sha256,mlkem1024nistp384-sha384" in line
    assert "host_keys=ssh-falcon512" in line
    assert service.server.refused_by_reason[NEGOTIATION] == 1


async def test_a_classical_host_key_client_is_logged_with_both_lists(
    service: Service, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=SERVER_LOG)
    with pytest.raises(ConnectFailed):
        await service.connect(ssh_options={"server_host_key_algs": ["ssh-ed25519"]})
    await service.server.close()
    (line,) = _negotiation_lines(caplog)
    assert "host key" in line
    assert "client offered kex=mlkem768x25519-sha256" in line
    assert "host_keys=ssh-ed25519;" in line
    assert "we offer kex=mlkem768x25519-sha256" in line
    assert line.endswith("host_keys=ssh-falcon512)")


async def test_repeated_failures_cost_one_line_and_one_summary(
    service: Service, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=SERVER_LOG)
    for _ in range(6):
        with pytest.raises(ConnectFailed):
            await service.connect(ssh_options={"kex_algs": ["curve25519-sha256"]})
    await service.server.close()  # ends the interval: its summary is written
    lines = _negotiation_lines(caplog)
    assert service.server.refused_by_reason[NEGOTIATION] == 6
    assert len(lines) == 2, lines
    assert lines[0].startswith("refused connection from 127.0.0.1: negotiation failed")
    assert lines[1].startswith("refused 5 more connections in ")
    assert "top sources 127.0.0.1 5" in lines[1]


def _kexinit(kex: list[bytes], host_keys: list[bytes]) -> bytes:
    return Byte(20) + bytes(16) + NameList(kex) + NameList(host_keys)


def test_a_strangers_long_lists_are_cut() -> None:
    names = [b"x" * 1000 + str(i).encode() for i in range(500)]
    offer = parse_kexinit(_kexinit(names, names))
    assert offer is not None
    assert len(offer.kex) == 500
    line = describe("192.0.2.1:2222", "No matching key exchange algorithm", offer, offer)
    assert f"(+{500 - MAX_NAMES} more)" in line
    assert len(line) < 6 * MAX_NAMES * 70


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=512))
def test_any_bytes_parse_or_give_none(payload: bytes) -> None:
    offer = parse_kexinit(payload)
    line = describe("peer", "reason", offer, None)
    assert "we offer kex=(not received)" in line


def test_our_own_verdict_when_the_peer_hangs_up_first() -> None:
    theirs = Offer(("curve25519-sha256", "ext-info-c"), ("ssh-ed25519",))
    ours = Offer(("mlkem768x25519-sha256", "ext-info-s"), ("ssh-falcon512",))
    assert mismatch(theirs, ours) == "no matching key exchange algorithm"
    shared_kex = Offer(("sntrup761x25519-sha512@openssh.com", "ext-info-c"), ("ssh-ed25519",))
    ours_sntrup = Offer(("sntrup761x25519-sha512@openssh.com",), ("ssh-falcon512",))
    assert mismatch(shared_kex, ours_sntrup) == "no matching host key algorithm"
    assert mismatch(ours_sntrup, ours_sntrup) is None
    assert mismatch(None, ours) is None


def _stranger_kexinit(port: int, kex: list[bytes]) -> None:
    """A raw client: our version line and a KEXINIT offering ``kex``, then hang up."""
    payload = _kexinit(kex, [b"ssh-ed25519"]) + NameList([b"aes128-ctr"]) * 2
    payload += NameList([b"hmac-sha2-256"]) * 2 + NameList([b"none"]) * 2
    payload += NameList([]) * 2 + Byte(0) + bytes(4)
    padding = 8 - (len(payload) + 5) % 8 + 8
    packet = (len(payload) + padding + 1).to_bytes(4, "big") + Byte(padding) + payload
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"SSH-2.0-stranger\r\n" + packet + bytes(padding))
        with contextlib.suppress(OSError):
            while s.recv(65536):  # until the server closes: it has seen the offer
                pass


async def test_a_strangers_names_cannot_write_lines_of_their_own(
    service: Service, caplog: pytest.LogCaptureFixture
) -> None:
    """The client's names were logged as sent: a newline (or a terminal escape) in
    one wrote a line of the stranger's choosing into the text log, as if ours."""
    caplog.set_level(logging.INFO, logger=SERVER_LOG)
    forged = b"x\n2026-12-07T01:01:18.319Z ERROR sidecar.daemon: forged\r\x1b[2K"
    await asyncio.to_thread(_stranger_kexinit, service.port, [forged, b"curve25519-sha256"])
    await service.server.close()
    (line,) = _negotiation_lines(caplog)
    assert "client offered kex=x\\n2026-12-07T01:01:18.319Z ERROR" in line, line
    assert line.isprintable(), line
