"""The filesystem the kernel talks to: fusepy operations over the layout and the images.

Read-only twice over: mounted ``ro`` (the kernel refuses writes itself), and every writing
operation answers EROFS. Paths resolve against a layout re-listed at most every
``LIST_TTL_S``, so snapshots made after mounting appear without a remount. An open file
keeps its reader, so a snapshot deleted while open still reads: the mount's reader lock
keeps compaction from removing the packs under it. Paths below ``<image>.files`` (the
files inside the image's filesystems) are answered by files.py, imported with the first
such path: the mount goes up, and its images read, without loading the filesystem parsers.
"""

from __future__ import annotations

import errno
import itertools
import logging
import os
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from mfusepy import FuseOSError, Operations

from ..errors import CorruptData
from ..store.format.snapshots import SnapshotRecord
from ..store.read.reader import ImageReader
from ..store.repository import Repository
from .images import ImageCatalogue
from .layout import (ROOT, Folder, InsideFiles, Link, MountNames, Node, SnapshotFile,
                     SnapshotFolder, assign_names, files_folder_name, find_inside, layout_all,
                     layout_one, snapshot_files, time_ns)
from .listing import SnapshotListing

log = logging.getLogger(__name__)

LIST_TTL_S = 1.0
BLOCK_BYTES = 512  # st_blocks unit


@dataclass(frozen=True)
class OpenFile:
    """An open image or partition: its reader and its window of the image."""

    file: SnapshotFile
    reader: ImageReader

    @property
    def size(self) -> int:
        return self.file.size

    def seek_data(self, offset: int) -> int:
        """SEEK_DATA in the file's window: ``size`` if only zero runs follow."""
        start = self.file.offset
        return self.reader.seek_data(start + offset, start + self.file.size) - start

    def seek_hole(self, offset: int) -> int:
        """SEEK_HOLE in the file's window: ``size`` if only data follows."""
        start = self.file.offset
        return self.reader.seek_hole(start + offset, start + self.file.size) - start


