"""Config validation: each mistake is one clear line and a non-zero exit, before listening."""

from __future__ import annotations

from pathlib import Path

import asyncssh
import pytest

import transport.ssh_algorithms  # noqa: F401 - registers ssh-falcon512
from sidecar.daemon import config
from sidecar.daemon.config import ConfigError
from tests.subprocesses import free_port, is_listening
from transport.keys import known_hosts_line

from .harness import AS_FILE_MODES_APPLY, run_serve


def _load(tmp_path: Path, text: str) -> config.DaemonConfig:
    p = tmp_path / "c.toml"
    p.write_text(text)
    return config.load(p)


def test_embedded_defaults() -> None:
    cfg = config.load(None)
    assert (cfg.instance, str(cfg.listen), cfg.data_dir) == (
        "alice",
        "127.0.0.1:22222",
        Path("data/alice"),
    )
    assert cfg.embedded_defaults


def test_metrics_are_on_at_9615_with_embedded_defaults_and_in_a_config_file(
    tmp_path: Path,
) -> None:
    embedded, from_file = config.load(None), _load(tmp_path, 'instance = "bob"\n')
    assert str(embedded.metrics) == str(from_file.metrics) == "127.0.0.1:9615"
    assert _load(tmp_path, '[metrics]\nlisten = ""\n').metrics is None
    assert config.override(embedded, metrics="").metrics is None


def test_instance_flag_moves_the_default_data_dir() -> None:
    cfg = config.override(config.load(None), instance="bob", port=22223)
    assert (cfg.data_dir, cfg.listen.port) == (Path("data/bob"), 22223)


def test_a_full_config_reads_back(tmp_path: Path) -> None:
    cfg = _load(
        tmp_path,
        """
instance = "charlie"
data_dir = "state"
listen = "0.0.0.0:22224"
[limits]
max_connections = 8
[durability]
policy = "sync"
shutdown_timeout = 5
[hardware]
floor = 2
ceiling = 3
[metrics]
listen = "127.0.0.1:9700"
[node]
socket = "node.sock"
http = "127.0.0.1:9944"
""",
    )
    assert cfg.instance == "charlie"
    assert cfg.data_dir == tmp_path.resolve() / "state"
    assert cfg.listen.port == 22224
    assert cfg.limits.max_connections == 8
    assert cfg.durability.policy == "sync"
    assert (int(cfg.hardware.floor), int(cfg.hardware.ceiling)) == (2, 3)
    assert cfg.metrics is not None
    assert cfg.metrics.port == 9700
    assert cfg.node.http is not None
    assert cfg.node.http.port == 9944


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ('lissen = "127.0.0.1:1"', "unknown key 'lissen'"),
        ("[limits]\nmax_conections = 3", "unknown key 'limits.max_conections'"),
        ('listen = "127.0.0.1:70000"', "port must be a number 1-65535"),
        ('listen = "127.0.0.1:0"', "port must be a number 1-65535"),
        ('listen = "127.0.0.1"', "is not HOST:PORT"),
        ('[metrics]\nlisten = "0.0.0.0:9615"', "not a loopback address"),
        ('[node]\nhttp = "10.1.2.3:9944"', "not a loopback address"),
        ("[limits]\nmax_connections = -1", "must be a positive integer"),
        ("[limits]\nmax_connections = true", "expected an integer"),
        ("[limits]\nmax_frame_bytes = 100", "max_frame_bytes must be at least 1024"),
        ('[durability]\npolicy = "sometimes"', "must be 'default' or 'sync'"),
        ("[hardware]\nfloor = 4\nceiling = 2", "floor is above ceiling"),
        ("[hardware]\nbogus = 1", "unknown keys"),
        ('instance = "Alice Smith"', "must be lowercase"),
        ("listen = ", "not valid TOML"),
        ('[admission]\nmax_startups = "100:30:10"', "admission.max_startups"),
        ('[admission]\nper_source_penalties = "crash:90"', "admission.per_source_penalties"),
        ('[admission]\nper_source_penalties = "authfail:nan"', "authfail must be a finite"),
        ("[admission]\nlogin_grace_time = 0", "admission.login_grace_time: must be in"),
        ("[admission]\nlogin_grace_time = -5", "admission.login_grace_time: must be in"),
        ("[admission]\nrefusal_log_interval = 0", "admission.refusal_log_interval: must be"),
        ("[admission]\nmax_auth_tries = 0", "admission.max_auth_tries: must be a positive"),
        ('[admission]\nper_source_penalty_exempt = ["nonsense"]', "admission."),
        ("[admission]\nmaxstartups = 3", "unknown key 'admission.maxstartups'"),
        ("[limits]\nsubmits_per_second = -1", "limits.submits_per_second: must be >= 0"),
        ("[limits]\nsubmit_burst = 0", "limits.submit_burst: must be a positive"),
    ],
)
def test_bad_values_are_one_line_naming_the_setting(tmp_path: Path, text: str, needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, text)
    msg = str(err.value)
    assert needle in msg
    assert "\n" not in msg


