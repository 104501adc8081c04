"""Pulling files out of real images, and refusing what a hostile image asks for."""

from __future__ import annotations

import io
import os
import stat
import subprocess
from pathlib import Path

import pytest

from diskvault.errors import BadInput, TargetExists
from diskvault.image.extract import name_problem, pull, symlink_problem
from diskvault.image.filesystems import Driver, Entry, Filesystem, GuardedVolume, open_filesystem
from diskvault.image.locations import open_location, parse_location
from tests.fsimages import (FS_KINDS, OWNER, ImageCache, PartSpec, assert_trees_equal,
                            call_with_deadline, file_size_mib, make_disk, make_ext4, populate_tree,
                            require_root, require_tool)

PULL_KINDS = ["ext4", "xfs", "btrfs", "fat32", "exfat", "ntfs"]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return ImageCache(tmp_path_factory)


def opened(image: Path) -> Filesystem:
    return open_filesystem(open(image, "rb"), "the image")


def outside_is_untouched(destination: Path) -> None:
    assert os.listdir(destination.parent) == [destination.name]


@pytest.mark.parametrize("kind", PULL_KINDS)
def test_a_pulled_tree_equals_the_source(images, tmp_path, kind):
    image, source = images.get(kind)
    spec = FS_KINDS[kind]
    disk = tmp_path / "disk.img"
    label = "dos" if kind in ("ntfs", "fat32") else "gpt"
    make_disk(disk, [PartSpec(None, 1), PartSpec(image, file_size_mib(image))], label)
    destination = tmp_path / "out" / "restored"
    destination.parent.mkdir()
    with open(disk, "rb") as f:
        fs, path = open_location(f, "p2:/")
        report = pull(fs, path, destination)
        assert report.problems == [] and report.exit_code == 0
        regular = [p for p in source.rglob("*") if p.is_file() and not p.is_symlink()]
        assert report.files == len(regular)
        for relative in ("hello.txt", "secret/key", "big.bin"):  # atime as the image has it
            assert (destination / relative).stat().st_atime_ns == fs.stat("/" + relative).atime_ns
        assert_trees_equal(source, destination, modes=spec.posix, symlinks=spec.symlinks,
                           owners=spec.posix and os.geteuid() == 0, atimes=False,
                           time_resolution_ns=spec.time_resolution_ns)
    outside_is_untouched(destination)


def test_pull_of_one_file_to_a_new_name_into_a_folder_and_never_over_a_file(images, tmp_path):
    image, source = images.get("ext4")
    fs = opened(image)
    report = pull(fs, "/secret/key", tmp_path / "key-copy")
    assert (report.files, report.bytes) == (1, 17)
    assert (tmp_path / "key-copy").read_bytes() == (source / "secret" / "key").read_bytes()
    assert stat.S_IMODE((tmp_path / "key-copy").stat().st_mode) == 0o600
    (tmp_path / "into").mkdir()
    pull(fs, "/bin", tmp_path / "into")
    assert (tmp_path / "into" / "bin" / "tool.sh").read_bytes() == b"#!/bin/sh\necho hi\n"
    with pytest.raises(TargetExists):
        pull(fs, "/hello.txt", tmp_path / "key-copy")
    with pytest.raises(BadInput, match="not an existing folder"):
        pull(fs, "/hello.txt", tmp_path / "missing" / "x")
    assert (tmp_path / "key-copy").read_bytes() == (source / "secret" / "key").read_bytes()


def test_progress_is_reported_as_bytes_grow(images, tmp_path):
    image, _ = images.get("ext4")
    seen = []
    pull(opened(image), "/big.bin", tmp_path / "big", progress=seen.append)
    totals = [p.bytes for p in seen]
    assert totals == sorted(totals) and totals[-1] == (tmp_path / "big").stat().st_size
    assert len(totals) >= 3 and all(p.path == "/big.bin" for p in seen)


def _patch_name(image: Path, old: bytes, new: bytes) -> None:
    """Rename a directory entry in place, bytes for bytes (same length)."""
    data = bytearray(image.read_bytes())
    position = data.index(bytes([len(old)]) + b"\x01" + old)  # name_len, file type: regular
    data[position + 2: position + 2 + len(old)] = new
    image.write_bytes(bytes(data))


