"""Drivers for the Windows filesystems FAT12/16/32 (dissect.fat) and NTFS (dissect.ntfs).

Neither keeps POSIX modes or owners: files are 0644 (0444 when read-only), folders 0755, owners
unknown. FAT stores local time without a zone; it is read as UTC, as a Linux mount with the
default `tz` does on a machine set to UTC.
"""

from __future__ import annotations

import calendar
import io
import stat
from collections.abc import Iterator
from typing import Any, BinaryIO

from .base import Damaged, Driver, Entry

_FILE_MODE, _READONLY_MODE = stat.S_IFREG | 0o644, stat.S_IFREG | 0o444
_DIR_MODE = stat.S_IFDIR | 0o755
_FAT_EPOCH = calendar.timegm((1980, 1, 1, 0, 0, 0))
_FAT_LOWER_BASE, _FAT_LOWER_EXT = 0x08, 0x10  # DIR_NTRes bits: 8.3 name shown in lower case
NTFS_FIRST_USER_RECORD = 16  # records 0-15 are the metafiles ($MFT, $Bitmap, ...), hidden
_INTERIX = {b"IntxLNK\x01": "symlink", b"IntxCHR\x00": "device", b"IntxBLK\x00": "device"}
_REPARSE_SYMLINK, _REPARSE_MOUNT_POINT = 0xA000000C, 0xA0000003
_ATTR_READONLY, _ATTR_SYSTEM, _ATTR_ENCRYPTED = 0x1, 0x4, 0x4000


def dos_time_ns(date: int, time: int = 0, centiseconds: int = 0) -> int:
    """A FAT date/time pair as ns since the epoch; invalid fields give 1980-01-01 (as Linux)."""
    year, month, day = 1980 + (date >> 9), (date >> 5) & 0xF, date & 0x1F
    hour, minute, second = time >> 11, (time >> 5) & 0x3F, (time & 0x1F) * 2
    if not (1 <= month <= 12 and 1 <= day <= 31 and hour < 24 and minute < 60 and second < 60):
        return _FAT_EPOCH * 10**9
    seconds = calendar.timegm((year, month, day, hour, minute, second))
    return seconds * 10**9 + min(centiseconds, 199) * 10**7


class FatDriver(Driver):
    case_insensitive = True

    def __init__(self, volume: BinaryIO):
        from dissect.fat import FATFS

        self._fs = FATFS(volume)
        self.kind = self._fs.type.name.lower()
        label = self._fs.volume_label.strip()
        self.label = None if label in ("", "NO NAME") else label
        _bound_chains(self._fs.fat)

    def root(self) -> Any:
        return self._fs.root

    def children(self, node: Any) -> Iterator[tuple[str, Any]]:
        for child in node.iterdir():
            if child.dirent.DIR_Attr & 0x08:  # the volume label entry
                continue
            name = _fat_name(child)
            if name not in (".", ".."):
                yield name, child

    def identity(self, node: Any) -> Any:
        cluster = node.cluster
        return ("cluster", cluster) if cluster else ("root", id(node))

    def describe(self, node: Any, name: str, path: str) -> Entry:
        if node is self._fs.root:
            epoch = _FAT_EPOCH * 10**9
            return Entry(name, path, "dir", 0, _DIR_MODE, None, None, epoch, epoch, epoch)
        dirent = node.dirent
        is_dir = bool(dirent.DIR_Attr & 0x10)
        mode = _DIR_MODE if is_dir else (_READONLY_MODE if dirent.DIR_Attr & 0x01 else _FILE_MODE)
        mtime = dos_time_ns(dirent.DIR_WrtDate, dirent.DIR_WrtTime)
        birth = dos_time_ns(dirent.DIR_CrtDate, dirent.DIR_CrtTime, dirent.DIR_CrtTimeTenth)
        atime = dos_time_ns(dirent.DIR_LstAccDate) if dirent.DIR_LstAccDate else mtime
        size = 0 if is_dir else dirent.DIR_FileSize
        return Entry(name, path, "dir" if is_dir else "file", size, mode, None, None,
                     mtime, atime, mtime, birth)

    def open(self, node: Any) -> BinaryIO:
        return node.open()


def _fat_name(entry: Any) -> str:
    """The long name, or the 8.3 name in the case Windows NT recorded for it."""
    if entry.ldirents:
        return entry.name
    if entry.short_name in (".", ".."):
        return entry.short_name
    base, _, ext = entry.short_name.partition(".")
    case = entry.dirent.DIR_NTRes
    base = base.lower() if case & _FAT_LOWER_BASE else base
    ext = ext.lower() if case & _FAT_LOWER_EXT else ext
    return f"{base}.{ext}" if ext else base


