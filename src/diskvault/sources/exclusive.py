"""One run at a time per source: a lock file in a private folder under /run, held with
flock, so the kernel drops it when its process dies. While a run holds it, whatever an
earlier run of the same source left behind is a leftover of a run that was killed."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import PointInTimeFailed
from ..store.host.durable import PRIVATE_FILE_MODE, make_private_folder

LOCK_FOLDER = Path("/run/diskvault")


@contextmanager
def held_alone(name: str, busy: str) -> Iterator[None]:
    """The lock ``name`` held for the block; PointInTimeFailed(``busy``) if another process
    holds it now."""
    make_private_folder(LOCK_FOLDER)
    path = LOCK_FOLDER / f"{name}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, PRIVATE_FILE_MODE)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise PointInTimeFailed(busy) from None
        yield
    finally:
        os.close(fd)  # the lock goes with it