def test_hostile_entries_are_refused_one_by_one_and_the_rest_is_copied(tmp_path):
    require_root("device files can only be made by root")
    source = tmp_path / "src"
    (source / "sub").mkdir(parents=True)
    (source / "good.txt").write_bytes(b"good\n")
    (source / "SLASHY").write_bytes(b"evil\n")
    os.mkfifo(source / "fifo")
    os.mknod(source / "null", stat.S_IFCHR | 0o644, os.makedev(1, 3))
    image = make_ext4(tmp_path / "hostile.img", source, 16)
    _patch_name(image, b"SLASHY", b"../etc")
    destination = tmp_path / "out" / "pulled"
    destination.parent.mkdir()

    report = pull(opened(image), "/", destination)

    refused = {problem.path: problem.message for problem in report.problems}
    assert sorted(refused) == ["/../etc", "/fifo", "/null"]
    assert "contains '/'" in refused["/../etc"]
    assert "device files are not copied" in refused["/null"]
    assert "other files are not copied" in refused["/fifo"]
    assert all(message.startswith("the image: /") for message in refused.values())
    assert report.exit_code == 1
    assert (destination / "good.txt").read_bytes() == b"good\n"
    assert sorted(os.listdir(destination)) == ["good.txt", "lost+found", "sub"]
    outside_is_untouched(destination)


def test_symlinks_are_recreated_exactly_wherever_they_point(tmp_path):
    targets = {"localtime": "/usr/share/zoneinfo/Etc/UTC", "sub/escape": "../../../../etc/shadow",
               "sub/sneaky": "deeper/../../../x", "sub/fine": "../good.txt",
               "sub/deeper/to-root": "/", "dangling": "no/such/thing"}
    source = tmp_path / "src"
    (source / "sub" / "deeper").mkdir(parents=True)
    (source / "good.txt").write_bytes(b"good\n")
    for name, target in targets.items():
        os.symlink(target, source / name)
    image = make_ext4(tmp_path / "links.img", source, 16)
    destination = tmp_path / "out" / "pulled"
    destination.parent.mkdir()

    report = pull(opened(image), "/", destination)

    assert report.problems == [] and report.exit_code == 0
    assert report.symlinks == len(targets)
    assert {name: os.readlink(destination / name) for name in targets} == targets
    outside_is_untouched(destination)
    alone = tmp_path / "alone"
    assert pull(opened(image), "/localtime", alone).exit_code == 0
    assert os.readlink(alone) == targets["localtime"]


def _patch_dir_entry_name(image: Path, old: bytes, new: bytes) -> None:
    """Rename a folder's directory entry in place (same length); ext4 file type 2: folder."""
    data = bytearray(image.read_bytes())
    position = data.index(bytes([len(old)]) + b"\x02" + old)
    data[position + 2: position + 2 + len(old)] = new
    image.write_bytes(bytes(data))


@pytest.mark.parametrize("link_first", [True, False])
def test_a_folder_named_like_a_symlink_never_leads_a_write_through_the_link(tmp_path,
                                                                            link_first):
    require_tool("debugfs")
    victim = tmp_path / "victim-dir"
    victim.mkdir()
    source = tmp_path / "src"
    source.mkdir()
    (source / "ok.txt").write_bytes(b"ok\n")
    (tmp_path / "payload").write_bytes(b"planted\n")
    image = make_ext4(tmp_path / "twins.img", source, 16)
    link, folder = f"symlink escape {victim}", "mkdir ESCAPE"
    for request in ([link, folder] if link_first else [folder, link]) + [
            f"write {tmp_path / 'payload'} ESCAPE/file"]:
        subprocess.run(["debugfs", "-w", "-R", request, str(image)], check=True,
                       capture_output=True)
    _patch_dir_entry_name(image, b"ESCAPE", b"escape")  # now two entries named 'escape'
    destination = tmp_path / "out" / "pulled"
    destination.parent.mkdir()

    report = pull(opened(image), "/", destination)

    assert os.listdir(victim) == []
    assert (destination / "ok.txt").read_bytes() == b"ok\n"
    copied = destination / "escape"
    if link_first:
        assert os.readlink(copied) == str(victim)
    else:
        assert (copied / "file").read_bytes() == b"planted\n" and not copied.is_symlink()
    outside_is_untouched(destination)
    assert report.problems == []


