"""Real disk images for the filesystem tests, built with the real tools.

Each builder makes one filesystem image from a source folder; `make_disk` puts such images into
an MBR or GPT partition table (sfdisk on a sparse file, contents copied in with dd). A builder
whose tool is missing, or that needs root, loop devices or FUSE where they are not available,
skips the calling test with the exact reason.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from diskvault.image.fileview import PositionedFile

MIB = 1024 * 1024
# Even seconds, so FAT's two-second resolution keeps them exactly.
MTIME_NS = 1_589_718_896 * 10**9  # 2020-05-17T12:34:56Z
ATIME_NS = 1_609_545_600 * 10**9  # 2021-01-02T00:00:00Z (FAT keeps only the date of atime)
OWNER = (1234, 2345)
MANY_FILES = 300

APT_PACKAGES = {
    "mkfs.ext4": "e2fsprogs", "mkfs.vfat": "dosfstools", "mcopy": "mtools",
    "mkfs.exfat": "exfatprogs", "mount.exfat-fuse": "exfat-fuse", "mkntfs": "ntfs-3g",
    "ntfs-3g": "ntfs-3g", "mkfs.xfs": "xfsprogs", "mkfs.btrfs": "btrfs-progs",
    "sfdisk": "fdisk", "losetup": "mount", "fusermount": "fuse3",
}


def require_tool(name: str) -> str:
    """The tool's path, or skip naming the Debian package that provides it."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin:/bin")
    if path is None:
        pytest.skip(f"{name} is not installed (apt-get install {APT_PACKAGES.get(name, name)})")
    return path


def require_root(why: str) -> None:
    if os.geteuid() != 0:
        pytest.skip(f"needs root: {why}")


