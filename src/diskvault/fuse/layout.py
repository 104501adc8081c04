"""The mount's tree as plain values: which path shows which folder, link or snapshot.

Pure: built from snapshot records alone, so it is tested without a repository or FUSE.
The files inside a snapshot folder (the image, its partitions, ``<image>.files``) and the
paths below ``<image>.files`` are named here too, but listed by the caller, because finding
partitions and filesystems means reading the image.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from ..image.volumes import Partition
from ..store.snapshots import SnapshotRecord

ROOT = "/"
LATEST = "latest"
NAME_MAX_BYTES = 255  # the kernel refuses longer path components
# room for the longest suffix of an image's name: '.files', '.p128'
IMAGE_NAME_MAX_BYTES = NAME_MAX_BYTES - len(".files")


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


def safe_name(name: str, max_bytes: int = NAME_MAX_BYTES, distinct: bool = False) -> str:
    """A name the kernel accepts as one path component (a series or a source file may be
    called anything): '/' and NUL become '_'; bytes that are not UTF-8 show as ``\\xff``;
    '', '.' and '..' get a leading '_'; a name longer than ``max_bytes`` is cut and ends in a
    digest of the whole name, so two long names stay apart (``distinct``: ends in it anyway,
    for a name that shows like one already taken)."""
    cleaned = representable(name).replace("/", "_").replace("\0", "_")
    cleaned = cleaned if cleaned not in ("", ".", "..") else f"_{cleaned}"
    if len(cleaned.encode()) <= max_bytes and not distinct:
        return cleaned
    tail = f"-{name_digest(name)}"
    head = cleaned.encode()[: max_bytes - len(tail)].decode(errors="ignore")
    return head + tail


def representable(name: str) -> str:
    """``name`` as text that encodes as UTF-8 (what FUSE paths are): the bytes of a
    non-UTF-8 file name (os.fsdecode's surrogates) are written ``\\xff``, any other lone
    surrogate ``\\udcxx``."""
    try:
        raw = name.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return name.encode("utf-8", "backslashreplace").decode()
    return raw.decode("utf-8", "backslashreplace")


def name_digest(name: str) -> str:
    """8 hex digits that tell two names apart which show alike."""
    return hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:8]


def image_name(record: SnapshotRecord) -> str:
    """The source's file name (``vm1.img``, ``sda``), or ``<series>.img`` if it has none."""
    name = PurePosixPath(record.source).name
    if name in ("", ".", ".."):
        return safe_name(record.name, IMAGE_NAME_MAX_BYTES - len(".img")) + ".img"
    return safe_name(name, IMAGE_NAME_MAX_BYTES)


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


def volume_folder(volume) -> str:
    """A volume's folder (``volume``: a partition number or an LVM ``Volume``) in
    ``<image>.files``: ``p2``, or ``<vg>-<lv>`` as /dev/mapper names
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


@dataclass(frozen=True)
class MountNames:
    """The folder each series and each snapshot got, kept for the mount's whole life: the
    kernel caches a file's pages by its path, so a path that once named a snapshot never
    names another, not even after that snapshot is deleted."""

    series: Mapping[str, str] = field(default_factory=dict)  # series name -> folder name
    snapshots: Mapping[str, str] = field(default_factory=dict)  # id -> '/<folder>/<label>'


def assign_names(records: Sequence[SnapshotRecord], known: MountNames) -> MountNames:
    """``known`` plus names for the records it lacks, oldest first: a series gets its safe
    name, or that name and a digest of its own if another series took it; a snapshot gets
    its time label, or ``<label>-<short id>`` (``<label>-<id>``) if that path was taken."""
    series, snapshots = dict(known.series), dict(known.snapshots)
    folders, paths = set(series.values()), set(snapshots.values())
    for record in sorted(records, key=lambda r: (r.time, r.id)):
        if record.name not in series:
            folder = safe_name(record.name)
            if folder in folders:
                folder = safe_name(record.name, distinct=True)
            series[record.name] = folder
            folders.add(folder)
        if record.id not in snapshots:
            label = record.time_label
            candidates = (label, f"{label}-{record.short_id}", f"{label}-{record.id}")
            path = next(p for p in (f"/{series[record.name]}/{c}" for c in candidates)
                        if p not in paths)
            snapshots[record.id] = path
            paths.add(path)
    return MountNames(series, snapshots)


def layout_all(records: Sequence[SnapshotRecord], mounted_ns: int,
               names: MountNames | None = None) -> dict[str, Node]:
    """``/<series>/<time label>/`` for every snapshot, plus ``/<series>/latest``, with the
    paths of ``names`` (which must cover ``records``; by default, names for these records
    alone). The root's time is the newest snapshot's, or ``mounted_ns`` while there is none.
    """
    names = names or assign_names(records, MountNames())
    series: dict[str, list[SnapshotRecord]] = defaultdict(list)
    for record in records:
        series[names.series[record.name]].append(record)
    nodes: dict[str, Node] = {}
    for folder, members in series.items():
        members.sort(key=lambda r: (r.time, r.id))
        labels = []
        for record in members:
            path = names.snapshots[record.id]
            nodes[path] = SnapshotFolder(record)
            labels.append(path.rpartition("/")[2])
        newest = time_ns(members[-1])
        nodes[f"/{folder}/{LATEST}"] = Link(labels[-1], newest)
        nodes[f"/{folder}"] = Folder(newest, tuple(sorted([*labels, LATEST])))
    newest_overall = max((time_ns(r) for r in records), default=mounted_ns)
    nodes[ROOT] = Folder(newest_overall, tuple(sorted(series)))
    return nodes
