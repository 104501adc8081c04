"""Stray entries in a repository -- a `.pack` whose name is not a pack id, a pack in the
wrong folder, a folder named like a snapshot record, unknown files -- are not diskvault's:
backup, compact and list ignore them with a warning, check lists them without calling them
damage, repair leaves them where they are."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from diskvault.store.repository import Repository

from ..conftest import run_cli, write_image

MiB = 1024 * 1024


def a_pack(root: Path) -> Path:
    return sorted((root / "packs").glob("*/*.pack"))[0]


def misnamed_pack(root: Path) -> Path:
    pack = a_pack(root)
    return Path(shutil.copy(pack, pack.with_name("not-its-id.pack")))


def pack_in_wrong_folder(root: Path) -> Path:
    pack = a_pack(root)
    folder = root / "packs" / ("00" if pack.parent.name != "00" else "01")
    folder.mkdir(exist_ok=True)
    return Path(shutil.copy(pack, folder / pack.name))


def folder_named_like_a_record(root: Path) -> Path:
    folder = root / "snapshots" / "0123456789abcdef.json"
    folder.mkdir()
    return folder


def folder_named_like_a_pack(root: Path) -> Path:
    folder = a_pack(root).with_name("ab" * 16 + ".pack")
    folder.mkdir()
    return folder


def unknown_files(root: Path) -> Path:
    (root / "snapshots" / "notes.txt").write_text("mine\n")
    (root / "packs" / "README").write_text("mine\n")
    odd = root / "packs" / "zz"
    odd.mkdir()
    return odd


STRAYS = {
    "misnamed pack": misnamed_pack,
    "pack in the wrong folder": pack_in_wrong_folder,
    "folder named like a record": folder_named_like_a_record,
    "folder named like a pack": folder_named_like_a_pack,
    "unknown files": unknown_files,
}


@pytest.mark.parametrize("kind", STRAYS)
def test_stray_entries_are_ignored_by_writers_listed_by_check_and_left_by_repair(
        repo: Repository, tmp_path: Path, kind: str):
    first = write_image(tmp_path / "first.img", 2 * MiB, "mixed", seed=1)
    expected = {repo.backup(first).id: first.read_bytes()}
    repo.close()
    stray = STRAYS[kind](repo.root)
    stray_name = str(stray.relative_to(repo.root))
    root = str(repo.root)

    second = write_image(tmp_path / "second.img", 1 * MiB, "random", seed=2)
    backup = run_cli("backup", "-r", root, str(second), "--name", "second")
    assert backup.returncode == 0, backup.stderr.decode()
    assert "warning" in backup.stderr.decode() and "left alone" in backup.stderr.decode()
    with Repository.open(repo.root) as repository:
        expected[repository.find_snapshot("second").id] = second.read_bytes()

    for args in (["list"], ["compact", "--threshold", "0"]):
        result = run_cli(args[0], "-r", root, *args[1:])
        assert result.returncode == 0, f"{args}: {result.stderr.decode()}"

    check = run_cli("check", "-r", root)
    assert check.returncode == 0, check.stdout.decode() + check.stderr.decode()
    assert "stray" in check.stdout.decode() and stray_name in check.stdout.decode()

    repair = run_cli("check", "-r", root, "--repair")
    assert repair.returncode == 0, repair.stdout.decode() + repair.stderr.decode()
    assert stray.exists(), "repair removed an entry that is not diskvault's"

    for snapshot_id, image in expected.items():
        target = tmp_path / f"{snapshot_id}.restored"
        restore = run_cli("restore", "-r", root, snapshot_id, str(target))
        assert restore.returncode == 0, restore.stderr.decode()
        assert target.read_bytes() == image
