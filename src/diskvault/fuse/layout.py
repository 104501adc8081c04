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
from ..store.format.snapshots import SnapshotRecord

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


def escape_name(name: str, max_bytes: int = NAME_MAX_BYTES) -> str:
    """``name`` (a series or a source file may be called anything) as one path component the
    kernel accepts, by an escaping that never shows two names alike (docs/mount.md): ``%``,
    ``/``, control characters and a leading ``.`` become ``%XX``; bytes of a non-UTF-8 name
    (os.fsdecode's surrogates) ``%80``..``%FF``; any other lone surrogate ``%uD800``; the
    empty name ``%``. A result over ``max_bytes`` is cut and ends in ``%~`` and 32 hex digits
    of the whole name's SHA-256, which no uncut result contains."""
    if not name:
        return "%"
    pieces = [_escape_character(character) for character in name]
    if name[0] == ".":
        pieces[0] = "%2E"
    if sum(len(piece.encode()) for piece in pieces) <= max_bytes:
        return "".join(pieces)
    tail = "%~" + hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    head, room = [], max_bytes - len(tail)
    for piece in pieces:  # cut between pieces, never inside an escape or a character
        room -= len(piece.encode())
        if room < 0:
            break
        head.append(piece)
    return "".join(head) + tail


def _escape_character(character: str) -> str:
    code = ord(character)
    if code < 0x20 or code == 0x7F or character in "%/":
        return f"%{code:02X}"
    if 0xDC80 <= code <= 0xDCFF:  # one byte of a name that is not UTF-8
        return f"%{code - 0xDC00:02X}"
    if 0xD800 <= code <= 0xDFFF:
        return f"%u{code:04X}"
    return character


def image_name(record: SnapshotRecord) -> str:
    """The source's file name (``vm1.img``, ``sda``), or ``<series>.img`` if it has none."""
    name = PurePosixPath(record.source).name
    if name in ("", ".", ".."):
        return escape_name(record.name, IMAGE_NAME_MAX_BYTES - len(".img")) + ".img"
    return escape_name(name, IMAGE_NAME_MAX_BYTES)


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
    """``known`` plus names for the records it lacks, oldest first: a series gets its escaped
    name (distinct names, distinct folders); a snapshot gets its time label, or
    ``<label>-<short id>`` (``<label>-<id>``) if that path was taken."""
    series, snapshots = dict(known.series), dict(known.snapshots)
    paths = set(snapshots.values())
    for record in sorted(records, key=lambda r: (r.time, r.id)):
        series.setdefault(record.name, escape_name(record.name))
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
