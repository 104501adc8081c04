"""Errors of the mount layer, in the store's one hierarchy (each knows its exit code).

They live here rather than in ``store/errors.py`` because the store knows nothing of FUSE.
"""

from __future__ import annotations

from ..store.errors import BadInput, DiskvaultError


class MountpointUnusable(BadInput):
    """The mountpoint is missing, not a folder, not empty, or already a mount."""


class NotMounted(BadInput):
    """``umount`` was given a folder that holds no diskvault mount."""


class FuseUnavailable(DiskvaultError):
    """libfuse, fusermount or the kernel's /dev/fuse is missing on this machine."""


class MountBusy(DiskvaultError):
    """The mount is in use (an open file, a shell inside it), so it cannot be unmounted."""


class MountFailed(DiskvaultError):
    """The background mount process died before the mount came up; carries its exit code."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code
