"""The mount's ``<image>.files/`` folders: the files inside a snapshot's filesystems, read
through the store's filesystem readers (store/read/browse.py), with no loop device and no root.

``<image>.files/`` is the filesystem's root for an image without a partition table or LVM2;
otherwise it holds one folder per partition (``p1``, ``p2`` ...) and per LVM2 logical volume
(``<vg>-<lv>``, named as /dev/mapper names them: a '-' inside a name is doubled). These
folders are the mount's own (mode 0555, like the snapshot folders); everything below them
shows the image's own modes, owners, times and symlinks. A volume without a known filesystem
is an empty folder (the log says what it holds); a damaged filesystem answers EIO for the paths
it cannot read, and every other path keeps working.

Filesystems are opened on first access and kept, for the last few snapshots browsed.
"""

from __future__ import annotations

import errno
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from mfusepy import FuseOSError

from ..errors import (BadInput, DiskvaultError, IsADirectory, NotADirectory, PathNotFound,
                      UnknownFilesystem)
from ..image.file_reader import FileReader
from ..image.filesystems import Entry, Filesystem, name_is_plain
from ..lru import LRU
from ..store.format.snapshots import SnapshotRecord
from ..store.read.browse import SnapshotFiles, Volume
from ..store.repository import Repository
from .layout import NAME_MAX_BYTES, InsideFiles, volume_folder

log = logging.getLogger(__name__)

KEPT_SNAPSHOTS = 4
# Per browsed snapshot: filesystem metadata and small files; big files stream through it.
CHUNK_CACHE_BYTES = 16 * 1024 * 1024
BLOCK_BYTES = 512
# Files above this size are opened by getattr to count their holes (st_blocks).
SPARSE_CHECK_BYTES = 1024 * 1024


@dataclass
class OpenInside:
    """An open file inside a snapshot's filesystem; one lock, since seek + read is two steps."""

    entry: Entry
    reader: FileReader
    lock: threading.Lock


def error_number(error: DiskvaultError) -> int:
    """The errno a path's error becomes: damage and unreadable chunks are EIO."""
    for kind, number in ((PathNotFound, errno.ENOENT), (NotADirectory, errno.ENOTDIR),
                         (IsADirectory, errno.EISDIR), (BadInput, errno.EINVAL)):
        if isinstance(error, kind):
            return number
    return errno.EIO


