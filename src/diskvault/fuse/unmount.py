"""``diskvault umount``: fusermount -u, for diskvault mounts only, with a clear word when the
mount is busy. Also clears a mount whose process died (the kernel keeps it until then)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from ..errors import DiskvaultError, MountBusy, NotMounted
from .mounttable import FS_TYPE, find_mount
from .preflight import fusermount

GONE_TIMEOUT_S = 10.0
POLL_S = 0.05


def unmount(mountpoint: Path) -> None:
    where = os.path.realpath(mountpoint)
    entry = find_mount(where)
    if entry is None:
        raise NotMounted(f"{mountpoint} is not mounted")
    if entry.fs_type != FS_TYPE:
        raise NotMounted(f"{mountpoint} is a {entry.fs_type} mount, not a diskvault one; "
                         f"unmount it with umount(8)")
    result = subprocess.run([fusermount(), "-u", where], stdin=subprocess.DEVNULL,
                            capture_output=True, text=True)
    if result.returncode != 0:
        message = result.stderr.strip()
        if "busy" in message.lower():
            raise MountBusy(f"{mountpoint} is busy: a process has a file open or its working "
                            f"folder in it (list them with 'fuser -vm {mountpoint}'); close "
                            f"them or leave the folder, then retry")
        raise DiskvaultError(f"cannot unmount {mountpoint}: {message}")
    deadline = time.monotonic() + GONE_TIMEOUT_S
    while find_mount(where) is not None and time.monotonic() < deadline:
        time.sleep(POLL_S)  # fusermount returns once detached; the table may lag a moment
