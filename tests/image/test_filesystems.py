"""Filesystems made by the real tools, read back by diskvault.store.filesystems."""

from __future__ import annotations

import io
import os
import random
import stat
import subprocess
import sys
import threading
import traceback
from pathlib import Path

import pytest

from diskvault.errors import (BadInput, CorruptData, DamagedFilesystem, DiskvaultError,
                              IsADirectory, NotADirectory, PathNotFound, UnknownFilesystem)
from diskvault.image.extract import pull
from diskvault.image.filesystems import MAX_DEPTH, Entry, Filesystem, GuardedVolume, open_filesystem
from diskvault.image.locations import open_location, survey_image
from tests.fsimages import (FS_KINDS, MTIME_NS, OWNER, ImageCache, PartSpec, call_with_deadline,
                            file_size_mib, flipped_bytes, fuse_mount, make_disk, make_exfat,
                            make_ext4, make_fat, make_lvm, make_ntfs, metadata_sectors,
                            populate_tree, require_root, require_tool, source_entries)

ALL_KINDS = list(FS_KINDS)
FUZZ_KINDS = ["ext4", "fat16", "fat32", "exfat", "ntfs", "xfs", "btrfs"]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return ImageCache(tmp_path_factory)


def opened(image: Path):
    return open_filesystem(open(image, "rb"), "the image")


def listed_tree(fs) -> dict[str, object]:
    """Relative path -> Entry for everything in `fs` (lost+found left out, as mkfs adds it)."""
    tree = {}
    for _, entries in fs.walk("/"):
        for entry in entries:
            if entry.path != "/lost+found":
                tree[entry.path.lstrip("/")] = entry
    return tree


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_listing_shows_every_name_kind_and_size_of_the_source(images, kind):
    image, source = images.get(kind)
    fs = opened(image)
    listed = listed_tree(fs)
    want = source_entries(source)
    assert sorted(listed) == sorted(want)
    for relative, expected in want.items():
        entry = listed[relative]
        if stat.S_ISREG(expected.st_mode):
            assert (entry.kind, entry.size) == ("file", expected.st_size), relative
        elif stat.S_ISDIR(expected.st_mode):
            assert entry.kind == "dir", relative
        else:
            assert entry.kind == "symlink", relative
            assert entry.symlink_target == os.readlink(source / relative), relative
    assert fs.kind == ("fat12" if kind == "fat12" else kind)


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_stat_reports_modes_owners_and_times(images, kind):
    image, source = images.get(kind)
    fs = opened(image)
    spec = FS_KINDS[kind]
    tool, key, folder = fs.stat("/bin/tool.sh"), fs.stat("/secret/key"), fs.stat("/secret")
    resolution = spec.time_resolution_ns
    assert tool.mtime_ns // resolution == MTIME_NS // resolution
    assert stat.S_ISREG(tool.mode) and stat.S_ISDIR(folder.mode)
    if spec.posix:
        assert stat.S_IMODE(tool.mode) == 0o755
        assert stat.S_IMODE(key.mode) == 0o600 and stat.S_IMODE(folder.mode) == 0o700
        if os.geteuid() == 0:
            assert (key.uid, key.gid) == OWNER
    else:
        assert (stat.S_IMODE(tool.mode), stat.S_IMODE(folder.mode)) == (0o644, 0o755)
        assert tool.uid is None and tool.gid is None


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_file_content_streams_and_seeks(images, kind):
    image, source = images.get(kind)
    fs = opened(image)
    original = (source / "big.bin").read_bytes()
    with fs.open("/big.bin") as reader:
        assert reader.size == len(original)
        pieces = []
        while piece := reader.read(65536 + 7):
            pieces.append(piece)
        assert b"".join(pieces) == original
        rng = random.Random(3)
        for _ in range(50):
            offset, length = rng.randrange(len(original)), rng.randrange(1, 200_000)
            reader.seek(offset)
            assert reader.read(length) == original[offset:offset + length]
    assert fs.open("/empty").read() == b""
    assert fs.open("/Ünïcödé name.txt").read() == "grüße\n".encode()


def test_symlinks_inside_a_path_are_followed_but_a_final_one_is_described(images):
    image, _ = images.get("ext4")
    fs = opened(image)
    assert fs.stat("/dirlink").kind == "symlink"
    assert fs.stat("/dirlink", follow_symlinks=True).path == "/deep/a"
    assert fs.stat("/dirlink/b/c").path == "/deep/a/b/c"
    assert [e.name for e in fs.listdir("/dirlink")] == ["b"]
    assert fs.open("/bin/up").read() == b"hello, world\n"


