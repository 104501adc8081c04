"""check and repair on damaged repositories: a flipped byte, a truncated pack, a missing
pack, a deleted or unreadable index, a damaged manifest block. check names the pack, the
chunks and the snapshots; repair keeps everything intact and says what is lost."""

from __future__ import annotations

import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from diskvault.errors import CorruptData
from diskvault.maintenance.check import check
from diskvault.maintenance.compact import compact
from diskvault.maintenance.liveness import Liveness
from diskvault.maintenance.prune import delete_snapshots
from diskvault.maintenance.repair import repair_repository
from diskvault.store.format.packs import ENTRY, PackWriter, read_footer
from diskvault.store.format.snapshots import SnapshotRecord
from diskvault.store.repository import Repository

from ...conftest import in_both_modes
from ..support import (assert_all_restore, assert_restore, back_up, chunk_offsets, evolve,
                      pack_framing_bytes, referenced, restored, small_pack_repository)

encryption = in_both_modes()

KiB = 1024


@dataclass
class Scene:
    root: Path
    folder: Path
    expected: dict[str, bytes]          # snapshot id -> image bytes
    records: dict[str, SnapshotRecord]  # "a0", "a1", "a2", "b0", "b1" -> record

    def open(self) -> Repository:
        return Repository.open(self.root)

    def only_in(self, label: str, data_chunks: bool = True) -> tuple[bytes, str, int]:
        """A chunk that only snapshot ``label`` uses: (digest, pack, offset in the pack)."""
        with self.open() as repository:
            mine = self.records[label]
            others = set().union(*(referenced(repository, r) for key, r in
                                   self.records.items() if key != label))
            blocks = {b.digest for b in mine.blocks}
            pool = (set(chunk_offsets(repository, mine)) if data_chunks else blocks) - others
            digest = sorted(pool)[0]
            location = repository.storage.chunks.locate(digest)
            return digest, location.pack_id, location.offset

    def pack_path(self, pack_id: str) -> Path:
        return self.root / "packs" / pack_id[:2] / f"{pack_id}.pack"


@pytest.fixture
def scene(tmp_path, encryption) -> Scene:
    """Two series: "a" with three nightly snapshots, "b" (other data) with two."""
    root = tmp_path / "repo"
    expected, records = {}, {}
    with small_pack_repository(root, pack_target_bytes=24 * KiB,
                               encryption=encryption) as repository:
        for name, nights, seed in (("a", 3, 1), ("b", 2, 2)):
            rng = random.Random(seed)
            data = bytearray(rng.randbytes(160 * KiB))
            for night in range(nights):
                record = back_up(repository, tmp_path, name, bytes(data))
                expected[record.id] = bytes(data)
                records[f"{name}{night}"] = record
                evolve(data, rng)
    return Scene(root, tmp_path, expected, records)


