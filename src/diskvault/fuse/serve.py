"""Mount and serve until unmounted: the mount's whole life in the foreground process.

The reader lock is held from before the mount appears until after it is gone, so that
compaction never deletes a pack that an open file may still need.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from ..errors import DiskvaultError
from ..store.repository import Repository
from ..store.snapshots import SnapshotRecord
from .images import ImageCatalogue
from .mounttable import FS_TYPE
from .preflight import load_fusepy

log = logging.getLogger(__name__)

# The kernel caps one FUSE read at its max_pages (128 KiB for libfuse 2); asking for more
# costs nothing and takes whatever a newer kernel or library allows.
MAX_READ_BYTES = 1024 * 1024
# Snapshots never change, so the kernel may trust names and sizes for a while; the kernel
# also drops a file's page cache when its name expires, so a longer time keeps it warm.
# New snapshots still appear at once: listings and unknown names are always asked for.
CACHE_TIMEOUT_S = 60


def _option_value(text: str) -> str:
    """libfuse splits options at commas; a backslash escapes one."""
    return text.replace("\\", "\\\\").replace(",", "\\,")


def serve(repository: Repository, record: SnapshotRecord | None, mountpoint: str,
          allow_other: bool, on_ready: Callable[[], None], share_images: bool = False) -> None:
    """Blocks until the mount is unmounted (``diskvault umount``, or SIGINT/SIGTERM)."""
    fuse = load_fusepy()
    from .operations import SnapshotFilesystem  # imports fusepy: only after the check

    operations = SnapshotFilesystem(repository, record, ImageCatalogue(repository), on_ready,
                                    share_images)
    lock = repository.reader_lock()
    try:
        fuse.FUSE(operations, mountpoint, foreground=True, ro=True,
                  fsname=_option_value(f"diskvault:{repository.location}"),
                  subtype=FS_TYPE.removeprefix("fuse."), allow_other=allow_other,
                  default_permissions=True, kernel_cache=True, max_read=MAX_READ_BYTES,
                  # <image>.files shows the image's own device nodes and set-id programs:
                  # never let them open this machine's devices or run with privileges.
                  nodev=True, nosuid=True,
                  entry_timeout=CACHE_TIMEOUT_S, attr_timeout=CACHE_TIMEOUT_S)
    except RuntimeError:
        raise DiskvaultError(f"libfuse could not mount {mountpoint} (its own message is "
                             f"above)") from None
    finally:
        lock.release()
    log.info("unmounted")
