"""SPHINCS+ signing must not stall the event loop for other connections.

The server and every client share one event loop here, as in the daemon. While a
SPHINCS+ host key signs a handshake (and a SPHINCS+ user key signs its auth
request), a ticker task and a Falcon-512 connection's requests must keep being
served. The instrumented signer, running in its worker thread, waits (bounded)
until the loop has ticked and answered a Falcon request: that can only happen if
the loop runs while the signer does. Counts are asserted, never times; the
measured stall figures are printed for the report.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field

import asyncssh
import pytest

from transport.keys import generate_key, parse_authorized_keys
from transport.ssh_algorithms import PQSSHKey, key_class
from transport.ssh_options import ssh_options_for_tier

SPHINCS = "ssh-sphincssha2128fsimple"
WAIT_FOR_LOOP_S = 10.0  # upper bound only; a healthy run waits a few milliseconds
MAX_TICKS = 200_000
MAX_FALCON_REQUESTS = 10_000


@dataclass
class SignWindow:
    on_loop_thread: bool
    sign_ms: float
    ticks_while_signing: int
    falcon_replies_while_signing: int
    ticks_before_reply: int = 0
    falcon_replies_before_reply: int = 0


@dataclass
class LoopProbe:
    loop_thread: int
    ticks: int = 0
    falcon_replies: int = 0
    max_stall_s: float = 0.0
    windows: list[SignWindow] = field(default_factory=list)

    def wait_for_loop(self, ticks: int, replies: int) -> None:
        deadline = time.monotonic() + WAIT_FOR_LOOP_S
        while (self.ticks < ticks or self.falcon_replies < replies) and (
            time.monotonic() < deadline
        ):
            time.sleep(0.001)


class _ProbedSphincsKey(key_class(SPHINCS)):  # type: ignore[misc]
    probe: LoopProbe | None = None

    def sign_ssh(self, data: bytes, sig_algorithm: bytes) -> bytes:
        probe = type(self).probe
        assert probe is not None
        on_loop = threading.get_ident() == probe.loop_thread
        ticks0, replies0, t0 = probe.ticks, probe.falcon_replies, time.perf_counter()
        signature = super().sign_ssh(data, sig_algorithm)
        sign_s = time.perf_counter() - t0
        window = SignWindow(
            on_loop,
            round(sign_s * 1e3, 2),
            probe.ticks - ticks0,
            probe.falcon_replies - replies0,
        )
        if not on_loop:
            probe.wait_for_loop(ticks0 + 2, replies0 + 1)
            window.ticks_before_reply = probe.ticks - ticks0
            window.falcon_replies_before_reply = probe.falcon_replies - replies0
        probe.windows.append(window)
        return bytes(signature)


class _InlineProbedSphincsKey(_ProbedSphincsKey):
    use_executor = False  # the control: what asyncssh would do without our offload


def _probed(cls: type[_ProbedSphincsKey]) -> PQSSHKey:
    plain = generate_key(SPHINCS)
    return cls(plain.public_key_bytes, plain.secret_key_bytes)


async def _ticker(probe: LoopProbe, stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    last = loop.time()
    for _ in range(MAX_TICKS):
        if stop.is_set():
            return
        await asyncio.sleep(0.001)
        now = loop.time()
        probe.max_stall_s = max(probe.max_stall_s, now - last)
        last = now
        probe.ticks += 1


async def _falcon_requests(conn: asyncssh.SSHClientConnection, probe: LoopProbe,
                           stop: asyncio.Event) -> None:  # fmt: skip
    for _ in range(MAX_FALCON_REQUESTS):
        if stop.is_set():
            return
        result = await conn.run("ping", check=True)
        assert result.stdout == "ran ping\n"
        probe.falcon_replies += 1


async def _run_scenario(host_cls: type[_ProbedSphincsKey], handshakes: int) -> LoopProbe:
    probe = LoopProbe(threading.get_ident())
    _ProbedSphincsKey.probe = probe
    sphincs_host = _probed(host_cls)
    sphincs_user = _probed(_ProbedSphincsKey)
    falcon_host, falcon_user = generate_key("ssh-falcon512"), generate_key("ssh-falcon512")
    # One server presenting both host keys, on the same loop as every client.
    authorized = parse_authorized_keys(
        sphincs_user.export_public_key().decode() + falcon_user.export_public_key().decode()
    )
    srv = await asyncssh.create_server(
        asyncssh.SSHServer, "127.0.0.1", 0,
        server_host_keys=[sphincs_host, falcon_host],
        authorized_client_keys=authorized,
        process_factory=lambda p: (p.stdout.write(f"ran {p.command}\n"), p.exit(0)),
        **ssh_options_for_tier(2, "server"),
    )  # fmt: skip
    port = srv.sockets[0].getsockname()[1]
    known = asyncssh.import_known_hosts(
        "".join(
            f"[127.0.0.1]:{port} {k.export_public_key().decode()}"
            for k in (sphincs_host, falcon_host)
        )
    )
    common = {
        **ssh_options_for_tier(2, "client"),
        "host": "127.0.0.1", "port": port, "username": "v", "known_hosts": known,
        "agent_path": None, "config": (),
    }  # fmt: skip
    stop = asyncio.Event()
    try:
        falcon_conn = await asyncssh.connect(
            **{**common, "client_keys": [falcon_user], "server_host_key_algs": ["ssh-falcon512"]}
        )
        async with falcon_conn:
            ticker = asyncio.create_task(_ticker(probe, stop))
            requests = asyncio.create_task(_falcon_requests(falcon_conn, probe, stop))
            try:
                for _ in range(handshakes):
                    async with asyncio.timeout(60):
                        async with asyncssh.connect(
                            **{**common, "client_keys": [sphincs_user],
                               "server_host_key_algs": [SPHINCS]}
                        ) as conn:  # fmt: skip
                            await conn.run("ping", check=True)
            finally:
                stop.set()
                await asyncio.gather(ticker, requests)
    finally:
        srv.close()
        await srv.wait_closed()
        _ProbedSphincsKey.probe = None
    return probe


async def test_sphincs_signing_does_not_stall_a_concurrent_falcon_connection() -> None:
    probe = await _run_scenario(_ProbedSphincsKey, handshakes=2)
    # 2 handshakes x (server host-key signature + client user-auth signature)
    assert len(probe.windows) == 4, probe.windows
    for window in probe.windows:
        assert window.on_loop_thread is False
        assert window.ticks_before_reply >= 2
        assert window.falcon_replies_before_reply >= 1
    print(f"\noffloaded: max loop stall {probe.max_stall_s * 1e3:.1f} ms, windows {probe.windows}")


async def test_control_inline_signing_does_stall_the_loop() -> None:
    """Without the offload the host-key signature runs on the loop and nothing else does."""
    probe = await _run_scenario(_InlineProbedSphincsKey, handshakes=1)
    inline = [w for w in probe.windows if w.on_loop_thread]
    assert len(inline) == 1, probe.windows
    assert inline[0].ticks_while_signing == 0
    assert inline[0].falcon_replies_while_signing == 0
    print(f"\ninline: max loop stall {probe.max_stall_s * 1e3:.1f} ms, windows {probe.windows}")


@pytest.fixture(autouse=True)
def _no_leaked_probe() -> None:
    _ProbedSphincsKey.probe = None


class _GatedSphincsKey(key_class(SPHINCS)):  # type: ignore[misc]
    """Signs only after the test opens the gate, so a client can vanish mid-signature."""

    started = threading.Event()
    gate = threading.Event()

    def sign_ssh(self, data: bytes, sig_algorithm: bytes) -> bytes:
        type(self).started.set()
        type(self).gate.wait(WAIT_FOR_LOOP_S)
        return bytes(super().sign_ssh(data, sig_algorithm))


async def test_client_vanishing_during_offloaded_signature_leaves_server_serving() -> None:
    loop = asyncio.get_running_loop()
    unhandled: list[dict[str, object]] = []
    loop.set_exception_handler(lambda _loop, context: unhandled.append(context))
    _GatedSphincsKey.started.clear()
    _GatedSphincsKey.gate.clear()
    plain = generate_key(SPHINCS)
    gated_host = _GatedSphincsKey(plain.public_key_bytes, plain.secret_key_bytes)
    falcon_host, user = generate_key("ssh-falcon512"), generate_key("ssh-falcon512")
    srv = await asyncssh.create_server(
        asyncssh.SSHServer, "127.0.0.1", 0,
        server_host_keys=[gated_host, falcon_host],
        authorized_client_keys=parse_authorized_keys(user.export_public_key().decode()),
        process_factory=lambda p: (p.stdout.write("pong\n"), p.exit(0)),
        **ssh_options_for_tier(2, "server"),
    )  # fmt: skip
    port = srv.sockets[0].getsockname()[1]
    common = {
        **ssh_options_for_tier(2, "client"),
        "host": "127.0.0.1", "port": port, "username": "v", "known_hosts": None,
        "agent_path": None, "config": (), "client_keys": [user],
    }  # fmt: skip
    try:

        async def sphincs_connect() -> asyncssh.SSHClientConnection:
            return await asyncssh.connect(**{**common, "server_host_key_algs": [SPHINCS]})

        doomed = asyncio.create_task(sphincs_connect())
        started = await asyncio.to_thread(_GatedSphincsKey.started.wait, WAIT_FOR_LOOP_S)
        assert started, "the server never began the SPHINCS+ signature"
        doomed.cancel()  # the client drops the TCP connection mid-handshake
        with pytest.raises(asyncio.CancelledError):
            await doomed
        _GatedSphincsKey.gate.set()  # now the worker finishes signing for nobody
        for _ in range(3):
            async with asyncssh.connect(
                **{**common, "server_host_key_algs": ["ssh-falcon512"]}
            ) as conn:  # fmt: skip
                assert (await conn.run("ping", check=True)).stdout == "pong\n"
    finally:
        _GatedSphincsKey.gate.set()
        srv.close()
        await srv.wait_closed()
        loop.set_exception_handler(None)
    assert unhandled == []
