"""A hostile ext4 filesystem inside a snapshot, browsed through a real mount under
`<image>.files/`: a directory hard-linked into itself, a big sparse file, an inode with an
absurd size. Each costs only its own entry; nothing hangs or writes terabytes."""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import pytest

from diskvault.store.repository import Repository
from tests.conftest import SMALL_CHUNKS
from tests.fsimages import make_ext4, require_tool

SPARSE_BYTES = 2 << 30  # skipped, not read, where the mount answers SEEK_DATA/SEEK_HOLE
DATA_AT = 1 << 30
DATA = b"x" * 4096


def debugfs(image: Path, request: str) -> None:
    subprocess.run(["debugfs", "-w", "-R", request, str(image)], check=True,
                   capture_output=True)


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """A repository holding one snapshot of the hostile image."""
    require_tool("debugfs")
    folder = tmp_path_factory.mktemp("hostile")
    tree = folder / "tree"
    (tree / "a" / "b").mkdir(parents=True)
    (tree / "a" / "b" / "f.txt").write_bytes(b"in b\n")
    (tree / "odd").mkdir()
    (tree / "odd" / "ok.txt").write_bytes(b"fine\n")
    (tree / "odd" / "weird").write_bytes(b"w\n")
    os.symlink(b"target-\xff", bytes(tree / "odd") + b"/badlink")
    with open(tree / "sparse.bin", "wb") as handle:
        handle.truncate(SPARSE_BYTES)
        handle.seek(DATA_AT)
        handle.write(DATA)
    image = make_ext4(folder / "fs.img", tree, 16)
    debugfs(image, "link /a/b /a/b/loop")  # b holds itself
    debugfs(image, "link /a /a/b/up")  # and its parent
    debugfs(image, "sif /odd/weird size 0x7fffffffffffffff")
    repository = Repository.init(folder / "repo", chunk_size=SMALL_CHUNKS)
    repository.backup(image, name="fs")
    yield repository
    repository.close()


def test_a_directory_loop_inside_an_image_ends_find_and_answers_eloop(hostile, mounted):
    files = mounted(hostile, "fs") / "fs.img.files"
    found = subprocess.run(["find", str(files)], capture_output=True, timeout=60)
    paths = found.stdout.decode().split()
    assert str(files / "a" / "b" / "f.txt") in paths
    assert not any("/loop/" in p or "/up/" in p for p in paths)
    for looped in (files / "a" / "b" / "loop", files / "a" / "b" / "up"):
        with pytest.raises(OSError) as raised:
            os.lstat(looped)
        assert raised.value.errno == errno.ELOOP
    assert "(a loop in the filesystem)" in Path(f"{files.parent}.log").read_text()


def test_a_sparse_file_inside_an_image_reports_its_data_blocks_and_copies_sparse(
        hostile, mounted, tmp_path):
    inside = mounted(hostile, "fs") / "fs.img.files" / "sparse.bin"
    status = os.stat(inside)
    assert status.st_size == SPARSE_BYTES and status.st_blocks * 512 <= 64 * 1024
    fd = os.open(inside, os.O_RDONLY)
    try:  # the filesystem's extents say where the data is
        assert os.lseek(fd, 0, os.SEEK_DATA) == DATA_AT
        assert os.lseek(fd, DATA_AT, os.SEEK_HOLE) == DATA_AT + len(DATA)
        with pytest.raises(OSError) as raised:
            os.lseek(fd, DATA_AT + len(DATA), os.SEEK_DATA)
        assert raised.value.errno == errno.ENXIO
    finally:
        os.close(fd)
    copy = tmp_path / "sparse.bin"
    subprocess.run(["cp", str(inside), str(copy)], check=True, timeout=300)
    assert copy.stat().st_size == SPARSE_BYTES
    assert copy.stat().st_blocks * 512 <= 1 << 20  # holes, not 2 GiB of zeros
    with open(copy, "rb") as handle:
        handle.seek(DATA_AT - 4096)
        assert handle.read(3 * 4096) == bytes(4096) + DATA + bytes(4096)


def test_an_inode_with_an_absurd_size_costs_only_that_entry(hostile, mounted):
    files = mounted(hostile, "fs") / "fs.img.files"
    assert {"a", "odd", "sparse.bin"} <= set(os.listdir(files))
    listed = os.listdir(files / "odd")
    assert "ok.txt" in listed
    assert (files / "odd" / "ok.txt").read_bytes() == b"fine\n"
    if "weird" in listed:  # listed or left out, but never served with its size
        with pytest.raises(OSError) as raised:
            os.lstat(files / "odd" / "weird")
        assert raised.value.errno == errno.EIO
    assert "/odd/weird" in Path(f"{files.parent}.log").read_text()


def test_a_symlink_whose_target_is_not_utf8_fails_alone_with_eio(hostile, mounted):
    files = mounted(hostile, "fs") / "fs.img.files"
    with pytest.raises(OSError) as raised:
        os.readlink(files / "odd" / "badlink")
    assert raised.value.errno == errno.EIO
    assert (files / "odd" / "ok.txt").read_bytes() == b"fine\n"
    assert "/odd/badlink points to a name that is not UTF-8" in \
        Path(f"{files.parent}.log").read_text()
