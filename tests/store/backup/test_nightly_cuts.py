"""A nightly backup guided by the previous snapshot's chunks (hints hashed ahead while the
image is read) stores exactly what a backup without hints stores: same manifest, same
chunks, and the same image back."""

from __future__ import annotations

import random
from pathlib import Path

from diskvault.store.backup.source import READ_BUFFER_BYTES

from ...conftest import in_both_modes

encryption = in_both_modes()


def night_of(image: Path, target: Path) -> Path:
    """``image`` with changes inside read buffers, across a buffer boundary and at the start
    of one, and a run of zeros turned into data: a night of a disk in use."""
    data = bytearray(image.read_bytes())
    rng = random.Random(5)
    for offset in (100_000, READ_BUFFER_BYTES - 2000, 2 * READ_BUFFER_BYTES, 9_000_000):
        data[offset: offset + 4096] = rng.randbytes(4096)
    zeros = data.find(bytes(65536))
    data[zeros: zeros + 65536] = rng.randbytes(65536)
    target.write_bytes(bytes(data))
    return target


def test_hinted_nightly_stores_what_a_backup_without_hints_stores(repo, make_image, tmp_path):
    night0 = make_image(3 * READ_BUFFER_BYTES + 12345, "mixed", seed=8)
    night1 = night_of(night0, tmp_path / "night1.img")
    repo.backup(night0, "vm")
    hinted = repo.backup(night1, "vm")  # hints: the series' latest snapshot
    fresh = repo.backup(night1, "fresh")  # no hints: a series of its own
    assert hinted.blocks == fresh.blocks
    assert hinted.stats.new_chunks > 0 and fresh.stats.new_chunks == 0
    repo.restore(hinted, tmp_path / "restored.img")
    assert (tmp_path / "restored.img").read_bytes() == night1.read_bytes()