class FilesView:
    """getattr, readdir, readlink, open and read below ``<image>.files``; thread-safe."""

    def __init__(self, repository: Repository, own_folder: Callable[[SnapshotRecord], dict],
                 owner: dict, share_unowned: bool = False):
        self._repository = repository
        self._own_folder = own_folder  # the attributes of the mount's own folders
        self._owner = owner  # for filesystems without owners (FAT, exFAT, NTFS)
        # Those record no owners (NTFS keeps ACLs, which are not shown): their files are
        # the mounting user's alone, unless the mount shares them with --share-images.
        self._unowned_hidden_bits = 0 if share_unowned else 0o077
        # Older snapshots' files are dropped: their open files keep what they need alive.
        self._kept: LRU[str, SnapshotFiles] = LRU(KEPT_SNAPSHOTS)
        self._reported: set[tuple[str, Volume]] = set()
        self._lock = threading.Lock()

    def getattr(self, node: InsideFiles) -> dict:
        files, fs, entry = self._entry(node)
        if entry is None:
            return self._own_folder(files.record)
        if entry.kind == "dir":
            self._refuse_loop(files, fs, entry.path)
        return self.attributes(entry, self._data_bytes(files, fs, entry))

    def attributes(self, entry: Entry, data_bytes: int | None = None) -> dict:
        """``data_bytes``: the bytes that are not holes (st_blocks), when known."""
        size = len(entry.symlink_target.encode(errors="surrogateescape")) \
            if entry.kind == "symlink" else entry.size
        # st_nlink 1 for folders too: it tells `find` that subfolders are not counted.
        mode = entry.mode & ~self._unowned_hidden_bits if entry.uid is None else entry.mode
        return {"st_mode": mode, "st_nlink": 1, "st_size": size,
                "st_blocks": -(-(size if data_bytes is None else data_bytes) // BLOCK_BYTES),
                "st_mtime": entry.mtime_ns, "st_atime": entry.atime_ns,
                "st_ctime": entry.ctime_ns,
                "st_uid": self._owner["st_uid"] if entry.uid is None else entry.uid,
                "st_gid": self._owner["st_gid"] if entry.gid is None else entry.gid}

    def open_attributes(self, opened: OpenInside) -> dict:
        """An open file answers for itself: its snapshot may have been deleted since."""
        return self.attributes(opened.entry, data_bytes(opened.reader))

    def _data_bytes(self, files: SnapshotFiles, fs: Filesystem, entry: Entry) -> int | None:
        """A big file's bytes less its holes, so that `cp` sees it is sparse and writes holes
        (it then asks where the holes are: lseek); small files are not opened for it."""
        if entry.kind != "file" or entry.size <= SPARSE_CHECK_BYTES:
            return None
        try:
            reader = fs.open(entry.path)
        except DiskvaultError as error:
            raise self._failed(files, entry.path, error) from None
        with reader:
            return data_bytes(reader)

    def _refuse_loop(self, files: SnapshotFiles, fs: Filesystem, path: str) -> None:
        """A folder that is also one of its own ancestors (a hard-linked directory in a
        hostile image) would make the tree endless for `find` and `cp -r`: it is ELOOP."""
        try:
            ancestor = fs.loop_target(path)
        except DiskvaultError as error:
            raise self._failed(files, path, error) from None
        if ancestor is not None:
            log.error("snapshot %s (%s, %s): %s is the folder %s again (a loop in the "
                      "filesystem); it answers ELOOP", files.record.short_id,
                      files.record.name, files.record.time_label, path, ancestor)
            raise FuseOSError(errno.ELOOP)

    def readdir(self, node: InsideFiles) -> list[str]:
        files, volume, path = self._locate(node)
        if path is None:
            return [volume_folder(v) for v in files.volumes()]
        fs = self._filesystem(files, volume, path)
        if fs is None:
            return []
        try:
            entries = fs.listdir(path)
        except DiskvaultError as error:
            raise self._failed(files, path, error) from None
        return [e.name for e in entries if shown(e.name)]

    def readlink(self, node: InsideFiles) -> str:
        files, _, entry = self._entry(node)
        if entry is None or entry.kind != "symlink":
            raise FuseOSError(errno.EINVAL)
        if not encodes_as_utf8(entry.symlink_target):  # the mount hands the kernel UTF-8 only
            log.error("snapshot %s: the symlink %s points to a name that is not UTF-8, which "
                      "this mount cannot return (EIO); diskvault pull restores it as it is",
                      files.record.short_id, entry.path)
            raise FuseOSError(errno.EIO)
        return entry.symlink_target

    def open(self, node: InsideFiles) -> OpenInside:
        files, volume, path = self._locate(node)
        if path in (None, "/"):
            raise FuseOSError(errno.EISDIR)
        fs = self._filesystem(files, volume, path)
        if fs is None:
            raise FuseOSError(errno.ENOENT)
        try:
            reader = fs.open(path)  # IsADirectory for a folder: EISDIR
        except DiskvaultError as error:
            raise self._failed(files, path, error) from None
        return OpenInside(reader.entry, reader, threading.Lock())

    def read(self, opened: OpenInside, size: int, offset: int) -> bytes:
        with opened.lock:
            try:
                opened.reader.seek(offset)
                return opened.reader.read(size)
            except DiskvaultError as error:
                log.error("read of %d bytes at offset %d of %s failed (EIO): %s", size, offset,
                          opened.entry.path, error)
                raise FuseOSError(errno.EIO) from None

    # -- from a mount path to a filesystem and a path in it --------------------------------
    def _files(self, record: SnapshotRecord) -> SnapshotFiles:
        with self._lock:
            files = self._kept.get(record.id)
            if files is None:
                files = self._repository.browse(record, chunk_cache_bytes=CHUNK_CACHE_BYTES)
                self._kept.put(record.id, files)
            return files

    def _locate(self, node: InsideFiles) -> tuple[SnapshotFiles, Volume, str | None]:
        """(snapshot files, volume, path in its filesystem); path None: the folder listing
        the volumes."""
        files = self._files(node.record)
        volumes = files.volumes()
        if volumes == [None]:
            return files, None, "/" + "/".join(node.parts)
        if not node.parts:
            return files, None, None
        for volume in volumes:
            if volume_folder(volume) == node.parts[0]:
                return files, volume, "/" + "/".join(node.parts[1:])
        raise FuseOSError(errno.ENOENT)

    def _entry(self, node: InsideFiles) -> tuple[SnapshotFiles, Filesystem | None, Entry | None]:
        """The entry at a node and its filesystem, a final symlink not followed; no entry for
        the mount's own folders (the volumes' folder, a volume's root)."""
        files, volume, path = self._locate(node)
        if path in (None, "/"):  # needs no filesystem opened: `ls -l <image>.files` reads none
            return files, None, None
        fs = self._filesystem(files, volume, path)
        if fs is None:  # nothing below the empty folder of a volume without a filesystem
            raise FuseOSError(errno.ENOENT)
        try:
            return files, fs, fs.stat(path)
        except DiskvaultError as error:
            raise self._failed(files, path, error) from None

    def _filesystem(self, files: SnapshotFiles, volume: Volume, path: str) -> Filesystem | None:
        """The volume's filesystem; None if it holds none this reader knows (an empty folder)."""
        try:
            return files.filesystem(volume)
        except UnknownFilesystem as error:
            if (files.record.id, volume) not in self._reported:
                self._reported.add((files.record.id, volume))
                log.info("snapshot %s: shown as an empty folder: %s", files.record.short_id,
                         error)
            return None
        except DiskvaultError as error:
            raise self._failed(files, path, error) from None

    def _failed(self, files: SnapshotFiles, path: str, error: DiskvaultError) -> FuseOSError:
        """The error for the kernel; damage is logged, naming the snapshot and the path."""
        number = error_number(error)
        if number == errno.EIO:
            log.error("snapshot %s (%s, %s): %s failed (EIO): %s", files.record.short_id,
                      files.record.name, files.record.time_label, path, error)
        return FuseOSError(number)


def data_bytes(reader: FileReader) -> int | None:
    """What st_blocks counts for a file, when worth knowing: its bytes less its holes."""
    return reader.data_bytes() if reader.size > SPARSE_CHECK_BYTES else None


def encodes_as_utf8(text: str) -> bool:
    """Whether ``text`` is UTF-8, the only names and targets the mount hands the kernel."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def shown(name: str) -> bool:
    """Whether a name from the image can be one entry of a FUSE folder: a plain component
    that encodes as UTF-8 (the paths the kernel sends back are decoded as UTF-8) in at most
    the 255 bytes the kernel looks up (NTFS allows 255 UTF-16 units: up to 765 bytes)."""
    return (encodes_as_utf8(name) and len(name.encode("utf-8")) <= NAME_MAX_BYTES
            and name_is_plain(name))
