"""LocalBackend: the Backend protocol (backend.py) on a local folder. Objects are files
created exclusively, never through a link, and replaced atomically (durable.py); a pack
streams to a temp file renamed into place; open folders and files are cached."""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from ...errors import BadInput
from ...lru import LRU
from ..host.durable import (FOLDER_FLAGS, TEMP_TOKEN_HEX_DIGITS, TMP_SUFFIX, atomic_replacement_at,
                            create_exclusive, make_private_folder, make_private_folder_at,
                            open_folder, temp_name, write_all)
from .protocol import ObjectAge, check_object_name, is_access_denied

INDEX_FOLDER = "index"
PACKS_FOLDER = "packs"


def _is_temp_name(name: str) -> bool:
    """A name of durable.temp_name: ``.<final name>.<16 hex>.tmp``."""
    if not (name.startswith(".") and name.endswith(TMP_SUFFIX)):
        return False
    _, _, token = name[1: -len(TMP_SUFFIX)].rpartition(".")
    return len(token) == TEMP_TOKEN_HEX_DIGITS and all(c in "0123456789abcdef" for c in token)


class LocalUpload:
    """A temp file (created like every other file: durable.create_exclusive) renamed into
    place when complete: fsync of the data, rename, fsync of the folder. Unless it may
    ``replace``, it is linked to its name instead, and an existing object stays
    (FileExistsError): how an append-only server completes a client's upload."""

    def __init__(self, folder_fd: int, name: str, replace: bool = True):
        self._folder_fd = folder_fd
        self._name = name
        self._replace = replace
        self._tmp_name = temp_name(name)
        try:
            fd = create_exclusive(folder_fd, self._tmp_name)
        except BaseException:
            os.close(folder_fd)
            raise
        self._file = open(fd, "wb", buffering=1024 * 1024)

    def write(self, data) -> None:
        self._file.write(data)

    def complete(self) -> None:
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            if self._replace:
                os.rename(self._tmp_name, self._name, src_dir_fd=self._folder_fd,
                          dst_dir_fd=self._folder_fd)
            else:
                os.link(self._tmp_name, self._name, src_dir_fd=self._folder_fd,
                        dst_dir_fd=self._folder_fd, follow_symlinks=False)
            os.fsync(self._folder_fd)
        finally:
            self.abort()  # after the rename, only closes the folder; after a link, unlinks

    def abort(self) -> None:
        if self._folder_fd < 0:
            return
        try:
            self._file.close()
        except OSError:
            pass  # closing flushes; a full disk fails here too, and the file goes anyway
        _unlink_if_present(self._folder_fd, self._tmp_name)
        os.close(self._folder_fd)
        self._folder_fd = -1


def _unlink_if_present(folder_fd: int, name: str) -> None:
    try:
        os.unlink(name, dir_fd=folder_fd)
    except FileNotFoundError:
        pass


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
        self._fds: LRU[str, _CachedFd] = LRU(open_files, lambda _, cached: cached.retire())
        self._lock = threading.Lock()

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
        self._forget(name)

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
                _unlink_if_present(folder_fd, tmp)
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
        self._forget(name)
        try:
            with self._folder(name) as (folder_fd, last):
                os.unlink(last, dir_fd=folder_fd)
                os.fsync(folder_fd)
        except FileNotFoundError:
            pass

    def move(self, name: str, new_name: str) -> None:
        self._forget(name)
        with self._folder(name) as (from_fd, last), \
                self._folder(new_name, create=True) as (to_fd, new_last):
            os.rename(last, new_last, src_dir_fd=from_fd, dst_dir_fd=to_fd)
            os.fsync(to_fd)
            os.fsync(from_fd)

    # -- reading ------------------------------------------------------------------------
    def get(self, name: str) -> bytes:
        with self._folder(name) as (folder_fd, last):
            fd = os.open(last, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=folder_fd)
        with open(fd, "rb") as file:
            return file.read()

    def get_range(self, name: str, offset: int, length: int) -> bytes:
        with self._fd(name) as fd:
            return os.pread(fd, length, offset)

    def prefetch(self, name: str, offset: int, length: int) -> None:
        with self._fd(name) as fd:
            os.posix_fadvise(fd, offset, length, os.POSIX_FADV_WILLNEED)

    @contextmanager
    def _fd(self, name: str) -> Iterator[int]:
        """An open descriptor of ``name`` from a small cache (packs are read in many
        ranges). A descriptor evicted or forgotten while another thread reads through it is
        closed by its last user, so a read never lands on a number reused for another file."""
        with self._lock:
            cached = self._fds.get(name)
            if cached is None:
                with self._folder(name) as (folder_fd, last):
                    fd = os.open(last, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC,
                                 dir_fd=folder_fd)
                cached = _CachedFd(fd)
                self._fds.put(name, cached)
            cached.users += 1
        try:
            yield cached.fd
        finally:
            with self._lock:
                cached.users -= 1
                cached.close_if_unused()

    def _forget(self, name: str) -> None:
        """Drop a cached descriptor, so that a replaced or deleted object is reopened."""
        with self._lock:
            cached = self._fds.pop(name)
            if cached is not None:
                cached.retire()

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
        """(name, kind) of every entry under ``prefix``, links never followed: "object" (a
        regular file), "unfinished" (a temp file, durable.temp_name), or "foreign"
        (anything else, and ``name/`` for a folder without a file inside)."""
        folder, _, start = prefix.rpartition("/")
        try:
            fd = self._open_folders(self._parts(folder) if folder else [])
        except (FileNotFoundError, NotADirectoryError):
            return
        yield from self._walk_folder(fd, f"{folder}/" if folder else "", start)

    def _walk_folder(self, fd: int, base: str, start: str = "") -> Iterator[tuple[str, str]]:
        """Entries that vanish while listed (a pack compaction deletes) are left out."""
        try:
            with os.scandir(fd) as entries:
                found = sorted((e.name, _kind(e)) for e in entries if e.name.startswith(start))
            for entry_name, kind in found:
                name = base + entry_name
                if kind == "folder":
                    try:
                        inner_fd = os.open(entry_name, FOLDER_FLAGS, dir_fd=fd)
                    except FileNotFoundError:
                        continue
                    yield from list(self._walk_folder(inner_fd, name + "/")) \
                        or [(name + "/", "foreign")]
                elif kind == "file":
                    yield name, "unfinished" if _is_temp_name(entry_name) else "object"
                elif kind == "other":
                    yield name, "foreign"
        finally:
            os.close(fd)

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
        with self._lock:
            for cached in self._fds.values():
                cached.retire()
            self._fds = LRU(self._fds.capacity, self._fds.on_evict)


class _CachedFd:
    """A cached descriptor and how many reads use it right now."""

    def __init__(self, fd: int):
        self.fd = fd
        self.users = 0
        self.retired = False

    def retire(self) -> None:
        """Out of the cache: close now, or when the last read through it ends."""
        self.retired = True
        self.close_if_unused()

    def close_if_unused(self) -> None:
        if self.retired and self.users == 0 and self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


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


def _kind(entry: os.DirEntry) -> str:
    """"file", "folder", "other" (a link, a device), or "gone" if it vanished meanwhile."""
    try:
        mode = entry.stat(follow_symlinks=False).st_mode
    except FileNotFoundError:
        return "gone"
    return "file" if stat.S_ISREG(mode) else "folder" if stat.S_ISDIR(mode) else "other"