def _bound_chains(fat: Any) -> None:
    """Make a looping cluster chain an error: dissect follows chains through a cached lookup,
    so a loop would spin forever without reading anything the read budget could count."""
    follow = fat.chain
    limit = fat.entry_count

    def bounded(cluster: int) -> Iterator[int]:
        for count, value in enumerate(follow(cluster)):
            if count >= limit:
                raise Damaged(f"a cluster chain starting at {cluster} loops")
            yield value

    fat.chain = bounded


class NtfsDriver(Driver):
    kind = "ntfs"
    case_insensitive = True

    def __init__(self, volume: BinaryIO):
        from dissect.ntfs import NTFS

        # Empty stand-ins for $Secure and $UsnJrnl (unused here): otherwise dissect finds them by
        # a B-tree search of the root index, and a node pointing at itself in a hostile image
        # makes that search loop forever without a single read the budget could count.
        self._ntfs = NTFS(volume, sds=io.BytesIO(), usnjrnl=io.BytesIO())
        self.label = self._volume_name()

    def _volume_name(self) -> str | None:
        """dissect's volume_name reads the attribute whole, whatever size a hostile one claims."""
        from dissect.ntfs.c_ntfs import ATTRIBUTE_TYPE_CODE, FILE_NUMBER_VOLUME

        names = self._ntfs.mft.get(FILE_NUMBER_VOLUME).attributes[ATTRIBUTE_TYPE_CODE.VOLUME_NAME]
        if not names or names[0].header.size > 512:
            return None
        return names[0].data().decode("utf-16-le", "replace") or None

    def root(self) -> Any:
        return self._ntfs.mft.root

    def children(self, node: Any) -> Iterator[tuple[str, Any]]:
        from dissect.ntfs.util import segment_reference

        for index_entry in node.iterdir(dereference=False, ignore_dos=True):
            segment = segment_reference(index_entry.header.FileReference)
            if segment < NTFS_FIRST_USER_RECORD:
                continue
            yield index_entry.attribute.file_name, self._ntfs.mft.get(segment)

    def identity(self, node: Any) -> int:
        return node.segment

    def describe(self, node: Any, name: str, path: str) -> Entry:
        from dissect.ntfs.c_ntfs import ATTRIBUTE_TYPE_CODE

        info = node.attributes[ATTRIBUTE_TYPE_CODE.STANDARD_INFORMATION]
        if not info:
            raise Damaged("the MFT record has no standard information")
        times = (info.last_modification_time_ns, info.last_access_time_ns,
                 info.last_change_time_ns, info.creation_time_ns)
        attributes = info.file_attributes
        kind, target = self._special(node, attributes)
        if node.is_dir() and kind is None:
            return Entry(name, path, "dir", 0, _DIR_MODE, None, None, *times)
        if kind == "symlink":
            return Entry(name, path, "symlink", len(target.encode()), stat.S_IFLNK | 0o777,
                         None, None, *times, symlink_target=target)
        if kind == "device":
            return Entry(name, path, "device", 0, stat.S_IFCHR | 0o644, None, None, *times)
        mode = _READONLY_MODE if attributes & _ATTR_READONLY else _FILE_MODE
        return Entry(name, path, "file", node.size(), mode, None, None, *times)

    def _special(self, node: Any, attributes: int) -> tuple[str | None, str | None]:
        """('symlink', target) for Windows symlinks, junctions and Interix links; ('device',
        None) for Interix devices; (None, None) otherwise."""
        from dissect.ntfs.c_ntfs import ATTRIBUTE_TYPE_CODE

        if node.is_reparse_point():
            point = node.attributes[ATTRIBUTE_TYPE_CODE.REPARSE_POINT]
            if point.tag == _REPARSE_SYMLINK and point.relative:
                return "symlink", (point.print_name or point.substitute_name).replace("\\", "/")
            if point.tag in (_REPARSE_SYMLINK, _REPARSE_MOUNT_POINT):
                return "symlink", point.print_name or point.substitute_name
            return None, None
        if attributes & _ATTR_SYSTEM and not node.is_dir() and 8 <= node.size() <= 8 + 8192:
            data = node.open().read(8 + 8192)
            kind = _INTERIX.get(data[:8])
            if kind == "symlink":
                return kind, data[8:].decode("utf-16-le", "surrogatepass")
            return kind, None
        return None, None

    def open(self, node: Any) -> BinaryIO:
        from dissect.ntfs.c_ntfs import ATTRIBUTE_TYPE_CODE

        info = node.attributes[ATTRIBUTE_TYPE_CODE.STANDARD_INFORMATION]
        if info.file_attributes & _ATTR_ENCRYPTED:
            raise Damaged("the file is encrypted (EFS); its content cannot be read")
        if node.is_reparse_point():
            tag = node.attributes[ATTRIBUTE_TYPE_CODE.REPARSE_POINT].tag
            raise Damaged(f"the file is a Windows reparse point (tag 0x{int(tag):08x}, e.g. "
                          f"deduplicated or cloud-only); its content is not stored in it")
        return node.open()
