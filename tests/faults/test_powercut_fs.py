"""The power-cut filesystem itself: a cut keeps what was fsync'd and nothing else."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from sidecar.durable_fs import append_text, make_dirs, replace_file

from .powercut import Mount, fuse_unavailable, unmount

pytestmark = pytest.mark.skipif(
    fuse_unavailable() is not None, reason=f"cannot mount FUSE: {fuse_unavailable()}"
)


@pytest.fixture
def mounted(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    backing, mnt = tmp_path / "backing", tmp_path / "mnt"
    mnt.mkdir()
    yield backing, mnt
    if os.path.ismount(mnt):
        unmount(mnt)


def write(path: Path, data: bytes, *, sync: bool, append: bool = False) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC), 0o600)
    try:
        os.write(fd, data)
        if sync:
            os.fdatasync(fd)
    finally:
        os.close(fd)


def sync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def test_a_power_cut_keeps_exactly_what_was_made_durable(
    tmp_path: Path, mounted: tuple[Path, Path]
) -> None:
    backing, mnt = mounted
    fs = Mount(backing, mnt, tmp_path / "fs.log")
    write(mnt / "log", b"synced;", sync=True)
    write(mnt / "lost-name", b"data synced, directory not", sync=True)
    sync_dir(mnt)  # "log" and "lost-name" entries durable
    write(mnt / "log", b"not synced;", sync=False, append=True)
    write(mnt / "new", b"never synced", sync=True)  # data durable, name not
    os.rename(mnt / "lost-name", mnt / "renamed")  # rename not made durable
    assert (mnt / "log").read_bytes() == b"synced;not synced;"  # the running view
    assert sorted(os.listdir(mnt)) == ["log", "new", "renamed"]

    fs.cut()
    fs = Mount(backing, mnt, tmp_path / "fs.log")
    try:
        assert sorted(os.listdir(mnt)) == ["log", "lost-name"]
        assert (mnt / "log").read_bytes() == b"synced;"
        assert (mnt / "lost-name").read_bytes() == b"data synced, directory not"
        # a rename made durable with a directory fsync survives the next cut
        os.rename(mnt / "lost-name", mnt / "renamed")
        sync_dir(mnt)
        write(mnt / "log", b"more;", sync=True, append=True)
    finally:
        fs.cut()
    fs = Mount(backing, mnt, tmp_path / "fs.log")
    try:
        assert sorted(os.listdir(mnt)) == ["log", "renamed"]
        assert (mnt / "log").read_bytes() == b"synced;more;"
    finally:
        fs.cut()


def test_a_new_directory_lasts_only_once_its_parent_is_fsynced(
    tmp_path: Path, mounted: tuple[Path, Path]
) -> None:
    backing, mnt = mounted
    fs = Mount(backing, mnt, tmp_path / "fs.log")
    try:
        (mnt / "kept").mkdir()
        (mnt / "kept" / "deeper").mkdir()
        sync_dir(mnt)  # "kept" durable in /, "deeper" not yet durable in "kept"
        (mnt / "lost").mkdir()
        write(mnt / "lost" / "key", b"synced", sync=True)
        sync_dir(mnt / "lost")  # the file's name is durable in "lost", "lost" is not in /
        write(mnt / "kept" / "key", b"synced", sync=True)
        sync_dir(mnt / "kept")  # now "deeper" and "key" are durable in "kept"
        (mnt / "kept" / "late").mkdir()  # never made durable
    finally:
        fs.cut()
    fs = Mount(backing, mnt, tmp_path / "fs.log")
    try:
        assert sorted(os.listdir(mnt)) == ["kept"]
        assert sorted(os.listdir(mnt / "kept")) == ["deeper", "key"]
        assert (mnt / "kept" / "key").read_bytes() == b"synced"
        with pytest.raises(OSError):
            os.rename(mnt / "kept", mnt / "moved")  # directory renames are refused
    finally:
        fs.cut()


def test_durable_fs_helpers_survive_a_cut(tmp_path: Path, mounted: tuple[Path, Path]) -> None:
    """``sidecar.durable_fs`` on the power-cut filesystem: what it wrote is all there."""
    backing, mnt = mounted
    fs = Mount(backing, mnt, tmp_path / "fs.log")
    try:
        make_dirs(mnt / "data" / "operator" / "keys")
        append_text(mnt / "data" / "authorized_keys", "line 1\n")
        append_text(mnt / "data" / "authorized_keys", "line 2\n")
        replace_file(mnt / "data" / "operator" / "known_hosts", b"old\n")
        replace_file(mnt / "data" / "operator" / "known_hosts", b"new\n")
    finally:
        fs.cut()
    fs = Mount(backing, mnt, tmp_path / "fs.log")
    try:
        assert (mnt / "data" / "operator" / "keys").is_dir()
        assert (mnt / "data" / "authorized_keys").read_text() == "line 1\nline 2\n"
        assert (mnt / "data" / "operator" / "known_hosts").read_bytes() == b"new\n"
        assert sorted(os.listdir(mnt / "data" / "operator")) == ["keys", "known_hosts"]
    finally:
        fs.cut()