def test_a_symlink_planted_in_the_destination_during_the_pull_is_not_followed(tmp_path):
    source = tmp_path / "src"
    (source / "a-first").mkdir(parents=True)
    (source / "a-first" / "big").write_bytes(b"x" * (3 * 1024 * 1024))
    (source / "z-later").mkdir()
    (source / "z-later" / "file").write_bytes(b"mine\n")
    image = make_ext4(tmp_path / "race.img", source, 16)
    victim = tmp_path / "victim"
    victim.mkdir()
    destination = tmp_path / "dest"
    destination.mkdir()

    def plant(progress) -> None:  # another user swaps a created folder for a link, mid-pull
        if not (destination / "z-later").is_symlink():
            os.rename(destination / "z-later", tmp_path / "moved-away")
            os.symlink(victim, destination / "z-later")

    report = pull(opened(image), "/", destination, progress=plant)

    assert os.listdir(victim) == [] and os.listdir(tmp_path / "moved-away") == []
    assert {p.path for p in report.problems} == {"/z-later"}
    assert (destination / "a-first" / "big").stat().st_size == 3 * 1024 * 1024


def test_a_symlink_planted_in_the_destination_is_not_followed(images, tmp_path):
    image, _ = images.get("ext4")
    victim = tmp_path / "victim"
    victim.mkdir()
    destination = tmp_path / "dest"
    destination.mkdir()
    os.symlink(victim, destination / "bin")
    (destination / "hello.txt").write_bytes(b"mine\n")

    report = pull(opened(image), "/", destination)

    assert os.listdir(victim) == []
    assert (destination / "hello.txt").read_bytes() == b"mine\n"
    messages = {p.path: p.message for p in report.problems}
    assert "not a folder exists there" in messages["/bin"]
    assert "File exists" in messages["/hello.txt"]
    assert (destination / "secret" / "key").exists()


def test_sparse_files_stay_sparse_and_a_huge_hostile_hole_costs_nothing(tmp_path):
    require_tool("debugfs")
    source = tmp_path / "src"
    source.mkdir()
    with open(source / "sparse", "wb") as f:
        f.write(b"start")
        f.seek(64 * 1024 * 1024)
        f.write(b"end")
    (source / "claims-a-terabyte").write_bytes(b"x" * 5000)
    image = make_ext4(tmp_path / "sparse.img", source, 16)
    subprocess.run(["debugfs", "-w", "-R", f"sif /claims-a-terabyte size {1 << 40}", str(image)],
                   check=True, capture_output=True)

    def pull_all():
        report = pull(opened(image), "/", tmp_path / "out")
        return report.problems, report.bytes

    problems, _ = call_with_deadline(pull_all, 60)
    assert problems == []
    copy = tmp_path / "out" / "sparse"
    assert copy.read_bytes() == (source / "sparse").read_bytes()
    assert copy.stat().st_blocks * 512 < 1024 * 1024
    huge = tmp_path / "out" / "claims-a-terabyte"
    assert huge.stat().st_size == 1 << 40 and huge.stat().st_blocks * 512 < 1024 * 1024
    with open(huge, "rb") as f:
        assert f.read(5000) == b"x" * 5000


def test_a_damaged_file_is_reported_removed_and_the_rest_still_copied(tmp_path):
    source = populate_tree(tmp_path / "src", many=3, big_size=300_000)
    image = make_ext4(tmp_path / "e.img", source, 16)
    fs = opened(image)
    node = fs._resolve("/big.bin", True)[0]
    table_block = node.extfs._read_group_desc(0).bg_inode_table_lo
    inode_offset = table_block * 4096 + (node.inum - 1) * node.extfs.sb.s_inode_size
    with open(image, "r+b") as f:  # the file's first extent now starts far beyond the volume
        f.seek(inode_offset + 40 + 12 + 6)
        f.write((0xFFFF).to_bytes(2, "little"))

    report = pull(opened(image), "/", tmp_path / "out")

    assert [p.path for p in report.problems] == ["/big.bin"]
    assert "big.bin" in report.problems[0].message
    assert not (tmp_path / "out" / "big.bin").exists()
    assert (tmp_path / "out" / "hello.txt").read_bytes() == b"hello, world\n"


def test_set_id_bits_are_dropped_unless_asked_for_and_then_only_as_root(tmp_path, monkeypatch):
    require_root("owners can only be set by root")
    source = tmp_path / "src"
    source.mkdir()
    for name, mode in (("suid", 0o4755), ("sgid", 0o2755), ("sticky", 0o1777)):
        (source / name).mkdir() if name == "sticky" else (source / name).write_bytes(b"#!\n")
        os.chown(source / name, *OWNER)
        (source / name).chmod(mode)
    image = make_ext4(tmp_path / "e.img", source, 16)

    def modes(folder: Path) -> dict[str, tuple[int, int, int]]:
        return {name: ((folder / name).stat().st_uid, (folder / name).stat().st_gid,
                       stat.S_IMODE((folder / name).stat().st_mode))
                for name in ("suid", "sgid", "sticky")}

    pull(opened(image), "/", tmp_path / "default")
    assert modes(tmp_path / "default") == {
        "suid": (*OWNER, 0o755), "sgid": (*OWNER, 0o755), "sticky": (*OWNER, 0o1777)}
    pull(opened(image), "/", tmp_path / "kept", keep_set_id=True)
    assert modes(tmp_path / "kept") == {
        "suid": (*OWNER, 0o4755), "sgid": (*OWNER, 0o2755), "sticky": (*OWNER, 0o1777)}

    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    pull(opened(image), "/suid", tmp_path / "as-user", keep_set_id=True)
    st = (tmp_path / "as-user").stat()
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o755)


