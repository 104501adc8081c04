"""Snapshot records of an object-store repository kept on this host, beside its index cache,
so that `list` and `info` fetch only the records they have not seen (one LIST, a GET per new
name) instead of every record every time. A record never changes once written (a new
snapshot gets a new random id), so its name is its version. The files hold the bytes exactly
as the bucket gave them -- sealed, in an encrypted repository -- and are decoded and checked
on every read as a fetched record is (format/snapshots.py): the cache saves requests, it is
never trusted.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Iterable
from contextlib import suppress
from pathlib import Path

from .durable import atomic_replacement_at, make_private_folder, open_folder, write_all

log = logging.getLogger(__name__)

_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
MAX_RECORD_BYTES = 64 << 20  # far above any record: a larger file is not one of ours


class RecordCache:
    """``<folder>/<id>.json`` for the record ``snapshots/<id>.json``; files 0600, the
    folder 0700, written atomically, never through a link."""

    def __init__(self, folder: Path, prefix: str):
        self.folder = folder
        self._prefix = prefix

    def create(self) -> "RecordCache":
        """The cache with its folder made (its parents exist: the index cache's)."""
        make_private_folder(self.folder)
        return self

    def get(self, name: str) -> bytes | None:
        """The cached bytes of the record ``name``; None if there are none (or no cache
        yet, or a link, or something too large to be a record, is there)."""
        try:
            with open_folder(self.folder) as folder_fd:
                fd = os.open(self._file(name), _READ_FLAGS, dir_fd=folder_fd)
        except OSError as error:
            if error.errno in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR):
                return None
            raise
        with os.fdopen(fd, "rb") as cached:
            if os.fstat(cached.fileno()).st_size > MAX_RECORD_BYTES:
                return None
            return cached.read()

    def put(self, name: str, data: bytes) -> None:
        """Keep ``data``; a cache that cannot (a full disk, a folder made read-only) costs
        a GET next time, it does not fail the command that read the record."""
        try:
            with open_folder(self.folder) as folder_fd, \
                    atomic_replacement_at(folder_fd, self._file(name)) as fd:
                write_all(fd, data)
        except OSError as error:
            log.debug("snapshot record %s not cached in %s: %s", name, self.folder, error)

    def forget(self, name: str) -> None:
        self._remove({self._file(name)})

    def keep_only(self, names: Iterable[str]) -> None:
        """Drop the records not among ``names`` (the bucket's listing): deleted snapshots
        leave the cache as they leave the repository."""
        listed = {self._file(name) for name in names}
        try:
            with os.scandir(self.folder) as entries:
                gone = {entry.name for entry in entries
                        if entry.name not in listed and not entry.name.startswith(".")}
        except FileNotFoundError:
            return  # the cache folder is gone: nothing to drop
        self._remove(gone)

    def _remove(self, files: set[str]) -> None:
        """Unlink ``files`` (gone already, or with the whole folder: nothing to do)."""
        with suppress(FileNotFoundError), open_folder(self.folder) as folder_fd:
            for file in files:
                with suppress(FileNotFoundError):
                    os.unlink(file, dir_fd=folder_fd)

    def _file(self, name: str) -> str:
        return name[len(self._prefix):]
