"""Which snapshot a file target holds, as far as this host knows: a completed restore
remembers (``$XDG_STATE_HOME/diskvault/restored/``, one small file per target) the snapshot
it left in a file, with the file's change stamp. The next delta restore onto the same,
unchanged file then compares manifests instead of hashing the whole file.

The stamp is (device, inode, size, mtime_ns, ctime_ns). It proves "unchanged" only where
every write moves the ctime to a value no program can set back, so a stamp is trusted only
when (docs/restore.md, "Known contents"):

- the file lives on a local filesystem that keeps ctime in nanoseconds on its own (ext4, XFS,
  btrfs, tmpfs, f2fs, ZFS; never NFS, CIFS, FUSE, FAT, exFAT, NTFS, overlayfs), by statfs;
- the ctime has a sub-second part (ext2/3 with 128-byte inodes keep whole seconds only);
- the stamp was taken once the kernel's coarse clock, which stamps ctime on kernels before
  6.13, had passed that ctime: a later write then gets a later ctime, not the same tick.

Anything in doubt (no record, another repository, a changed stamp, an untrusted stamp, an
interrupted restore in place, a snapshot since deleted) means "not known": the caller hashes
the target as before. Block devices are never remembered: a device has no stamp that every
write changes."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import json
import os
import stat
import time
from pathlib import Path

from ..host.durable import PRIVATE_FOLDER_MODE, atomic_replacement, write_all
from ..host.user_folders import user_state_folder
from .restore_marks import interrupted_restore

# statfs f_type values (linux/magic.h) of local filesystems that keep ctime in nanoseconds
# and set it themselves on every change: ext2/3/4 (one magic; see _fine_grained), XFS,
# btrfs, tmpfs, f2fs, ZFS.
TRUSTED_FILESYSTEMS = frozenset({0xEF53, 0x58465342, 0x9123683E, 0x01021994, 0xF2F52010,
                                 0x2FC12FC1})
_CLOCK_REALTIME_COARSE = 5  # linux/time.h; what current_time() reads before Linux 6.13
_SETTLE_DEADLINE_S = 1.0  # a ctime the coarse clock has not passed by then is in the future
_STATFS_BYTES = 256  # more than struct statfs; f_type is its first field, a C long


def known_folder() -> Path:
    return user_state_folder() / "restored"


def _stamp(status: os.stat_result) -> list[int]:
    return [status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns,
            status.st_ctime_ns]


def _record_path(status: os.stat_result) -> Path:
    return known_folder() / f"file-{status.st_dev}-{status.st_ino}.json"


def filesystem_type(path: Path) -> int | None:
    """statfs's f_type for ``path`` (a magic number of linux/magic.h), or None."""
    buffer = ctypes.create_string_buffer(_STATFS_BYTES)
    if _libc().statfs(os.fsencode(path), buffer) != 0:
        return None
    return ctypes.c_ulong.from_buffer(buffer).value & 0xFFFFFFFF


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def _fine_grained(target: Path, status: os.stat_result) -> bool:
    """Whether ``target``'s ctime is one no write can leave unchanged and no program can set:
    a trusted local filesystem, and a ctime with nanoseconds in it."""
    return status.st_ctime_ns % 1_000_000_000 != 0 \
        and filesystem_type(target) in TRUSTED_FILESYSTEMS


def _settled(target: Path, status: os.stat_result) -> os.stat_result | None:
    """The file's status once the coarse clock has passed its ctime (so that any later
    write stamps a later tick), if nothing changed it meanwhile; None otherwise."""
    deadline = time.monotonic() + _SETTLE_DEADLINE_S
    while time.clock_gettime_ns(_CLOCK_REALTIME_COARSE) <= status.st_ctime_ns:
        if time.monotonic() > deadline:
            return None
        time.sleep(time.clock_getres(_CLOCK_REALTIME_COARSE))
    settled = _regular_file(target)
    return settled if settled is not None and _stamp(settled) == _stamp(status) else None


def _regular_file(target: Path) -> os.stat_result | None:
    try:
        status = os.stat(target, follow_symlinks=False)
    except OSError:
        return None
    return status if stat.S_ISREG(status.st_mode) else None


def remember(target: Path, repository_id: str, snapshot_id: str) -> None:
    """Note that the file ``target`` now holds ``snapshot_id`` (call once it is durable).
    Best effort: a note that cannot be written only costs the next restore a full
    comparison, so it never fails the restore that is done."""
    status = _regular_file(target)
    if status is None or not _fine_grained(target, status):
        return
    status = _settled(target, status)
    if status is None:
        return
    path = _record_path(status)
    record = {"target": os.path.abspath(target), "repository_id": repository_id,
              "snapshot_id": snapshot_id, "stamp": _stamp(status)}
    try:
        path.parent.mkdir(mode=PRIVATE_FOLDER_MODE, parents=True, exist_ok=True)
        with atomic_replacement(path) as fd:
            write_all(fd, json.dumps(record).encode())
        _drop_stale_records()
    except OSError:
        pass


def _drop_stale_records() -> None:
    """Remove the records of files no longer at their path (deleted, renamed, replaced by
    another program), so the folder does not grow with every image ever restored."""
    for path in known_folder().glob("file-*.json"):
        try:
            record = json.loads(path.read_text())
            status = _regular_file(Path(record["target"]))
            stale = status is None or _record_path(status) != path
        except (OSError, ValueError, KeyError, TypeError):
            stale = True
        if stale:
            path.unlink(missing_ok=True)


def forget(target: Path) -> None:
    """Drop what is known of ``target`` (before it is changed in place)."""
    status = _regular_file(target)
    if status is not None:
        try:
            _record_path(status).unlink(missing_ok=True)
        except OSError:  # no state folder we may use: nothing was remembered there
            pass


def held_snapshot(target: Path, repository_id: str) -> str | None:
    """The id of the snapshot of ``repository_id`` that the file ``target`` is known to hold
    unchanged since a restore wrote it, or None."""
    status = _regular_file(target)
    if status is None or interrupted_restore(target) or not _fine_grained(target, status):
        return None
    try:
        record = json.loads(_record_path(status).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("stamp") != _stamp(status) \
            or record.get("repository_id") != repository_id:
        return None
    snapshot_id = record.get("snapshot_id")
    return snapshot_id if isinstance(snapshot_id, str) else None