def test_fat_lookups_ignore_case_and_show_the_stored_name(images):
    image, _ = images.get("fat16")
    fs = opened(image)
    assert fs.stat("/HELLO.TXT").name == "hello.txt"
    assert fs.open("/Deep/A/b/C/d/LEAF.txt").read() == b"deep leaf\n"


def test_bad_paths_give_clear_errors(images):
    image, _ = images.get("ext4")
    fs = opened(image)
    with pytest.raises(PathNotFound, match=r"the image: /etc/nginx: no such file or directory"):
        fs.listdir("/etc/nginx")
    with pytest.raises(NotADirectory, match="hello.txt: not a directory"):
        fs.listdir("/hello.txt")
    with pytest.raises(NotADirectory):
        fs.stat("/hello.txt/x")
    with pytest.raises(IsADirectory):
        fs.open("/bin")
    for error in (PathNotFound, NotADirectory, IsADirectory):
        assert issubclass(error, BadInput)


def test_partitions_in_gpt_and_mbr_tables_are_opened_by_location(tmp_path):
    source = populate_tree(tmp_path / "src", symlinks=False, many=5, big_size=50_000)
    ext4 = make_ext4(tmp_path / "ext4.img", source, 16)
    fat = make_fat(tmp_path / "fat.img", source, 32, 40)
    ntfs = make_ntfs(tmp_path / "ntfs.img", source, 16)
    exfat = make_exfat(tmp_path / "exfat.img", source, 16)
    gpt, mbr = tmp_path / "gpt.img", tmp_path / "mbr.img"
    windows_data = "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7"
    make_disk(gpt, [PartSpec(ext4, 16), PartSpec(fat, 40, "U"), PartSpec(ntfs, 16, windows_data)])
    make_disk(mbr, [PartSpec(ext4, 16, "83"),
                    PartSpec(exfat, file_size_mib(exfat), "7", logical=True)], "dos")
    expected = (source / "big.bin").read_bytes()
    with open(gpt, "rb") as f:
        for location, kind in (("p1:/big.bin", "ext4"), ("p2:/big.bin", "fat32"),
                               ("p3:/big.bin", "ntfs")):
            fs, path = open_location(f, location)
            assert fs.kind == kind and fs.open(path).read() == expected
        assert [(v.partition.number, v.filesystem) for v in survey_image(f)] == [
            (1, "ext4"), (2, "fat32"), (3, "ntfs")]
    with open(mbr, "rb") as f:
        fs, path = open_location(f, "p5:/deep/a/b/c/d/leaf.txt")
        assert fs.kind == "exfat" and fs.open(path).read() == b"deep leaf\n"
        with pytest.raises(BadInput, match=r"has a partition table: name a partition, as in p1:/x "
                                           r"\(its partitions are p1 \(Linux\), p5 \(NTFS\)\)"):
            open_location(f, "/x")
        with pytest.raises(BadInput, match="no partition 3"):
            open_location(f, "p3:/")
    with open(ext4, "rb") as f:
        with pytest.raises(BadInput, match="no partition table"):
            open_location(f, "p1:/")


def test_a_partition_without_a_known_filesystem_says_what_it_holds(tmp_path):
    require_tool("mkswap")
    swap = tmp_path / "swap.img"
    with open(swap, "wb") as f:
        f.truncate(4 * 1024 * 1024)
    subprocess.run(["mkswap", str(swap)], check=True, capture_output=True)
    disk = tmp_path / "disk.img"
    make_disk(disk, [PartSpec(None, 2), PartSpec(swap, 4, "S")])
    with open(disk, "rb") as f:
        with pytest.raises(UnknownFilesystem, match=r"partition 2 holds no known filesystem "
                                                    r"\(first bytes look like: Linux swap\)"):
            open_location(f, "p2:/")
        with pytest.raises(UnknownFilesystem, match=r"partition 1 .*all zeros"):
            open_location(f, "p1:/")
        problems = [v.problem for v in survey_image(f)]
    assert "Linux swap" in problems[1]


