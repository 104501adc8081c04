"""Partitions (MBR, GPT) and LVM2 logical volumes inside a disk image, and file-like windows
onto them.

Works over any seekable, read-only file-like object (a plain file, or the store's random-access
snapshot reader); it knows nothing of repositories. The parsing is `dissect.volume`'s; this
module only bounds it (hostile tables must not hang us or swallow memory), fixes its numbering
to the kernel's (`.p5` is the first logical partition), and presents the result as plain values.
"""

from __future__ import annotations

import io
import threading
import weakref
from dataclasses import dataclass
from typing import BinaryIO

from diskvault.store.errors import BadInput, CorruptData
from diskvault.store.fileview import PositionedFile

# A sane GPT has 128 entries, read one by one: a table that needs more reads than this is lying
# about its size (entry count 2**32, entry size 0, an endless chain of extended boot records).
PARTITION_TABLE_READ_LIMIT = 20_000
MAX_PARTITIONS = 1024
MAX_TABLE_READ = 64 * 1024 * 1024  # LVM's metadata area is 1 MiB by default
_MBR_EXTENDED_TYPES = (0x05, 0x0F, 0x85)


class PartitionTableError(CorruptData):
    """The image has a partition table, but it is damaged or implausible."""


class NoSuchPartition(BadInput):
    """The user named a partition the image does not have."""


@dataclass(frozen=True)
class Partition:
    """One partition: `number` is 1-based as in Linux (`sda2`, `<image>.p2`); sizes in bytes."""

    number: int
    offset: int
    size: int
    type_name: str
    name: str | None


def size_of(fileobj: BinaryIO) -> int:
    """Size in bytes of a readable file-like object (its `.size`, else by seeking to the end)."""
    size = getattr(fileobj, "size", None)
    if isinstance(size, int):
        return size
    with _lock_for(fileobj):  # the position is shared with other threads' read_at
        position = fileobj.tell()
        end = fileobj.seek(0, io.SEEK_END)
        fileobj.seek(position)
    return end


_locks: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_locks_guard = threading.Lock()
_fallback_lock = threading.Lock()


def _lock_for(fileobj: BinaryIO) -> threading.Lock:
    with _locks_guard:
        try:
            lock = _locks.get(fileobj)
            if lock is None:
                lock = _locks[fileobj] = threading.Lock()
            return lock
        except TypeError:  # not weak-referenceable: share one lock
            return _fallback_lock


def read_at(fileobj: BinaryIO, offset: int, length: int) -> bytes:
    """Read `length` bytes at `offset`, safe against other threads using the same object.

    Several views (p1, p2, the filesystems on them) share one image reader whose position is a
    single shared value, so seek+read must be atomic; a reader offering `pread` avoids the lock.
    """
    pread = getattr(fileobj, "pread", None)
    if pread is not None:
        return pread(offset, length)
    with _lock_for(fileobj):
        fileobj.seek(offset)
        return fileobj.read(length)


class PartitionView(PositionedFile):
    """A read-only window [offset, offset+size) of a file-like object, itself file-like.

    Keeps its own position, so any number of views over one image can be used at once, from any
    thread (each single view is not meant to be shared between threads).
    """

    def __init__(self, fileobj: BinaryIO, offset: int, size: int):
        if offset < 0 or size < 0:
            raise ValueError(f"invalid partition window: offset {offset}, size {size}")
        super().__init__(size)
        self._fileobj = fileobj
        self.offset = offset

    def pread(self, offset: int, length: int) -> bytes:
        """Positioned read that leaves this view's position alone (see `read_at`)."""
        length = max(0, min(length, self.size - offset))
        return read_at(self._fileobj, self.offset + offset, length) if length else b""


class _ReadLimit(io.RawIOBase):
    """A view of a whole object that refuses more than `limit` reads, or one huge read, until
    `lift()`: parsing a table must not loop or swallow the disk; reading a volume may."""

    def __init__(self, fileobj: BinaryIO, limit: int):
        super().__init__()
        self._view = PartitionView(fileobj, 0, size_of(fileobj))
        self.size = self._view.size
        self._reads_left = limit

    def lift(self) -> None:
        self._reads_left = float("inf")

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._view.seek(offset, whence)

    def tell(self) -> int:
        return self._view.tell()

    def read(self, n: int = -1) -> bytes:
        self._reads_left -= 1
        if self._reads_left < 0:
            raise PartitionTableError("the partition table is implausible (it asks for endless "
                                      "reads); it is damaged or malicious")
        if self._reads_left != float("inf") and (n is None or n < 0 or n > MAX_TABLE_READ):
            raise PartitionTableError(f"a volume table claims {n} bytes of metadata; "
                                      f"it is damaged or malicious")
        return self._view.read(n)


