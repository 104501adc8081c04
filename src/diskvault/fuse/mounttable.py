"""Which diskvault mount is where (``os.path.ismount`` cannot tell a diskvault mount from
any other, and fails on a mount whose daemon died)."""

from __future__ import annotations

from ..mountinfo import MountEntry, read_mounts

FS_TYPE = "fuse.diskvault"  # "fuse." + the subtype the mount is made with


def find_mount(path: str) -> MountEntry | None:
    """The mount on ``path`` (an absolute, resolved path), the last one if stacked."""
    found = [entry for entry in read_mounts() if entry.mountpoint == path]
    return found[-1] if found else None
