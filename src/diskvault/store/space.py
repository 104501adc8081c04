"""A full disk: told apart from other I/O errors, reported as RepositoryFull (exit 74), and
survived by the commands that give space back.

Deleting snapshots needs no free byte (unlinks and renames, and the writer lock reuses its
own file). Compacting and repairing do: LMDB writes new pages before it frees old ones. So
every repository keeps ``reserve``, a file of RESERVE_BYTES allocated at init; compact and
repair release it when the disk is (nearly) full, and compact allocates it again once it has
given space back.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import lmdb

from .durable import create_exclusive, open_folder
from ..errors import RepositoryFull

log = logging.getLogger(__name__)

RESERVE_FILE = "reserve"
RESERVE_BYTES = 4 * 1024 * 1024
LOW_SPACE_BYTES = 1024 * 1024


def free_bytes(path: Path) -> int:
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


def is_disk_full(error: BaseException, folders: list[Path]) -> bool:
    """ENOSPC, or an I/O error while one of the repository's filesystems is (nearly) full:
    LMDB reports a short write as EIO."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    if isinstance(error, lmdb.Error) or (isinstance(error, OSError) and error.errno == errno.EIO):
        try:
            return min(free_bytes(folder) for folder in folders) < LOW_SPACE_BYTES
        except OSError:
            return False
    return False


@contextmanager
def disk_full_reported(folders: list[Path], outcome: str) -> Iterator[None]:
    """Turn a full disk under ``folders`` into RepositoryFull, whose message ends with
    ``outcome`` (what became of the command's work, and what to do next)."""
    try:
        yield
    except RepositoryFull:
        raise
    except BaseException as error:
        if is_disk_full(error, folders):
            raise RepositoryFull(f"the repository's disk is full ({folders[0]}); "
                                 f"{outcome}") from None
        raise


def allocate_reserve(root: Path) -> None:
    """Allocate the reserve file if it is missing and there is room for it (a partly
    allocated one is removed: it would reserve nothing reliable)."""
    with open_folder(root) as folder_fd:
        try:
            fd = create_exclusive(folder_fd, RESERVE_FILE)
        except FileExistsError:
            return
        try:
            os.posix_fallocate(fd, 0, RESERVE_BYTES)
            os.fsync(fd)
        except OSError as error:
            os.unlink(RESERVE_FILE, dir_fd=folder_fd)
            if error.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            log.warning("no room for the repository's space reserve (%d bytes) in %s; "
                        "compact allocates it once there is", RESERVE_BYTES, root)
        finally:
            os.close(fd)


def release_reserve_if_full(root: Path, folders: list[Path]) -> None:
    """Give the reserve back to the filesystem if one of ``folders`` is (nearly) full."""
    if min(free_bytes(folder) for folder in folders) >= LOW_SPACE_BYTES:
        return
    with open_folder(root) as folder_fd:
        try:
            os.unlink(RESERVE_FILE, dir_fd=folder_fd)
        except FileNotFoundError:
            return
        os.fsync(folder_fd)
    log.warning("the disk of %s is full: its space reserve (%d bytes) was released so that "
                "this command can work", root, RESERVE_BYTES)
