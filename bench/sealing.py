"""Tier-4 frame sealing cost: per frame (sans-IO) and per request over real SSH.

Per frame: seal + open of one ``qssh-queue`` frame body (a submit request of ~200
bytes, and a 4 KiB one) against the plain path's own per-frame work (orjson encode +
decode), interleaved in rounds, medians. Over the wire: sequential submits on a
sealed tier-4 channel (QKD keys from the ETSI 014 KME simulator pair, mutual TLS on
127.0.0.1) against an unsealed channel to the same server, interleaved, medians; and
how many rekeys a given frame budget causes.

    python bench/sealing.py [--rounds 7] [--requests 300] [--rekey-frames 100]

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
# bench/queue.py would shadow the standard library's queue module: drop bench/ from the path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != REPO / "bench"]
sys.path.insert(0, str(REPO))

import asyncssh  # noqa: E402
import orjson  # noqa: E402

import transport.ssh_algorithms  # noqa: E402, F401  (registers the PQ algorithms)
from hardware.kme import KMEClient  # noqa: E402
from hardware.simulators.kme_server import paired_kmes  # noqa: E402
from hardware.simulators.tls import make_pki  # noqa: E402
from sidecar import QppValidatorQueue  # noqa: E402
from transport.client import QueueClient  # noqa: E402
from transport.protocol.sealing import (  # noqa: E402
    OVERHEAD,
    Aead,
    RekeyPolicy,
    SealedStream,
    derive_keys,
)
from transport.qkd import QKDSettings  # noqa: E402
from transport.server import ServerSettings, start_queue_server  # noqa: E402
from transport.tiers import TierInfo  # noqa: E402


def _request(size: int) -> dict[str, Any]:
    data = "A" * max(0, size - 180)
    return {
        "id": 1,
        "method": "submit",
        "params": {"message": {"kind": "gossip", "topic": "bench", "data": data}},
    }


def per_frame(rounds: int, n: int) -> dict[str, Any]:
    keys = derive_keys(
        bytes(32), b"s" * 32, epoch=0, client_nonce=b"c" * 32, server_nonce=b"s" * 32, key_ids=["k"]
    )
    out: dict[str, Any] = {"overhead_bytes": OVERHEAD}
    for aead in Aead:
        for size in (200, 4096):
            obj = _request(size)
            plain, sealed = [], []
            for _ in range(rounds):
                t = time.perf_counter()
                for _ in range(n):
                    orjson.loads(orjson.dumps(obj))
                plain.append((time.perf_counter() - t) / n)
                client = SealedStream("client", aead, keys)
                server = SealedStream("server", aead, keys)
                t = time.perf_counter()
                for _ in range(n):
                    server.open(client.seal(orjson.dumps(obj)))
                sealed.append((time.perf_counter() - t) / n)
            extra = statistics.median(sealed) - statistics.median(plain)
            out[f"{aead.value}_{size}B"] = {
                "plain_us": round(statistics.median(plain) * 1e6, 2),
                "sealed_us": round(statistics.median(sealed) * 1e6, 2),
                "seal_open_extra_us": round(extra * 1e6, 2),
            }
    return out


async def over_the_wire(rounds: int, requests: int, rekey_frames: int) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="qssh-bench-sealing-"))
    pki = make_pki(tmp / "pki")
    master, slave = paired_kmes(pki)
    master.start()
    slave.start()
    host = asyncssh.generate_private_key("ssh-falcon512")
    user = asyncssh.generate_private_key("ssh-falcon512")
    pub = user.export_public_key().decode().split()
    (tmp / "ak").write_text(f'roles="producer,consumer,admin" {pub[0]} {pub[1]} bench\n')

    def kme(sim: Any, sae: str) -> KMEClient:
        c = pki.clients[sae]
        return KMEClient(sim.url, cert=c.cert, key=c.key, ca=pki.ca)

    server_kme, client_kme = kme(slave, "sae-bob"), kme(master, "sae-alice")
    queue = await QppValidatorQueue.open("bench", tmp / "data")
    server = await start_queue_server(
        queue,
        ServerSettings(
            host_keys=(host,),
            authorized_keys_path=tmp / "ak",
            tier_provider=lambda: TierInfo(4),
            qkd=QKDSettings(kme=server_kme, sae_id="sae-bob"),
        ),
    )
    msg = {"kind": "telemetry", "name": "bench", "value": 1}
    qkd = QKDSettings(
        kme=client_kme,
        sae_id="sae-alice",
        peer_sae_id="sae-bob",
        rekey=RekeyPolicy(frames=rekey_frames),
    )
    plain_rates: list[float] = []
    sealed_rates: list[float] = []
    rekeys = 0
    try:
        conn_opts: dict[str, Any] = {
            "client_keys": [user],
            "known_hosts": None,
            "username": "bench",
        }
        async with (
            QueueClient.connect("127.0.0.1", server.port, **conn_opts) as plain,
            QueueClient.connect(
                "127.0.0.1", server.port, qkd=qkd, require_qkd=True, **conn_opts
            ) as sealed,
        ):
            for _ in range(rounds):
                for client, rates in ((plain, plain_rates), (sealed, sealed_rates)):
                    t = time.perf_counter()
                    for _ in range(requests):
                        await client.submit(msg, "async")
                    rates.append(requests / (time.perf_counter() - t))
            assert sealed.sealing is not None
            assert sealed.sealing.stream is not None
            rekeys = sealed.sealing.stream.rekeys
            frames = sealed.sealing.stream.sealer.frames_total
    finally:
        await server.close()
        await queue.close()
        await server_kme.aclose()
        await client_kme.aclose()
        master.stop()
        slave.stop()
    p, s = statistics.median(plain_rates), statistics.median(sealed_rates)
    return {
        "sequential_async_submits_per_s_plain": round(p),
        "sequential_async_submits_per_s_sealed": round(s),
        "sealed_over_plain": round(s / p, 3),
        "rekey_frames": rekey_frames,
        "frames_sent_sealed": frames,
        "rekeys": rekeys,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--frames", type=int, default=2000, help="frames per sans-IO round")
    ap.add_argument("--requests", type=int, default=300, help="submits per wire round")
    ap.add_argument("--rekey-frames", type=int, default=100)
    args = ap.parse_args()
    result = {
        "bench": "sealing",
        "per_frame": per_frame(args.rounds, args.frames),
        "wire": asyncio.run(over_the_wire(args.rounds, args.requests, args.rekey_frames)),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
