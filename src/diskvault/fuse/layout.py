"""The mount's tree as plain values: which path shows which folder, link or snapshot.

Pure: built from snapshot records alone, so it is tested without a repository or FUSE.
The files inside a snapshot folder (the image, its partitions, ``<image>.files``) and the
paths below ``<image>.files`` are named here too, but listed by the caller, because finding
partitions and filesystems means reading the image.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

from ..store.browse import Volume
from ..store.snapshots import SnapshotRecord
from ..store.volumes import Partition

ROOT = "/"
LATEST = "latest"


@dataclass(frozen=True)
class Folder:
    time_ns: int
    names: tuple[str, ...]


@dataclass(frozen=True)
class Link:
    target: str
    time_ns: int


@dataclass(frozen=True)
class SnapshotFolder:
    """Holds ``snapshot_files(record, partitions)``."""

    record: SnapshotRecord


@dataclass(frozen=True)
class SnapshotFile:
    """The whole image (``partition`` None) or one partition of it."""

    record: SnapshotRecord
    partition: Partition | None

    @property
    def offset(self) -> int:
        return self.partition.offset if self.partition else 0

    @property
    def size(self) -> int:
        return self.partition.size if self.partition else self.record.size


Node = Folder | Link | SnapshotFolder


def time_ns(record: SnapshotRecord) -> int:
    return round(record.time.timestamp() * 1_000_000) * 1000


def safe_name(name: str) -> str:
    """A name usable as one path component (a series may be called anything)."""
    cleaned = name.replace("/", "_").replace("\0", "_")
    return cleaned if cleaned not in ("", ".", "..") else f"_{cleaned}"


def image_name(record: SnapshotRecord) -> str:
    """The source's file name (``vm1.img``, ``sda``), or ``<series>.img`` if it has none."""
    name = PurePosixPath(record.source).name
    return safe_name(name) if name not in ("", ".", "..") else f"{safe_name(record.name)}.img"


def partition_name(image: str, number: int) -> str:
    return f"{image}.p{number}"


def files_folder_name(record: SnapshotRecord) -> str:
    """``<image>.files``: the files inside the image's filesystems (fuse/files.py)."""
    return f"{image_name(record)}.files"


@dataclass(frozen=True)
class InsideFiles:
    """A path at or below ``<image>.files``: the names below that folder."""

    record: SnapshotRecord
    parts: tuple[str, ...]


def find_inside(nodes: dict, path: str) -> InsideFiles | None:
    """The InsideFiles a mount path names, or None: the nearest snapshot folder above it must
    be followed by its ``<image>.files`` name."""
    parts = [p for p in path.split("/") if p]
    for depth in range(len(parts)):
        folder = nodes.get("/" + "/".join(parts[:depth]))
        if isinstance(folder, SnapshotFolder):
            if parts[depth] != files_folder_name(folder.record):
                return None
            return InsideFiles(folder.record, tuple(parts[depth + 1:]))
    return None


def volume_folder(volume: Volume) -> str:
    """A volume's folder in ``<image>.files``: ``p2``, or ``<vg>-<lv>`` as /dev/mapper names
    a logical volume (a '-' inside a name doubled, so the name stays unambiguous)."""
    if isinstance(volume, int):
        return f"p{volume}"
    group, name = volume.split("/", 1)
    return f"{group.replace('-', '--')}-{name.replace('-', '--')}"


def snapshot_files(record: SnapshotRecord,
                   partitions: Sequence[Partition]) -> dict[str, SnapshotFile]:
    """The files of a snapshot folder by name: the image, then ``<image>.p1`` ..."""
    image = image_name(record)
    files = {image: SnapshotFile(record, None)}
    for partition in partitions:
        files[partition_name(image, partition.number)] = SnapshotFile(record, partition)
    return files


def layout_one(record: SnapshotRecord) -> dict[str, Node]:
    """One snapshot at the root of the mount."""
    return {ROOT: SnapshotFolder(record)}


def layout_all(records: Sequence[SnapshotRecord], mounted_ns: int) -> dict[str, Node]:
    """``/<series>/<time label>/`` for every snapshot, plus ``/<series>/latest``.

    Two snapshots of one series in the same second share a label: the later ones (by time,
    then id) get ``-<short id>`` appended, so every folder name is unique. The root's time
    is the newest snapshot's, or ``mounted_ns`` while there is none.
    """
    series: dict[str, list[SnapshotRecord]] = defaultdict(list)
    for record in records:
        series[safe_name(record.name)].append(record)
    nodes: dict[str, Node] = {}
    for folder, members in series.items():
        members.sort(key=lambda r: (r.time, r.id))
        labels: list[str] = []
        previous = None
        for record in members:  # sorted by time: snapshots of the same second are neighbours
            label = record.time_label
            labels.append(label if label != previous else f"{label}-{record.short_id}")
            previous = label
            nodes[f"/{folder}/{labels[-1]}"] = SnapshotFolder(record)
        newest = time_ns(members[-1])
        nodes[f"/{folder}/{LATEST}"] = Link(labels[-1], newest)
        nodes[f"/{folder}"] = Folder(newest, tuple(sorted([*labels, LATEST])))
    newest_overall = max((time_ns(r) for r in records), default=mounted_ns)
    nodes[ROOT] = Folder(newest_overall, tuple(sorted(series)))
    return nodes
