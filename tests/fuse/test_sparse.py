"""Holes through the mount: SEEK_DATA and SEEK_HOLE are answered from the snapshot's manifest,
so `cp --sparse=always` copies a terabyte sparse image in moments and writes a sparse copy;
partition files report only the blocks that hold data, and seek within their own bytes."""

from __future__ import annotations

import errno
import os
import random
import subprocess
from pathlib import Path

import pytest

from .conftest import wait_for
from .test_partitions import PARTITION_START, make_gpt_ext4_disk

MIB = 1 << 20
TIB = 1 << 40
COPY_DEADLINE_S = 60.0  # a copy that reads the holes takes hours, one that skips them moments


def write_sparse(path: Path, size: int, pieces: dict[int, bytes]) -> Path:
    with open(path, "wb") as handle:
        handle.truncate(size)
        for offset, data in pieces.items():
            handle.seek(offset)
            handle.write(data)
    return path


def data_extents(path: Path) -> list[tuple[int, int]]:
    """(start, end) of every extent a file's filesystem says holds data."""
    extents = []
    fd = os.open(path, os.O_RDONLY)
    try:
        position, size = 0, os.fstat(fd).st_size
        while position < size:
            try:
                start = os.lseek(fd, position, os.SEEK_DATA)
            except OSError as error:
                if error.errno == errno.ENXIO:  # only a hole follows
                    break
                raise
            position = os.lseek(fd, start, os.SEEK_HOLE)
            extents.append((start, position))
    finally:
        os.close(fd)
    return extents


def copy_sparse(source: Path, target: Path) -> None:
    """`cp --sparse=always`, which must end well within the deadline: it skips holes only
    where the mount answers SEEK_DATA/SEEK_HOLE."""
    copying = subprocess.Popen(["cp", "--sparse=always", str(source), str(target)])
    try:
        wait_for(lambda: copying.poll() is not None,
                 f"cp --sparse=always of {source.name} to end", COPY_DEADLINE_S)
    finally:
        if copying.poll() is None:
            copying.kill()
            copying.wait()
    assert copying.returncode == 0


def assert_same_bytes(copy: Path, expected: dict[int, bytes]) -> None:
    """Every extent of ``copy`` that holds data reads as ``expected`` (zeros outside its
    pieces), and every piece is there: so the whole copy matches, holes being zeros."""
    with open(copy, "rb") as handle:
        for start, end in data_extents(copy):
            handle.seek(start)
            data = handle.read(end - start)
            wanted = bytearray(end - start)
            for offset, piece in expected.items():
                low, high = max(offset, start), min(offset + len(piece), end)
                if low < high:
                    wanted[low - start:high - start] = piece[low - offset:high - offset]
            assert data == wanted, f"bytes {start}..{end} of the copy differ"
        for offset, piece in expected.items():
            handle.seek(offset)
            assert handle.read(len(piece)) == piece


@pytest.fixture
def terabyte(repo, tmp_path):
    """A snapshot of a 1 TiB sparse image holding 1 MiB at its start and 1 MiB in its middle;
    the pieces by offset."""
    pieces = {0: random.Random(1).randbytes(MIB), TIB // 2: random.Random(2).randbytes(MIB)}
    repo.backup(write_sparse(tmp_path / "big.img", TIB, pieces), name="big")
    return pieces


def test_cp_sparse_copies_a_terabyte_sparse_image_through_the_mount_as_a_sparse_file(
        repo, terabyte, mounted, tmp_path):
    image = mounted(repo, "big") / "big.img"
    copy = tmp_path / "copy.img"
    copy_sparse(image, copy)
    assert copy.stat().st_size == TIB
    assert copy.stat().st_blocks * 512 <= 16 * MIB
    assert_same_bytes(copy, terabyte)


def test_seek_data_and_seek_hole_answer_from_the_manifest(repo, terabyte, mounted):
    fd = os.open(mounted(repo, "big") / "big.img", os.O_RDONLY)
    try:
        assert os.lseek(fd, 0, os.SEEK_DATA) == 0
        hole = os.lseek(fd, 0, os.SEEK_HOLE)
        assert MIB <= hole < TIB // 4  # where the first piece's last chunk ends
        assert os.lseek(fd, hole, os.SEEK_HOLE) == hole
        middle = os.lseek(fd, TIB // 4, os.SEEK_DATA)
        assert TIB // 4 < middle <= TIB // 2
        assert os.pread(fd, MIB, TIB // 2) == terabyte[TIB // 2]
        assert os.lseek(fd, TIB // 2 + MIB - 1, os.SEEK_DATA) == TIB // 2 + MIB - 1
        after = os.lseek(fd, TIB // 2, os.SEEK_HOLE)
        assert TIB // 2 + MIB <= after < TIB
        for offset in (after, TIB):  # only a hole follows; the end
            with pytest.raises(OSError) as raised:
                os.lseek(fd, offset, os.SEEK_DATA)
            assert raised.value.errno == errno.ENXIO
        with pytest.raises(OSError) as raised:
            os.lseek(fd, TIB, os.SEEK_HOLE)
        assert raised.value.errno == errno.ENXIO
    finally:
        os.close(fd)


def test_a_partition_file_reports_its_data_blocks_and_copies_sparse(repo, mounted, tmp_path):
    payload = random.Random(3).randbytes(3 * MIB)
    disk, partition_bytes = make_gpt_ext4_disk(tmp_path, 256 * MIB, {"srv/data.bin": payload})
    record = repo.backup(disk, name="vm1")
    partition = mounted(repo) / "vm1" / record.time_label / "disk.img.p1"
    assert len(payload) <= partition.stat().st_blocks * 512 <= partition_bytes // 4
    copy = tmp_path / "p1.copy"
    copy_sparse(partition, copy)
    assert copy.stat().st_blocks * 512 <= partition_bytes // 4
    with open(disk, "rb") as original:
        original.seek(PARTITION_START)
        assert copy.read_bytes() == original.read(partition_bytes)
