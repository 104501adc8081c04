"""Locks: one writer at a time (a lock file that names its holder), many readers.

The writer lock is a file created exclusively; it names host, pid, command and
start time, so a second writer can say who holds it, and a holder that died on
this host is recognised as stale and taken over. Its bytes are allocated once: a
released lock file is kept as ``lock.spare`` and the next writer rewrites it in place,
so delete and compact can take the lock on a disk with no byte free.

Readers hold a shared flock on ``readers.lock``; compaction deletes packs only when it
can take that flock exclusively, so it never pulls data from under a running reader or
mount.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from .durable import (PRIVATE_FILE_MODE, create_exclusive, open_folder, temp_name,
                      write_all)
from ..errors import LockHolder, RepositoryLocked

log = logging.getLogger(__name__)

LOCK_FILE = "lock"
LOCK_SPARE_FILE = "lock.spare"
LOCK_MUTEX_FILE = "lock.mutex"
READERS_FILE = "readers.lock"
POLL_INTERVAL_S = 0.2
LOCK_FILE_BYTES = 4096  # the holder text, padded: one block, reused in place
MAX_COMMAND_CHARS = 512


def _process_start(pid: int) -> str:
    """Start time of a process in clock ticks since boot ('' if unknown): tells pid reuse apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]


def _is_alive(holder: LockHolder) -> bool:
    try:
        os.kill(holder.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return not holder.process_start or _process_start(holder.pid) == holder.process_start


def _encode(holder: LockHolder) -> bytes:
    """The holder as JSON padded with spaces to LOCK_FILE_BYTES (JSON ignores them), so
    that every lock file has the same size and a spare one is rewritten in place."""
    command = holder.command
    if len(command) > MAX_COMMAND_CHARS:
        command = command[:MAX_COMMAND_CHARS] + "..."
    body = json.dumps({"host": holder.host, "pid": holder.pid, "command": command,
                       "since": holder.since.isoformat(),
                       "process_start": holder.process_start}).encode()
    return body.ljust(LOCK_FILE_BYTES)


def open_lock_file(root: Path, name: str) -> int:
    """An fd of the flock file ``name`` (created 0600 if missing, never through a link)."""
    with open_folder(root) as folder_fd:
        return os.open(name, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                       PRIVATE_FILE_MODE, dir_fd=folder_fd)


def prepare_lock_files(root: Path) -> None:
    """Create the flock files and the spare lock file of a new repository, so that no
    later command needs space (or a umask) to make them."""
    for name in (LOCK_MUTEX_FILE, READERS_FILE):
        os.close(open_lock_file(root, name))
    with open_folder(root) as folder_fd:
        fd = create_exclusive(folder_fd, LOCK_SPARE_FILE)
        try:
            write_all(fd, bytes(LOCK_FILE_BYTES))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.fsync(folder_fd)


def _retire(folder_fd: int) -> None:
    """Keep the lock file's blocks for the next writer: it becomes the spare."""
    try:
        os.rename(LOCK_FILE, LOCK_SPARE_FILE, src_dir_fd=folder_fd, dst_dir_fd=folder_fd)
    except FileNotFoundError:
        return
    os.fsync(folder_fd)


def _take_spare(folder_fd: int, name: str) -> int:
    """The spare lock file renamed to ``name`` and opened, or a new file if there is no
    spare (first use, or another writer took it a moment ago)."""
    try:
        os.rename(LOCK_SPARE_FILE, name, src_dir_fd=folder_fd, dst_dir_fd=folder_fd)
    except FileNotFoundError:
        return create_exclusive(folder_fd, name)
    return os.open(name, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=folder_fd)


def read_holder(root: Path) -> LockHolder | None:
    try:
        body = json.loads((root / LOCK_FILE).read_bytes())
        return LockHolder(body["host"], int(body["pid"]), body["command"],
                          datetime.fromisoformat(body["since"]), body.get("process_start", ""))
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError):
        # Unreadable (damaged by hand or by a disk fault): only break-lock removes it.
        return LockHolder("?", 0, "an unknown command (damaged lock file)",
                          datetime.now(timezone.utc), "")


