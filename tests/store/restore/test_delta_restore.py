"""Delta restore: onto an existing file or block device, only the entries the target does not
already hold are written; a file is patched in a copy renamed over it (a kill leaves old or
new), a device is marked while it is written (a later backup or restore says it was cut)."""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from diskvault.errors import CorruptData, SourceError
from diskvault.store.read.image_map import image_spans
from diskvault.store.restore.restore import differing_blocks

from ...conftest import SMALL_CHUNKS, in_both_modes, run_cli, run_killed_at_random, write_image
from .test_device_restore import loop_device  # noqa: F401  (fixture)

encryption = in_both_modes()
MiB = 1024 * 1024
MAX_CHUNK_BYTES = 4 * SMALL_CHUNKS  # the repo fixture's chunker maximum


def sha256(path: Path, size: int | None = None) -> str:
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read(size) if size is not None else handle.read()).hexdigest()


def edited_copy(source: Path, target: Path, edits: list[tuple[int, bytes]]) -> Path:
    target.write_bytes(source.read_bytes())
    with open(target, "r+b") as handle:
        for offset, data in edits:
            handle.seek(offset)
            handle.write(data)
    return target


@pytest.fixture
def two_nights(tmp_path: Path) -> tuple[Path, Path, int]:
    """(yesterday's image, today's image, bytes changed): 6 MiB of mixed data, today with a
    1 MiB and a 300 KB stretch rewritten and a zero run filled."""
    yesterday = write_image(tmp_path / "yesterday.img", 6 * MiB, "mixed", seed=3)
    rng = random.Random(5)
    edits = [(1 * MiB + 123, rng.randbytes(MiB)), (4 * MiB + 7, rng.randbytes(300_000))]
    today = edited_copy(yesterday, tmp_path / "today.img", edits)
    return yesterday, today, sum(len(data) for _, data in edits)


def test_delta_restore_onto_yesterdays_copy_writes_about_the_changed_bytes(
        repo, two_nights, tmp_path):
    yesterday, today, changed = two_nights
    record = repo.backup(today)
    target = tmp_path / "target.img"
    target.write_bytes(yesterday.read_bytes())
    result = repo.restore(record, target, force=True)
    assert sha256(target) == sha256(today)
    assert result.method == "delta"
    assert result.compared_bytes == record.size
    assert changed <= result.written_bytes <= 2 * changed + MAX_CHUNK_BYTES


def test_delta_restore_onto_an_identical_copy_writes_nothing(repo, make_image, tmp_path):
    image = make_image(3 * MiB, "mixed", seed=4)
    record = repo.backup(image)
    target = tmp_path / "copy.img"
    target.write_bytes(image.read_bytes())
    result = repo.restore(record, target, force=True)
    assert (result.compared_bytes, result.written_bytes) == (record.size, 0)
    assert sha256(target) == sha256(image)


@pytest.mark.parametrize("target_size", [1 * MiB, 5 * MiB], ids=["shorter", "longer"])
def test_delta_restore_fixes_size_zeros_and_data_of_any_older_file(repo, make_image, tmp_path,
                                                                   target_size):
    image = tmp_path / "image.img"
    with open(image, "wb") as handle:  # data, a hole, data
        handle.write(random.Random(1).randbytes(MiB))
        handle.seek(2 * MiB)
        handle.write(random.Random(2).randbytes(MiB))
    record = repo.backup(image)
    target = write_image(tmp_path / "old.img", target_size, "random", seed=9)  # data in the hole
    result = repo.restore(record, target, force=True)
    assert sha256(target) == sha256(image)
    assert result.written_bytes >= min(target_size, 2 * MiB)


def test_full_restore_rewrites_every_data_byte_without_comparing(repo, make_image, tmp_path):
    image = make_image(2 * MiB, seed=6)
    record = repo.backup(image)
    target = tmp_path / "copy.img"
    target.write_bytes(image.read_bytes())
    result = repo.restore(record, target, force=True, full=True)
    assert (result.method, result.compared_bytes, result.written_bytes) == ("full", 0, 2 * MiB)
    assert sha256(target) == sha256(image)


