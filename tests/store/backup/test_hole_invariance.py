"""A manifest depends only on the image's bytes: the dense file, a sparse copy, a copy with
more holes punched over its zeros and a loop device over it back up to the same manifest
blocks, and each restores bit-exact. Real files, real holes, a real loop device."""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from diskvault.store.backup.source import ImageSource
from diskvault.store.repository import Repository

from ...conftest import SMALL_CHUNKS
from ..restore.test_device_restore import loop_device  # noqa: F401  (fixture)

MAX_CHUNK = 4 * SMALL_CHUNKS  # the test repositories' maximum chunk size

# Lengths around the chunk sizes and 4 KiB blocks: runs longer than the maximum chunk,
# runs shorter than a block, runs that start and end off block boundaries.
LENGTH = st.one_of(st.integers(1, 5000), st.integers(4096, 3 * MAX_CHUNK),
                   st.sampled_from([4096, 8192, MAX_CHUNK, MAX_CHUNK + 1, 2 * MAX_CHUNK - 1]))
SEGMENT = st.tuples(st.sampled_from(["data", "zeros", "hole"]), LENGTH)


def write_segments(path: Path, segments, seed: int) -> None:
    """Random data, written zeros, and holes (skipped: a hole where whole blocks allow)."""
    rng = random.Random(seed)
    with open(path, "wb") as handle:
        for kind, length in segments:
            if kind == "hole":
                handle.seek(length, os.SEEK_CUR)
            else:
                handle.write(rng.randbytes(length) if kind == "data" else bytes(length))
        handle.truncate()


def dense_copy(source: Path, target: Path) -> None:
    subprocess.run(["cp", "--sparse=never", str(source), str(target)], check=True)


def sparse_copy(source: Path, target: Path) -> None:
    subprocess.run(["cp", "--sparse=always", str(source), str(target)], check=True)


def punch_zero_segments(path: Path, segments, rng: random.Random) -> None:
    """Punch holes over some of the written zeros (the bytes stay zeros)."""
    offset = 0
    for kind, length in segments:
        if kind == "zeros" and rng.random() < 0.7:
            subprocess.run(["fallocate", "--punch-hole", "--offset", str(offset),
                            "--length", str(length), str(path)], check=True)
        offset += length


def holes_in(path: Path) -> int:
    with ImageSource(path) as source:
        return sum(extent.size for extent in source.extents() if extent.is_hole)


def sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def manifest_of(record) -> tuple[int, tuple[bytes, ...]]:
    return record.size, tuple(block.digest for block in record.blocks)


@pytest.fixture(scope="module", autouse=True)
def needs_tools():
    for tool in ("cp", "fallocate"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} is not installed (apt-get install coreutils util-linux)")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32), segments=st.lists(SEGMENT, min_size=1, max_size=8))
def test_dense_sparse_and_punched_copies_have_the_same_manifest(seed, segments):
    with tempfile.TemporaryDirectory(prefix="diskvault-holes-") as work:
        work = Path(work)
        written = work / "written.img"
        write_segments(written, segments, seed)
        copies = {name: work / f"{name}.img" for name in ("dense", "sparse", "punched")}
        dense_copy(written, copies["dense"])
        sparse_copy(written, copies["sparse"])
        shutil.copyfile(written, copies["punched"])
        punch_zero_segments(copies["punched"], segments, random.Random(seed))
        assert holes_in(copies["dense"]) == 0
        with Repository.init(work / "repo", chunk_size=SMALL_CHUNKS,
                             encryption="none") as repo:
            # The punched copy in the dense copy's series: hints from the dense backup.
            records = {name: repo.backup(path, name="dense" if name == "punched" else name)
                       for name, path in copies.items()}
            assert len({manifest_of(record) for record in records.values()}) == 1
            repo.restore(records["punched"], work / "restored.img")
        assert sha256(work / "restored.img") == sha256(copies["dense"])


def test_a_loop_device_over_a_sparse_image_has_the_image_file_manifest(repo, tmp_path,
                                                                       loop_device):  # noqa: F811
    segments = [("data", 300_000), ("hole", 1_000_000), ("data", 5000), ("zeros", 70_000),
                ("hole", 12_288), ("data", 200_000), ("hole", 4 * MAX_CHUNK + 77),
                ("data", 4096 * 20 + 512 - 165)]  # a loop device holds whole 512-byte sectors
    image = tmp_path / "sparse.img"
    write_segments(image, segments, seed=3)
    assert holes_in(image) > 1_000_000
    device = loop_device(image)
    from_file = repo.backup(image, name="vm1")
    from_device = repo.backup(device, name="vm2")
    assert manifest_of(from_device) == manifest_of(from_file)
    assert from_device.stats.new_chunks == 0
    repo.restore(from_device, tmp_path / "restored.img")
    assert sha256(tmp_path / "restored.img") == sha256(image)