@pytest.mark.parametrize("text, expected", [
    ("p2:/etc/nginx", (2, "/etc/nginx")), ("P2:/etc", (2, "/etc")), ("p2:", (2, "/")),
    ("p12", (12, "/")), ("p2:etc", (2, "/etc")), ("/etc/nginx", (None, "/etc/nginx")),
    ("etc", (None, "/etc")), ("", (None, "/")), ("/data/a:b", (None, "/data/a:b")),
    ("pX:/etc", (None, "/pX:/etc")), ("vg0/root:/srv", ("vg0/root", "/srv")),
    ("vg-0/lv_home:", ("vg-0/lv_home", "/")),
])
def test_locations_name_a_partition_and_a_path(text, expected):
    assert parse_location(text) == expected


def test_partition_zero_is_bad_input():
    with pytest.raises(BadInput, match="start at 1"):
        parse_location("p0:/etc")


@pytest.mark.parametrize("name, refused", [
    ("ok.txt", False), (".hidden", False), ("...", False), ("a b", False),
    ("..", True), (".", True), ("", True), ("a/b", True), ("/etc", True), ("x\0y", True),
])
def test_names_that_are_not_a_single_plain_component_are_refused(name, refused):
    assert (name_problem(name) is not None) == refused


@pytest.mark.parametrize("target, refused", [
    ("file", False), ("/etc/passwd", False), ("../../../x", False), ("C:\\Windows", False),
    ("", True), (None, True), ("a\0b", True),
])
def test_only_symlinks_that_cannot_exist_are_refused(target, refused):
    assert (symlink_problem(target) is not None) == refused


class _FakeDriver(Driver):
    """A filesystem whose names no real tool would write: '..', '', '.', 'a/b'."""

    kind = "fake"

    def __init__(self, tree: dict):
        self._tree = tree

    def root(self):
        return ("/", self._tree)

    def children(self, node):
        for name, value in node[1].items():
            yield name, (name, value)

    def identity(self, node):
        return id(node[1])

    def describe(self, node, name, path):
        value = node[1]
        if isinstance(value, dict):
            return Entry(name, path, "dir", 0, stat.S_IFDIR | 0o755, 0, 0, 0, 0, 0)
        return Entry(name, path, "file", len(value), stat.S_IFREG | 0o644, 0, 0, 0, 0, 0)

    def open(self, node):
        return io.BytesIO(node[1])


def test_dot_dot_and_empty_names_from_a_filesystem_are_refused(tmp_path):
    inner = {"x": b"inner\n"}
    tree = {"ok": b"fine\n", "..": inner, ".": inner, "": b"e", "a/b": b"slash", "d": inner}
    fs = Filesystem(_FakeDriver(tree), GuardedVolume(io.BytesIO(b"")), "fake")
    destination = tmp_path / "box" / "out"
    destination.parent.mkdir()
    report = pull(fs, "/", destination)
    assert sorted(p.path for p in report.problems) == ["/", "/.", "/..", "/a/b"]
    assert sorted(os.listdir(destination)) == ["d", "ok"]
    outside_is_untouched(destination)
    assert not (tmp_path / "x").exists()


def test_a_name_with_a_slash_never_poses_as_the_path_it_spells(tmp_path):
    tree = {"a/b": b"impostor", "a": {"b": b"genuine"}}
    fs = Filesystem(_FakeDriver(tree), GuardedVolume(io.BytesIO(b"")), "fake")
    assert {e.name for e in fs.listdir("/")} == {"a/b", "a"}
    assert fs.open("/a/b").read() == b"genuine"
    report = pull(fs, "/", tmp_path / "out")
    assert (tmp_path / "out" / "a" / "b").read_bytes() == b"genuine"
    assert [p.path for p in report.problems] == ["/a/b"]
