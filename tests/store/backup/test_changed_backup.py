"""backup with a change map: only changed ranges are read, the rest is taken from the
previous snapshot, and the manifest is the one a full read gives."""

from __future__ import annotations

import dataclasses
import random
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from diskvault.errors import BadInput, ChangeMapWrong
from diskvault.store.backup.change_map import ChangeMap, merge_ranges
from diskvault.store.format.snapshots import SnapshotRecord
from diskvault.store.repository import Repository
from tests.conftest import SMALL_CHUNKS, in_both_modes

encryption = in_both_modes()  # the tests on the `repo` fixture run plaintext and encrypted


def image_bytes(size: int, seed: int) -> bytes:
    """Random data with zero runs in it (all-zero chunks become zero runs)."""
    rng = random.Random(seed)
    out = bytearray()
    while len(out) < size:
        out += bytes(rng.randrange(1, 40_000)) if rng.random() < 0.2 else \
            rng.randbytes(rng.randrange(1, 60_000))
    return bytes(out[:size])


def edited(data: bytes, edits: list[tuple[int, int, int]], size: int) -> tuple[bytes, list]:
    """``data`` resized to ``size`` and overwritten at each (offset, length, byte value);
    the changed ranges a hypervisor would report (every edit, bytes the same or not)."""
    image = bytearray(data[:size].ljust(size, b"\x07"))
    ranges = []
    for offset, length, value in edits:
        offset = offset % size
        length = min(length, size - offset)
        image[offset: offset + length] = bytes([value]) * length
        ranges.append((offset, offset + length))
    return bytes(image), ranges


def back_up_file(repository: Repository, path: Path, data: bytes, name: str, **options):
    path.write_bytes(data)
    return repository.backup(path, name, **options)


def manifest_of(record: SnapshotRecord) -> list:
    return [(block.digest, block.offset) for block in record.blocks]


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**16), base_size=st.integers(1, 400_000),
       size_change=st.integers(-50_000, 50_000),
       edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(1, 30_000),
                                st.sampled_from([0, 0xAB])), max_size=6),
       mode=st.sampled_from(["none", "repokey-aes-256-gcm"]))
def test_backup_with_a_map_gives_the_manifest_of_a_full_read(tmp_path_factory, seed,
                                                             base_size, size_change, edits,
                                                             mode):
    """Plaintext, and encrypted (format version 3: the keyed chunker)."""
    folder = tmp_path_factory.mktemp("map")
    size = max(1, base_size + size_change)
    base = image_bytes(base_size, seed)
    new, ranges = edited(base, edits, size)
    with Repository.init(folder / "repo", chunk_size=SMALL_CHUNKS, encryption=mode) as repo:
        previous = back_up_file(repo, folder / "vm.img", base, "vm")
        full = back_up_file(repo, folder / "full.img", new, "full")
        mapped = back_up_file(repo, folder / "vm.img", new, "vm",
                              changes=ChangeMap(merge_ranges(ranges), previous.id))
    assert mapped.size == size
    assert manifest_of(mapped) == manifest_of(full)
    assert mapped.base_id == previous.id
    assert mapped.holes_as_zeros


def test_a_map_of_a_few_small_changes_reads_a_small_part_of_the_image(repo, tmp_path):
    base = image_bytes(4 << 20, seed=3)
    previous = back_up_file(repo, tmp_path / "vm.img", base, "vm")
    new, ranges = edited(base, [(1 << 20, 4096, 1), (3 << 20, 100, 2)], len(base))
    record = back_up_file(repo, tmp_path / "vm.img", new, "vm",
                          changes=ChangeMap(merge_ranges(ranges), previous.id))
    assert record.stats.bytes_read < len(base) // 20
    assert record.stats.new_chunks >= 2


