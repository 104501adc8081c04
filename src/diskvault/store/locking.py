"""Locks: one writer at a time (a lock file that names its holder), many readers.

The writer lock is a file created exclusively; it names host, pid, command and
start time, so a second writer can say who holds it, and a holder that died on
this host is recognised as stale and taken over. Readers hold a shared flock on
``readers.lock``; compaction deletes packs only when it can take that flock
exclusively, so it never pulls data from under a running reader or mount.
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

from .durable import fsync_dir
from .errors import LockHolder, RepositoryLocked

log = logging.getLogger(__name__)

LOCK_FILE = "lock"
LOCK_MUTEX_FILE = "lock.mutex"
READERS_FILE = "readers.lock"
POLL_INTERVAL_S = 0.2


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
    return json.dumps({"host": holder.host, "pid": holder.pid, "command": holder.command,
                       "since": holder.since.isoformat(),
                       "process_start": holder.process_start}).encode()


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
    with open(root / LOCK_MUTEX_FILE, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


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
        so no other process ever sees an empty lock."""
        tmp = self.root / f".lock.{self.holder.host}.{self.holder.pid}.tmp"
        tmp.write_bytes(_encode(self.holder))
        try:
            os.link(tmp, self.root / LOCK_FILE)
        except FileExistsError:
            return False
        finally:
            tmp.unlink(missing_ok=True)
        fsync_dir(self.root)
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
                (self.root / LOCK_FILE).unlink(missing_ok=True)
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
                (self.root / LOCK_FILE).unlink(missing_ok=True)
                fsync_dir(self.root)

    def __enter__(self) -> "WriterLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def break_lock(root: Path) -> LockHolder | None:
    """Remove the writer lock whoever holds it; returns the holder that was removed."""
    holder = read_holder(root)
    (root / LOCK_FILE).unlink(missing_ok=True)
    fsync_dir(root)
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
    with open(root / READERS_FILE, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