def test_the_submit_rate_limit_is_set_in_limits(tmp_path: Path) -> None:
    """docs/security.md: a producer key fills the queue unless `submits_per_second` is
    set; the daemon's SSH service takes it (and `submit_burst`) from `[limits]`."""
    assert config.service_limits(config.load(None)).submits_per_second == 0  # off
    cfg = _load(tmp_path, "[limits]\nsubmits_per_second = 50\nsubmit_burst = 200")
    limits = config.service_limits(cfg)
    assert (limits.submits_per_second, limits.submit_burst) == (50.0, 200)


# ---- through the real command: one line on stderr, exit 2, nothing listening -----------


def _assert_one_line_failure(
    tmp_path: Path, args: list[str], needle: str, port: int, prefix: list[str] | None = None
) -> None:
    # a port someone else already serves on proves nothing about this process
    port_was_free = not is_listening(port)
    r = run_serve(args, cwd=tmp_path, prefix=prefix)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("qssh-sidecar: ")
    assert needle in lines[0]
    assert "ready" not in r.stdout
    assert "listening" not in r.stdout
    if port_was_free:
        assert not is_listening(port)


def test_serve_unknown_key(tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / "c.toml").write_text(f'listen = "127.0.0.1:{port}"\nwatchdog = 1\n')
    _assert_one_line_failure(tmp_path, ["--config", "c.toml"], "unknown key 'watchdog'", port)


def test_serve_bad_port(tmp_path: Path) -> None:
    _assert_one_line_failure(
        tmp_path, ["--listen", "127.0.0.1:65536"], "port must be a number 1-65535", 22222
    )


def test_serve_unreadable_host_key(tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / "hk").mkdir()  # root reads any file; a directory is unreadable as a key
    _assert_one_line_failure(
        tmp_path,
        ["--port", str(port), "--data-dir", "d", "--host-key", "hk"],
        "host_key: ",
        port,
    )


def test_serve_garbage_host_key(tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / "hk").write_text("not a key\n")
    _assert_one_line_failure(
        tmp_path,
        ["--port", str(port), "--data-dir", "d", "--host-key", "hk"],
        "is not a usable private key",
        port,
    )


def test_serve_missing_authorized_keys(tmp_path: Path) -> None:
    port = free_port()
    _assert_one_line_failure(
        tmp_path,
        ["--port", str(port), "--data-dir", "d", "--authorized-keys", "nope"],
        "authorized_keys: cannot read",
        port,
    )


def test_serve_data_dir_not_writable(tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / "afile").write_text("x")  # as root, permissions do not stop us; a file does
    _assert_one_line_failure(
        tmp_path, ["--port", str(port), "--data-dir", "afile/d"], "data_dir: cannot create", port
    )


def test_serve_unknown_role_in_authorized_keys(tmp_path: Path) -> None:
    port = free_port()
    key = asyncssh.generate_private_key("ssh-falcon512")
    (tmp_path / "ak").write_text('roles="superuser" ' + key.export_public_key().decode())
    _assert_one_line_failure(
        tmp_path,
        ["--port", str(port), "--data-dir", "d", "--authorized-keys", "ak"],
        "unknown role 'superuser'",
        port,
    )


