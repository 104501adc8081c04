"""Mount and serve until unmounted: the mount's whole life in the foreground process.

The reader lock is held from before the mount appears until after it is gone, so that
compaction never deletes a pack that an open file may still need.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from ..errors import DiskvaultError
from ..store.format.snapshots import SnapshotRecord
from ..store.repository import Repository
from .images import ImageCatalogue
from .mounttable import FS_TYPE
from .preflight import load_fuse_binding
from .readahead import raise_read_ahead

log = logging.getLogger(__name__)

# libfuse 3 takes requests of up to 1 MiB (256 pages, its buffer's size), where libfuse 2
# took 128 KiB; the mount's read-ahead is raised to match (readahead.py, as root).
MAX_READ_BYTES = 1024 * 1024
# Snapshots never change, so the kernel may trust names and sizes for a while; the kernel
# also drops a file's page cache when its name expires, so a longer time keeps it warm.
# New snapshots still appear at once: listings and unknown names are always asked for.
CACHE_TIMEOUT_S = 60
# Idle worker threads libfuse keeps (it starts up to 10). Given, because libfuse 3.14's
# fuse_main prints "Ignoring invalid max threads value" for its own unset default.
MAX_IDLE_THREADS = 10


def _option_value(text: str) -> str:
    """libfuse splits options at commas; a backslash escapes one."""
    return text.replace("\\", "\\\\").replace(",", "\\,")


def serve(repository: Repository, record: SnapshotRecord | None, mountpoint: str,
          allow_other: bool, on_ready: Callable[[], None], share_images: bool = False) -> None:
    """Blocks until the mount is unmounted (``diskvault umount``, or SIGINT/SIGTERM)."""
    load_fuse_binding()
    from .binding import SeekingFUSE  # these import mfusepy: only after the check
    from .operations import SnapshotFilesystem

    served = threading.Event()  # the kernel has initialised the mount

    def ready() -> None:
        served.set()
        threading.Thread(target=_after_init, args=(mountpoint, on_ready), name="read-ahead",
                         daemon=True).start()

    operations = SnapshotFilesystem(repository, record, ImageCatalogue(repository), ready,
                                    share_images)
    lock = repository.reader_lock()
    try:
        SeekingFUSE(operations, mountpoint, foreground=True, ro=True,
                    fsname=_option_value(f"diskvault:{repository.location}"),
                    subtype=FS_TYPE.removeprefix("fuse."), allow_other=allow_other,
                    default_permissions=True, kernel_cache=True,
                    # <image>.files shows the image's own device nodes and set-id programs:
                    # never let them open this machine's devices or run with privileges.
                    nodev=True, nosuid=True, max_idle_threads=MAX_IDLE_THREADS,
                    entry_timeout=CACHE_TIMEOUT_S, attr_timeout=CACHE_TIMEOUT_S)
    except RuntimeError as error:
        if not served.is_set():
            raise DiskvaultError(f"libfuse could not mount {mountpoint} (its own message is "
                                 f"above)") from None
        # libfuse 3 returns an error when SIGINT or SIGTERM ended its loop; it has unmounted.
        log.info("stopped by a signal (libfuse's code %s)", error)
    finally:
        lock.release()
    log.info("unmounted")


def _after_init(mountpoint: str, on_ready: Callable[[], None]) -> None:
    """The kernel sets a mount's read-ahead from the reply to init, sent once the init
    callback returns: so it is raised from a thread, and only then is the mount announced,
    so that reads made once `diskvault mount` has returned get 1 MiB requests."""
    try:
        raise_read_ahead(mountpoint, MAX_READ_BYTES)
    finally:
        on_ready()