class SnapshotFilesystem(Operations):
    """All snapshots by series and time (``record`` None), or one snapshot at the root."""

    use_ns = True  # times in nanoseconds, as mfusepy asks

    def __init__(self, repository: Repository, record: SnapshotRecord | None,
                 catalogue: ImageCatalogue, on_ready: Callable[[], None] = lambda: None,
                 share_images: bool = False):
        self._catalogue = catalogue
        self._on_ready = on_ready
        # The mount's own files and folders belong to the user who mounted it; the images
        # hold every file of the disk whatever its mode, so only that user may read them
        # unless the mount shares them on purpose (--share-images).
        self._owner = {"st_uid": os.geteuid(), "st_gid": os.getegid()}
        self._image_mode = 0o444 if share_images else 0o400
        self._listing = None if record else SnapshotListing(repository)
        self._mounted_ns = time.time_ns()
        self._nodes = layout_one(record) if record else {}
        self._names = MountNames()
        self._listed_at = -LIST_TTL_S
        self._open: dict[int, object] = {}  # OpenFile, or OpenInside (loaded on use)
        self._repository = repository
        self._share_images = share_images
        self._files_view = None  # a files.FilesView, made on first use
        self._handles = itertools.count(1)
        self._lock = threading.Lock()

    @property
    def _inside(self):
        """The files inside the images (``<image>.files``), made on first use: it loads
        the filesystem parsers, which the mount does not wait for and reading an image
        itself never needs."""
        with self._lock:
            if self._files_view is None:
                from .files import FilesView

                self._files_view = FilesView(self._repository, self._snapshot_folder_attributes,
                                             self._owner, self._share_images)
            return self._files_view

    def init(self, path) -> None:
        threading.Thread(target=self._find_partitions_early, name="partitions",
                         daemon=True).start()
        self._on_ready()

    def _find_partitions_early(self) -> None:
        """Find the partitions of the snapshots most likely opened first (each series'
        latest) and their data bytes, so the first `ls` or loop mount does not wait for the
        parser to load or the manifest to be read."""
        nodes = self._current_nodes()
        if self._listing is None:
            latest = [nodes[ROOT].record]
        else:
            latest = [nodes[f"{path.rpartition('/')[0]}/{node.target}"].record
                      for path, node in nodes.items() if isinstance(node, Link)]
        for record in latest:
            for partition in self._catalogue.partitions(record):
                self._catalogue.data_bytes(record, partition)

    # -- the tree ----------------------------------------------------------------------
    def _current_nodes(self) -> dict[str, Node]:
        if self._listing is None:
            return self._nodes
        with self._lock:
            now = time.monotonic()
            if now - self._listed_at >= LIST_TTL_S:
                records = self._listing.current()
                self._names = assign_names(records, self._names)
                self._nodes = layout_all(records, self._mounted_ns, self._names)
                self._listed_at = now
            return self._nodes

    def _files(self, record: SnapshotRecord) -> dict[str, SnapshotFile]:
        return snapshot_files(record, self._catalogue.partitions(record))

    def _resolve(self, path: str) -> Node | SnapshotFile | InsideFiles:
        nodes = self._current_nodes()
        node = nodes.get(path)
        if node is not None:
            return node
        parent, _, name = path.rpartition("/")
        folder = nodes.get(parent or ROOT)
        if isinstance(folder, SnapshotFolder):
            file = self._files(folder.record).get(name)
            if file is not None:
                return file
        inside = find_inside(nodes, path)
        if inside is not None:
            return inside
        raise FuseOSError(errno.ENOENT)

    def getattr(self, path, fh=None) -> dict:
        opened = self._open.get(fh) if fh else None
        # An open file answers for itself: its snapshot may have been deleted since.
        if opened is not None and not isinstance(opened, OpenFile):
            return self._inside.open_attributes(opened)
        node = opened.file if opened else self._resolve(path)
        if isinstance(node, InsideFiles):
            return self._inside.getattr(node)
        if isinstance(node, SnapshotFile):
            data_bytes = self._catalogue.data_bytes(node.record, node.partition)
            return self._attributes(stat.S_IFREG | self._image_mode, node.size,
                                    time_ns(node.record), st_blocks=-(-data_bytes // BLOCK_BYTES))
        if isinstance(node, Link):
            return self._attributes(stat.S_IFLNK | 0o777, len(node.target), node.time_ns)
        if isinstance(node, SnapshotFolder):
            return self._snapshot_folder_attributes(node.record)
        return self._attributes(stat.S_IFDIR | 0o555, 0, node.time_ns, st_nlink=2)

    def _snapshot_folder_attributes(self, record: SnapshotRecord) -> dict:
        """A snapshot's folder, and the mount's own folders below it (``<image>.files``)."""
        return self._attributes(stat.S_IFDIR | 0o555, 0, time_ns(record), st_nlink=2)

    def _attributes(self, mode: int, size: int, when_ns: int, **more) -> dict:
        return {"st_mode": mode, "st_nlink": 1, "st_size": size, "st_atime": when_ns,
                "st_mtime": when_ns, "st_ctime": when_ns, **self._owner, **more}

    def readdir(self, path, fh) -> list[str]:
        node = self._resolve(path)
        if isinstance(node, Folder):
            return [".", "..", *node.names]
        if isinstance(node, SnapshotFolder):
            return [".", "..", *self._files(node.record), files_folder_name(node.record)]
        if isinstance(node, InsideFiles):
            return [".", "..", *self._inside.readdir(node)]
        raise FuseOSError(errno.ENOTDIR)

    def readlink(self, path) -> str:
        node = self._resolve(path)
        if isinstance(node, InsideFiles):
            return self._inside.readlink(node)
        if not isinstance(node, Link):
            raise FuseOSError(errno.EINVAL)
        return node.target

    def statfs(self, path) -> dict:
        return {"f_bsize": 4096, "f_frsize": 4096, "f_namemax": 255}

    # -- files -------------------------------------------------------------------------
    def open(self, path, flags) -> int:
        if flags & os.O_ACCMODE != os.O_RDONLY:
            raise FuseOSError(errno.EROFS)
        node = self._resolve(path)
        if isinstance(node, InsideFiles):
            opened = self._inside.open(node)
        elif isinstance(node, SnapshotFile):
            opened = OpenFile(node, self._catalogue.acquire(node.record))
        else:
            raise FuseOSError(errno.EISDIR)
        with self._lock:
            handle = next(self._handles)
            self._open[handle] = opened
        return handle

    def read(self, path, size, offset, fh) -> bytes:
        opened = self._open[fh]
        if not isinstance(opened, OpenFile):
            return self._inside.read(opened, size, offset)
        length = min(size, opened.file.size - offset)
        if length <= 0:
            return b""
        try:
            return opened.reader.read(opened.file.offset + offset, length)
        except CorruptData as error:
            log.error("read of %d bytes at offset %d of %s failed (EIO): %s", length, offset,
                      path, error)
            raise FuseOSError(errno.EIO) from None

    def lseek(self, path, offset, whence, fh) -> int:
        """SEEK_DATA and SEEK_HOLE (the kernel answers the other kinds itself): an image's
        holes are its zero runs, known from the manifest; a file inside an image has the
        holes its filesystem records. So `cp` copies a sparse file without reading its holes."""
        opened = self._open[fh]
        # Both kinds of open file answer seek_data, seek_hole and size in their own bytes.
        seeker = opened if isinstance(opened, OpenFile) else opened.reader
        if whence not in (os.SEEK_DATA, os.SEEK_HOLE):
            raise FuseOSError(errno.EINVAL)
        if not 0 <= offset < seeker.size:
            raise FuseOSError(errno.ENXIO)
        try:
            if whence == os.SEEK_HOLE:
                return seeker.seek_hole(offset)
            found = seeker.seek_data(offset)
        except CorruptData as error:
            log.error("lseek to offset %d of %s failed (EIO): %s", offset, path, error)
            raise FuseOSError(errno.EIO) from None
        if found >= seeker.size:
            raise FuseOSError(errno.ENXIO)  # only a hole follows
        return found

    def release(self, path, fh) -> None:
        with self._lock:
            opened = self._open.pop(fh)
        if isinstance(opened, OpenFile):
            self._catalogue.release(opened.file.record)
        else:
            opened.reader.close()

    def utimens(self, path, times=None):
        raise FuseOSError(errno.EROFS)  # mfusepy's default would pretend it worked
