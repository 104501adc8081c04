"""The index is an accelerator: any damage to the LMDB file leads `check --repair` to set
it aside and rebuild it from the pack footers, and meanwhile other commands fail with one
line that says to run it -- never an internal error, a crash, or a dead end."""

from __future__ import annotations

import os
from pathlib import Path

import lmdb
import pytest

from diskvault.store.repository import Repository

from ..conftest import run_cli, write_image
from ..store.read.test_corruption import assert_one_line_error

MiB = 1024 * 1024
PAGE_BYTES = 4096
META_PAGES = 2


def truncate_data_file(index: Path) -> None:
    data = index / "data.mdb"
    os.truncate(data, os.path.getsize(data) // 2)


def flip_bytes_in_pages(index: Path, offsets: range) -> None:
    """XOR bytes at ``offsets`` within every page after the two meta pages."""
    data = index / "data.mdb"
    content = bytearray(data.read_bytes())
    for page in range(META_PAGES, len(content) // PAGE_BYTES):
        for offset in offsets:
            content[page * PAGE_BYTES + offset] ^= 0x5A
    data.write_bytes(bytes(content))


def put_short_value(index: Path, table: bytes) -> None:
    env = lmdb.open(str(index), max_dbs=16)
    try:
        db = env.open_db(table)
        with env.begin(write=True) as txn:
            key = next(iter(txn.cursor(db=db)))[0]
            txn.put(key, b"short", db=db)
    finally:
        env.close()


DAMAGE = {
    "truncated data.mdb": truncate_data_file,
    "flipped page headers": lambda index: flip_bytes_in_pages(index, range(0, 16)),
    "flipped bytes in pages": lambda index: flip_bytes_in_pages(index, range(16, 4096, 7)),
    "short value in chunks": lambda index: put_short_value(index, b"chunks"),
    "short value in packs": lambda index: put_short_value(index, b"packs"),
}


@pytest.fixture
def two_snapshots(repo: Repository, tmp_path: Path) -> dict[str, bytes]:
    expected = {}
    for seed in (1, 2):
        image = write_image(tmp_path / f"disk{seed}.img", 2 * MiB, "mixed", seed=seed)
        expected[repo.backup(image, name=f"disk{seed}").id] = image.read_bytes()
    repo.close()
    return expected


@pytest.mark.parametrize("damage", DAMAGE)
def test_check_repair_rebuilds_any_damaged_index_and_every_snapshot_restores(
        repo: Repository, two_snapshots: dict[str, bytes], tmp_path: Path, damage: str):
    DAMAGE[damage](repo.root / "index")

    repaired = run_cli("check", "-r", str(repo.root), "--repair")
    output = repaired.stdout.decode() + repaired.stderr.decode()
    assert repaired.returncode == 0, output
    assert "internal error" not in output
    for snapshot_id, image in two_snapshots.items():
        target = tmp_path / f"{snapshot_id}.restored"
        restore = run_cli("restore", "-r", str(repo.root), snapshot_id, str(target))
        assert restore.returncode == 0, restore.stderr.decode()
        assert target.read_bytes() == image
    assert run_cli("check", "-r", str(repo.root)).returncode == 0


@pytest.mark.parametrize("damage", DAMAGE)
def test_commands_meeting_a_damaged_index_say_to_run_check_repair(
        repo: Repository, two_snapshots: dict[str, bytes], tmp_path: Path, damage: str):
    DAMAGE[damage](repo.root / "index")
    snapshot_id, image = next(iter(two_snapshots.items()))
    target = tmp_path / "restored.img"
    for args in (["list"], ["info"], ["restore", snapshot_id, str(target)], ["check"]):
        result = run_cli(args[0], "-r", str(repo.root), *args[1:])
        stderr = result.stderr.decode()
        assert "internal error" not in stderr and "Traceback" not in stderr, stderr
        assert result.returncode in (0, 1), f"{args}: exit {result.returncode}: {stderr}"
        if result.returncode and args[0] != "check":
            assert_one_line_error(result, 1, "diskvault check")
    if target.exists():
        assert target.read_bytes() == image, "a damaged index made restore write wrong bytes"