def flip_byte(path: Path, offset: int) -> None:
    with open(path, "r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0x40]))


def damaged_ids(report) -> set[str]:
    return {d.record.id for d in report.damaged_snapshots}


def test_sound_repository_has_no_damage_and_counts_unused_chunks(scene):
    with scene.open() as repository:
        report = check(repository.storage, read_data=True)
        assert not report.damaged
        assert report.snapshots == 5 and report.unreferenced_chunks == 0
        assert report.records_read >= report.chunks_referenced
        assert report.bytes_read == report.stored_bytes - \
            report.packs * pack_framing_bytes(repository) - ENTRY.size * report.records_read
        delete_snapshots(repository.storage, [scene.records["a0"].id])
        after = check(repository.storage)
        assert not after.damaged and after.unreferenced_chunks > 0


def test_flipped_byte_is_found_by_read_data_naming_pack_chunk_and_snapshot(scene):
    digest, pack_id, offset = scene.only_in("b1")
    flip_byte(scene.pack_path(pack_id), offset + 3)
    with scene.open() as repository:
        assert not check(repository.storage).damaged  # structure alone cannot see it
        report = check(repository.storage, read_data=True)
        image_offset = chunk_offsets(repository, scene.records["b1"])[digest]
    assert damaged_ids(report) == {scene.records["b1"].id}
    [problem] = report.problems
    assert problem.where == f"pack {pack_id}" and digest.hex()[:16] in problem.message
    [damage] = report.damaged_snapshots
    assert damage.lost_chunks == 1 and damage.first_offset == image_offset


def test_repair_with_read_data_drops_the_damaged_record_and_a_new_backup_heals(scene):
    digest, pack_id, offset = scene.only_in("b1")
    flip_byte(scene.pack_path(pack_id), offset)
    repaired = repair_repository(scene.root, read_data=True)
    assert [(p, d) for p, d, _ in repaired.dropped_records] == [(pack_id, digest)]
    assert damaged_ids(repaired.after) == {scene.records["b1"].id}
    b1 = scene.records["b1"].id
    with scene.open() as repository:
        assert_restore(repository, {k: v for k, v in scene.expected.items() if k != b1})
        with pytest.raises(CorruptData):
            restored(repository, scene.records["b1"])
        back_up(repository, scene.folder, "b", scene.expected[b1])
        assert restored(repository, scene.records["b1"]) == scene.expected[b1]
        assert not check(repository.storage, read_data=True).damaged


def test_truncated_pack_is_found_and_repair_rescues_the_records_before_the_cut(scene):
    with scene.open() as repository:
        by_pack: dict[str, int] = {}
        for _, location in repository.storage.index.iter_chunks():
            by_pack[location.pack_id] = by_pack.get(location.pack_id, 0) + 1
        pack_id = max(by_pack, key=by_pack.get)
        size = repository.storage.packs.size(pack_id)
        users = {r.id for r in scene.records.values()
                 if {d for d, loc in repository.storage.index.iter_chunks() if loc.pack_id == pack_id}
                 & referenced(repository, r)}
    os.truncate(scene.pack_path(pack_id), size // 2)
    with scene.open() as repository:
        report = check(repository.storage)
    assert any(p.where == f"pack {pack_id}" and "truncated" in p.message
               for p in report.problems)
    assert damaged_ids(report) and damaged_ids(report) <= users
    repaired = repair_repository(scene.root)
    assert [p for p, _ in repaired.damaged_packs] == [pack_id]
    assert repaired.set_aside_packs == [pack_id]
    assert (scene.root / "damaged" / f"{pack_id}.pack").stat().st_size == size // 2
    assert 0 < repaired.chunks_salvaged < by_pack[pack_id]
    assert damaged_ids(repaired.after) == damaged_ids(report)
    intact = {k: v for k, v in scene.expected.items() if k not in damaged_ids(report)}
    with scene.open() as repository:
        assert_restore(repository, intact)


def test_missing_pack_is_reported_and_repair_forgets_it(scene):
    _, pack_id, _ = scene.only_in("a2")
    scene.pack_path(pack_id).unlink()
    with scene.open() as repository:
        report = check(repository.storage)
    assert [p.where for p in report.problems] == [f"pack {pack_id}"]
    assert "missing" in report.problems[0].message
    assert scene.records["a2"].id in damaged_ids(report)
    repaired = repair_repository(scene.root)
    assert repaired.missing_packs == [pack_id]
    assert damaged_ids(repaired.after) == damaged_ids(report)
    [left] = repaired.after.problems  # the index no longer claims what is gone
    assert left.where == "index" and "neither in the index" in left.message


def test_deleted_index_folder_is_rebuilt_from_the_packs_by_the_next_open(scene):
    shutil.rmtree(scene.root / "index")
    with scene.open() as repository:
        report = check(repository.storage)
    assert not report.damaged and not report.orphan_packs and report.packs
    repaired = repair_repository(scene.root)
    assert repaired.chunks_before == repaired.chunks_indexed > 0
    assert not repaired.after.damaged
    with scene.open() as repository:
        assert_all_restore(repository, scene.expected)
        assert not check(repository.storage, read_data=True).damaged
        delete_snapshots(repository.storage, [scene.records["a0"].id])
        assert compact(repository.storage, threshold=0.0).packs_deleted > 0


def test_unreadable_index_is_set_aside_and_rebuilt(scene):
    (scene.root / "index" / "data.mdb").write_bytes(b"not an lmdb file" * 512)
    with Repository.open(scene.root) as repository:  # any command: never a dead end
        set_aside = repository.storage.index_set_aside
        assert_all_restore(repository, scene.expected)
    assert set_aside is not None and set_aside.exists()
    repaired = repair_repository(scene.root)
    assert not repaired.after.damaged


def test_damaged_manifest_block_is_found_without_read_data(scene):
    digest, pack_id, offset = scene.only_in("a1", data_chunks=False)
    flip_byte(scene.pack_path(pack_id), offset + 1)
    with scene.open() as repository:
        report = check(repository.storage)
    assert damaged_ids(report) == {scene.records["a1"].id}
    assert any(digest.hex()[:16] in p.where for p in report.problems)
    [damage] = report.damaged_snapshots
    block = next(b for b in scene.records["a1"].blocks if b.digest == digest)
    assert damage.first_offset == block.offset and damage.lost_bytes > 0


def test_pack_left_by_an_interrupted_writer_is_an_orphan_not_damage(scene):
    with scene.open() as repository:
        writer = PackWriter(repository.storage.packs, "ab" * 16)
        writer.add(b"\x01" * 32, b"stray", 5, 0)
        writer.finish()
        report = check(repository.storage)
    assert not report.damaged and report.orphan_packs == ["ab" * 16]


def test_unreadable_snapshot_record_is_reported(scene):
    path = scene.root / "snapshots" / f"{scene.records['b0'].id}.json"
    path.write_bytes(b"{broken")
    with scene.open() as repository:
        report = check(repository.storage)
    assert any(p.where == f"snapshot record {path.name}" for p in report.problems)
    assert report.snapshots == 4


def test_repair_points_the_index_at_an_intact_copy_when_one_copy_is_damaged(scene):
    a0 = scene.records["a0"].id
    with scene.open() as repository:
        delete_snapshots(repository.storage, [a0])
        reader = repository.reader_lock()
        compact(repository.storage, threshold=0.0)  # copies made; their sources wait for the reader
        reader.release()
        doomed = Liveness(repository.storage.index).doomed()
        copied = next(e.digest for pack in sorted(doomed)
                      for e in read_footer(repository.storage.packs, pack)
                      if repository.storage.chunks.locate(e.digest).pack_id not in doomed)
        copy = repository.storage.chunks.locate(copied)
    flip_byte(scene.pack_path(copy.pack_id), copy.offset)
    repaired = repair_repository(scene.root)
    assert not repaired.after.damaged
    with scene.open() as repository:
        assert_all_restore(repository, {k: v for k, v in scene.expected.items() if k != a0})
        report = check(repository.storage, read_data=True)
    assert not report.damaged and report.damaged_unused_records == 1
