"""exFAT driver, on dissect.fat's exFAT structure definitions with a lazy directory reader.

Why not `dissect.fat.ExFAT` itself: it parses the entire directory tree, recursively, the moment
it opens a volume (slow on a big volume, and a folder that contains its own ancestor recurses
without end), and it reads a contiguous ("not fragmented") folder longer than one cluster as if
it were one cluster long. Here folders are read when asked for, every entry set's checksum is
verified, and a cluster chain that loops, leaves the volume, or enters clusters that another
file's entry or chain (of those read so far) owns is damage: that file is refused, never served
as the loop repeated or another file's bytes.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from dissect.util.stream import RunlistStream

from ...lru import LRU
from ..volumes import PartitionView
from .base import Damaged, Driver, Entry
from .dos import _DIR_MODE, _FILE_MODE, _READONLY_MODE, dos_time_ns

_ENTRY = 32
_END, _FILE, _STREAM, _NAME, _LABEL = 0x00, 0x85, 0xC0, 0xC1, 0x83
_BITMAP, _UPCASE = 0x81, 0x82  # system files: first cluster at byte 20, length at byte 24
_END_OF_CHAIN = 0xFFFFFFFF
_FAT_BLOCK = 64 * 1024  # the FAT is read in pieces this size, a few kept in memory
_FAT_BLOCKS_KEPT = 16


@dataclass(frozen=True)
class ExfatNode:
    name: str
    attributes: int  # 0x10 folder, 0x01 read-only
    first_cluster: int
    size: int | None  # None: the root folder, whose length is its cluster chain's
    valid_size: int
    contiguous: bool
    times: tuple[int, int, int]  # mtime, atime, birth time (ns)

    @property
    def is_dir(self) -> bool:
        return bool(self.attributes & 0x10)


class ExfatDriver(Driver):
    kind = "exfat"
    case_insensitive = True

    def __init__(self, volume: BinaryIO):
        from dissect.fat.c_exfat import c_exfat

        self._volume = volume
        volume.seek(0)
        vbr = c_exfat.EXFAT_HEADER(volume.read(512))
        if vbr.fs_name != b"EXFAT   " or not 9 <= vbr.bytes_per_sector_exp <= 12 \
                or vbr.bytes_per_sector_exp + vbr.sectors_per_cluster_exp > 25:
            raise Damaged("the exFAT boot sector is invalid")
        sector = 1 << vbr.bytes_per_sector_exp
        self.cluster_size = sector << vbr.sectors_per_cluster_exp
        self.cluster_count = vbr.cluster_heap_count
        self._fat_offset, self._fat_size = vbr.fat_sector * sector, vbr.fat_sector_count * sector
        heap_offset = vbr.cluster_heap_sector * sector
        self._heap = PartitionView(volume, heap_offset, max(0, volume.size - heap_offset))
        self._fat_blocks: LRU[int, bytes] = LRU(_FAT_BLOCKS_KEPT)
        self._claims = _ClusterClaims()
        epoch = dos_time_ns(0)  # the root has no times; 1980-01-01, as for FAT
        self._root = ExfatNode("/", 0x10, vbr.root_dir_cluster, None, 0, False, (epoch,) * 3)
        self.label = self._read_label()

    def root(self) -> Any:
        return self._root

    def identity(self, node: ExfatNode) -> int:
        return node.first_cluster

    def children(self, node: ExfatNode) -> Iterator[tuple[str, ExfatNode]]:
        for entry_set in self._entry_sets(node):
            if entry_set[0][0] == _FILE:
                child = _parse_file_set(entry_set)
                self._claim_contiguous(child.first_cluster, child.contiguous, child.size)
                yield child.name, child

    def describe(self, node: ExfatNode, name: str, path: str) -> Entry:
        mtime, atime, birth = node.times
        if node.is_dir:
            return Entry(name, path, "dir", 0, _DIR_MODE, None, None, mtime, atime, mtime, birth)
        mode = _READONLY_MODE if node.attributes & 0x01 else _FILE_MODE
        return Entry(name, path, "file", node.size, mode, None, None, mtime, atime, mtime, birth)

    def open(self, node: ExfatNode) -> BinaryIO:
        return self._stream(node)

    # -- clusters and streams --

    def _stream(self, node: ExfatNode) -> BinaryIO:
        """A node's data; bytes past its valid length read as zeros, as the format says."""
        size = node.size
        if size is None:  # the root: as long as its chain
            clusters = self._chain(node.first_cluster, None)
            size = len(clusters) * self.cluster_size
        elif size == 0:
            clusters = []
        elif node.contiguous:
            count = -(-size // self.cluster_size)
            if node.first_cluster < 2 or node.first_cluster - 2 + count > self.heap_clusters:
                raise Damaged(f"{node.name!r} lies outside the cluster heap")
            runs = [(node.first_cluster - 2, count)]
        else:
            clusters = self._chain(node.first_cluster, -(-size // self.cluster_size))
        if not node.contiguous or node.size is None or size == 0:
            runs = _runs(clusters)
        valid = size if node.size is None or node.is_dir else min(node.valid_size, size)
        return _ValidLengthStream(self._heap, runs, size, self.cluster_size, valid)

    @property
    def heap_clusters(self) -> int:
        """Clusters that are really there: the boot sector's count, unless the volume ends
        first (a truncated image or partition)."""
        return min(self.cluster_count, self._heap.size // self.cluster_size)

    def _chain(self, first: int, needed: int | None) -> list[int]:
        """Follow the FAT from `first`: `needed` clusters, or to the end mark when None."""
        chain, seen, cluster = [], set(), first
        while needed is None or len(chain) < needed:
            if not 2 <= cluster < self.heap_clusters + 2:
                raise Damaged(f"the cluster chain from {first:#x} leaves the volume "
                              f"(cluster {cluster:#x})")
            if cluster in seen:
                raise Damaged(f"the cluster chain from {first:#x} loops back to {cluster:#x}")
            owner = self._claims.owner(cluster)
            if owner not in (None, first):
                raise Damaged(f"the cluster chain from {first:#x} enters cluster {cluster:#x}, "
                              f"which the file at {owner:#x} owns (cross-linked)")
            seen.add(cluster)
            chain.append(cluster)
            cluster = self._fat_entry(cluster)
            if cluster == _END_OF_CHAIN:
                break
        if needed is not None and len(chain) < needed:
            raise Damaged(f"a cluster chain ends after {len(chain)} of {needed} clusters")
        self._claims.claim_chain(first, chain)
        return chain

    def _claim_contiguous(self, first: int, contiguous: bool, size: int | None) -> None:
        """Note the clusters of a file stored without a chain (and every file's first
        cluster), as its entry says, so that a chain entering them is found."""
        count = -(-size // self.cluster_size) if contiguous and size else 1
        if size != 0 and 2 <= first < self.cluster_count + 2:
            self._claims.claim_run(first, count)

    def _fat_entry(self, cluster: int) -> int:
        block, offset = divmod(cluster * 4, _FAT_BLOCK)
        data = self._fat_blocks.get(block)
        if data is None:
            length = min(_FAT_BLOCK, self._fat_size - block * _FAT_BLOCK)
            self._volume.seek(self._fat_offset + block * _FAT_BLOCK)
            data = self._volume.read(max(0, length))
            self._fat_blocks.put(block, data)
        if offset + 4 > len(data):
            raise Damaged(f"cluster {cluster:#x} is beyond the FAT")
        return int.from_bytes(data[offset:offset + 4], "little")

    # -- directories --

    def _entry_sets(self, node: ExfatNode) -> Iterator[list[bytes]]:
        """Each in-use primary entry with its secondaries, until the end-of-directory mark."""
        if not node.is_dir:
            raise Damaged(f"{node.name!r} is not a folder")
        stream = self._stream(node)
        while True:
            primary = stream.read(_ENTRY)
            if len(primary) < _ENTRY or primary[0] == _END:
                return
            if not primary[0] & 0x80 or primary[0] & 0x40:  # deleted, or a stray secondary
                continue
            count = primary[1] if primary[0] == _FILE else 0
            secondaries = [stream.read(_ENTRY) for _ in range(count)]
            if any(len(s) < _ENTRY for s in secondaries):
                raise Damaged("a folder ends in the middle of an entry set")
            yield [primary, *secondaries]

    def _read_label(self) -> str | None:
        """The volume label; on the way, claims the clusters of the allocation bitmap and the
        up-case table, which no file's chain may enter."""
        from dissect.fat.c_exfat import c_exfat

        label = None
        for entry_set in self._entry_sets(self._root):
            kind = entry_set[0][0]
            if kind == _LABEL and label is None:
                entry = c_exfat.VOLUME_DIRECTORY_ENTRY(entry_set[0])
                label = entry.volume_label[: min(entry.label_length, 11)] or None
            elif kind in (_BITMAP, _UPCASE):
                first = int.from_bytes(entry_set[0][20:24], "little")
                self._claim_contiguous(first, True, int.from_bytes(entry_set[0][24:32], "little"))
        return label


class _ClusterClaims:
    """Which file owns which clusters, of the entries and chains read so far: runs from
    directory entries (a file without a chain, or a chain's first cluster), and every
    cluster of each chain followed. A file is named by its first cluster. One list and one
    dict, each changed by single operations, so readers in other threads see either state."""

    def __init__(self):
        self._runs: list[tuple[int, int]] = []  # (first cluster, end), sorted
        self._chained: dict[int, int] = {}

    def claim_run(self, first: int, count: int) -> None:
        index = bisect.bisect_left(self._runs, (first,))
        if index == len(self._runs) or self._runs[index][0] != first:  # not listed before
            self._runs.insert(index, (first, first + count))

    def claim_chain(self, first: int, chain: list[int]) -> None:
        for cluster in chain:
            self._chained.setdefault(cluster, first)

    def owner(self, cluster: int) -> int | None:
        """The first cluster of the file that owns `cluster`, or None if none is known."""
        if cluster in self._chained:
            return self._chained[cluster]
        index = bisect.bisect_right(self._runs, (cluster, float("inf"))) - 1
        if index >= 0 and cluster < self._runs[index][1]:
            return self._runs[index][0]
        return None


def _parse_file_set(entry_set: list[bytes]) -> ExfatNode:
    from dissect.fat.c_exfat import c_exfat

    if len(entry_set) < 3 or entry_set[1][0] != _STREAM:
        raise Damaged("a file entry lacks its stream or name entries")
    if _set_checksum(entry_set) != int.from_bytes(entry_set[0][2:4], "little"):
        raise Damaged("a directory entry set has a bad checksum")
    meta = c_exfat.FILE_DIRECTORY_ENTRY(entry_set[0])
    stream = c_exfat.STREAM_DIRECTORY_ENTRY(entry_set[1])
    name = "".join(c_exfat.FILENAME_DIRECTORY_ENTRY(e).filename
                   for e in entry_set[2:] if e[0] == _NAME)[: stream.filename_length]
    if len(name) != stream.filename_length or not name:
        raise Damaged("a file name is shorter than its recorded length")
    attributes = int.from_bytes(entry_set[0][4:6], "little")
    times = (_exfat_time(meta.modified_time, meta.modified_offset, meta.modified_timezone),
             _exfat_time(meta.access_time, 0, meta.access_timezone),
             _exfat_time(meta.create_time, meta.create_offset, meta.create_timezone))
    return ExfatNode(name, attributes, stream.location, stream.data_length,
                     stream.valid_data_length, bool(entry_set[1][1] & 0x02), times)


def _set_checksum(entry_set: list[bytes]) -> int:
    checksum = 0
    for index, byte in enumerate(b"".join(entry_set)):
        if index in (2, 3):
            continue
        checksum = (((checksum << 15) | (checksum >> 1)) + byte) & 0xFFFF
    return checksum


def _exfat_time(stamp: int, centiseconds: int, zone: int) -> int:
    """Local date/time plus the recorded UTC offset (15-minute units, valid when bit 7 is set)."""
    ns = dos_time_ns(stamp >> 16, stamp & 0xFFFF, centiseconds)
    if zone & 0x80:
        offset = zone & 0x7F
        offset = offset - 0x80 if offset & 0x40 else offset
        ns -= offset * 15 * 60 * 10**9
    return ns


def _runs(clusters: list[int]) -> list[tuple[int, int]]:
    """Cluster numbers as (heap block, count) runs, consecutive clusters merged."""
    runs: list[list[int]] = []
    for cluster in clusters:
        if runs and runs[-1][0] + runs[-1][1] == cluster - 2:
            runs[-1][1] += 1
        else:
            runs.append([cluster - 2, 1])
    return [(start, count) for start, count in runs]


class _ValidLengthStream(RunlistStream):
    def __init__(self, fh, runlist, size, block_size, valid_size):
        super().__init__(fh, runlist, size, block_size)
        self._valid_size = valid_size

    def _read(self, offset: int, length: int) -> bytes:
        data = super()._read(offset, length)
        if offset + len(data) <= self._valid_size:
            return data
        keep = max(0, self._valid_size - offset)
        return data[:keep] + bytes(len(data) - keep)
