"""Checks made before mounting, so that each problem is one clear line rather than a libfuse
message from a background process, or a mount on top of something the user needed."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from ..errors import FuseUnavailable, MountpointUnusable
from .mounttable import find_mount

FUSE_DEVICE = Path("/dev/fuse")
FUSE_CONF = Path("/etc/fuse.conf")
FUSERMOUNT_NAMES = ("fusermount", "fusermount3")


def check_mountpoint(path: Path) -> str:
    """The mountpoint as the mount table will name it (absolute, symlinks resolved), if it is
    an empty folder that is not already a mount."""
    where = os.path.realpath(path)
    if find_mount(where) is not None:
        if _is_dead_mount(where):
            raise MountpointUnusable(f"mountpoint {path} is a FUSE mount whose process has "
                                     f"died; clear it with 'diskvault umount {path}'")
        raise MountpointUnusable(f"mountpoint {path} is already a mount; unmount it first "
                                 f"('diskvault umount {path}' if it is a diskvault mount) or "
                                 f"pick an empty folder")
    if not os.path.lexists(where):
        raise MountpointUnusable(f"mountpoint {path} does not exist; create the folder "
                                 f"first (mkdir {path})")
    if not os.path.isdir(where):
        raise MountpointUnusable(f"mountpoint {path} is not a folder")
    if os.listdir(where):
        raise MountpointUnusable(f"mountpoint {path} is not empty; mount onto an empty folder")
    return where


def _is_dead_mount(where: str) -> bool:
    """A FUSE mount whose daemon is gone answers ENOTCONN (a listing always asks the daemon;
    a stat may be answered from the kernel's cache)."""
    try:
        os.listdir(where)
    except OSError as error:
        return error.errno == errno.ENOTCONN
    return False


def fusermount() -> str:
    """The fusermount program: libfuse mounts with it unless root, and ``umount`` uses it."""
    for name in FUSERMOUNT_NAMES:
        found = shutil.which(name)
        if found:
            return found
    raise FuseUnavailable("fusermount is not installed (FUSE mounts are made and removed "
                          "with it): install the Debian package 'fuse3' (apt-get install fuse3)")


def load_fusepy():
    """fusepy's ``fuse`` module. It loads libfuse.so.2 when imported, so nothing imports it
    before this check has turned a missing library into a message naming the package."""
    if not FUSE_DEVICE.exists():
        raise FuseUnavailable("the kernel's FUSE device /dev/fuse is missing: load the module "
                              "with 'modprobe fuse' (in a container, start it with "
                              "--device /dev/fuse)")
    fusermount()
    try:
        import fuse
    except ImportError:
        raise FuseUnavailable("the Python package fusepy is not installed: pip install "
                              "fusepy") from None
    except OSError:
        raise FuseUnavailable("libfuse 2 (libfuse.so.2, which fusepy loads) is not installed: "
                              "install the Debian package 'libfuse2' ('libfuse2t64' on "
                              "Debian 13 and Ubuntu 24.04 or later)") from None
    return fuse


def check_allow_other() -> None:
    """libfuse refuses allow_other to users unless /etc/fuse.conf permits it: say so now."""
    if os.geteuid() == 0:
        return
    try:
        lines = FUSE_CONF.read_text().splitlines()
    except OSError:
        lines = []
    if "user_allow_other" not in (line.strip() for line in lines):
        raise MountpointUnusable(f"--allow-other needs the line 'user_allow_other' in "
                                 f"{FUSE_CONF} (root can add it), or a mount made as root")
