"""Checks made before mounting, so that each problem is one clear line rather than a libfuse
message from a background process, or a mount on top of something the user needed."""

from __future__ import annotations

import ctypes.util
import errno
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import FuseUnavailable, MountpointUnusable
from .mounttable import find_mount

FUSE_DEVICE = Path("/dev/fuse")
FUSE_CONF = Path("/etc/fuse.conf")
FUSERMOUNT_NAMES = ("fusermount", "fusermount3")
LIBRARY_VARIABLE = "FUSE_LIBRARY_PATH"
LIBFUSE3_PACKAGES = ("install the Debian packages 'fuse3' and 'libfuse3-3' ('libfuse3-4' on "
                     "Debian 13)")


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


def load_fuse_binding():
    """The mfusepy module, bound to libfuse 3 (its lseek answers SEEK_DATA/SEEK_HOLE, and it
    allows 1 MiB reads). mfusepy loads the library when imported and would take libfuse 2
    where both are installed, so this names libfuse 3 to it (``FUSE_LIBRARY_PATH``, its own
    variable, wins when set) and turns a missing library into a message naming the package."""
    if not FUSE_DEVICE.exists():
        raise FuseUnavailable("the kernel's FUSE device /dev/fuse is missing: load the module "
                              "with 'modprobe fuse' (in a container, start it with "
                              "--device /dev/fuse)")
    fusermount()
    library = os.environ.get(LIBRARY_VARIABLE) or ctypes.util.find_library("fuse3")
    if library is None:
        raise FuseUnavailable(f"libfuse 3 (libfuse3.so) is not installed: {LIBFUSE3_PACKAGES}")
    try:
        with _environment({LIBRARY_VARIABLE: library}):
            import mfusepy
    except ImportError:
        raise FuseUnavailable("the Python package mfusepy is not installed: pip install "
                              "mfusepy") from None
    except OSError:
        raise FuseUnavailable(f"libfuse 3 ({library}) cannot be loaded: "
                              f"{LIBFUSE3_PACKAGES}") from None
    if mfusepy.fuse_version_major != 3:
        raise FuseUnavailable(f"{library} is libfuse {mfusepy.fuse_version_major}, not 3 (the "
                              f"mount needs its lseek): {LIBFUSE3_PACKAGES}")
    return mfusepy


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """``values`` in os.environ for the block only, so the mount's children never see them."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name)
            else:
                os.environ[name] = value


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