def test_cli_reports_compared_and_written_bytes(repo, two_nights, tmp_path):
    yesterday, today, changed = two_nights
    repo.backup(today, name="vm1")
    target = tmp_path / "target.img"
    target.write_bytes(yesterday.read_bytes())
    result = run_cli("restore", "-r", str(repo.root), "vm1", str(target), "--force", "--json",
                     check=True)
    report = json.loads(result.stdout)
    assert report["method"] == "delta"
    assert report["compared_bytes"] == 6 * MiB
    assert changed <= report["written_bytes"] <= 2 * changed + MAX_CHUNK_BYTES
    assert report["clone"] in ("reflink", "copy")
    assert sha256(target) == sha256(today)
    text = run_cli("restore", "-r", str(repo.root), "vm1", str(target), "--force", check=True)
    assert "compared" in text.stderr.decode() and "0 B written" in text.stderr.decode()


def test_full_without_force_is_refused_as_usage(repo, make_image, tmp_path):
    repo.backup(make_image(100_000), name="vm1")
    result = run_cli("restore", "-r", str(repo.root), "vm1", str(tmp_path / "new.img"), "--full")
    assert result.returncode == 2
    assert b"--force" in result.stderr and b"Traceback" not in result.stderr


def test_killed_delta_restore_leaves_the_old_or_the_new_file(repo, tmp_path):
    old = write_image(tmp_path / "old.img", 24 * MiB, "mixed", seed=11)
    rng = random.Random(12)
    new = edited_copy(old, tmp_path / "new.img", [(offset, rng.randbytes(2 * MiB))
                                                   for offset in (MiB, 9 * MiB, 20 * MiB)])
    repo.backup(new, name="vm1")
    old_hash, new_hash = sha256(old), sha256(new)
    target = tmp_path / "target.img"
    command = [sys.executable, "-m", "diskvault", "restore", "-r", str(repo.root), "vm1",
               str(target), "--force", "--no-progress"]
    target.write_bytes(old.read_bytes())
    started = time.monotonic()
    subprocess.run(command, check=True, capture_output=True)
    whole_run_s = time.monotonic() - started  # only to spread the kill points over a run
    for attempt in range(4):
        target.write_bytes(old.read_bytes())
        run_killed_at_random(command, rng, whole_run_s)
        assert sha256(target) in (old_hash, new_hash), \
            f"attempt {attempt}: the target holds neither the old nor the new image"
    repo.restore(repo.find_snapshot("vm1"), target, force=True)  # leftovers cleared, finished
    assert sha256(target) == sha256(new)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".target.img")]


