"""``qssh-queue`` run as a subprocess (``python -m transport.client_cli``) against a server."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import asyncssh
import orjson
import pytest

from tests.service.conftest import Service, gossip, pin_host_key
from tests.subprocesses import child_env


@pytest.fixture
def qssh_home(tmp_path: Path, service: Service) -> Path:
    home = tmp_path / "qssh"
    home.mkdir()
    key = home / "id_falcon512"
    key.write_bytes(service.keys.everything.export_private_key())
    key.chmod(0o600)
    (home / "config").write_text(
        f"Host validator\n  HostName 127.0.0.1\n  Port {service.port}\n  User qssh\n"
        f"  IdentityFile {key}\n"
    )
    pin_host_key(home / "known_hosts", service.port, service.keys.host)
    return home


async def qssh_queue(
    home: Path, *args: str, stdin: bytes = b"", interrupt_after: bytes | None = None
) -> tuple[int, bytes, bytes]:
    env = child_env(QSSH_HOME=str(home))
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "transport.client_cli",
        *args,
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdin is not None
    assert proc.stdout is not None
    if interrupt_after is not None:
        proc.stdin.close()
        seen = b""
        while interrupt_after not in seen:
            chunk = await asyncio.wait_for(proc.stdout.read(4096), 60)
            assert chunk, "the client ended before printing the marker"
            seen += chunk
        proc.send_signal(signal.SIGINT)
        rest, stderr = await asyncio.wait_for(proc.communicate(), 60)
        return proc.returncode or 0, seen + rest, stderr
    stdout, stderr = await asyncio.wait_for(proc.communicate(stdin), 60)
    assert proc.returncode is not None
    return proc.returncode, stdout, stderr


async def test_submit_fields_as_flags_then_pop_as_json(qssh_home: Path) -> None:
    code, out, err = await qssh_queue(
        qssh_home, "--json", "validator", "submit", "telemetry", "name=cpu", "value=1.5", "--sync"
    )
    assert code == 0, err
    result = orjson.loads(out)
    assert result["persisted"] is True
    code, out, _ = await qssh_queue(qssh_home, "--json", "validator", "pop")
    assert code == 0
    item = orjson.loads(out)
    assert item["message"] == {"kind": "telemetry", "name": "cpu", "value": 1.5}
    assert item["message_id"] == result["message_id"]
    assert item["submitted_by"].startswith("everything SHA256:")


async def test_pop_on_empty_queue_exits_4(qssh_home: Path) -> None:
    code, out, _ = await qssh_queue(qssh_home, "--json", "validator", "pop")
    assert code == 4
    assert orjson.loads(out) is None


async def test_submit_json_message_async(qssh_home: Path) -> None:
    message = orjson.dumps(gossip(3)).decode()
    code, out, err = await qssh_queue(
        qssh_home, "--json", "validator", "submit", message, "--async"
    )
    assert code == 0, err
    assert orjson.loads(out)["mode"] == "async"


async def test_bulk_ndjson_submit_reports_summary_and_failures(
    qssh_home: Path, service: Service
) -> None:
    lines = [orjson.dumps(gossip(i)) for i in range(40)]
    lines.insert(10, b'{"kind": "nope"}')
    lines.insert(20, b"not json at all")
    code, out, err = await qssh_queue(
        qssh_home, "--json", "validator", "submit", "-", "--batch", "7", stdin=b"\n".join(lines)
    )
    assert code == 5, err
    summary = orjson.loads(out)
    assert summary["submitted"] == 40
    assert summary["failed"] == 2
    assert summary["errors"]["unknown_kind"] == 1
    async with service.connect() as client:
        assert await client.depth() == 40


async def test_lease_then_ack_by_id(qssh_home: Path, service: Service) -> None:
    async with service.connect() as client:
        await client.submit(gossip(1), "sync")
    code, out, _ = await qssh_queue(qssh_home, "--json", "validator", "lease", "--timeout", "60")
    assert code == 0
    lease = orjson.loads(out)
    code, _, err = await qssh_queue(qssh_home, "validator", "ack", str(lease["lease_id"]))
    assert code == 0, err
    async with service.connect() as client:
        assert await client.depth() == 0


async def test_lease_and_tail_by_kinds_leave_the_other_kinds(
    qssh_home: Path, service: Service
) -> None:
    async with service.connect() as client:
        await client.submit(gossip(1), "sync")
        for i in range(2):
            await client.submit({"kind": "telemetry", "name": f"t{i}", "value": i}, "sync")
    code, out, err = await qssh_queue(
        qssh_home, "--json", "validator", "lease", "--kinds", "telemetry,block_import"
    )
    assert code == 0, err
    assert orjson.loads(out)["message"]["kind"] == "telemetry"
    code, out, err = await qssh_queue(
        qssh_home, "--json", "validator", "tail", "-n", "1", "--kinds", "telemetry"
    )
    assert code == 0, err
    assert orjson.loads(out)["message"]["kind"] == "telemetry"
    code, out, err = await qssh_queue(qssh_home, "validator", "lease", "--kinds", "telemetry")
    assert code == 4
    assert b"no message of those kinds" in err + out
    code, _, err = await qssh_queue(qssh_home, "validator", "lease", "--kinds", "no_such_kind")
    assert code == 1
    assert b"unknown_kind" in err
    code, _, err = await qssh_queue(qssh_home, "validator", "lease", "--kinds", "gossip,")
    assert code == 2
    assert b"empty kind name" in err
    async with service.connect() as client:
        detail = await client.depth_detail()
    assert detail["total"] == 2  # the gossip message and the leased telemetry one
    assert detail["leased"] == 1


async def test_tables_for_people(qssh_home: Path) -> None:
    code, out, _ = await qssh_queue(qssh_home, "validator", "tier")
    assert code == 0
    assert b"HardenedPQ" in out
    code, out, _ = await qssh_queue(qssh_home, "validator", "stats")
    assert code == 0
    assert b"depth.total" in out


async def test_tail_consumes_count_then_exits(qssh_home: Path, service: Service) -> None:
    async with service.connect() as client:
        for i in range(3):
            await client.submit(gossip(i), "sync")
    code, out, err = await qssh_queue(qssh_home, "--json", "validator", "tail", "-n", "2")
    assert code == 0, err
    assert len(out.splitlines()) == 2
    async with service.connect() as client:
        assert await client.depth() == 1


async def test_tail_ctrl_c_releases_unacked_deliveries(qssh_home: Path, service: Service) -> None:
    async with service.connect() as client:
        for i in range(200):
            await client.submit(gossip(i), "sync")
    # tail acks what it prints; deliveries prefetched by credit but not printed must
    # go back to the queue when Ctrl-C ends the client.
    code, out, _ = await qssh_queue(
        qssh_home, "validator", "tail", "--credit", "8", interrupt_after=b"gossip"
    )
    assert code == 130
    printed = len([line for line in out.splitlines() if b"gossip" in line])
    assert printed >= 1
    async with service.connect() as client:
        for _ in range(100):
            depth = await client.depth_detail()
            if depth["leased"] == 0:
                break
            await asyncio.sleep(0.05)
    assert depth["leased"] == 0
    assert depth["total"] == 200 - printed


async def test_accept_new_via_option_pins_the_host(qssh_home: Path, service: Service) -> None:
    (qssh_home / "known_hosts").unlink()
    code, _, err = await qssh_queue(qssh_home, "validator", "depth")
    assert code == 3
    assert b"StrictHostKeyChecking" in err
    code, _, err = await qssh_queue(
        qssh_home, "-o", "StrictHostKeyChecking=accept-new", "validator", "depth"
    )
    assert code == 0, err
    assert f"[127.0.0.1]:{service.port} ssh-falcon512" in (qssh_home / "known_hosts").read_text()


async def test_changed_host_key_exits_3_with_clear_message(
    qssh_home: Path, service: Service
) -> None:
    pin_host_key(
        qssh_home / "known_hosts", service.port, asyncssh.generate_private_key("ssh-falcon512")
    )
    code, _, err = await qssh_queue(qssh_home, "validator", "depth")
    assert code == 3
    assert b"CHANGED" in err


@pytest.mark.parametrize("fault", ["directory", "malformed"])
async def test_a_known_hosts_file_that_cannot_be_used_exits_3_naming_it(
    qssh_home: Path, fault: str
) -> None:
    # a directory said `unavailable: cannot reach the queue service … Is a directory`,
    # a malformed file only `host key of … could not be verified`
    known_hosts = qssh_home / "known_hosts"
    known_hosts.unlink()
    if fault == "directory":
        known_hosts.mkdir()
    else:
        known_hosts.write_text("garbage\n")
    code, _, err = await qssh_queue(qssh_home, "validator", "depth")
    assert code == 3, err
    assert f"known_hosts file {known_hosts} cannot be used".encode() in err, err
    assert b"Traceback" not in err


async def test_flags_override_config_and_user_at_host(qssh_home: Path, service: Service) -> None:
    key = qssh_home / "id_falcon512"
    code, out, err = await qssh_queue(
        qssh_home, "--json", "-p", str(service.port), "-i", str(key), "everything@127.0.0.1", "ping"
    )
    assert code == 0, err
    assert orjson.loads(out)["user"] == "everything"


async def test_forbidden_is_exit_1_and_usage_is_exit_2(qssh_home: Path, service: Service) -> None:
    producer_key = qssh_home / "id_producer"
    producer_key.write_bytes(service.keys.producer.export_private_key())
    producer_key.chmod(0o600)
    code, _, err = await qssh_queue(qssh_home, "-i", str(producer_key), "validator", "pop")
    assert code == 1
    assert b"forbidden" in err
    code, _, _ = await qssh_queue(qssh_home, "validator", "submit", "telemetry", "oops")
    assert code == 2


H64 = "ab" * 32


async def test_value_usd_as_an_integer_is_accepted_and_a_float_refused_with_a_hint(
    qssh_home: Path,
) -> None:
    tx = ("validator", "submit", "transaction", f"tx_hash={H64}", "tx_data=eA==")
    code, out, err = await qssh_queue(qssh_home, "--json", *tx, "value_usd=50")
    assert code == 0, err
    code, out, _ = await qssh_queue(qssh_home, "--json", "validator", "pop")
    assert orjson.loads(out)["message"]["value_usd"] == "50"
    code, _, err = await qssh_queue(qssh_home, *tx, "value_usd=1250.50")
    assert code == 1
    assert b"money is never a float" in err
    code, _, err = await qssh_queue(qssh_home, *tx, 'value_usd="1250.50"')
    assert code == 0, err


async def test_ack_of_a_lease_id_never_issued_is_not_found(qssh_home: Path) -> None:
    forged = "999999." + "A" * 22
    code, _, err = await qssh_queue(qssh_home, "--json", "validator", "ack", forged)
    assert code == 1
    assert orjson.loads(err)["error"] == {"code": "not_found", "message": "no lease 999999"}


@pytest.mark.parametrize("lease_id", ["abc", "999999", "1.short", "0." + "A" * 22])
async def test_ack_or_release_of_a_malformed_lease_id_is_bad_request(
    qssh_home: Path, lease_id: str
) -> None:
    for command in ("ack", "release"):
        code, _, err = await qssh_queue(qssh_home, "--json", "validator", command, lease_id)
        assert code == 1
        assert orjson.loads(err)["error"]["code"] == "bad_request", err


async def test_a_missing_identity_file_is_warned_about_like_openssh(
    qssh_home: Path, service: Service
) -> None:
    code, _, err = await qssh_queue(
        qssh_home, "-i", "/nonexistent", "-p", str(service.port), "everything@127.0.0.1", "ping"
    )
    assert b"Warning: Identity file /nonexistent not accessible: No such file or directory." in err
    assert b"cannot reach" not in err
    assert code == 0, err  # falls back to ~/.qssh/id_falcon512, as ssh does


async def test_strict_host_key_checking_ask_is_refused_clearly(qssh_home: Path) -> None:
    code, _, err = await qssh_queue(
        qssh_home, "-o", "StrictHostKeyChecking=ask", "validator", "depth"
    )
    assert code == 2
    assert b"StrictHostKeyChecking=ask is not supported" in err


async def test_json_is_accepted_after_the_command(qssh_home: Path) -> None:
    code, out, err = await qssh_queue(qssh_home, "validator", "ping", "--json")
    assert code == 0, err
    assert "user" in orjson.loads(out)
    code, out, err = await qssh_queue(qssh_home, "validator", "depth", "--json")
    assert code == 0, err
    assert orjson.loads(out)["total"] == 0


async def test_quiet_drops_notes_but_keeps_the_exit_code(qssh_home: Path) -> None:
    code, _, err = await qssh_queue(qssh_home, "-q", "validator", "pop")
    assert code == 4
    assert err == b""
    code, _, err = await qssh_queue(qssh_home, "validator", "pop")
    assert code == 4
    assert b"queue is empty" in err


async def test_tables_for_a_pipe_are_as_wide_as_their_content(
    qssh_home: Path, service: Service
) -> None:
    code, out, err = await qssh_queue(qssh_home, "validator", "tier")
    assert code == 0, err
    lines = out.decode().splitlines()
    assert max(len(line) for line in lines) > 80, lines  # one row per tier, not wrapped
    assert sum("unavailable" in line for line in lines) <= 2
