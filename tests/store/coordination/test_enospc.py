"""A repository whose disk fills up in the middle of a backup.

The backup aborts with exit code 74 and one line saying the disk is full; the repository
stays consistent (earlier snapshots restore bit-exact, no snapshot is recorded, no temp
pack is left, the lock is released); once there is space, a rerun succeeds. Real small
filesystems (tmpfs mounts), real subprocesses.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from diskvault.store.backends.local import LocalBackend
from diskvault.store.format.config import write_config
from diskvault.store.format.packs import PackStore
from diskvault.store.repository import Repository

from ...conftest import run_cli, write_image

MiB = 1024 * 1024
EXIT_DISK_FULL = 74

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="needs root: the tests mount small tmpfs filesystems "
                              "(mount -t tmpfs -o size=8m tmpfs DIR) to fill them up")


@pytest.fixture
def mount_tmpfs() -> Iterator[Callable[[Path, str], Path]]:
    """mount_tmpfs(folder, size) mounts a tmpfs of ``size`` (e.g. "8m") on ``folder``;
    everything mounted is unmounted on teardown, last mounted first."""
    mounted: list[Path] = []

    def mount(folder: Path, size: str) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs",
                                 str(folder)], capture_output=True, text=True)
        if result.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
        mounted.append(folder)
        return folder

    yield mount
    for folder in reversed(mounted):
        if subprocess.run(["umount", str(folder)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def grow(folder: Path, size: str) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(folder)], check=True)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(4 * MiB):
            digest.update(block)
    return digest.hexdigest()


def new_repository(root: Path, pack_target_bytes: int | None = None) -> Path:
    repository = Repository.init(root, chunk_size=4096)
    if pack_target_bytes:
        write_config(LocalBackend(root), dataclasses.replace(repository.config,
                                               pack_target_bytes=pack_target_bytes))
    repository.close()
    return root


def backup(repo: Path, image: Path) -> subprocess.CompletedProcess:
    return run_cli("backup", "-r", str(repo), str(image), "--json", "--no-progress")


def listed_ids(repo: Path) -> list[str]:
    listing = run_cli("list", "-r", str(repo), "--json")
    assert listing.returncode == 0, listing.stderr.decode()
    return [snapshot["id"] for snapshot in json.loads(listing.stdout)]


def assert_disk_full_error(result: subprocess.CompletedProcess) -> None:
    stderr = result.stderr.decode()
    assert result.returncode == EXIT_DISK_FULL, (
        f"expected exit code {EXIT_DISK_FULL} (disk full), got {result.returncode}: {stderr}")
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("diskvault: error:"), stderr
    assert "disk is full" in lines[0], stderr


def assert_consistent_after_failure(repo: Path, first_id: str, first_sha: str,
                                    outside: Path) -> None:
    """Only the first snapshot is listed and restores bit-exact; nothing half-done is left."""
    assert listed_ids(repo) == [first_id]
    leftovers = [p for p in repo.rglob("*") if p.name.endswith(".tmp")]
    assert not leftovers, f"temp files left behind by the failed backup: {leftovers}"
    assert not PackStore(LocalBackend(repo)).list_unfinished()
    assert not [*(repo / "writers").iterdir()], "the failed backup left its registration"
    target = outside / "first.restored"
    result = run_cli("restore", "-r", str(repo), first_id, str(target))
    assert result.returncode == 0, result.stderr.decode()
    assert sha256_of(target) == first_sha


@pytest.mark.parametrize("pack_target_bytes", [None, 256 * 1024],
                         ids=["fills up inside an open pack", "fills up finishing a pack"])
def test_backup_that_fills_the_disk_fails_cleanly_and_a_rerun_succeeds_with_space(
        tmp_path: Path, mount_tmpfs, pack_target_bytes: int | None):
    small_fs = mount_tmpfs(tmp_path / "small_fs", "8m")
    repo = new_repository(small_fs / "repo", pack_target_bytes)
    first_image = write_image(tmp_path / "first.img", 1 * MiB, "random", seed=1)
    large_image = write_image(tmp_path / "large.img", 16 * MiB, "random", seed=2)

    first = backup(repo, first_image)
    assert first.returncode == 0, first.stderr.decode()
    first_id = json.loads(first.stdout)["id"]

    assert_disk_full_error(backup(repo, large_image))
    assert_consistent_after_failure(repo, first_id, sha256_of(first_image), tmp_path)

    grow(small_fs, "64m")
    rerun = backup(repo, large_image)
    assert rerun.returncode == 0, rerun.stderr.decode()
    rerun_id = json.loads(rerun.stdout)["id"]
    assert listed_ids(repo) == [first_id, rerun_id]
    target = tmp_path / "large.restored"
    result = run_cli("restore", "-r", str(repo), rerun_id, str(target))
    assert result.returncode == 0, result.stderr.decode()
    assert sha256_of(target) == sha256_of(large_image)
    assert not PackStore(LocalBackend(repo)).list_unfinished()


def test_backup_whose_index_runs_out_of_space_fails_cleanly_and_a_rerun_reuses_its_pack(
        tmp_path: Path, mount_tmpfs):
    # The packs have room; only the LMDB index (on its own tiny filesystem) fills up, so
    # the failure comes from the index commit that follows a durable pack.
    repo = new_repository(tmp_path / "repo")
    index_fs = mount_tmpfs(repo / "index", "256k")
    first_image = write_image(tmp_path / "first.img", 1 * MiB, "random", seed=1)
    large_image = write_image(tmp_path / "large.img", 16 * MiB, "random", seed=2)

    first = backup(repo, first_image)
    assert first.returncode == 0, first.stderr.decode()
    first_id = json.loads(first.stdout)["id"]

    assert_disk_full_error(backup(repo, large_image))
    assert_consistent_after_failure(repo, first_id, sha256_of(first_image), tmp_path)

    grow(index_fs, "64m")
    rerun = backup(repo, large_image)
    assert rerun.returncode == 0, rerun.stderr.decode()
    summary = json.loads(rerun.stdout)
    # The pack written before the index filled up was durable: the rerun indexes and
    # reuses it instead of storing the image again.
    assert summary["stats"]["stored_bytes"] < large_image.stat().st_size // 2
    target = tmp_path / "large.restored"
    result = run_cli("restore", "-r", str(repo), summary["id"], str(target))
    assert result.returncode == 0, result.stderr.decode()
    assert sha256_of(target) == sha256_of(large_image)


def fill_up(folder: Path) -> Path:
    """Fill the filesystem of ``folder`` to exactly 0 bytes free with one filler file."""
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as handle:
        for step in (MiB, 4096, 1):
            try:
                while True:
                    handle.write(bytes(step))
            except OSError:
                pass
    stats = os.statvfs(folder)
    assert stats.f_bavail == 0
    return filler


def free_bytes(folder: Path) -> int:
    stats = os.statvfs(folder)
    return stats.f_bavail * stats.f_frsize


def test_delete_and_compact_free_space_on_a_disk_with_no_byte_free(tmp_path: Path,
                                                                   mount_tmpfs):
    small_fs = mount_tmpfs(tmp_path / "small_fs", "16m")
    repo = new_repository(small_fs / "repo")
    kept_image = write_image(tmp_path / "kept.img", 1 * MiB, "random", seed=1)
    gone_image = write_image(tmp_path / "gone.img", 2 * MiB, "random", seed=2)
    kept = json.loads(backup(repo, kept_image).stdout)["id"]
    gone = json.loads(backup(repo, gone_image).stdout)["id"]
    fill_up(small_fs)

    deleted = run_cli("delete", "-r", str(repo), gone)
    assert deleted.returncode == 0, deleted.stderr.decode()
    compacted = run_cli("compact", "-r", str(repo), "--json")
    assert compacted.returncode == 0, compacted.stderr.decode()

    assert free_bytes(small_fs) > 1 * MiB
    assert listed_ids(repo) == [kept]
    assert not [p for p in repo.rglob("*") if p.name.endswith(".tmp")]
    assert not (repo / "lock").exists()
    target = tmp_path / "kept.restored"
    assert run_cli("restore", "-r", str(repo), kept, str(target)).returncode == 0
    assert sha256_of(target) == sha256_of(kept_image)


def test_backup_and_repair_on_a_disk_with_no_byte_free_exit_74_or_succeed_leaving_no_temp_file(
        tmp_path: Path, mount_tmpfs):
    small_fs = mount_tmpfs(tmp_path / "small_fs", "16m")
    repo = new_repository(small_fs / "repo")
    first_image = write_image(tmp_path / "first.img", 1 * MiB, "random", seed=1)
    first = json.loads(backup(repo, first_image).stdout)["id"]
    fill_up(small_fs)

    assert_disk_full_error(backup(repo, write_image(tmp_path / "more.img", 1 * MiB, "random",
                                                    seed=3)))
    repaired = run_cli("check", "-r", str(repo), "--repair")
    assert repaired.returncode == 0, repaired.stderr.decode()

    assert_consistent_after_failure(repo, first, sha256_of(first_image), tmp_path)


def test_compact_on_a_full_disk_deletes_unused_packs_before_copying_live_records(
        tmp_path: Path, mount_tmpfs):
    # Pack "partly" keeps 8 of its 12 MiB in use: emptying it means writing 8 MiB, more than
    # the space reserve. Pack "unused" holds nothing in use: deleted first, it makes room.
    small_fs = mount_tmpfs(tmp_path / "small_fs", "40m")
    repo = new_repository(small_fs / "repo")
    partly = write_image(tmp_path / "partly.img", 12 * MiB, "random", seed=1)
    unused = write_image(tmp_path / "unused.img", 6 * MiB, "random", seed=2)
    kept = tmp_path / "kept.img"
    kept.write_bytes(partly.read_bytes()[: 8 * MiB] + os.urandom(1 * MiB))
    ids = [json.loads(backup(repo, image).stdout)["id"] for image in (partly, unused, kept)]
    run_cli("delete", "-r", str(repo), ids[0], ids[1], check=True)
    fill_up(small_fs)

    compacted = run_cli("compact", "-r", str(repo), "--json")

    assert compacted.returncode == 0, compacted.stderr.decode()
    # "partly" and "unused", and the packs of the two deleted snapshots' manifest blocks
    assert json.loads(compacted.stdout)["packs_deleted"] == 4
    assert not [p for p in repo.rglob("*") if p.name.endswith(".tmp")]
    target = tmp_path / "kept.restored"
    assert run_cli("restore", "-r", str(repo), ids[2], str(target)).returncode == 0
    assert sha256_of(target) == sha256_of(kept)
