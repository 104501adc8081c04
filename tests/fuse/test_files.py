"""The files inside a snapshot's filesystems, under `<image>.files/` in a real mount: a GPT
disk (p1 ext4, p2 ext4 with a damaged file and folder, p3 nothing, p4 ext4 with a damaged
group descriptor table), a bare ext4 image, and an LVM2 volume, backed up and browsed."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
from pathlib import Path

import pytest

from diskvault.store.repository import Repository
from tests.conftest import SMALL_CHUNKS
from tests.fsimages import (PartSpec, assert_trees_equal, file_size_mib, make_disk, make_ext4,
                            make_lvm, populate_tree, require_tool)

GROUP_DESCRIPTORS = slice(4096, 8192)  # block 1 of a 4 KiB-block ext4


def damage(image: Path, *paths: str) -> Path:
    """Point the first extent of each path's inode far past the end of the volume."""
    require_tool("debugfs")
    for path in paths:
        subprocess.run(["debugfs", "-w", "-R", f"sif {path} block[5] 0xfffffff0", str(image)],
                       check=True, capture_output=True)
    return image


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("inside")
    tree = populate_tree(folder / "tree", many=40)
    good = make_ext4(folder / "ext4.img", tree, 16)
    hurt = damage(make_ext4(folder / "hurt.img", tree, 16), "/big.bin", "/many")
    broken = bytearray(good.read_bytes())
    broken[GROUP_DESCRIPTORS] = b"\xff" * 4096
    (folder / "broken.img").write_bytes(broken)
    size = file_size_mib(good)
    make_disk(folder / "gpt.img", [PartSpec(good, size), PartSpec(hurt, size),
                                   PartSpec(None, 1), PartSpec(folder / "broken.img", size)])
    return {"tree": tree, "gpt": folder / "gpt.img", "bare": good, "folder": folder}


@pytest.fixture
def backed_up(images, tmp_path):
    repository = Repository.init(tmp_path / "repo", chunk_size=SMALL_CHUNKS)
    repository.backup(images["gpt"], name="gpt")
    repository.backup(images["bare"], name="bare")
    yield repository
    repository.close()


def failure(action) -> int:
    with pytest.raises(OSError) as raised:
        action()
    return raised.value.errno


def test_each_partition_shows_its_files_as_in_the_source(images, backed_up, mounted):
    files = mounted(backed_up) / "gpt" / "latest" / "gpt.img.files"
    assert sorted(os.listdir(files)) == ["p1", "p2", "p3", "p4"]
    assert stat.S_IMODE(files.stat().st_mode) == 0o555
    tree, p1 = images["tree"], files / "p1"
    assert_trees_equal(tree, p1, owners=os.geteuid() == 0, atimes=False)
    assert os.readlink(p1 / "dirlink") == "deep/a"
    assert (p1 / "dirlink" / "b" / "c" / "d" / "leaf.txt").read_bytes() == b"deep leaf\n"
    key = (p1 / "secret" / "key").lstat()
    assert (key.st_size, stat.S_IMODE(key.st_mode)) == (17, 0o600)
    assert os.listdir(files / "p3") == []  # no filesystem: an empty folder
    assert failure(lambda: (p1 / "missing").stat()) == errno.ENOENT
    assert failure(lambda: os.listdir(p1 / "hello.txt")) == errno.ENOTDIR
    assert failure(lambda: open(p1 / "new", "w")) == errno.EROFS


def test_damage_gives_eio_for_its_paths_and_the_rest_keeps_working(images, backed_up, mounted,
                                                                   tmp_path):
    mountpoint = mounted(backed_up)
    files = mountpoint / "gpt" / "latest" / "gpt.img.files"
    assert failure(lambda: (files / "p2" / "big.bin").read_bytes()) == errno.EIO
    assert failure(lambda: os.listdir(files / "p2" / "many")) == errno.EIO
    assert failure(lambda: os.listdir(files / "p4")) == errno.EIO
    assert (files / "p2" / "hello.txt").read_bytes() == b"hello, world\n"
    assert (files / "p1" / "big.bin").read_bytes() == (images["tree"] / "big.bin").read_bytes()
    assert len(os.listdir(files / "p1" / "many")) == 40
    log = Path(f"{mountpoint}.log").read_text()
    assert "/big.bin" in log and "/many failed (EIO)" in log


def test_an_image_without_a_partition_table_is_its_files_folder(images, backed_up, mounted):
    files = mounted(backed_up, "bare") / "ext4.img.files"
    assert "hello.txt" in os.listdir(files)
    assert (files / "bin" / "tool.sh").read_bytes() == b"#!/bin/sh\necho hi\n"
    assert stat.S_IMODE((files / "bin" / "tool.sh").stat().st_mode) == 0o755
    assert os.readlink(files / "bin" / "up") == "../hello.txt"


def test_lvm_logical_volumes_show_as_group_dash_volume(images, tmp_path, mounted):
    make_lvm(tmp_path / "pv.img", "vg-data", [("root", 16, images["bare"])], 24)
    with Repository.init(tmp_path / "repo", chunk_size=SMALL_CHUNKS) as repository:
        repository.backup(tmp_path / "pv.img", name="lvm")
        files = mounted(repository, "lvm") / "pv.img.files"
        assert os.listdir(files) == ["vg--data-root"]
        assert (files / "vg--data-root" / "hello.txt").read_bytes() == b"hello, world\n"
