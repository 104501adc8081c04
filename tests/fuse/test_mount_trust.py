"""What a real mount must never do: let a path name another snapshot than it named before
(the kernel caches pages by path), hand another user the bytes of a whole disk, or lose its
root listing to one strangely named series."""

from __future__ import annotations

import dataclasses
import errno
import os
from pathlib import Path

import pytest

from ..conftest import run_cli, write_image
from ..fsimages import PartSpec, make_disk, make_fat
from .conftest import wait_for

PIECE = 256 * 1024


def test_a_path_never_names_another_snapshot_when_its_own_is_deleted(repo, tmp_path, mounted):
    images = [write_image((tmp_path / str(seed)).mkdir() or tmp_path / str(seed) / "vm.img",
                          2 << 20, seed=seed) for seed in (1, 2)]
    one, two = (repo.backup(image, name="vm") for image in images)
    repo.storage.snapshots.save(dataclasses.replace(repo.load_snapshot(two.id), time=one.time))
    first, second = sorted([one, two], key=lambda r: r.id)  # same time: the id decides
    first_bytes = Path(first.source).read_bytes()
    mountpoint = mounted(repo)
    series, label = mountpoint / "vm", first.time_label
    assert sorted(os.listdir(series)) == [label, f"{label}-{second.short_id}", "latest"]
    with open(series / label / "vm.img", "rb") as handle:  # the kernel caches this much
        assert handle.read(PIECE) == first_bytes[:PIECE]

    run_cli("delete", "-r", str(repo.root), first.id, check=True)
    wait_for(lambda: len(os.listdir(series)) == 2, "the deleted snapshot to leave the mount")
    try:
        again = (series / label / "vm.img").read_bytes()
    except FileNotFoundError:
        again = None  # gone: the right answer
    assert again in (None, first_bytes), "the path serves (some of) another snapshot's bytes"
    assert os.readlink(series / "latest") == f"{label}-{second.short_id}"


def test_another_user_lists_the_mount_but_cannot_read_images_without_share_images(
        repo, tmp_path, mounted, other_user):
    disk = tmp_path / "vm.img"
    make_disk(disk, [PartSpec(None, 1)])
    with open(disk, "r+b") as handle:
        handle.seek(1 << 20)
        handle.write(b"secret bytes of a root-only file")
    record = repo.backup(disk, name="vm")
    closed = mounted(repo, record.id, "--allow-other", under=other_user.scratch)
    listing = other_user.run("ls", str(closed))
    assert listing.returncode == 0, listing.stderr
    assert listing.stdout.split() == [b"vm.img", b"vm.img.files", b"vm.img.p1"]
    for name in ("vm.img", "vm.img.p1"):
        read = other_user.run("cat", str(closed / name))
        assert read.returncode != 0 and b"Permission denied" in read.stderr, name
        assert os.stat(closed / name).st_mode & 0o777 == 0o400

    shared = mounted(repo, record.id, "--allow-other", "--share-images",
                     under=other_user.scratch)
    read = other_user.run("cat", str(shared / "vm.img.p1"))
    assert read.returncode == 0 and read.stdout.startswith(b"secret bytes")


def test_share_images_without_allow_other_is_a_usage_error(repo, tmp_path):
    (tmp_path / "mnt").mkdir()
    result = run_cli("mount", "-r", str(repo.root), str(tmp_path / "mnt"), "--share-images")
    assert result.returncode == 2 and b"--allow-other" in result.stderr


def test_a_series_named_by_a_non_utf8_file_name_shows_escaped_and_the_root_lists(
        repo, make_image, mounted, tmp_path):
    source = Path(os.fsdecode(bytes(tmp_path) + b"/disk\xff.img"))
    make_image(1 << 20, "random", name="plain.img").rename(source)
    run_cli("backup", "-r", str(repo.root), str(source), check=True)  # the name is the file's
    repo.backup(make_image(1 << 20, "random", seed=3, name="vm.img"), name="vm")
    mountpoint = mounted(repo)
    assert sorted(os.listdir(mountpoint)) == ["disk%FF.img", "vm"]
    image = mountpoint / "disk%FF.img" / "latest" / "disk%FF.img"
    assert image.read_bytes() == source.read_bytes()


def test_series_whose_names_showed_alike_get_folders_of_their_own(repo, make_image, mounted):
    long_name = "x" * 300
    for seed, name in enumerate(["web/db", "web_db", long_name]):
        repo.backup(make_image(64 * 1024, "random", seed=seed, name="vm.img"), name=name)
    mountpoint = mounted(repo)
    names = sorted(os.listdir(mountpoint))
    assert len(names) == 3 and "web_db" in names and "web%2Fdb" in names
    assert all(len(name.encode()) <= 255 for name in names)
    for name in names:
        assert os.listdir(mountpoint / name)  # each one reachable, none refused
    with pytest.raises(OSError) as raised:
        os.listdir(mountpoint / long_name)
    assert raised.value.errno in (errno.ENOENT, errno.ENAMETOOLONG)


def test_files_of_a_filesystem_without_owners_are_the_mounting_users_unless_shared(
        repo, tmp_path, mounted, other_user):
    tree = tmp_path / "tree"
    (tree / "docs").mkdir(parents=True)
    (tree / "docs" / "private.txt").write_bytes(b"a windows user's file\n")
    repo.backup(make_fat(tmp_path / "fat.img", tree, 16), name="fat")
    closed = mounted(repo, "fat", "--allow-other", under=other_user.scratch) / "fat.img.files"
    assert other_user.run("ls", str(closed)).stdout.split() == [b"docs"]
    read = other_user.run("cat", str(closed / "docs" / "private.txt"))
    assert read.returncode != 0 and b"Permission denied" in read.stderr
    assert (closed / "docs" / "private.txt").read_bytes() == b"a windows user's file\n"

    shared = mounted(repo, "fat", "--allow-other", "--share-images", under=other_user.scratch)
    read = other_user.run("cat", str(shared / "fat.img.files" / "docs" / "private.txt"))
    assert read.returncode == 0 and read.stdout == b"a windows user's file\n"
