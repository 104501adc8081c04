"""Partitions (MBR, GPT) and LVM2 logical volumes inside a disk image, and file-like windows
onto them.

Works over any seekable, read-only file-like object (a plain file, or the store's random-access
snapshot reader); it knows nothing of repositories. GPT and LVM2 parsing is `dissect.volume`'s,
bounded here (hostile tables must not hang us or swallow memory); the MBR and its chain of
extended boot records are read here, because a chain that loops or breaks must cost only the
logical partitions after the break, never the primary ones. Numbering is the kernel's (`.p5`
is the first logical partition); results are plain values.
"""

from __future__ import annotations

import io
import logging
import struct
from dataclasses import dataclass, replace
from typing import BinaryIO

from ..errors import NoSuchPartition, PartitionTableError
from .fileview import PositionedFile, read_at, size_of

# A sane GPT has 128 entries, read one by one: a table that needs more reads than this is lying
# about its size (entry count 2**32, entry size 0, an endless chain of extended boot records).
PARTITION_TABLE_READ_LIMIT = 20_000
MAX_PARTITIONS = 1024
MAX_TABLE_READ = 64 * 1024 * 1024  # LVM's metadata area is 1 MiB by default
_MBR_EXTENDED_TYPES = (0x05, 0x0F, 0x85)
_MBR_PROTECTIVE_TYPE = 0xEE
_MBR_ENTRY = struct.Struct("<B3xB3xII")  # boot flag, type, first sector, sector count
# What dissect also refuses as an MBR: boot sectors of filesystems and boot loaders.
_VOLUME_BOOT_SIGNATURES = (b"MSDOS", b"MSWIN", b"NTFS", b"FAT", b"EXFAT", b"-FVE-FS-",
                           b"SYSLINUX")

log = logging.getLogger(__name__)