def test_damaged_record_in_a_delta_restore_names_snapshot_and_offset_and_keeps_the_target(
        repo, two_nights, tmp_path):
    yesterday, today, _ = two_nights
    record = repo.backup(today)
    changed_offset = 1 * MiB + 123 + 100_000  # inside the first rewritten stretch
    location = _location_at(repo, record, changed_offset)
    pack = repo.root / "packs" / location.pack_id[:2] / f"{location.pack_id}.pack"
    with open(pack, "r+b") as handle:
        handle.seek(location.offset + location.stored_size // 2)
        byte = handle.read(1)
        handle.seek(-1, os.SEEK_CUR)
        handle.write(bytes([byte[0] ^ 0xFF]))
    target = tmp_path / "target.img"
    target.write_bytes(yesterday.read_bytes())
    with pytest.raises(CorruptData, match=rf"{record.short_id}.*at byte offset \d+"):
        repo.restore(record, target, force=True)
    assert sha256(target) == sha256(yesterday)


def _location_at(repo, record, offset: int):
    for span in image_spans(repo.storage.chunks, record):
        if span.offset <= offset < span.offset + span.length and span.digest is not None:
            return repo.storage.chunks.locate(span.digest)
    raise AssertionError(f"no data chunk at {offset}")


def test_delta_restore_onto_a_block_device_writes_about_the_changed_bytes(
        repo, two_nights, tmp_path, loop_device, monkeypatch):  # noqa: F811
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    yesterday, today, changed = two_nights
    record = repo.backup(today)
    backing = tmp_path / "backing.img"
    backing.write_bytes(yesterday.read_bytes() + bytes(MiB))  # a device larger than the image
    device = loop_device(backing)
    result = repo.restore(record, device, force=True)
    assert sha256(device, record.size) == sha256(today)
    assert changed <= result.written_bytes <= 2 * changed + MAX_CHUNK_BYTES
    assert result.compared_bytes == record.size


def test_interrupted_device_restore_is_named_by_the_next_backup_and_restore(
        repo, two_nights, tmp_path, loop_device, monkeypatch):  # noqa: F811
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    yesterday, today, _ = two_nights
    good = repo.backup(today, name="good")
    backing = tmp_path / "backing.img"
    backing.write_bytes(yesterday.read_bytes())
    device = loop_device(backing)
    damaged = repo.backup(write_image(tmp_path / "other.img", 6 * MiB, "random", seed=8),
                          name="damaged")
    location = _location_at(repo, damaged, 5 * MiB)
    pack = repo.root / "packs" / location.pack_id[:2] / f"{location.pack_id}.pack"
    with open(pack, "r+b") as handle:  # the restore fails part-way, after writing
        handle.seek(location.offset)
        handle.write(bytes(16))
    with pytest.raises(CorruptData):
        repo.restore(damaged, device, force=True)

    with pytest.raises(SourceError, match="was interrupted.*restore it again"):
        repo.backup(device, name="dev")
    result = repo.restore(good, device, force=True)
    assert "was interrupted" in result.interrupted_before
    assert sha256(device) == sha256(today)
    repo.backup(device, name="dev")  # the mark is gone once a restore completed


def test_only_the_changed_blocks_of_a_differing_chunk_are_written():
    old = bytes(20_000)
    new = bytearray(old)
    new[5000] = 1  # block 4096..8191 of the target (the chunk starts at 100)
    new[19_000] = 2  # block 16384..20479
    runs = [(offset, len(run)) for offset, run in differing_blocks(100, old, bytes(new))]
    assert runs == [(4096, 4096), (16384, 20100 - 16384)]
    assert [(o, len(r)) for o, r in differing_blocks(100, old[:3000], bytes(new))] == \
        [(100, 20_000)]  # past the end of a shorter target, everything is written


def test_in_place_restore_of_a_file_writes_about_the_changed_bytes_without_a_copy(
        repo, two_nights, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    yesterday, today, changed = two_nights
    record = repo.backup(today)
    target = tmp_path / "target.img"
    target.write_bytes(yesterday.read_bytes())
    inode = target.stat().st_ino
    result = repo.restore(record, target, force=True, in_place=True)
    assert sha256(target) == sha256(today)
    assert target.stat().st_ino == inode, "the file was replaced, not patched"
    assert (result.clone, result.cloned_bytes) == (None, 0)
    assert changed <= result.written_bytes <= 2 * changed + MAX_CHUNK_BYTES
    assert not list((tmp_path / "state" / "diskvault" / "restores").iterdir())


@pytest.mark.parametrize("in_place_again", [True, False], ids=["in-place", "replaced"])
def test_interrupted_in_place_restore_of_a_file_is_named_by_the_next_backup_and_restore(
        repo, two_nights, tmp_path, monkeypatch, in_place_again):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    yesterday, today, _ = two_nights
    good = repo.backup(today, name="good")
    damaged = repo.backup(write_image(tmp_path / "other.img", 6 * MiB, "random", seed=8),
                          name="damaged")
    location = _location_at(repo, damaged, 5 * MiB)
    pack = repo.root / "packs" / location.pack_id[:2] / f"{location.pack_id}.pack"
    with open(pack, "r+b") as handle:
        handle.seek(location.offset)
        handle.write(bytes(16))
    target = tmp_path / "target.img"
    target.write_bytes(yesterday.read_bytes())
    with pytest.raises(CorruptData):
        repo.restore(damaged, target, force=True, in_place=True)

    backup = run_cli("backup", "-r", str(repo.root), str(target), "--name", "t",
                     env={"XDG_STATE_HOME": str(tmp_path / "state")})
    assert backup.returncode == 2
    assert b"was interrupted" in backup.stderr and len(backup.stderr.splitlines()) == 1
    result = repo.restore(good, target, force=True, in_place=in_place_again)
    assert "was interrupted" in result.interrupted_before
    assert sha256(target) == sha256(today)
    repo.backup(target, name="t")
    assert not list((tmp_path / "state" / "diskvault" / "restores").iterdir())
