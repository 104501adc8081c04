"""Durable file writes in one place: every caller that needs "all or nothing" calls these."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """Make a rename or unlink inside ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_replacement(path: Path, tmp: Path | None = None) -> Iterator[int]:
    """An fd for the new content of ``path``: on success it is fsynced and renamed over
    ``path`` and the folder fsynced; on failure the temp file is removed. Readers see the
    old file or the whole new one, never a part."""
    tmp = tmp or path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        yield fd
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def write_all(fd: int, data, offset: int | None = None) -> None:
    """Write all of ``data`` (at ``offset`` if given), however short the writes come back."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view) if offset is None else os.pwrite(fd, view, offset)
        view = view[written:]
        if offset is not None:
            offset += written


def write_atomic(path: Path, data: bytes) -> None:
    """Write a small file atomically (temp file, fsync, rename, fsync of the folder)."""
    with atomic_replacement(path) as fd:
        write_all(fd, data)


def remove_durably(path: Path) -> None:
    """Unlink ``path`` (if present) and make the removal durable."""
    try:
        path.unlink()
    except FileNotFoundError:
        return
    fsync_dir(path.parent)