@dataclass(frozen=True)
class Partition:
    """One partition: `number` is 1-based as in Linux (`sda2`, `<image>.p2`); sizes in bytes."""

    number: int
    offset: int
    size: int
    type_name: str
    name: str | None


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
    image are clipped to it; ones starting past the end or ending before they start are left
    out. Each clip and omission is logged as a warning, as a break in the MBR chain is.
    """
    image_size = size_of(fileobj)
    if image_size < 512 or not _has_boot_signature(fileobj) or _holds_filesystem(fileobj):
        return []
    partitions = _parse_table(fileobj, image_size)
    if partitions is None:
        return []
    shown = []
    for partition in partitions:
        problem = _entry_problem(partition, image_size)
        if problem:
            log.warning("partition p%d is not shown: %s", partition.number, problem)
            continue
        if partition.offset + partition.size > image_size:
            log.warning("partition p%d reaches past the end of the image: only its first %d of "
                        "%d bytes are shown", partition.number, image_size - partition.offset,
                        partition.size)
            partition = replace(partition, size=image_size - partition.offset)
        shown.append(partition)
    return sorted(shown, key=lambda p: p.number)


def _entry_problem(partition: Partition, image_size: int) -> str | None:
    """Why a table entry cannot be served as a partition, or None."""
    if partition.size <= 0:
        return (f"its table entry is empty or ends before it starts (start at byte "
                f"{partition.offset}, length {partition.size} bytes)")
    if not 0 < partition.offset < image_size:
        return (f"it starts at byte {partition.offset}, outside the image ({image_size} "
                f"bytes)")
    return None


def _has_boot_signature(fileobj: BinaryIO) -> bool:
    return read_at(fileobj, 510, 2) == b"\x55\xaa"


def _holds_filesystem(fileobj: BinaryIO) -> bool:
    """A FAT/NTFS/exFAT boot sector also ends in 55 AA; it is a filesystem, not a table."""
    from .detect import detect_filesystem

    return detect_filesystem(PartitionView(fileobj, 0, size_of(fileobj))) is not None


def _parse_table(fileobj: BinaryIO, image_size: int) -> list[Partition] | None:
    """The partitions of a GPT (dissect's parser; 512- then 4096-byte sectors) or else of an
    MBR; None if the image has neither. Only a disk whose MBR announces a GPT goes to dissect:
    its MBR parser would also follow a looping chain of extended boot records."""
    gpt_errors: list[str] = []
    for sector_size in (512, 4096) if _has_protective_entry(fileobj) else ():
        partitions = _parse_gpt(fileobj, sector_size, gpt_errors)
        if partitions is not None:
            return partitions
    for sector_size in (512, 4096):
        partitions = _parse_mbr(fileobj, sector_size, image_size)
        if partitions is not None:
            return partitions
    if _has_protective_entry(fileobj):  # a GPT disk whose GPT is gone: say so, do not guess
        raise PartitionTableError(f"the disk's protective MBR announces a GPT, but its header "
                                  f"cannot be read ({gpt_errors[0]})")
    return None


def _parse_gpt(fileobj: BinaryIO, sector_size: int, errors: list[str]) -> list[Partition] | None:
    from dissect.volume.disk.schemes import GPT
    from dissect.volume.exceptions import DiskError

    limited = _ReadLimit(fileobj, PARTITION_TABLE_READ_LIMIT)
    try:
        scheme = GPT(limited, sector_size=sector_size)
    except PartitionTableError:
        raise
    except (DiskError, EOFError) as exc:
        errors.append(str(exc))
        return None
    except Exception as exc:  # hostile tables make the parser raise anything at all
        raise PartitionTableError(f"the partition table cannot be read: {exc}") from exc
    if any(entry.bootable not in (0x00, 0x80) for entry in scheme.mbr.mbr.part):
        return None  # as Linux: odd boot flags mean this is no partition table
    if len(scheme.partitions) > MAX_PARTITIONS:
        raise PartitionTableError(f"the partition table lists {len(scheme.partitions)} "
                                  f"partitions; it is damaged or malicious")
    return [_from_gpt(p, scheme.sector_size) for p in scheme.partitions if p.disk is scheme]


def _has_protective_entry(fileobj: BinaryIO) -> bool:
    return any(kind == _MBR_PROTECTIVE_TYPE for _, kind, _, _ in _boot_record(fileobj, 0) or [])


def _from_gpt(part, sector_size: int) -> Partition:
    # dissect computes (last - first) sectors; GPT's last LBA is inclusive, hence the +1.
    # A reversed entry keeps its negative length, so that list_partitions can say so.
    sectors = part.raw.last_lba - part.raw.first_lba + 1
    return Partition(part.number, part.offset, sectors * sector_size,
                     part.type_name, part.name or None)


def _boot_record(fileobj: BinaryIO, offset: int) -> list[tuple[int, int, int, int]] | None:
    """The four (boot flag, type, first sector, sector count) entries of the MBR or EBR at
    `offset`, or None without its 55 AA signature."""
    sector = read_at(fileobj, offset, 512)
    if len(sector) < 512 or sector[510:512] != b"\x55\xaa":
        return None
    return [_MBR_ENTRY.unpack_from(sector, 446 + 16 * index) for index in range(4)]


def _parse_mbr(fileobj: BinaryIO, sector_size: int, image_size: int) -> list[Partition] | None:
    """Primary partitions keep their slot (1-4); logical ones are 5, 6, ... in chain order.
    None when sector 0 is not a plausible MBR (odd boot flags, a protective GPT entry, a
    filesystem's or boot loader's boot sector), as Linux would reject it."""
    entries = _boot_record(fileobj, 0)
    if entries is None or any(boot not in (0x00, 0x80) for boot, _, _, _ in entries):
        return None
    if any(kind == _MBR_PROTECTIVE_TYPE for _, kind, _, _ in entries):
        return None
    if any(signature in read_at(fileobj, 3, 8) for signature in _VOLUME_BOOT_SIGNATURES):
        return None
    partitions, extended = [], None
    for slot, (_, kind, first, count) in enumerate(entries, start=1):
        if kind in _MBR_EXTENDED_TYPES:
            extended = extended if extended is not None else first * sector_size
        elif kind:
            partitions.append(_mbr_partition(slot, first * sector_size, count, kind, sector_size))
    if extended is not None:
        partitions += _logical_partitions(fileobj, extended, sector_size, image_size)
    return partitions


def _logical_partitions(fileobj: BinaryIO, extended: int, sector_size: int,
                        image_size: int) -> list[Partition]:
    """Walk the chain of extended boot records (each links to the next, relative to the
    extended partition's start). A link that loops back, leaves the image or reaches a record
    without its signature ends the chain there (logged): the partitions before it stay."""
    partitions: list[Partition] = []
    visited: set[int] = set()
    record: int | None = extended
    while record is not None:
        problem = _ebr_problem(record, visited, image_size)
        entries = None if problem else _boot_record(fileobj, record)
        if problem is None and entries is None:
            problem = f"the extended boot record at byte {record} has no 55 AA signature"
        if problem:
            log.warning("the image's logical partitions from p%d on are not shown: %s",
                        5 + len(partitions), problem)
            break
        visited.add(record)
        data = [e for e in entries[:2] if e[1] and e[1] not in _MBR_EXTENDED_TYPES]
        links = [e for e in entries[:2] if e[1] in _MBR_EXTENDED_TYPES]
        if data:
            _, kind, first, count = data[0]
            partitions.append(_mbr_partition(5 + len(partitions), record + first * sector_size,
                                             count, kind, sector_size))
        record = extended + links[0][2] * sector_size if links else None
    return partitions


def _ebr_problem(record: int, visited: set[int], image_size: int) -> str | None:
    """Why the chain of extended boot records must end before `record`, or None."""
    if record in visited:
        return f"the chain of extended boot records loops back to byte {record}"
    if len(visited) >= MAX_PARTITIONS:
        return f"the chain of extended boot records is longer than {MAX_PARTITIONS}"
    if not 0 < record <= image_size - 512:
        return f"an extended boot record would lie at byte {record}, outside the image"
    return None


def _mbr_partition(number: int, offset: int, sectors: int, kind: int,
                   sector_size: int) -> Partition:
    from dissect.volume.disk.partition import translate_partition_type

    return Partition(number, offset, sectors * sector_size,
                     translate_partition_type(kind, False), None)


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