def list_partitions(fileobj: BinaryIO) -> list[Partition]:
    """The partitions of an MBR or GPT disk, by number; [] when the image has no partition table.

    A whole-disk filesystem (its boot sector can look like an MBR) gives []. A table that is
    present but implausible raises PartitionTableError. Partitions reaching past the end of the
    image are clipped to it; ones starting past the end are left out.
    """
    image_size = size_of(fileobj)
    if image_size < 512 or not _has_boot_signature(fileobj) or _holds_filesystem(fileobj):
        return []
    scheme = _parse_table(fileobj, image_size)
    if scheme is None:
        return []
    partitions = _numbered(scheme)
    clipped = [
        Partition(p.number, p.offset, min(p.size, image_size - p.offset), p.type_name, p.name)
        for p in partitions
        if 0 < p.offset < image_size and p.size > 0
    ]
    return sorted(clipped, key=lambda p: p.number)


def _has_boot_signature(fileobj: BinaryIO) -> bool:
    return read_at(fileobj, 510, 2) == b"\x55\xaa"


def _holds_filesystem(fileobj: BinaryIO) -> bool:
    """A FAT/NTFS/exFAT boot sector also ends in 55 AA; it is a filesystem, not a table."""
    from diskvault.store.fs_detect import detect_filesystem

    return detect_filesystem(PartitionView(fileobj, 0, size_of(fileobj))) is not None


def _parse_table(fileobj: BinaryIO, image_size: int):
    """dissect's scheme (GPT or MBR), trying 512- then 4096-byte sectors; None if neither."""
    from dissect.volume.disk.schemes import GPT, MBR
    from dissect.volume.exceptions import DiskError

    gpt_errors = []
    for sector_size in (512, 4096):
        for scheme_class in (GPT, MBR):
            limited = _ReadLimit(fileobj, PARTITION_TABLE_READ_LIMIT)
            try:
                scheme = scheme_class(limited, sector_size=sector_size)
            except PartitionTableError:
                raise
            except (DiskError, EOFError) as exc:
                if scheme_class is GPT:
                    gpt_errors.append(str(exc))
                continue
            except Exception as exc:  # hostile tables make the parser raise anything at all
                raise PartitionTableError(f"the partition table cannot be read: {exc}") from exc
            if _is_plausible(scheme, sector_size):
                return scheme
    if _has_protective_entry(fileobj):  # a GPT disk whose GPT is gone: say so, do not guess
        raise PartitionTableError(f"the disk's protective MBR announces a GPT, but its header "
                                  f"cannot be read ({gpt_errors[0]})")
    return None


def _has_protective_entry(fileobj: BinaryIO) -> bool:
    entries = read_at(fileobj, 446, 64)
    return any(entries[index * 16 + 4] == 0xEE for index in range(4))


def _is_plausible(scheme, sector_size: int) -> bool:
    """Reject what Linux would: odd boot flags, or a protective MBR read at the wrong size."""
    from dissect.volume.disk.schemes import GPT

    mbr = scheme.mbr if isinstance(scheme, GPT) else scheme
    if any(entry.bootable not in (0x00, 0x80) for entry in mbr.mbr.part):
        return False
    if len(scheme.partitions) > MAX_PARTITIONS:
        raise PartitionTableError(f"the partition table lists {len(scheme.partitions)} "
                                  f"partitions; it is damaged or malicious")
    if not isinstance(scheme, GPT):
        return not any(p.type == 0xEE for p in scheme.partitions)
    return True


def _numbered(scheme) -> list[Partition]:
    from dissect.volume.disk.schemes import GPT

    if isinstance(scheme, GPT):
        return [_from_gpt(p, scheme.sector_size) for p in scheme.partitions if p.disk is scheme]
    return _from_mbr(scheme)


