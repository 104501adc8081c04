"""The filesystems inside one snapshot's image, for `ls`, `pull` and the mount's `.files/`.

One random-access reader per snapshot; each volume's filesystem is opened on first use and
kept, together with the reason when it cannot be opened (a snapshot never changes, so neither
does the answer). A kept Filesystem caches listings and resolved paths, so looking again at a
folder reads nothing. Only the chunks under the structures and files asked for are fetched.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

from ...errors import DiskvaultError
from ...image.filesystems import Entry, Filesystem
from ...image.locations import VolumeSummary, open_location, survey_image
from ...image.volumes import list_logical_volumes, list_partitions
from .reader import ImageReader

log = logging.getLogger(__name__)

Volume = int | str | None  # partition number, LVM2 'vg/lv', or None: the whole image

# Read-ahead past a read, for the browser's reader: pull streams a file in 1 MiB pieces, so
# one piece ahead keeps decompression busy while the last is written, and after a file's end
# at most this much is fetched that nobody asked for (the mount's image files use 4 MiB).
BROWSE_READAHEAD_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Listing:
    """What `ls LOCATION` shows: the entry itself, and its contents if it is a folder."""

    entry: Entry
    children: list[Entry] | None
    problems: list[str] = field(default_factory=list)  # one line per entry left out or flagged


def location_prefix(volume: Volume) -> str:
    """How a location names the volume: 'p2:', 'vg0/root:', or '' for the whole image."""
    if volume is None:
        return ""
    return f"p{volume}:" if isinstance(volume, int) else f"{volume}:"


class SnapshotFiles:
    """Thread-safe: the mount's threads share one per snapshot."""

    def __init__(self, reader: ImageReader):
        self.record = reader.record
        self._image = reader.open()
        self._opened: dict[Volume, Filesystem | DiskvaultError] = {}
        self._opening: dict[Volume, threading.Lock] = {}
        self._lock = threading.Lock()
        self._volumes: list[Volume] | None = None

    def survey(self) -> list[VolumeSummary]:
        """Every volume of the image and the filesystem it holds, or why none."""
        return survey_image(self._image)

    def volumes(self) -> list[Volume]:
        """The volumes that may hold a filesystem: [None] for an image without a partition
        table or LVM2, else its partitions then its logical volumes. A damaged table or LVM2
        metadata leaves those out (logged): the rest stays reachable."""
        with self._lock:
            if self._volumes is not None:
                return self._volumes
        found: list[Volume] = []
        try:
            found.extend(p.number for p in list_partitions(self._image))
        except DiskvaultError as error:
            log.error("snapshot %s: its partitions are not shown: %s", self.record.short_id, error)
        try:
            found.extend(v.name for v in list_logical_volumes(self._image))
        except DiskvaultError as error:
            log.error("snapshot %s: its LVM2 volumes are not shown: %s", self.record.short_id,
                      error)
        with self._lock:
            self._volumes = found or [None]
            return self._volumes

    def filesystem(self, volume: Volume) -> Filesystem:
        """The filesystem on `volume`, opened once; raises the same error every time when it
        cannot be opened (UnknownFilesystem, DamagedFilesystem, a damaged chunk)."""
        with self._lock:
            opening = self._opening.setdefault(volume, threading.Lock())
        with opening:  # one thread opens; others wait for it rather than parse it again
            known = self._opened.get(volume)
            if known is None:
                try:
                    known, _ = open_location(self._image, location_prefix(volume) + "/")
                except DiskvaultError as error:
                    known = error
                self._opened[volume] = known
        if isinstance(known, DiskvaultError):
            raise known.with_traceback(None)  # raised again and again: do not grow its traceback
        return known

    def open_location(self, location: str) -> tuple[Filesystem, str]:
        """The filesystem a location ('p2:/etc', 'vg0/root:/srv', '/etc') names, and the path
        in it; errors say which volumes exist and what a volume holds instead (with the path
        asked for in the example they give)."""
        return open_location(self._image, location)

    def listing(self, location: str) -> Listing:
        """`ls -l` of a location: a folder's entries, or a file (or symlink) by itself. An entry
        that cannot be read is left out, and a folder that is one of its own ancestors (a
        directory hard-link loop) is flagged; each becomes one line in `problems`."""
        fs, path = self.open_location(location)
        entry = fs.stat(path)
        if entry.kind != "dir":
            return Listing(entry, None)
        problems: list[str] = []
        children = fs.listdir(path, onerror=lambda error: problems.append(str(error)))
        for child in children:
            ancestor = fs.loop_target(child.path) if child.kind == "dir" else None
            if ancestor is not None:
                problems.append(f"{fs.where}: {child.path}: this folder is {ancestor} again "
                                f"(a directory hard-link loop); do not descend into it")
        return Listing(entry, children, problems)
