"""Read-only repositories: on read-only media (a real ext4 loop mount remounted read-only)
or for a user who may read but not write them, every reader works (restoring from an
offline disk is the moment backups exist for); writers fail at once with one line."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from diskvault.store.repository import Repository

from ..conftest import SMALL_CHUNKS, run_cli
from ..fsimages import make_ext4, require_root, require_tool
from ..fuse.conftest import require_fuse, unmount, wait_for
from .read.test_corruption import assert_one_line_error

EXIT_READ_ONLY = 77
Run = Callable[..., subprocess.CompletedProcess]  # run(*diskvault argv)


def back_up_a_filesystem(repo_root: Path, work: Path) -> bytes:
    """A repository at ``repo_root`` holding one snapshot 'fs' of an ext4 image with one
    file, hello.txt; returns the image's bytes."""
    tree = work / "tree"
    tree.mkdir()
    (tree / "hello.txt").write_text("hello from the snapshot\n")
    image = make_ext4(work / "fs.img", tree, 8)
    with Repository.init(repo_root, chunk_size=SMALL_CHUNKS) as repository:
        repository.backup(image, name="fs")
    return image.read_bytes()


def assert_readers_work(run: Run, image: bytes, out: Path) -> None:
    for args in (["list"], ["info", "fs"], ["check"], ["ls", "fs", "/"]):
        result = run(*args)
        assert result.returncode == 0, f"{args}: {result.stderr.decode()}"
    cat = run("cat", "fs")
    assert cat.returncode == 0, cat.stderr.decode()
    assert cat.stdout == image
    restore = run("restore", "fs", str(out / "restored.img"))
    assert restore.returncode == 0, restore.stderr.decode()
    assert (out / "restored.img").read_bytes() == image
    pull = run("pull", "fs", "/hello.txt", str(out / "hello.txt"))
    assert pull.returncode == 0, pull.stderr.decode()
    assert (out / "hello.txt").read_text() == "hello from the snapshot\n"


def assert_writers_refuse(run: Run, repo_root: Path, image: Path) -> None:
    for args in (["backup", str(image), "--name", "more"], ["delete", "fs"], ["compact"],
                 ["prune", "--keep-last", "1"], ["check", "--repair"],
                 ["config", "--append-only", "on"]):
        result = run(*args)
        assert_one_line_error(result, EXIT_READ_ONLY, "read-only", str(repo_root))


@pytest.fixture
def read_only_mount(tmp_path: Path):
    """(repository root, image bytes): a repository on a real ext4 filesystem in a loop
    mount, remounted read-only after the backup."""
    require_root("mounting a loop filesystem needs root")
    require_tool("mkfs.ext4")
    disk = tmp_path / "media.img"
    with open(disk, "wb") as handle:
        handle.truncate(64 * 1024 * 1024)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(disk)], check=True, capture_output=True)
    media = tmp_path / "media"
    media.mkdir()
    mounted = subprocess.run(["mount", "-o", "loop", str(disk), str(media)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"loop mounts are unavailable here: {mounted.stderr.strip()}")
    try:
        image = back_up_a_filesystem(media / "repo", tmp_path)
        subprocess.run(["mount", "-o", "remount,ro", str(media)], check=True)
        yield media / "repo", image
    finally:
        subprocess.run(["umount", str(media)], check=True)


def test_readers_work_and_writers_refuse_on_a_read_only_filesystem(read_only_mount,
                                                                    tmp_path: Path):
    repo_root, image = read_only_mount
    out = tmp_path / "out"
    out.mkdir()

    def run(*args: str) -> subprocess.CompletedProcess:
        return run_cli(args[0], "-r", str(repo_root), *args[1:])

    assert_readers_work(run, image, out)
    assert_writers_refuse(run, repo_root, tmp_path / "fs.img")


def test_mount_serves_a_repository_on_a_read_only_filesystem(read_only_mount,
                                                             tmp_path: Path):
    require_fuse()
    repo_root, image = read_only_mount
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    run_cli("mount", "-r", str(repo_root), str(mountpoint), "fs", "--log-file",
            str(tmp_path / "mount.log"), check=True)
    try:
        assert (mountpoint / "fs.img").read_bytes() == image
    finally:
        unmount(mountpoint)
    wait_for(lambda: not os.path.ismount(mountpoint), "the mount to go away")


def test_a_user_who_may_only_read_the_repository_can_restore_from_it(other_user,
                                                                    tmp_path: Path):
    repo_root = other_user.scratch / "repo"
    image = back_up_a_filesystem(repo_root, tmp_path)
    subprocess.run(["chmod", "-R", "a+rX,go-w", str(repo_root)], check=True)  # shared on purpose
    out = other_user.scratch / "out"
    out.mkdir()
    os.chown(out, other_user.uid, other_user.gid)

    def run(*args: str) -> subprocess.CompletedProcess:
        return other_user.run(sys.executable, "-m", "diskvault", args[0], "-r",
                              str(repo_root), *args[1:])

    assert_readers_work(run, image, out)
    image_copy = out / "fs-copy.img"
    image_copy.write_bytes(image)
    assert_writers_refuse(run, repo_root, image_copy)


def test_readers_of_a_read_only_repository_that_lost_its_index_build_a_private_one(
        read_only_mount, tmp_path: Path, monkeypatch):
    repo_root, image = read_only_mount
    media = repo_root.parent
    subprocess.run(["mount", "-o", "remount,rw", str(media)], check=True)
    subprocess.run(["rm", "-rf", str(repo_root / "index")], check=True)
    subprocess.run(["mount", "-o", "remount,ro", str(media)], check=True)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    out = tmp_path / "out"
    out.mkdir()

    def run(*args: str) -> subprocess.CompletedProcess:
        return run_cli(args[0], "-r", str(repo_root), *args[1:])

    assert_readers_work(run, image, out)
    assert not (repo_root / "index").exists()
    assert list((tmp_path / "cache" / "diskvault").glob("*/*/index/data.mdb"))
