"""Conventions both commands follow: --version, -v/-q, --json anywhere, a closed pipe
ends quietly, tables for a pipe are not cut at 80 columns."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

import sidecar.cli
from sidecar.wal import WriteAheadLog
from tests.subprocesses import REPO, child_env, run_python

VERSION = importlib.metadata.version("qssh-sidecar")
COMMANDS = {"qssh-sidecar": "sidecar.cli", "qssh-queue": "transport.client_cli"}


def run(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    return run_python("-m", module, *args)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_version(name: str) -> None:
    r = run(COMMANDS[name], "--version")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"{name} {VERSION}"


def test_subcommands_take_version_and_verbosity_flags() -> None:
    assert run("sidecar.cli", "doctor", "--version").stdout.strip() == f"qssh-sidecar {VERSION}"
    quiet = run("sidecar.cli", "doctor", "-q", "--json")
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr == ""
    verbose = run("sidecar.cli", "doctor", "-vv", "--json")
    assert verbose.returncode == 0, verbose.stderr
    assert orjson.loads(quiet.stdout) == orjson.loads(verbose.stdout)


@pytest.mark.parametrize(
    "argv", [["sidecar.cli", "doctor"], ["sidecar.cli", "--help"], ["transport.client_cli", "-h"]]
)
def test_a_closed_pipe_ends_quietly_without_a_traceback(argv: list[str]) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=child_env(),
        cwd=REPO,
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    proc.stdout.close()  # like `| head -0`: nobody reads
    err = proc.stderr.read().decode()
    rc = proc.wait(60)
    assert "Traceback" not in err
    assert "BrokenPipeError" not in err
    assert rc in (0, 141), (rc, err)


@pytest.mark.parametrize(
    "argv",
    [
        ["--json", "doctor"],
        ["doctor", "--json"],
        ["doctor", "-q", "--json"],
    ],
)
def test_sidecar_json_anywhere_on_the_line(argv: list[str]) -> None:
    r = run("sidecar.cli", *argv)
    assert r.returncode == 0, r.stderr
    assert "liboqs" in orjson.loads(r.stdout)


def test_verbosity_flags_are_taken_after_a_subcommand_action_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "v.wal"
    wal, _ = WriteAheadLog.open(str(log))
    wal.close()
    res = run("sidecar.cli", "wal", "verify", str(log), "-q")  # operations.md: every subcommand
    assert res.returncode == 0, res.stderr
    levels: list[str] = []
    monkeypatch.setattr(sidecar.cli.logs, "configure", lambda level, *a, **k: levels.append(level))
    for argv in (
        ["wal", "verify", str(log), "-q"],
        ["wal", "-q", "verify", str(log), "-q"],
        ["wal", "verify", "-v", str(log)],
    ):
        assert sidecar.cli.main(argv) == 0
    assert levels == ["WARNING", "ERROR", "DEBUG"]  # wal's default is INFO
