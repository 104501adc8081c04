"""Deduplication: unchanged data is referenced, changed data costs only nearby chunks,
and consecutive snapshots share manifest blocks."""

from __future__ import annotations

import random

from diskvault.store.repository import Repository

SIZE = 4 * 1024 * 1024


def rewrite(path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as handle:
        handle.seek(offset)
        handle.write(data)


def test_second_backup_of_unchanged_image_stores_no_chunks(repo, make_image):
    image = make_image(SIZE, "mixed", seed=1)
    first = repo.backup(image)
    packs_before = repo.totals().packs
    second = repo.backup(image)
    assert first.stats.new_chunks > 100
    assert second.stats.new_chunks == 0 and second.stats.new_bytes == 0
    assert second.stats.new_manifest_blocks == 0
    assert repo.totals().packs == packs_before
    assert second.blocks == first.blocks


def test_inserting_bytes_near_the_start_adds_only_a_handful_of_chunks(repo, make_image):
    image = make_image(SIZE, "random", seed=2)
    first = repo.backup(image)
    data = image.read_bytes()
    image.write_bytes(data[:10_000] + b"a few inserted bytes" + data[10_000:])
    second = repo.backup(image)
    assert second.stats.chunks > 500
    assert second.stats.new_chunks <= 4
    assert second.stats.new_bytes < 4 * repo.config.chunker.max_bytes
    assert first.stats.new_chunks > 500


def test_few_4k_writes_in_place_add_only_the_chunks_around_them(repo, make_image):
    image = make_image(SIZE, "random", seed=3)
    repo.backup(image)
    rng = random.Random(3)
    offsets = [rng.randrange(0, SIZE // 4096) * 4096 for _ in range(5)]
    for offset in offsets:
        rewrite(image, offset, rng.randbytes(4096))
    second = repo.backup(image)
    # each write touches the chunk(s) holding it, plus at most one neighbour to resync
    assert 5 <= second.stats.new_chunks <= 5 * 3
    assert second.stats.new_bytes <= 5 * 3 * repo.config.chunker.max_bytes


def test_consecutive_snapshots_share_almost_all_manifest_blocks(tmp_path, make_image):
    with Repository.init(tmp_path / "r", chunk_size=1024) as repo:  # many entries per image
        image = make_image(16 * 1024 * 1024, "random", seed=4)
        first = repo.backup(image)
        rewrite(image, 8 * 1024 * 1024, b"changed" * 100)
        second = repo.backup(image)
    assert len(first.blocks) >= 8
    shared = set(b.digest for b in first.blocks) & set(b.digest for b in second.blocks)
    assert len(shared) >= len(first.blocks) - 2
    assert second.stats.new_manifest_blocks <= 2


def test_zero_runs_and_holes_are_never_stored(repo, make_image, tmp_path):
    image = tmp_path / "sparse.img"
    with open(image, "wb") as handle:
        handle.write(random.Random(5).randbytes(100_000))
        handle.write(bytes(2_000_000))         # written zeros
        handle.seek(10_000_000)                 # a hole
        handle.write(b"tail")
    record = repo.backup(image)
    assert record.size == 10_000_004
    assert record.stats.zero_bytes >= 10_000_004 - 100_000 - 2 * repo.config.chunker.max_bytes
    assert record.stats.new_bytes < 100_000 + 2 * repo.config.chunker.max_bytes
    assert record.stats.bytes_read < 3_000_000  # the hole was not read


def test_same_content_in_two_series_is_stored_once(repo, make_image):
    image = make_image(SIZE, "random", seed=6)
    repo.backup(image, name="vm1")
    other = repo.backup(image, name="vm2")
    assert other.stats.new_chunks == 0