def run(*args: str | os.PathLike) -> None:
    """Run a tool; on failure, fail with its command line and stderr."""
    result = subprocess.run([str(a) for a in args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    if result.returncode != 0:
        raise subprocess.CalledProcessError(result.returncode, [str(a) for a in args],
                                            stderr=result.stderr)


# --- the source tree ------------------------------------------------------------------------

def populate_tree(root: Path, *, symlinks: bool = True, owners: bool = True,
                  many: int = MANY_FILES, big_size: int = 3 * MIB + 123) -> Path:
    """Create the standard source tree under `root` (which must not exist) and return it."""
    root.mkdir(parents=True)
    _write(root / "hello.txt", b"hello, world\n", 0o644)
    (root / "bin").mkdir(mode=0o755)
    _write(root / "bin" / "tool.sh", b"#!/bin/sh\necho hi\n", 0o755)
    (root / "secret").mkdir()
    _write(root / "secret" / "key", b"0123456789abcdef\n", 0o600)
    _write(root / "big.bin", random.Random(7).randbytes(big_size), 0o644)
    _write(root / "empty", b"", 0o644)
    (root / "deep" / "a" / "b" / "c" / "d").mkdir(parents=True)
    _write(root / "deep" / "a" / "b" / "c" / "d" / "leaf.txt", b"deep leaf\n", 0o644)
    (root / "many").mkdir()
    for index in range(many):
        _write(root / "many" / f"file-{index:04d}.txt", f"file number {index}\n".encode(), 0o644)
    _write(root / "Ünïcödé name.txt", "grüße\n".encode(), 0o644)
    if symlinks:
        os.symlink("hello.txt", root / "link-rel")
        os.symlink("../hello.txt", root / "bin" / "up")
        os.symlink("deep/a", root / "dirlink")
    (root / "secret").chmod(0o700)
    if owners and os.geteuid() == 0:
        os.chown(root / "secret" / "key", *OWNER)
    _set_times(root)
    return root


def _write(path: Path, data: bytes, mode: int) -> None:
    path.write_bytes(data)
    path.chmod(mode)


def _set_times(root: Path) -> None:
    """Give every entry a known mtime and atime (directories last, as writing changes them)."""
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for name in filenames + dirnames:
            os.utime(Path(dirpath) / name, ns=(ATIME_NS, MTIME_NS), follow_symlinks=False)
    os.utime(root, ns=(ATIME_NS, MTIME_NS))


def source_entries(root: Path) -> dict[str, os.stat_result]:
    """Relative path -> lstat of everything below `root`."""
    result = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            result[str(path.relative_to(root))] = path.lstat()
    return result


def assert_trees_equal(source: Path, copy: Path, *, modes: bool = True, owners: bool = False,
                       symlinks: bool = True, time_resolution_ns: int = 10**9,
                       atimes: bool = True, ignore: tuple[str, ...] = ("lost+found",)) -> None:
    """Compare content, kinds, symlink targets, and (optionally) modes, owners and times."""
    want, got = source_entries(source), source_entries(copy)
    got = {p: s for p, s in got.items() if p.split("/")[0] not in ignore}
    if not symlinks:
        want = {p: s for p, s in want.items() if not stat.S_ISLNK(s.st_mode)}
    assert sorted(got) == sorted(want)
    for relative, expected in want.items():
        actual = got[relative]
        assert stat.S_IFMT(actual.st_mode) == stat.S_IFMT(expected.st_mode), relative
        if stat.S_ISLNK(expected.st_mode):
            assert os.readlink(copy / relative) == os.readlink(source / relative), relative
            continue
        if stat.S_ISREG(expected.st_mode):
            assert (copy / relative).read_bytes() == (source / relative).read_bytes(), relative
        if modes:
            assert stat.S_IMODE(actual.st_mode) == stat.S_IMODE(expected.st_mode), relative
        if owners:
            assert (actual.st_uid, actual.st_gid) == (expected.st_uid, expected.st_gid), relative
        assert _same_time(actual.st_mtime_ns, expected.st_mtime_ns, time_resolution_ns), relative
        if atimes and not stat.S_ISDIR(expected.st_mode):
            assert _same_time(actual.st_atime_ns, expected.st_atime_ns,
                              time_resolution_ns), relative


def _same_time(actual: int, expected: int, resolution: int) -> bool:
    return actual // resolution == expected // resolution


# --- filesystem images ----------------------------------------------------------------------

def make_ext4(image: Path, source: Path, size_mib: int = 48, kind: str = "ext4") -> Path:
    require_tool(f"mkfs.{kind}")
    run(f"mkfs.{kind}", "-q", "-F", "-b", "4096", "-d", source, image, f"{size_mib}M")
    return image


def make_fat(image: Path, source: Path, bits: int, size_mib: int | None = None) -> Path:
    """FAT12/16/32 with the tree copied in by mcopy (keeps mtimes; FAT keeps no modes or links)."""
    require_tool("mkfs.vfat")
    require_tool("mcopy")
    size_mib = size_mib or {12: 8, 16: 32, 32: 64}[bits]
    cluster = ["-s", "1"] if bits == 32 else []
    run("mkfs.vfat", "-F", str(bits), *cluster, "-C", image, str(size_mib * 1024))
    entries = sorted(p.name for p in source.iterdir())
    run("mcopy", "-s", "-p", "-m", "-i", image, *[source / e for e in entries], "::/")
    return image


def make_exfat(image: Path, source: Path, size_mib: int = 48) -> Path:
    """exFAT: mkfs.exfat, then the tree copied in through exfat-fuse on a loop device."""
    require_tool("mkfs.exfat")
    with open(image, "wb") as f:
        f.truncate(size_mib * MIB)
    run("mkfs.exfat", image)
    with loop_device(image) as device, fuse_mount(["mount.exfat-fuse", device], image) as mnt:
        _copy_tree(source, mnt)
    return image


def make_ntfs(image: Path, source: Path, size_mib: int = 48) -> Path:
    """NTFS: mkntfs, then the tree copied in through an ntfs-3g (FUSE) mount of the file."""
    require_tool("mkntfs")
    with open(image, "wb") as f:
        f.truncate(size_mib * MIB)
    run("mkntfs", "-q", "-F", "-Q", image)
    with fuse_mount(["ntfs-3g", image], image) as mnt:
        _copy_tree(source, mnt)
    return image


def make_xfs(image: Path, source: Path, size_mib: int = 320) -> Path:
    """XFS: mkfs.xfs, then the tree copied in through a kernel loop mount."""
    require_tool("mkfs.xfs")
    require_root("XFS content is copied in through a loop mount")
    with open(image, "wb") as f:
        f.truncate(size_mib * MIB)
    run("mkfs.xfs", "-q", "-f", image)
    mnt = image.with_name(image.name + ".mnt")
    mnt.mkdir()
    try:
        run("mount", "-o", "loop", image, mnt)
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"cannot loop-mount XFS here: {exc.stderr.decode().strip()}")
    try:
        _copy_tree(source, mnt, owners=True)
    finally:
        run("umount", mnt)
        mnt.rmdir()
    return image


def make_btrfs(image: Path, source: Path, size_mib: int = 128) -> Path:
    require_tool("mkfs.btrfs")
    with open(image, "wb") as f:
        f.truncate(size_mib * MIB)
    run("mkfs.btrfs", "-q", "-f", "--rootdir", source, image)
    return image


def _copy_tree(source: Path, target: Path, owners: bool = False) -> None:
    """cp -a, then the times again (some FUSE filesystems update a folder's times on create)."""
    keep = [] if owners else ["--no-preserve=ownership"]
    for entry in sorted(source.iterdir()):
        run("cp", "-a", *keep, entry, target)
    for dirpath, dirnames, filenames in os.walk(source, topdown=False):
        for name in filenames + dirnames:
            original = Path(dirpath) / name
            st = original.lstat()
            copy = target / original.relative_to(source)
            os.utime(copy, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


@contextlib.contextmanager
def loop_device(image: Path, *options: str):
    require_root("a loop device is needed")
    require_tool("losetup")
    result = subprocess.run(["losetup", "-f", "--show", *options, str(image)], capture_output=True,
                            text=True)
    if result.returncode != 0:
        pytest.skip(f"no loop device available: {result.stderr.strip()}")
    device = result.stdout.strip()
    try:
        yield device
    finally:
        run("losetup", "-d", device)


@contextlib.contextmanager
def fuse_mount(command: list[str], image: Path):
    """Mount with a FUSE filesystem driver (ntfs-3g, exfat-fuse); unmounted on exit."""
    require_tool(command[0])
    if not os.path.exists("/dev/fuse"):
        pytest.skip("/dev/fuse is missing: FUSE filesystems cannot be mounted here")
    mnt = image.with_name(image.name + ".mnt")
    mnt.mkdir()
    result = subprocess.run([*command, str(mnt)], capture_output=True, text=True)
    if result.returncode != 0 or not os.path.ismount(mnt):
        mnt.rmdir()
        pytest.skip(f"{command[0]} could not mount: {result.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
        mnt.rmdir()


# --- partition tables -----------------------------------------------------------------------

@dataclass(frozen=True)
class PartSpec:
    """A partition to create: its content (a filesystem image or None) and its sfdisk type."""

    content: Path | None
    size_mib: int
    type: str = "linux"
    logical: bool = False  # MBR only: inside the extended partition


def make_disk(image: Path, parts: list[PartSpec], label: str = "gpt") -> list[tuple[int, int]]:
    """A sparse disk with a GPT or MBR ('dos') table; returns (offset, size) in bytes per part.

    Partitions start on MiB boundaries; logical MBR partitions go inside one extended partition,
    each one MiB after the previous end (room for its extended boot record).
    """
    require_tool("sfdisk")
    layout, lines, cursor = [], [f"label: {label}"], 1
    primaries = [p for p in parts if not p.logical]
    logicals = [p for p in parts if p.logical]
    for part in primaries:
        lines.append(f"start={cursor * 2048}, size={part.size_mib * 2048}, type={part.type}")
        layout.append((part, cursor))
        cursor += part.size_mib
    if logicals:
        extended_size = sum(p.size_mib + 1 for p in logicals)
        lines.append(f"start={cursor * 2048}, size={extended_size * 2048}, type=Ex")
        for part in logicals:
            cursor += 1
            lines.append(f"start={cursor * 2048}, size={part.size_mib * 2048}, type={part.type}")
            layout.append((part, cursor))
            cursor += part.size_mib
    total_mib = cursor + 1
    with open(image, "wb") as f:
        f.truncate(total_mib * MIB)
    subprocess.run(["sfdisk", "--quiet", str(image)], input="\n".join(lines) + "\n", text=True,
                   check=True, stdout=subprocess.DEVNULL)
    for part, start_mib in layout:
        if part.content is not None:
            run("dd", f"if={part.content}", f"of={image}", "bs=1M", f"seek={start_mib}",
                "conv=notrunc,sparse", "status=none")
    return [(start * MIB, part.size_mib * MIB) for part, start in layout]


def file_size_mib(path: Path) -> int:
    return -(-path.stat().st_size // MIB)


# --- deadlines ------------------------------------------------------------------------------

def call_with_deadline(function, seconds: float, *args):
    """Run function(*args) in a forked child; return its result or re-raise its exception.

    A hang (the thing these tests guard against) fails the test instead of stalling the run.
    """
    import multiprocessing
    import pickle

    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)

    def child() -> None:
        try:
            outcome = ("ok", function(*args))
        except BaseException as exc:  # hand any failure back to the parent
            outcome = ("error", exc)
        try:
            send.send(outcome)
        except (pickle.PicklingError, TypeError, AttributeError):
            send.send(("error", RuntimeError(repr(outcome[1]))))

    process = context.Process(target=child, daemon=True)
    process.start()
    try:
        if not receive.poll(seconds):
            pytest.fail(f"{getattr(function, '__name__', function)} did not finish within "
                        f"{seconds} s (a hang)")
        status, value = receive.recv()
    finally:
        process.kill()
        process.join()
    if status == "error":
        raise value
    return value


# --- fuzzing --------------------------------------------------------------------------------

def metadata_sectors(image: bytes, source: Path, sector: int = 512) -> list[int]:
    """Sectors of an image that hold filesystem structures: not fill, not file content.

    Content sectors are recognised by value (every file of `source`, cut into sectors), so this
    needs no knowledge of the filesystem's layout; resident data (tiny NTFS files) counts as
    metadata, which is what it is.
    """
    content = set()
    for path in source.rglob("*"):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            for start in range(0, len(data), sector):
                content.add(data[start:start + sector].ljust(sector, b"\0"))
    return [index for index in range(len(image) // sector)
            if len(set(piece := image[index * sector:(index + 1) * sector])) > 1
            and piece not in content]  # one repeated byte is fill (zeros, NTFS's $LogFile)


@contextlib.contextmanager
def flipped_bytes(image: bytearray, sectors: list[int], rng: random.Random, flips: int):
    """`image` with `flips` random bytes in the given sectors replaced, as a read-only file
    object, for the duration of the block (changed in place and restored: images are big)."""
    saved = {}
    for _ in range(flips):
        position = rng.choice(sectors) * 512 + rng.randrange(512)
        saved.setdefault(position, image[position])
        image[position] = rng.choice([rng.randrange(256), image[position] ^ 0x80, 0, 0xFF])
    try:
        yield BufferReader(image)
    finally:
        for position, value in saved.items():
            image[position] = value


class BufferReader(PositionedFile):
    """A read-only, seekable file object over a buffer, without copying it."""

    def __init__(self, buffer):
        super().__init__(len(buffer))
        self._buffer = memoryview(buffer)

    def pread(self, offset: int, length: int) -> bytes:
        return bytes(self._buffer[offset: offset + length])


# --- one image per filesystem kind ------------------------------------------------------------

@dataclass(frozen=True)
class FsKind:
    """How to build a filesystem, and what it can keep of the source tree."""

    build: object  # (image, source) -> image
    symlinks: bool
    posix: bool  # modes, owners and nanosecond times
    time_resolution_ns: int


FS_KINDS = {
    "ext2": FsKind(lambda i, s: make_ext4(i, s, kind="ext2"), True, True, 10**9),
    "ext3": FsKind(lambda i, s: make_ext4(i, s, kind="ext3"), True, True, 10**9),
    "ext4": FsKind(make_ext4, True, True, 10**9),
    "fat12": FsKind(lambda i, s: make_fat(i, s, 12), False, False, 2 * 10**9),
    "fat16": FsKind(lambda i, s: make_fat(i, s, 16), False, False, 2 * 10**9),
    "fat32": FsKind(lambda i, s: make_fat(i, s, 32), False, False, 2 * 10**9),
    "exfat": FsKind(make_exfat, False, False, 2 * 10**9),
    "ntfs": FsKind(make_ntfs, True, False, 100),
    "xfs": FsKind(make_xfs, True, True, 1),
    "btrfs": FsKind(make_btrfs, True, True, 1),
}


class ImageCache:
    """Builds each kind's image once per test module (tmp_path_factory), from a fresh tree."""

    def __init__(self, tmp_path_factory, **tree_options):
        self._factory, self._options, self._built = tmp_path_factory, tree_options, {}

    def get(self, kind: str) -> tuple[Path, Path]:
        """(image, source tree) for `kind`."""
        if kind not in self._built:
            spec = FS_KINDS[kind]
            folder = self._factory.mktemp(kind)
            source = populate_tree(folder / "source", symlinks=spec.symlinks, **self._options)
            image = spec.build(folder / f"{kind}.img", source)
            self._built[kind] = (image, source)
        return self._built[kind]


# --- LVM2 -------------------------------------------------------------------------------------

_LVM_CONFIG = "backup{backup=0 archive=0} global{use_lvmetad=0}"


def make_lvm(image: Path, group: str, volumes: list[tuple[str, int, Path | None]],
             size_mib: int = 64) -> dict[str, int]:
    """An LVM2 physical volume holding `group` with linear logical volumes (name, MiB, content
    image or None); returns each volume's byte offset inside the physical volume.

    Made with the real tools on a loop device; the kernel's device mapper is not needed, as
    nothing is activated (--driverloaded n), and no backup files are left in /etc/lvm.
    """
    for tool in ("pvcreate", "vgcreate", "lvcreate", "lvs"):
        require_tool(tool)
    with open(image, "wb") as f:
        f.truncate(size_mib * MIB)
    lvm = ["--config", _LVM_CONFIG]
    with loop_device(image) as device:
        run("pvcreate", *lvm, "-ff", "-y", device)
        run("vgcreate", *lvm, group, device)
        for name, volume_mib, _ in volumes:
            run("lvcreate", *lvm, "--driverloaded", "n", "-an", "-Zn", "-L", f"{volume_mib}M",
                "-n", name, group)
        offsets = _lv_offsets(group, lvm)
    for name, _, content in volumes:
        if content is not None:
            run("dd", f"if={content}", f"of={image}", "bs=1M", f"seek={offsets[name] // MIB}",
                "conv=notrunc,sparse", "status=none")
    return offsets


def _lv_offsets(group: str, lvm: list[str]) -> dict[str, int]:
    def query(*args: str) -> str:
        result = subprocess.run(["lvs" if args[0] == "lv" else "vgs", *lvm, "--noheadings",
                                 "--units", "b", "--nosuffix", *args[1:]],
                                capture_output=True, text=True, check=True)
        return result.stdout.strip()

    pe_start = int(query("vg", "-o", "pe_start", group).split()[0])
    extent = int(query("vg", "-o", "vg_extent_size", group).split()[0])
    offsets = {}
    for line in query("lv", "-o", "lv_name,seg_pe_ranges", group).splitlines():
        name, ranges = line.split()
        first_extent = int(ranges.rsplit(":", 1)[1].split("-")[0])
        offsets[name] = pe_start + first_extent * extent
    return offsets