def test_a_folder_linked_into_itself_ends_the_walk_with_an_error(tmp_path):
    require_tool("debugfs")
    source = populate_tree(tmp_path / "src", many=3, big_size=10)
    image = make_ext4(tmp_path / "loop.img", source, 16)
    subprocess.run(["debugfs", "-w", "-R", "link /deep/a /deep/a/b/c/back", str(image)],
                   check=True, capture_output=True)

    def walk_all():
        fs, errors = opened(image), []
        paths = [d for d, _ in fs.walk("/", onerror=lambda e: errors.append(str(e)))]
        return paths, errors

    paths, errors = call_with_deadline(walk_all, 60)
    assert "/deep/a/b/c/back" not in paths
    assert errors == ["the image: /deep/a/b/c/back: this folder was already listed at another "
                      "path (a loop); skipped"]
    fs = opened(image)
    assert fs.loop_target("/deep/a/b/c/back") == "/deep/a"
    assert fs.loop_target("/deep/a/b/c/back/b/c/back") == "/deep/a"
    assert fs.loop_target("/deep/a/b/c") is None and fs.loop_target("/") is None


def test_an_entry_with_an_absurd_size_is_left_out_of_its_folder_and_named(tmp_path):
    require_tool("debugfs")
    source = populate_tree(tmp_path / "src", many=3, big_size=10)
    image = make_ext4(tmp_path / "absurd.img", source, 16)
    subprocess.run(["debugfs", "-w", "-R", "sif /hello.txt size 0xffffffffffffffff", str(image)],
                   check=True, capture_output=True)
    fs, errors = opened(image), []

    names = {entry.name for entry in fs.listdir("/", onerror=lambda e: errors.append(str(e)))}

    assert names == {p.name for p in source.iterdir()} - {"hello.txt"} | {"lost+found"}
    assert errors == ["the image: /hello.txt: 'hello.txt' claims a size of "
                      "18446744073709551615 bytes"]
    assert {e.name for e in opened(image).listdir("/")} == names  # default: logged, left out
    with pytest.raises(DamagedFilesystem, match="/hello.txt: 'hello.txt' claims a size"):
        fs.stat("/hello.txt")


def test_a_looping_fat_cluster_chain_is_an_error_not_a_hang(tmp_path):
    source = populate_tree(tmp_path / "src", many=3, big_size=300_000)
    image = make_fat(tmp_path / "fat.img", source, 16, 16)
    fs = opened(image)
    driver = fs._driver
    first = fs._lookup(driver.root(), "big.bin", "/big.bin")[1].cluster
    fat_offset = driver._fs.bpb.BPB_RsvdSecCnt * driver._fs.sector_size
    with open(image, "r+b") as f:  # cluster first+3 leads back to first
        f.seek(fat_offset + (first + 3) * 2)
        f.write(first.to_bytes(2, "little"))

    def read_all():
        return opened(image).open("/big.bin").read()

    with pytest.raises(DamagedFilesystem, match="big.bin: a cluster chain starting at .* loops"):
        call_with_deadline(read_all, 60)


def test_a_looping_fat_folder_chain_costs_that_folder_only(tmp_path):
    source = populate_tree(tmp_path / "src", many=100, big_size=10)
    image = make_fat(tmp_path / "fat.img", source, 16, 16)
    fs = opened(image)
    driver = fs._driver
    first = fs._lookup(driver.root(), "many", "/many")[1].cluster
    last = list(driver._fs.fat.chain(first))[-1]
    fat_offset = driver._fs.bpb.BPB_RsvdSecCnt * driver._fs.sector_size
    with open(image, "r+b") as f:  # the folder's last cluster leads back to its first
        f.seek(fat_offset + last * 2)
        f.write(first.to_bytes(2, "little"))

    def list_both():
        fs = opened(image)
        try:
            fs.listdir("/many")
        except DamagedFilesystem as error:
            return str(error), {str(e.name) for e in fs.listdir("/")}
        return None, set()

    error, root = call_with_deadline(list_both, 60)
    assert "/many: a cluster chain starting at" in error and "loops" in error
    assert {"many", "hello.txt", "deep"} <= root


