"""A local repository's index is trusted only for the repository it was built from: one
restored from an older copy, or copied with `cp -a` while its packs were behind its index,
is rebuilt from the packs before a backup dedups against it; and any damage to the index
(a zeroed page, a removed folder) leads to a rebuild, never to a dead end."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from diskvault.store.repository import Repository

from ...conftest import run_cli, write_image

MiB = 1024 * 1024
PAGE_BYTES = 4096


def restore_bytes(root: Path, snapshot: str, target: Path) -> bytes:
    result = run_cli("restore", "-r", str(root), snapshot, str(target))
    assert result.returncode == 0, result.stderr.decode()
    return target.read_bytes()


def backup(root: Path, image: Path, name: str) -> None:
    run_cli("backup", "-r", str(root), str(image), "--name", name, "--no-progress", check=True)


@pytest.fixture
def one_snapshot(repo: Repository, tmp_path: Path) -> Path:
    backup(repo.root, write_image(tmp_path / "one.img", 1 * MiB, seed=1), "one")
    repo.close()
    return repo.root


def put_back(older: Path, root: Path) -> None:
    """The packs and records of ``root`` replaced by those of an older copy; its index,
    newer, stays (a restore from a backup of the folder taken while a backup ran)."""
    for folder in ("packs", "snapshots"):
        shutil.rmtree(root / folder)
        shutil.copytree(older / folder, root / folder, symlinks=True)


@pytest.mark.parametrize("where", ["in place", "a cp -a copy"])
def test_an_index_newer_than_the_packs_beside_it_is_rebuilt_before_a_backup_uses_it(
        one_snapshot: Path, tmp_path: Path, where: str):
    older = tmp_path / "older"
    subprocess.run(["cp", "-a", str(one_snapshot), str(older)], check=True)
    two = write_image(tmp_path / "two.img", 1 * MiB, seed=2)
    backup(one_snapshot, two, "two")  # its packs: known to the index, not to the older copy
    put_back(older, one_snapshot)
    root = one_snapshot
    if where == "a cp -a copy":  # a place this host has not seen: nothing to report
        root = tmp_path / "copy"
        subprocess.run(["cp", "-a", str(one_snapshot), str(root)], check=True)
    else:  # the snapshot seen here is gone: reported until accepted
        refused = run_cli("backup", "-r", str(root), str(two), "--name", "two")
        assert refused.returncode == 1 and b"is gone from" in refused.stderr
        run_cli("list", "-r", str(root), "--accept-missing", check=True)

    backup(root, two, "two")  # must store its chunks again: their packs are gone
    assert restore_bytes(root, "two", tmp_path / "two.restored") == two.read_bytes()
    assert run_cli("check", "-r", str(root)).returncode == 0


def zero_last_page(index: Path) -> None:
    """The page LMDB wrote last (a table's root) zeroed: 'Located page was wrong type'."""
    data = index / "data.mdb"
    with open(data, "r+b") as file:
        file.seek(data.stat().st_size - PAGE_BYTES)
        file.write(bytes(PAGE_BYTES))


def test_check_repair_rebuilds_an_index_with_a_zeroed_page(one_snapshot: Path, tmp_path: Path):
    run_cli("compact", "-r", str(one_snapshot), check=True)  # maintenance's tables too
    zero_last_page(one_snapshot / "index")
    repaired = run_cli("check", "-r", str(one_snapshot), "--repair")
    assert repaired.returncode == 0, repaired.stderr.decode()
    assert restore_bytes(one_snapshot, "one", tmp_path / "one.restored") == \
        (tmp_path / "one.img").read_bytes()


@pytest.mark.parametrize("command", ["check --repair", "restore"])
def test_a_removed_index_folder_is_rebuilt_by_the_next_command(
        one_snapshot: Path, tmp_path: Path, command: str):
    shutil.rmtree(one_snapshot / "index")
    if command == "check --repair":
        repaired = run_cli("check", "-r", str(one_snapshot), "--repair")
        assert repaired.returncode == 0, repaired.stderr.decode()
    assert restore_bytes(one_snapshot, "one", tmp_path / "one.restored") == \
        (tmp_path / "one.img").read_bytes()