def test_a_change_inside_a_large_zero_area_reads_about_the_change(repo, tmp_path):
    """The zero chunks on either side are taken without reading, and the snapshot is the
    one a full read makes."""
    base = random.Random(5).randbytes(1 << 20) + bytes(8 << 20) + \
        random.Random(6).randbytes(1 << 20)
    previous = back_up_file(repo, tmp_path / "vm.img", base, "vm")
    new, ranges = edited(base, [(5 << 20, 4096, 0xAB)], len(base))
    record = back_up_file(repo, tmp_path / "vm.img", new, "vm",
                          changes=ChangeMap(merge_ranges(ranges), previous.id))
    assert record.stats.bytes_read < 256 << 10
    full = back_up_file(repo, tmp_path / "full.img", new, "full")
    assert manifest_of(record) == manifest_of(full)


def test_map_relative_to_an_older_snapshot_is_refused(repo, tmp_path):
    base = image_bytes(200_000, seed=4)
    older = back_up_file(repo, tmp_path / "vm.img", base, "vm")
    back_up_file(repo, tmp_path / "vm.img", base, "vm")
    with pytest.raises(BadInput, match=f"since snapshot {older.short_id}.*latest snapshot"):
        repo.backup(tmp_path / "vm.img", "vm", changes=ChangeMap(((0, 10),), older.id))
    assert len(repo.list_snapshots("vm")) == 2


def test_map_without_a_base_or_a_previous_snapshot_is_refused(repo, tmp_path):
    (tmp_path / "vm.img").write_bytes(image_bytes(100_000, seed=5))
    with pytest.raises(BadInput, match="names no base"):
        repo.backup(tmp_path / "vm.img", "vm", changes=ChangeMap(((0, 10),)))
    other = back_up_file(repo, tmp_path / "other.img", b"x" * 5000, "other")
    with pytest.raises(BadInput, match="has no snapshot"):
        repo.backup(tmp_path / "vm.img", "vm", changes=ChangeMap(((0, 10),), other.id))


def test_verify_unchanged_catches_a_map_that_left_out_a_change(repo, tmp_path):
    base = image_bytes(300_000, seed=6)
    previous = back_up_file(repo, tmp_path / "vm.img", base, "vm")
    new, _ = edited(base, [(150_000, 64, 0x55)], len(base))
    with pytest.raises(ChangeMapWrong, match=r"differ from the previous snapshot.*\d+\+\d+"):
        back_up_file(repo, tmp_path / "vm.img", new, "vm", verify_unchanged=10_000,
                     changes=ChangeMap(((0, 10),), previous.id))
    assert [r.id for r in repo.list_snapshots("vm")] == [previous.id]


def test_records_without_a_base_keep_their_old_json_and_load(repo, tmp_path):
    record = back_up_file(repo, tmp_path / "vm.img", b"abc" * 1000, "vm")
    assert b"base_id" not in record.to_json()
    assert repo.load_snapshot(record.id).base_id is None


def test_a_record_says_its_holes_were_chunked_as_zeros_and_old_records_load_without_it(
        repo, tmp_path):
    record = back_up_file(repo, tmp_path / "vm.img", b"abc" * 1000, "vm")
    assert b'"holes_as_zeros":true' in record.to_json()
    assert repo.load_snapshot(record.id).holes_as_zeros is True
    old = dataclasses.replace(record, id=SnapshotRecord.new_id(), holes_as_zeros=False)
    assert b"holes_as_zeros" not in old.to_json()
    assert SnapshotRecord.from_json(old.to_json(), "old").holes_as_zeros is False


def test_a_map_over_a_base_made_before_holes_were_chunked_as_zeros_keeps_saying_so(
        repo, tmp_path):
    """Its unchanged entries are the base's, which may end at holes: not hints tomorrow."""
    record = back_up_file(repo, tmp_path / "vm.img", image_bytes(200_000, seed=3), "vm")
    old = dataclasses.replace(record, id=SnapshotRecord.new_id(), holes_as_zeros=False,
                              time=record.time + timedelta(seconds=1))
    repo.storage.snapshots.save(old)
    changes = ChangeMap(((0, 10),), old.id)
    assert back_up_file(repo, tmp_path / "vm.img", image_bytes(200_000, seed=3), "vm",
                        changes=changes).holes_as_zeros is False
    changes = ChangeMap(((0, 10),), repo.list_snapshots("vm")[-1].id)
    assert back_up_file(repo, tmp_path / "vm.img", image_bytes(200_000, seed=3), "vm",
                        changes=changes).holes_as_zeros is False