def _from_gpt(part, sector_size: int) -> Partition:
    # dissect computes (last - first) sectors; GPT's last LBA is inclusive, hence the +1.
    sectors = part.raw.last_lba - part.raw.first_lba + 1
    return Partition(part.number, part.offset, max(0, sectors) * sector_size,
                     part.type_name, part.name or None)


def _from_mbr(scheme) -> list[Partition]:
    """Primary partitions keep their slot (1-4); logical ones are 5, 6, ... in chain order."""
    slots = {id(entry): index + 1 for index, entry in enumerate(scheme.mbr.part)}
    result, next_logical = [], 5
    for part in scheme.partitions:
        if part.type in _MBR_EXTENDED_TYPES:
            continue
        number = slots.get(id(part.raw))
        if number is None:
            number, next_logical = next_logical, next_logical + 1
        result.append(Partition(number, part.offset, part.size, part.type_name, None))
    return result


def open_partition(fileobj: BinaryIO, number: int) -> PartitionView:
    """A view of partition `number`; NoSuchPartition names the ones that exist."""
    partitions = list_partitions(fileobj)
    for partition in partitions:
        if partition.number == number:
            return PartitionView(fileobj, partition.offset, partition.size)
    raise NoSuchPartition(
        f"the image has no partition {number}; {describe_partitions(partitions)}")


def describe_partitions(partitions: list[Partition]) -> str:
    """One phrase for error messages: which partitions exist, as the user would name them."""
    if not partitions:
        return "it has no partition table (address its filesystem without a pN: prefix)"
    names = ", ".join(f"p{p.number} ({p.type_name})" for p in partitions)
    return f"its partitions are {names}"


# --- LVM2 ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LogicalVolume:
    """An LVM2 logical volume, named 'vg/lv'; `partition` holds its physical volume (None: the
    whole image is the physical volume). Volume groups spanning several disks are not read."""

    name: str
    size: int
    partition: int | None


def list_logical_volumes(fileobj: BinaryIO) -> list[LogicalVolume]:
    """The logical volumes on the image's LVM2 physical volumes (the image, or its partitions)."""
    result = []
    for number, view in _physical_volumes(fileobj):
        group = _open_lvm(view, number).volume_group
        extent_bytes = group.extent_size * 512
        for volume in group.logical_volumes.values():
            size = sum(segment.extent_count for segment in volume.segments) * extent_bytes
            result.append(LogicalVolume(f"{group.name}/{volume.name}", size, number))
    return result


def open_logical_volume(fileobj: BinaryIO, name: str) -> BinaryIO:
    """A read-only stream (with `.size`) of logical volume 'vg/lv'; NoSuchPartition names the
    ones that exist."""
    names = []
    for number, view in _physical_volumes(fileobj):
        group = _open_lvm(view, number).volume_group
        for volume in group.logical_volumes.values():
            if f"{group.name}/{volume.name}" == name:
                try:
                    return volume.open()
                except Exception as exc:  # thin, RAID, mirror ... are not implemented by dissect
                    raise PartitionTableError(
                        f"logical volume {name} cannot be read: {exc}") from exc
            names.append(f"{group.name}/{volume.name}")
    found = ", ".join(names) if names else "none"
    raise NoSuchPartition(f"the image has no logical volume {name} (logical volumes: {found})")


def _physical_volumes(fileobj: BinaryIO) -> list[tuple[int | None, PartitionView]]:
    """(partition number or None, view) of each volume carrying an LVM2 label. A fresh view per
    call, so that every opened logical volume owns its read position."""
    partitions = list_partitions(fileobj)
    views = [(p.number, PartitionView(fileobj, p.offset, p.size)) for p in partitions] \
        or [(None, PartitionView(fileobj, 0, size_of(fileobj)))]
    return [(number, view) for number, view in views
            if any(read_at(view, sector * 512, 8) == b"LABELONE" for sector in range(4))]


def _open_lvm(view: PartitionView, number: int | None):
    from dissect.volume.lvm import LVM2

    where = f"on partition {number}" if number is not None else "of the image"
    limited = _ReadLimit(view, PARTITION_TABLE_READ_LIMIT)
    try:
        lvm = LVM2(limited)
    except PartitionTableError:
        raise
    except Exception as exc:  # hostile metadata makes the parser raise anything at all
        raise PartitionTableError(f"the LVM2 metadata {where} cannot be read: {exc}") from exc
    limited.lift()  # from here on it carries the logical volumes' data
    return lvm