@contextmanager
def _host_mutex(root: Path):
    """Serialises lock-file takeovers between processes on this host."""
    fd = open_lock_file(root, LOCK_MUTEX_FILE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the flock


def _unlink_if_present(folder_fd: int, name: str) -> None:
    try:
        os.unlink(name, dir_fd=folder_fd)
    except FileNotFoundError:
        pass


class WriterLock:
    """The exclusive lock of backup, delete, prune and compact."""

    def __init__(self, root: Path, command: str, wait_s: float = 0.0):
        self.root = root
        self.wait_s = wait_s
        self.holder = LockHolder(socket.gethostname(), os.getpid(), command,
                                 datetime.now(timezone.utc), _process_start(os.getpid()))
        self._held = False

    def _try_create(self) -> bool:
        """Create the lock file with its content in one step (link of a written temp file),
        so no other process ever sees an empty lock. The temp file is the spare if there
        is one; a temp file that lost the race becomes the spare."""
        with open_folder(self.root) as folder_fd:
            tmp = temp_name(LOCK_FILE)
            try:
                fd = _take_spare(folder_fd, tmp)
                try:
                    os.pwrite(fd, _encode(self.holder), 0)
                    os.fsync(fd)
                finally:
                    os.close(fd)
                os.link(tmp, LOCK_FILE, src_dir_fd=folder_fd, dst_dir_fd=folder_fd,
                        follow_symlinks=False)
            except FileExistsError:
                os.rename(tmp, LOCK_SPARE_FILE, src_dir_fd=folder_fd, dst_dir_fd=folder_fd)
                return False
            finally:
                _unlink_if_present(folder_fd, tmp)
            os.fsync(folder_fd)
        return True

    def _take_over_if_stale(self) -> LockHolder | None:
        """Remove a lock whose holder died on this host; return the live holder otherwise."""
        with _host_mutex(self.root):
            holder = read_holder(self.root)
            if holder is None:
                return None
            if holder.host == self.holder.host and not _is_alive(holder):
                log.warning("taking over a stale lock of %s (pid %d on %s, since %s): that "
                            "process is gone", holder.command, holder.pid, holder.host,
                            f"{holder.since:%Y-%m-%d %H:%M:%S}")
                with open_folder(self.root) as folder_fd:
                    _retire(folder_fd)
                return None
            return holder

    def acquire(self) -> None:
        deadline = time.monotonic() + self.wait_s
        while True:
            if self._try_create():
                self._held = True
                return
            holder = self._take_over_if_stale()
            if holder is None:
                continue
            if time.monotonic() >= deadline:
                raise RepositoryLocked(holder)
            time.sleep(POLL_INTERVAL_S)

    def release(self) -> None:
        if not self._held:
            return
        self._held = False
        with _host_mutex(self.root):
            current = read_holder(self.root)
            if current and current.pid == self.holder.pid and current.host == self.holder.host:
                with open_folder(self.root) as folder_fd:
                    _retire(folder_fd)

    def __enter__(self) -> "WriterLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def break_lock(root: Path) -> LockHolder | None:
    """Remove the writer lock whoever holds it; returns the holder that was removed."""
    holder = read_holder(root)
    with open_folder(root) as folder_fd:
        _retire(folder_fd)
    return holder


class ReaderLock:
    """A shared flock held for as long as a reader (restore, cat, mount, check) runs."""

    def __init__(self, root: Path):
        self._handle = _open_readers_file(root / READERS_FILE)
        if self._handle is not None:
            fcntl.flock(self._handle, fcntl.LOCK_SH)

    def release(self) -> None:
        if self._handle is not None and not self._handle.closed:
            self._handle.close()

    def __enter__(self) -> "ReaderLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _open_readers_file(path: Path):
    """The readers' lock file to flock: a shared flock needs no write access, so a
    read-only one will do. None on a read-only repository that has none: nothing can be
    registered there, and no writer can run there either."""
    try:
        return open(path, "a")
    except OSError as error:
        if error.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise
    try:
        return open(path, "r")
    except FileNotFoundError:
        return None


@contextmanager
def readers_excluded(root: Path):
    """Yield True if no reader is running (and none can start) for the block's duration."""
    fd = open_lock_file(root, READERS_FILE)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # releases the flock