def test_the_documented_config_reference_is_valid(tmp_path: Path) -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()
    block = doc.split("## Config file reference", 1)[1].split("```toml\n", 1)[1].split("```", 1)[0]
    cfg = _load(tmp_path, block)
    assert cfg.instance == "alice"
    assert cfg.hardware.kme is not None
    assert cfg.node.socket_group == "substrate"


def test_serve_host_key_without_read_permission(tmp_path: Path) -> None:
    port = free_port()
    key = asyncssh.generate_private_key("ssh-falcon512")
    (tmp_path / "hk").write_bytes(key.export_private_key())
    (tmp_path / "hk").chmod(0o000)
    _assert_one_line_failure(
        tmp_path,
        ["--port", str(port), "--data-dir", "d", "--host-key", "hk"],
        "host_key: cannot read",
        port,
        prefix=AS_FILE_MODES_APPLY,
    )


def test_serve_data_dir_without_write_permission(tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / "d").mkdir(mode=0o500)
    _assert_one_line_failure(
        tmp_path,
        ["--port", str(port), "--data-dir", "d"],
        "is not writable (Permission denied)",
        port,
        prefix=AS_FILE_MODES_APPLY,
    )


def test_admission_flags_override_the_file(tmp_path: Path) -> None:
    import argparse  # noqa: PLC0415

    from sidecar.daemon import serve_cli  # noqa: PLC0415

    cfg_path = tmp_path / "c.toml"
    cfg_path.write_text('[admission]\nmax_startups = "5:50:20"\nper_source_max_startups = 3\n')
    parser = argparse.ArgumentParser()
    serve_cli.configure(parser)
    args = parser.parse_args(
        ["--config", str(cfg_path), "--login-grace-time", "4", "--per-source-penalties", "no"]
    )
    cfg = serve_cli.load_config(args)
    assert str(cfg.admission.max_startups) == "5:50:20"
    assert cfg.admission.per_source_max_startups == 3
    assert cfg.admission.login_grace_seconds == 4
    assert not cfg.admission.penalties.enabled
    args = parser.parse_args(["--config", str(cfg_path), "--max-startups", "1:2"])
    with pytest.raises(ConfigError, match=r"admission\.max_startups"):
        serve_cli.load_config(args)
    args = parser.parse_args(["--config", str(cfg_path), "--login-grace-time", "0"])
    with pytest.raises(ConfigError, match=r"admission\.login_grace_time: must be in"):
        serve_cli.load_config(args)


def test_serve_unknown_socket_group_exits_2_before_listening(tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / "c.toml").write_text(
        f'listen = "127.0.0.1:{port}"\ndata_dir = "d"\n[metrics]\nlisten = ""\n'
        '[node]\nsocket_group = "no-such-group-qssh"\n'
    )
    _assert_one_line_failure(
        tmp_path, ["--config", "c.toml"], "node.socket_group: no group named", port
    )


def test_serve_unknown_log_level_exits_2_before_listening(tmp_path: Path) -> None:
    port = free_port()
    r = run_serve(["--port", str(port), "--data-dir", "d", "--log-level", "LOUD"], cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert "--log-level: invalid choice: 'LOUD'" in r.stderr
    assert not (tmp_path / "d").exists()


def test_a_peer_kme_that_is_not_https_is_refused_when_the_config_is_read(
    tmp_path: Path,
) -> None:
    pin = known_hosts_line("127.0.0.1", 22223, asyncssh.generate_private_key("ssh-falcon512"))
    (tmp_path / "id").write_text("unused")
    link = (
        f'[[peers]]\nname = "bob"\naddress = "127.0.0.1:22223"\nhost_key = "{pin}"\n'
        'identity = "id"\n[peers.qkd]\nkme = "http://127.0.0.1:8443"\ncertificate = "c"\n'
        'key = "k"\nca = "ca"\nsae_id = "A"\npeer_sae_id = "B"\n'
    )
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, link)
    assert "kme: the KME is reached over TLS only" in str(err.value)
    _load(tmp_path, link.replace("http://", "https://"))  # the same link over TLS loads
