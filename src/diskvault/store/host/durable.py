"""Durable file writes in one place: every caller that needs "all or nothing" calls these.

Every file diskvault creates is created here or with ``create_exclusive``: exclusively
(``O_EXCL``), never through a symbolic link (``O_NOFOLLOW``), under a random temp name,
relative to a descriptor of its folder (opened without following a link either). So a link
planted by another user who can write the folder makes the write fail; it never makes
diskvault write to the file the link points at.
"""

from __future__ import annotations

import os
import re
import secrets
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PRIVATE_FILE_MODE = 0o600
PRIVATE_FOLDER_MODE = 0o700
TMP_SUFFIX = ".tmp"
TEMP_TOKEN_HEX_DIGITS = 16
FOLDER_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


@contextmanager
def open_folder(path: Path) -> Iterator[int]:
    """A descriptor of the folder ``path`` (not of what a link there points at)."""
    fd = os.open(path, FOLDER_FLAGS)
    try:
        yield fd
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Make a rename or unlink inside ``path`` durable."""
    with open_folder(path) as fd:
        os.fsync(fd)


def temp_name(name: str) -> str:
    """A hidden, unpredictable temp name next to ``name``: nobody can plant it in advance."""
    return f".{name}.{secrets.token_hex(TEMP_TOKEN_HEX_DIGITS // 2)}{TMP_SUFFIX}"


def create_exclusive(folder_fd: int, name: str, mode: int = PRIVATE_FILE_MODE) -> int:
    """Create the new file ``name`` in the folder, write-only; fails if anything (a file, a
    link) is there. ``mode`` is set exactly, whatever the umask."""
    fd = os.open(name, _NEW_FILE_FLAGS, mode, dir_fd=folder_fd)
    try:
        os.fchmod(fd, mode)
    except BaseException:
        os.close(fd)
        os.unlink(name, dir_fd=folder_fd)
        raise
    return fd


def make_private_folder(path: Path) -> None:
    """mkdir ``path`` 0700 whatever the umask (nothing if it is already a folder; a link
    there is refused)."""
    parent_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        make_private_folder_at(parent_fd, path.name)
    finally:
        os.close(parent_fd)


def make_private_folder_at(parent_fd: int, name: str) -> None:
    """make_private_folder of ``name`` in the folder open as ``parent_fd``."""
    try:
        os.mkdir(name, PRIVATE_FOLDER_MODE, dir_fd=parent_fd)
    except FileExistsError:
        if not stat.S_ISDIR(os.stat(name, dir_fd=parent_fd, follow_symlinks=False).st_mode):
            raise
        return
    fd = os.open(name, FOLDER_FLAGS, dir_fd=parent_fd)
    try:
        os.fchmod(fd, PRIVATE_FOLDER_MODE)
    finally:
        os.close(fd)


@contextmanager
def atomic_replacement(path: Path, mode: int = PRIVATE_FILE_MODE) -> Iterator[int]:
    """An fd for the new content of ``path``: on success it is fsynced and renamed over
    ``path`` and the folder fsynced; on failure the temp file is removed. Readers see the
    old file or the whole new one, never a part. A link at ``path`` is replaced itself,
    never written through."""
    with open_folder(path.parent) as folder_fd, \
            atomic_replacement_at(folder_fd, path.name, mode) as fd:
        yield fd


@contextmanager
def atomic_replacement_at(folder_fd: int, name: str,
                          mode: int = PRIVATE_FILE_MODE) -> Iterator[int]:
    """atomic_replacement of ``name`` in the folder open as ``folder_fd``."""
    tmp = temp_name(name)
    fd = create_exclusive(folder_fd, tmp, mode)
    try:
        yield fd
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(tmp, dir_fd=folder_fd)
        raise
    os.close(fd)
    try:
        os.replace(tmp, name, src_dir_fd=folder_fd, dst_dir_fd=folder_fd)
    except BaseException:
        os.unlink(tmp, dir_fd=folder_fd)
        raise
    os.fsync(folder_fd)


def remove_leftover_temps(path: Path) -> None:
    """Remove the temp files that killed replacements of ``path`` left (only this user's
    regular files; unlink never follows a link)."""
    leftover = re.compile(rf"\.{re.escape(path.name)}\.[0-9a-f]{{16}}{re.escape(TMP_SUFFIX)}")
    with open_folder(path.parent) as folder_fd:
        for entry in os.scandir(folder_fd):
            if leftover.fullmatch(entry.name) and entry.is_file(follow_symlinks=False) \
                    and entry.stat(follow_symlinks=False).st_uid == os.geteuid():
                try:
                    os.unlink(entry.name, dir_fd=folder_fd)
                except FileNotFoundError:
                    pass


def write_all(fd: int, data, offset: int | None = None) -> None:
    """Write all of ``data`` (at ``offset`` if given), however short the writes come back."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view) if offset is None else os.pwrite(fd, view, offset)
        view = view[written:]
        if offset is not None:
            offset += written

