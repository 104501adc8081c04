"""Drivers for the POSIX filesystems: ext2/3/4 (dissect.extfs), XFS (dissect.xfs), btrfs
(dissect.btrfs). They carry real modes, owners and nanosecond times; the drivers only translate
the parsers' inodes into `Entry` values and refuse sizes that would make a parser build
unbounded lists in memory.
"""

from __future__ import annotations

import stat
from collections.abc import Iterator
from typing import Any, BinaryIO

from .base import Damaged, Driver, Entry, kind_of_mode, merge_ranges

MAX_SYMLINK_BYTES = 4096  # PATH_MAX: a longer "target" is damage, and would be read whole
# dissect maps a block-mapped (ext2/3 style) file into one Python list entry per block:
# beyond this many blocks (64 GiB at 4 KiB) that list alone would take gigabytes.
MAX_BLOCK_MAPPED_BLOCKS = 1 << 24


def _entry(name: str, path: str, mode: int, size: int, uid: int | None, gid: int | None,
           times: tuple[int, int, int, int | None], target: str | None) -> Entry:
    mtime, atime, ctime, birth = times
    return Entry(name=name, path=path, kind=kind_of_mode(mode), size=size, mode=mode, uid=uid,
                 gid=gid, mtime_ns=mtime, atime_ns=atime, ctime_ns=ctime, birthtime_ns=birth,
                 symlink_target=target)


def _check_link_size(size: int) -> None:
    if size > MAX_SYMLINK_BYTES:
        raise Damaged(f"symbolic link claims a {size}-byte target")


class _InodeTreeDriver(Driver):
    """What ext and XFS share in dissect: a root node, iterdir with . and .., inode numbers."""

    def root(self) -> Any:
        return self._fs.root

    def children(self, node: Any) -> Iterator[tuple[str, Any]]:
        for child in node.iterdir():
            if child.filename not in (".", ".."):
                yield child.filename, child

    def identity(self, node: Any) -> int:
        return node.inum


def _symlink_target(node: Any, mode: int) -> str | None:
    if not stat.S_ISLNK(mode):
        return None
    _check_link_size(node.size)
    node._filetype = stat.S_IFLNK  # the inode decides, not the directory entry's hint
    return node.link


class ExtDriver(_InodeTreeDriver):
    def __init__(self, volume: BinaryIO):
        from dissect.extfs import ExtFS

        self._fs = ExtFS(volume)
        self.kind = f"ext{self._fs.type}"
        self.label = self._fs.volume_name or None

    def describe(self, node: Any, name: str, path: str) -> Entry:
        inode = node.inode
        mode = inode.i_mode
        target = _symlink_target(node, mode)
        uid = inode.i_uid | (inode.i_uid_high << 16)
        gid = inode.i_gid | (inode.i_gid_high << 16)
        times = (node.mtime_ns, node.atime_ns, node.ctime_ns, node.crtime_ns)
        return _entry(name, path, mode, node.size, uid, gid, times, target)

    def open(self, node: Any) -> BinaryIO:
        from dissect.extfs.c_ext import c_ext

        flags = node.inode.i_flags
        block_mapped = not flags & (c_ext.EXT4_EXTENTS_FL | c_ext.EXT4_INLINE_DATA_FL)
        if block_mapped and node.size // self._fs.block_size > MAX_BLOCK_MAPPED_BLOCKS:
            raise Damaged(f"block-mapped file of {node.size} bytes is beyond what this reader "
                          f"maps (at most {MAX_BLOCK_MAPPED_BLOCKS} blocks)")
        return node.open()


class XfsDriver(_InodeTreeDriver):
    kind = "xfs"

    def __init__(self, volume: BinaryIO):
        from dissect.xfs import XFS

        self._fs = XFS(volume)
        self.label = self._fs.name or None

    def describe(self, node: Any, name: str, path: str) -> Entry:
        inode = node.inode
        mode = inode.di_mode
        target = _symlink_target(node, mode)
        crtime = node.crtime_ns if inode.di_version >= 3 else None
        times = (node.mtime_ns, node.atime_ns, node.ctime_ns, crtime)
        return _entry(name, path, mode, node.size, inode.di_uid, inode.di_gid, times, target)

    def open(self, node: Any) -> BinaryIO:
        return node.open()


class BtrfsDriver(Driver):
    """The default subvolume; other subvolumes appear as the folders they are mounted at."""

    kind = "btrfs"

    def __init__(self, volume: BinaryIO):
        from dissect.btrfs import Btrfs

        self._fs = Btrfs(volume)
        self.label = self._fs.label or None

    def root(self) -> Any:
        return self._fs.root

    def children(self, node: Any) -> Iterator[tuple[str, Any]]:
        for name, child in node.iterdir():
            if name not in (".", ".."):
                yield name, child

    def identity(self, node: Any) -> tuple[int, int]:
        return node.subvolume.objectid, node.inum

    def describe(self, node: Any, name: str, path: str) -> Entry:
        mode = node.mode
        target = None
        if stat.S_ISLNK(mode):
            _check_link_size(node.size)
            target = node.link
        times = (node.mtime_ns, node.atime_ns, node.ctime_ns, node.otime_ns)
        return _entry(name, path, mode, node.size, node.uid, node.gid, times, target)

    def open(self, node: Any) -> BinaryIO:
        return node.open()

    def data_ranges(self, stream: BinaryIO) -> list[tuple[int, int]] | None:
        extents = getattr(stream, "extents", None)  # ExtentStream; inline data has none
        if extents is None:
            return None
        return merge_ranges((extent.disk_offset != 0, extent.length) for extent in extents)
