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

from ...errors import RepositoryFull
from ..backends.protocol import Backend
from ..index.chunk_index import is_index_error

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
    if is_index_error(error) or (isinstance(error, OSError) and error.errno == errno.EIO):
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


def allocate_reserve(backend: Backend) -> None:
    """Put the reserve if it is missing and there is room for it (a put is whole or
    nothing, so a reserve never reserves less than RESERVE_BYTES). An object store fills
    no disk of this machine and needs none."""
    if not backend.disk_folders() or backend.stat(RESERVE_FILE) is not None:
        return
    try:
        backend.put_if_absent(RESERVE_FILE, bytes(RESERVE_BYTES))
    except OSError as error:
        if error.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        log.warning("no room for the repository's space reserve (%d bytes) in %s; "
                    "compact allocates it once there is", RESERVE_BYTES, backend.location)


def release_reserve_if_full(backend: Backend, folders: list[Path]) -> None:
    """Give the reserve back to the filesystem if one of ``folders`` is (nearly) full."""
    if min(free_bytes(folder) for folder in folders) >= LOW_SPACE_BYTES:
        return
    if backend.stat(RESERVE_FILE) is None:
        return
    backend.delete(RESERVE_FILE)
    log.warning("the disk of %s is full: its space reserve (%d bytes) was released so that "
                "this command can work", backend.location, RESERVE_BYTES)