def test_one_filesystem_can_be_shared_between_threads(images):
    image, source = images.get("ext4")
    fs = opened(image)
    names = sorted(p.name for p in (source / "many").iterdir())
    failures = []

    def reader(seed: int) -> None:
        rng = random.Random(seed)
        for name in rng.sample(names, 60):
            if fs.open(f"/many/{name}").read() != (source / "many" / name).read_bytes():
                failures.append(name)
        big = fs.open("/big.bin")
        big.seek(seed * 1000)
        if big.read(5000) != (source / "big.bin").read_bytes()[seed * 1000: seed * 1000 + 5000]:
            failures.append("big.bin")

    threads = [threading.Thread(target=reader, args=(seed,)) for seed in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []


def test_walk_gives_up_below_the_depth_limit(tmp_path):
    source = tmp_path / "src"
    deep = source.joinpath(*["d"] * (MAX_DEPTH + 3))
    deep.mkdir(parents=True)
    image = make_ext4(tmp_path / "deep.img", source, 16)
    errors = []
    depths = [d.count("/") for d, _ in opened(image).walk("/", onerror=errors.append)]
    assert max(depths) == MAX_DEPTH  # "/" is depth 0, "/d/d" depth 2
    assert len(errors) == 1 and "deeper than" in str(errors[0])


# --- fuzzing ---------------------------------------------------------------------------------

def exercise(image, destination: Path) -> str:
    """Open, walk, read and pull a (damaged) image; anything but a DiskvaultError is a bug."""
    try:
        try:
            fs = open_filesystem(image, "the image")
        except DiskvaultError:
            return "refused to open"
        errors: list[DiskvaultError] = []
        try:
            walked = list(fs.walk("/", onerror=errors.append))
        except DiskvaultError as exc:  # the root itself cannot be read
            walked, errors = [], [exc]
        for _, entries in walked:
            for entry in entries:
                if entry.kind == "file":
                    try:  # pull below reads everything; here: the first MiB, in pieces
                        with fs.open(entry.path) as reader:
                            while reader.tell() < (1 << 20) and reader.read(65536):
                                pass
                    except DiskvaultError as exc:
                        errors.append(exc)
        try:
            report = pull(fs, "/", destination)
        except DiskvaultError:
            return "pull refused"
        return "clean" if not errors and report.exit_code == 0 else "errors reported"
    except Exception:
        return "BUG: " + traceback.format_exc()


def fuzz(image: bytes, sectors: list[int], seed: int, rounds: int, workdir: Path) -> dict:
    rng, outcomes, buffer = random.Random(seed), {}, bytearray(image)
    for round_number in range(rounds):
        destination = workdir / f"round{round_number}" / "pulled"
        destination.parent.mkdir()
        with flipped_bytes(buffer, sectors, rng, rng.choice([1, 4, 16, 64])) as damaged:
            outcome = exercise(damaged, destination)
        if outcome.startswith("BUG"):
            return {"bug": f"round {round_number}: {outcome}"}
        assert os.listdir(destination.parent) in ([], ["pulled"]), "wrote outside the destination"
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    return outcomes


@pytest.mark.parametrize("kind", FUZZ_KINDS)
def test_flipped_metadata_bytes_fail_cleanly_and_never_hang(tmp_path, kind):
    spec = FS_KINDS[kind]
    source = populate_tree(tmp_path / "src", symlinks=spec.symlinks, many=40, big_size=200_000)
    image = spec.build(tmp_path / f"{kind}.img", source).read_bytes()
    sectors = metadata_sectors(image, source)
    assert sectors
    workdir = tmp_path / "work"
    workdir.mkdir()
    outcomes = call_with_deadline(fuzz, 240, image, sectors, 20260511, 40, workdir)
    assert "bug" not in outcomes, outcomes.get("bug")
    assert sum(outcomes.values()) == 40
    # The flips must actually hurt sometimes, or this test checks nothing.
    assert outcomes.get("clean", 0) < 40, outcomes


def test_damage_inside_one_file_is_reported_for_that_file_only(tmp_path):
    source = populate_tree(tmp_path / "src", many=3, big_size=300_000)
    image = make_ext4(tmp_path / "e.img", source, 16)
    fs = opened(image)
    node = fs._resolve("/big.bin", True)[0]
    # Point the file's single extent far beyond the end of the volume.
    with open(image, "r+b") as f:
        table_block = node.extfs._read_group_desc(0).bg_inode_table_lo
        inode_offset = table_block * 4096 + (node.inum - 1) * node.extfs.sb.s_inode_size
        f.seek(inode_offset + 40 + 12 + 6)  # i_block: extent header (12 bytes), then ee_start_hi
        f.write((0xFFFF).to_bytes(2, "little"))
    fs = opened(image)
    with pytest.raises(CorruptData, match="big.bin"):
        fs.open("/big.bin").read()
    assert fs.open("/hello.txt").read() == b"hello, world\n"


class _SpinningDriver:
    """Stands in for a parser caught in a cycle of cached metadata: busy, but reading nothing."""

    kind = "spin"
    label = None
    case_insensitive = False

    def root(self):
        return "root"

    def identity(self, node):
        return node

    def describe(self, node, name, path):
        return Entry(name, path, "dir", 0, stat.S_IFDIR | 0o755, 0, 0, 0, 0, 0)

    def children(self, node):
        while True:
            _follow_cached_pointer(node)
        yield  # pragma: no cover


def _follow_cached_pointer(node):
    return node


def test_a_parser_spinning_without_reading_is_stopped_with_an_error():
    fs = Filesystem(_SpinningDriver(), GuardedVolume(io.BytesIO(b"")), "the image")

    def list_root():
        return fs.listdir("/")

    with pytest.raises(DamagedFilesystem, match=r"the image: /: .*in circles \(endless work\)"):
        call_with_deadline(list_root, 120)
    assert sys.gettrace() is None


def test_a_filesystem_in_an_lvm_logical_volume_is_opened_as_vg_slash_lv(tmp_path):
    source = populate_tree(tmp_path / "src", many=5, big_size=100_000)
    ext4 = make_ext4(tmp_path / "ext4.img", source, 16)
    group = f"dvtest{os.getpid()}"
    make_lvm(tmp_path / "pv.img", group, [("swap", 4, None), ("root", 16, ext4)], 32)
    disk = tmp_path / "disk.img"
    lvm_type = "E6D6D379-F507-44C2-A23C-238F2A3DF928"
    make_disk(disk, [PartSpec(None, 2), PartSpec(tmp_path / "pv.img", 32, lvm_type)])
    with open(disk, "rb") as f:
        fs, path = open_location(f, f"{group}/root:/big.bin")
        assert fs.kind == "ext4" and fs.open(path).read() == (source / "big.bin").read_bytes()
        names = rf"\(logical volumes: {group}/swap, {group}/root\)"
        with pytest.raises(UnknownFilesystem,
                           match=rf"partition 2 is an LVM2 physical volume: name one .* {names}"):
            open_location(f, "p2:/")
        summary = [(v.partition and v.partition.number, v.logical_volume and v.logical_volume.name,
                    v.filesystem) for v in survey_image(f)]
    assert summary == [(1, None, None), (2, None, None), (None, f"{group}/swap", None),
                       (None, f"{group}/root", "ext4")]


def _compressible(size: int) -> bytes:
    rng = random.Random(9)
    words = [bytes(rng.choice(b"abcdefghij") for _ in range(rng.randint(2, 9)))
             for _ in range(300)]
    return b" ".join(rng.choice(words) for _ in range(size // 4))[:size]


@pytest.mark.parametrize("algorithm", ["zstd", "lzo", "zlib"])
def test_btrfs_compressed_files_read_back_exactly(tmp_path, algorithm):
    require_tool("mkfs.btrfs")
    require_root("btrfs compression needs a kernel (loop) mount to write compressed extents")
    image = tmp_path / "btrfs.img"
    with open(image, "wb") as f:
        f.truncate(160 * 1024 * 1024)
    subprocess.run(["mkfs.btrfs", "-q", "-f", str(image)], check=True, capture_output=True)
    data = _compressible(3 * 1024 * 1024 + 17)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    mounted = subprocess.run(
        ["mount", "-o", f"loop,compress-force={algorithm}", str(image), str(mnt)],
        capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot loop-mount btrfs here: {mounted.stderr.strip()}")
    try:
        (mnt / "text").write_bytes(data)
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
    fs = opened(image)
    stream = fs._driver.open(fs._resolve("/text", True)[0])
    compressed = sum(1 for extent in stream.extents if extent.compression)
    assert compressed >= len(stream.extents) - 1, "btrfs did not compress the file"
    assert fs.open("/text").read() == data


def test_ntfs_compressed_files_read_back_exactly(tmp_path):
    require_tool("mkntfs")
    image = tmp_path / "ntfs.img"
    with open(image, "wb") as f:
        f.truncate(32 * 1024 * 1024)
    subprocess.run(["mkntfs", "-q", "-F", "-Q", str(image)], check=True, capture_output=True)
    data = _compressible(1024 * 1024 + 5)
    with fuse_mount(["ntfs-3g", "-o", "compression", image], image) as mnt:
        (mnt / "packed").mkdir()
        os.setxattr(mnt / "packed", "system.ntfs_attrib_be", (0x800).to_bytes(4, "big"))
        (mnt / "packed" / "text").write_bytes(data)
        raw = os.getxattr(mnt / "packed" / "text", "system.ntfs_attrib_be")
        attributes = int.from_bytes(raw, "big")
    assert attributes & 0x800, "ntfs-3g did not compress the file"
    assert opened(image).open("/packed/text").read() == data
