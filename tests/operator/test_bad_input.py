"""Bad input at the operator's edge: each command answers with one clear line naming
the problem and its documented exit code, never a traceback, and changes nothing on
disk (found walking the CLIs as a new operator would)."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from tests.subprocesses import REPO, child_env, free_port
from transport.client import DEFAULT_IDENTITIES
from transport.keys import generate_key


def python_m(
    module: str, *args: str, env: dict[str, str], cwd: Path
) -> subprocess.CompletedProcess[str]:
    """``python -m MODULE ARGS``, its output captured as text; the exit status is the
    caller's to check."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True, text=True, env=env, cwd=cwd, timeout=60, check=False,
    )  # fmt: skip


def qssh_queue(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    return python_m("transport.client_cli", *args, env=child_env(QSSH_HOME=str(home)), cwd=REPO)


def test_qssh_queue_config_file_that_cannot_be_read_is_a_usage_error(tmp_path: Path) -> None:
    # protocol.md: 2 is a usage or configuration error. OpenSSH's ssh -F refuses a
    # file it cannot open; a missing one was silently ignored, a directory a traceback.
    home = tmp_path / "qssh"
    home.mkdir()
    missing = tmp_path / "nonexist"
    for config, why in ((missing, "No such file or directory"), (tmp_path, "Is a directory")):
        r = qssh_queue("-F", str(config), "validator", "ping", home=home)
        assert r.returncode == 2, (config, r.stderr)
        assert "Traceback" not in r.stderr
        assert r.stderr.strip() == f"qssh-queue: -F {config}: cannot read the config file ({why})"
    assert sorted(p.name for p in home.iterdir()) == []


def test_qssh_queue_default_config_that_is_a_directory_is_a_usage_error(tmp_path: Path) -> None:
    home = tmp_path / "qssh"
    (home / "config").mkdir(parents=True)
    r = qssh_queue("validator", "ping", home=home)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    assert r.stderr.strip() == (
        f"qssh-queue: {home / 'config'}: cannot read the config file (Is a directory)"
    )


def serve(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``qssh-sidecar serve ARGS``, without metrics unless asked (its port is shared)."""
    metrics = () if "--metrics" in args else ("--metrics", "")
    return python_m("sidecar.cli", "serve", *args, *metrics, env=child_env(), cwd=cwd)


KME = """[hardware.kme]
url = "https://127.0.0.1:1"
sae_id = "SAE-ALICE"
slave_sae_id = "SAE-BOB"
cert = "client.pem"
key = "client.key"
ca = "ca.pem"
"""


def assert_config_refused(config: Path, cwd: Path, error: str) -> None:
    """``serve --config CONFIG`` exits 2 with one line starting ``error`` and leaves no
    data dir. Its SSH port is taken: were the config accepted, the start would fail
    fast on that instead."""
    data = cwd / "data"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        r = serve("--config", str(config), "--data-dir", str(data), "--port", port, cwd=cwd)
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.startswith(f"qssh-sidecar: {error}"), r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not data.exists()


@pytest.mark.parametrize(
    ("section", "error"),
    [
        (KME + "timout = 3\n", "hardware: kme: unknown keys ['timout']"),
        (
            '[hardware]\nserial_ports = [{ path = "/dev/ttyACM9", handshak = "dtr" }]\n',
            "hardware: serial port /dev/ttyACM9: unknown keys ['handshak']",
        ),
        ("[hardware.health]\nalpa = 3\n", "hardware: health: unknown keys ['alpa']"),
        (KME.replace('sae_id = "SAE-ALICE"\n', ""), "hardware: kme: missing key 'sae_id'"),
        (
            '[hardware]\nchar_devices = "/dev/hwrng"\n',
            "hardware: char_devices: expected a list of paths, got '/dev/hwrng'",
        ),
        ('[hardware]\nuse_udev = "false"\n', "hardware: use_udev: expected true or false"),
    ],
    ids=["kme-typo", "serial-typo", "health-typo", "kme-missing", "char-devices-str", "bool-str"],
)
def test_serve_refuses_a_typo_or_wrong_type_inside_hardware_tables(
    tmp_path: Path, section: str, error: str
) -> None:
    # operations.md: "Unknown keys anywhere are errors (a typo must not silently fall
    # back to a default)"; each of these was taken silently (or named only 'sae_id').
    for name in ("client.pem", "client.key", "ca.pem"):
        (tmp_path / name).write_text("")
    config = tmp_path / "alice.toml"
    config.write_text(section)
    assert_config_refused(config, tmp_path, f"config {config}: {error}")


def test_keygen_default_file_is_where_qssh_queue_looks_for_it(tmp_path: Path) -> None:
    # protocol.md: without IdentityFile qssh-queue uses $QSSH_HOME (or ~/.qssh)
    # id_falcon512, id_falcon1024, id_mldsa65, id_mldsa44. keygen without -f wrote
    # ~/.qssh/id_mldsa-65, ignoring $QSSH_HOME, where the client never looked.
    home, qssh_home = tmp_path / "home", tmp_path / "qssh"
    home.mkdir()
    env = child_env(HOME=str(home), QSSH_HOME=str(qssh_home))
    r = python_m("sidecar.cli", "keygen", "-t", "ssh-mldsa-65", env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "id_mldsa65" in DEFAULT_IDENTITIES
    assert sorted(p.name for p in qssh_home.iterdir()) == ["id_mldsa65", "id_mldsa65.pub"]
    assert f"saved in {qssh_home / 'id_mldsa65'}\n" in r.stdout
    assert list(home.iterdir()) == []


def test_serve_names_the_metrics_address_that_is_in_use(tmp_path: Path) -> None:
    # operations.md: a port in use is exit 1 with one `qssh-sidecar: …` line; for the
    # SSH port the line names the address, for the metrics port it said only
    # "[Errno 98] Address already in use".
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        metrics = f"127.0.0.1:{taken.getsockname()[1]}"
        r = serve(
            "--data-dir", str(tmp_path / "data"), "--port", str(free_port()), "--metrics", metrics,
            cwd=tmp_path,
        )  # fmt: skip
    assert r.returncode == 1, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    assert r.stderr.strip() == (
        f"qssh-sidecar: cannot start: [Errno 98] metrics: cannot listen on {metrics}: "
        "Address already in use"
    )


@pytest.mark.parametrize(
    ("flag", "content", "error"),
    [
        ("--host-key", None, "host_key: cannot read {path} (No such file or directory)"),
        ("--authorized-keys", None, "authorized_keys: cannot read {path} (No such file"),
        ("--host-key", "not a key\n", "host_key: {path} is not a usable private key"),
        (
            "--authorized-keys",
            'roles="producer,wizard" {key}\n',
            "authorized_keys: {path}:1: unknown role 'wizard'",
        ),
    ],
    ids=["host-key-missing", "authorized-keys-missing", "host-key-garbage", "unknown-role"],
)
def test_serve_with_a_bad_key_file_leaves_no_data_dir_behind(
    tmp_path: Path, flag: str, content: str | None, error: str
) -> None:
    # operations.md: a bad key file or authorized_keys stops the start, checked before
    # the data dir is locked; a first start with a typo'd path left a new data dir
    # holding a lock file.
    path = tmp_path / "given"
    if content is not None:
        key = generate_key("ssh-falcon512").export_public_key().decode().strip()
        path.write_text(content.format(key=key))
    data = tmp_path / "data"
    r = serve(flag, str(path), "--data-dir", str(data), "--port", str(free_port()), cwd=tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.startswith("qssh-sidecar: " + error.format(path=path)), r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not data.exists()


def test_serve_with_unusable_kme_tls_files_names_them_before_making_anything(
    tmp_path: Path,
) -> None:
    # A [hardware.kme] whose files exist but hold no certificate: the start failed with
    # exit 1 and `cannot start: [X509: NO_CERTIFICATE_OR_CRL_FOUND] …`, naming no file,
    # after making the data dir, the log and the keys. Like an unusable host_key it is a
    # configuration error (exit 2), found before anything is made.
    for name in ("client.pem", "client.key", "ca.pem"):
        (tmp_path / name).write_text("")
    config = tmp_path / "alice.toml"
    config.write_text(KME)
    ca = tmp_path / "ca.pem"
    assert_config_refused(config, tmp_path, f"hardware.kme.ca: {ca} is not a usable CA certificate")


@pytest.mark.parametrize(
    ("section", "error"),
    [
        ("[hardware]\nfloor = 7\n", "hardware: floor: not a tier: 7 (use 1-4 or a tier name)"),
        ('[hardware]\nceiling = "high"\n', "hardware: ceiling: not a tier: 'high'"),
        (
            '[admission]\nper_source_penalty_exempt = ["10.0.0.300"]\n',
            "admission.per_source_penalty_exempt: '10.0.0.300' does not appear to be",
        ),
    ],
    ids=["floor-out-of-range", "ceiling-name", "exempt-address"],
)
def test_serve_config_errors_name_the_key(tmp_path: Path, section: str, error: str) -> None:
    # they said `hardware: 7 is not a valid Tier` and `admission.'10.0.0.300' does not …`
    config = tmp_path / "alice.toml"
    config.write_text(section)
    assert_config_refused(config, tmp_path, f"config {config}: {error}")


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["tail", "--credit", "0"], "argument --credit: must be at least 1, got 0"),
        (["tail", "-n", "-1"], "argument -n/--count: must be at least 0, got -1"),
        (["submit", "-", "--batch", "0"], "argument --batch: must be at least 1, got 0"),
    ],
    ids=["credit-0", "count-negative", "batch-0"],
)
def test_qssh_queue_refuses_counts_out_of_range(
    tmp_path: Path, args: list[str], error: str
) -> None:
    # `tail --credit 0` subscribed with no credit and waited for ever, `tail -n -1`
    # subscribed and ended at once with nothing, `--batch 0` was taken as 1.
    r = qssh_queue("-F", "/dev/null", "validator", *args, home=tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].endswith(error), r.stderr


@pytest.mark.parametrize("where", ["missing-dir", "too-long"])
def test_serve_refuses_an_unusable_node_socket_path_before_anything_listens(
    tmp_path: Path, where: str
) -> None:
    # operations.md: a configuration problem stops the start before anything listens.
    # A node.socket in a missing directory, or longer than a unix socket path may be,
    # failed after the SSH port listened (`cannot start: [Errno 2] No such file or
    # directory`, `cannot start: AF_UNIX path too long`, exit 1), naming no path.
    if where == "missing-dir":
        sock = tmp_path / "nonexist" / "node.sock"
        error = f"node.socket: {sock}: no directory {sock.parent}"
    else:
        long_dir = tmp_path / ("d" * 120)
        long_dir.mkdir()
        sock = long_dir / "node.sock"
        error = f"node.socket: {sock}: longer than a unix socket path may be (107 bytes)"
    config = tmp_path / "alice.toml"
    config.write_text(f'[node]\nsocket = "{sock}"\n')
    data = tmp_path / "data"
    r = serve("--config", str(config), "--data-dir", str(data), "--port", str(free_port()),
              cwd=tmp_path)  # fmt: skip
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.strip() == f"qssh-sidecar: {error}"
    assert "listening" not in r.stdout
    assert not data.exists()


PEER = '[[peers]]\nname = "bob"\naddress = "127.0.0.1:1"\n'


@pytest.mark.parametrize(
    ("peer", "error"),
    [
        (
            'host_key = "[127.0.0.1]:1 {pub}"\nidentity = "nonexist"\n',
            "peers[0].identity: {tmp}/nonexist does not exist",
        ),
        (
            'host_key = "[127.0.0.1]:1 {pub}"\nidentity = "id.pub"\n',
            "peers[0].identity: {tmp}/id.pub is not a usable private key",
        ),
        (
            'known_hosts = "nonexist"\nidentity = "id"\n',
            "peers[0].known_hosts: known_hosts file {tmp}/nonexist",
        ),
        ('host_key = "garbage"\nidentity = "id"\n', "peers[0].host_key: 'garbage' is not a"),
    ],
    ids=["identity-missing", "identity-public", "known-hosts-missing", "host-key-garbage"],
)
def test_serve_refuses_a_bad_peer_key_file_before_anything_listens(
    tmp_path: Path, peer: str, error: str
) -> None:
    # A [[peers]] identity, known_hosts or host_key that cannot be used was taken: the
    # sidecar served, and the link retried for good, logging `peer bob: link down:
    # cannot reach the queue service at …: [Errno 2] No such file or directory: …`.
    key = generate_key("ssh-falcon512")
    (tmp_path / "id").write_bytes(key.export_private_key())
    pub = key.export_public_key().decode().strip()
    (tmp_path / "id.pub").write_text(pub + "\n")
    config = tmp_path / "alice.toml"
    config.write_text(PEER + peer.format(pub=pub))
    assert_config_refused(config, tmp_path, error.format(tmp=tmp_path))


def test_keygen_refuses_a_comment_of_more_than_one_line(tmp_path: Path) -> None:
    # the comment ends the public key's line: with a newline, `id.pub` held a second
    # line, which authorized_keys would read as a malformed key
    key = tmp_path / "id"
    r = python_m(
        "sidecar.cli", "keygen", "-f", str(key), "-C", "me\nroles=x",
        env=child_env(HOME=str(tmp_path)), cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 1, r.stdout + r.stderr
    assert r.stderr.strip() == "qssh-sidecar keygen: -C: the comment must be one line"
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("option", "error"),
    [
        ("ConnectTimeout=-1", "ConnectTimeout: must be a number of seconds >= 0, got '-1'"),
        ("ConnectTimeout=abc", "ConnectTimeout: must be a number of seconds >= 0, got 'abc'"),
        ("Port=abc", "Port: must be a number 1-65535, got 'abc'"),
    ],
    ids=["timeout-negative", "timeout-word", "port-word"],
)
def test_qssh_queue_names_the_option_with_a_bad_value(
    tmp_path: Path, option: str, error: str
) -> None:
    # ConnectTimeout=-1 was a traceback (asyncssh's ValueError), the others said only
    # `could not convert string to float: 'abc'` / `invalid literal for int() …`
    r = qssh_queue("-F", "/dev/null", "-o", option, "127.0.0.1", "ping", home=tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.strip() == f"qssh-queue: {error}"


def test_qssh_queue_skips_an_identity_that_is_not_a_private_key(tmp_path: Path) -> None:
    # `-i id.pub` (a public key given by mistake) was a traceback (KeyImportError);
    # OpenSSH warns `Load key "id.pub": invalid format` and goes on without it
    key = generate_key("ssh-falcon512")
    pub = tmp_path / "id.pub"
    pub.write_bytes(key.export_public_key())
    with socket.socket() as closed:  # a port nobody listens on: exit 3 once keys are read
        closed.bind(("127.0.0.1", 0))
        port = str(closed.getsockname()[1])
    r = qssh_queue("-F", "/dev/null", "-p", port, "-i", str(pub), "127.0.0.1", "ping",
                   home=tmp_path)  # fmt: skip
    assert "Traceback" not in r.stderr
    assert r.stderr.splitlines()[0] == f'Load key "{pub}": invalid format'
    assert r.returncode == 3, r.stderr


def test_hardware_report_reads_kme_files_relative_to_the_config_file(tmp_path: Path) -> None:
    # operations.md: relative paths are relative to the config file's directory, as
    # `serve` reads them; `hardware report --config F` looked for them in its own cwd
    # ("KME client setup failed: [Errno 2] No such file or directory"), so it reported
    # a lower tier than the daemon on the same file would decide.
    etc = tmp_path / "etc"
    etc.mkdir()
    for name in ("client.pem", "client.key", "ca.pem"):
        (etc / name).write_text("")  # found, but holds no certificate
    (etc / "alice.toml").write_text("[hardware]\nuse_udev = false\nchar_devices = []\n" + KME)
    r = python_m(
        "sidecar.cli", "hardware", "report", "--json", "--config", str(etc / "alice.toml"),
        env=child_env(), cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    error = orjson.loads(r.stdout)["kme"]["error"]
    assert "No such file" not in error
    assert "NO_CERTIFICATE" in error or "PEM" in error, error
