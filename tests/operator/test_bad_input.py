"""Bad input at the operator's edge: each command answers with one clear line naming
the problem and its documented exit code, never a traceback, and changes nothing on
disk (found walking the CLIs as a new operator would)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.subprocesses import REPO, child_env


def qssh_queue(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "transport.client_cli", *args],
        capture_output=True,
        text=True,
        env=child_env(QSSH_HOME=str(home)),
        cwd=REPO,
        timeout=60,
        check=False,
    )


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
