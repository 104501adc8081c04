"""LocalBackend: the Backend protocol (backend.py) on a local folder. Objects are files
created exclusively, never through a link, and replaced atomically (durable.py); a pack
streams to a temp file renamed into place (local_upload.py); open files are cached
(open_files.py); listings tell objects from temp files and foreign entries (local_listing.py)."""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from ...errors import BadInput
from ..host.durable import (FOLDER_FLAGS, atomic_replacement_at, create_exclusive,
                            make_private_folder, make_private_folder_at, open_folder, temp_name,
                            write_all)
from .local_listing import walk_folder
from .local_upload import LocalUpload, unlink_if_present
from .open_files import OpenFiles
from .protocol import ObjectAge, check_object_name, is_access_denied

INDEX_FOLDER = "index"
PACKS_FOLDER = "packs"


class LocalBackend:
    """The repository as a local folder: objects are files 0600 in folders 0700, each
    created exclusively and never through a link (durable.py); names are paths under
    ``root`` (resolved once by the opener; inside it nothing is followed)."""

    uploads_in_flight = 1  # fsyncs of one disk queue anyway; a pack streams to a temp file
    read_gap_bytes = 64 * 1024  # a seek costs little
    read_window_bytes = 0  # a pread is cheap, and the kernel reads ahead by itself
    reads_in_flight = None  # a disk: one worker per core
    index_is_cache = False  # the index is the repository's own, in its folder
    object_lock = None  # a folder has no S3 Object Lock

    def __init__(self, root: Path, open_files: int = 64):
        self.root = Path(root)
        self.location = str(root)
        self.place = f"file://{self.root}"
        self._fds = OpenFiles(open_files)

    @classmethod
    def create(cls, root: Path, folders: Sequence[str]) -> "LocalBackend":
        """A new repository's folder and its top ``folders``, each 0700; the root resolved
        once (the user may name it through a link), inside it nothing is followed."""
        root.parent.mkdir(parents=True, exist_ok=True)
        root = root.resolve()
        make_private_folder(root)  # an empty folder made by the user keeps its mode
        for folder in folders:
            make_private_folder(root / folder)
        return cls(root)

    # -- what this place is --------------------------------------------------------------
    def index_folder(self, repository_id: str) -> Path:
        return self.root / INDEX_FOLDER

    def disk_folders(self) -> list[Path]:
        """The root, and the packs' folder (which may be a mount of its own)."""
        return [self.root, self.root / PACKS_FOLDER]

    def contains(self, path: Path) -> bool:
        """Reached through any symbolic link or bind mount: the real path is under the
        root's, or one of its folders is the root folder itself (same device and inode)."""
        root = os.stat(self.root)
        absolute = Path(os.path.abspath(path))
        real = Path(os.path.realpath(absolute))
        if real == self.root or self.root in real.parents:
            return True
        for folder in {*absolute.parents, *real.parents, absolute, real}:
            try:
                status = os.stat(folder)
            except OSError:
                continue
            if (status.st_dev, status.st_ino) == (root.st_dev, root.st_ino):
                return True
        return False

    def requests_made(self) -> None:
        return None  # a file read or write costs nothing to count

    # -- names --------------------------------------------------------------------------
    def _parts(self, name: str) -> list[str]:
        return check_object_name(name)

    @contextmanager
    def _folder(self, name: str, create: bool = False) -> Iterator[tuple[int, str]]:
        """A descriptor of the folder holding ``name`` (made 0700 if ``create``) and the
        object's last name part."""
        *folders, last = self._parts(name)
        fd = self._open_folders(folders, create)
        try:
            yield fd, last
        finally:
            os.close(fd)

    def _open_folders(self, folders: list[str], create: bool = False) -> int:
        """The folder ``root/folders...`` opened link by link, none followed."""
        fd = os.open(self.root, FOLDER_FLAGS)
        try:
            for folder in folders:
                if create:
                    make_private_folder_at(fd, folder)
                inner = os.open(folder, FOLDER_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = inner
        except BaseException:
            os.close(fd)
            raise
        return fd

    # -- writing ------------------------------------------------------------------------
    def put(self, name: str, data: bytes) -> None:
        with self._folder(name, create=True) as (folder_fd, last), \
                atomic_replacement_at(folder_fd, last) as fd:
            write_all(fd, data)
        self._fds.forget(name)

    def put_if_absent(self, name: str, data: bytes, reuse: str | None = None) -> bool:
        """A written and fsynced temp file linked to ``name`` (link fails if it exists), so
        no one ever sees it partial. A temp file that lost the race becomes ``reuse``."""
        with self._folder(name, create=True) as (folder_fd, last):
            tmp = temp_name(last)
            try:
                fd = self._recycled(folder_fd, reuse, tmp)
                try:
                    write_all(fd, data, 0)
                    os.ftruncate(fd, len(data))
                    os.fsync(fd)
                finally:
                    os.close(fd)
                os.link(tmp, last, src_dir_fd=folder_fd, dst_dir_fd=folder_fd,
                        follow_symlinks=False)
            except FileExistsError:
                if reuse is not None:
                    os.rename(tmp, reuse, src_dir_fd=folder_fd, dst_dir_fd=folder_fd)
                return False
            finally:
                unlink_if_present(folder_fd, tmp)
            os.fsync(folder_fd)
        return True

    def _recycled(self, folder_fd: int, reuse: str | None, tmp: str) -> int:
        """``reuse`` (a name in the same folder) renamed to ``tmp`` and opened for writing,
        or a new file if there is none."""
        if reuse is None:
            return create_exclusive(folder_fd, tmp)
        if "/" in reuse:
            raise ValueError(f"{reuse!r} must be in the folder of the object it serves")
        try:
            os.rename(reuse, tmp, src_dir_fd=folder_fd, dst_dir_fd=folder_fd)
        except FileNotFoundError:
            return create_exclusive(folder_fd, tmp)
        return os.open(tmp, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=folder_fd)

    def open_upload(self, name: str, replace: bool = True) -> LocalUpload:
        with self._folder(name, create=True) as (folder_fd, last):
            return LocalUpload(os.dup(folder_fd), last, replace)

    def delete(self, name: str) -> None:
        self._fds.forget(name)
        try:
            with self._folder(name) as (folder_fd, last):
                os.unlink(last, dir_fd=folder_fd)
                os.fsync(folder_fd)
        except FileNotFoundError:
            pass

    def move(self, name: str, new_name: str) -> None:
        self._fds.forget(name)
        with self._folder(name) as (from_fd, last), \
                self._folder(new_name, create=True) as (to_fd, new_last):
            os.rename(last, new_last, src_dir_fd=from_fd, dst_dir_fd=to_fd)
            os.fsync(to_fd)
            os.fsync(from_fd)

    # -- reading ------------------------------------------------------------------------
    def get(self, name: str) -> bytes:
        with open(self._open_for_reading(name), "rb") as file:
            return file.read()

    def get_range(self, name: str, offset: int, length: int) -> bytes:
        with self._fd(name) as fd:
            return os.pread(fd, length, offset)

    def prefetch(self, name: str, offset: int, length: int) -> None:
        with self._fd(name) as fd:
            os.posix_fadvise(fd, offset, length, os.POSIX_FADV_WILLNEED)

    def _fd(self, name: str) -> AbstractContextManager[int]:
        """An open descriptor of ``name``, from the cache (packs are read in many ranges)."""
        return self._fds.using(name, lambda: self._open_for_reading(name))

    def _open_for_reading(self, name: str) -> int:
        with self._folder(name) as (folder_fd, last):
            return os.open(last, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=folder_fd)

    def stat(self, name: str) -> int | None:
        try:
            with self._folder(name) as (folder_fd, last):
                status = os.stat(last, dir_fd=folder_fd, follow_symlinks=False)
        except (FileNotFoundError, NotADirectoryError):
            return None
        return status.st_size if stat.S_ISREG(status.st_mode) else None

    def age(self, name: str) -> ObjectAge | None:
        try:
            with self._folder(name) as (folder_fd, last):
                modified = os.stat(last, dir_fd=folder_fd, follow_symlinks=False).st_mtime
                now = _storage_now(folder_fd)
        except (FileNotFoundError, NotADirectoryError):
            return None
        return ObjectAge(max(0.0, now - modified), time.time() - now)

    # -- listing ------------------------------------------------------------------------
    def list(self, prefix: str) -> list[str]:
        return sorted(name for name, kind in self._walk(prefix) if kind == "object")

    def list_foreign(self, prefix: str) -> list[str]:
        return sorted(name for name, kind in self._walk(prefix) if kind == "foreign")

    def list_unfinished(self, prefix: str) -> list[str]:
        return sorted(name for name, kind in self._walk(prefix) if kind == "unfinished")

    def discard_unfinished(self, prefix: str) -> None:
        for name in self.list_unfinished(prefix):
            self.delete(name)

    def _walk(self, prefix: str) -> Iterator[tuple[str, str]]:
        """(name, kind) of every entry under ``prefix`` (local_listing.walk_folder)."""
        folder, _, start = prefix.rpartition("/")
        try:
            fd = self._open_folders(self._parts(folder) if folder else [])
        except (FileNotFoundError, NotADirectoryError):
            return
        yield from walk_folder(fd, f"{folder}/" if folder else "", start)

    # -- the rest -----------------------------------------------------------------------
    def use_object_lock(self, settings, retained, verify: bool = False) -> None:
        raise BadInput(f"{self.location} is a folder: Object Lock needs an S3 bucket made "
                       f"with it (s3://BUCKET/PREFIX); for a folder, see append-only in "
                       f"docs/threat-model.md")

    def read_only_reason(self) -> str | None:
        if os.statvfs(self.root).f_flag & os.ST_RDONLY:
            return "it is on a read-only filesystem"
        folders = [self.root, *(path for path in sorted(self.root.iterdir())
                                if path.is_dir() and not path.is_symlink())]
        denied = [path for path in folders if not os.access(path, os.W_OK)]
        return f"this user may not write {denied[0]}" if denied else None

    @contextmanager
    def host_mutex(self) -> Iterator[None]:
        """An flock of the repository folder: needs no file, and no write access."""
        with open_folder(self.root) as fd:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield  # closing the folder releases the flock

    def close(self) -> None:
        self._fds.close()


def _storage_now(folder_fd: int) -> float:
    """The storage's clock: the modification time the filesystem gives a new file in the
    folder (the kernel's clock, or a file server's), which a faked or skewed clock of this
    process does not change; this host's clock where no file can be made."""
    probe = temp_name("clock")
    try:
        fd = create_exclusive(folder_fd, probe)
    except OSError as error:
        if is_access_denied(error) or error.errno in (errno.ENOSPC, errno.EDQUOT):
            return time.time()
        raise
    try:
        return os.fstat(fd).st_mtime
    finally:
        os.close(fd)
        os.unlink(probe, dir_fd=folder_fd)
