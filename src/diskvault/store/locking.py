"""Locks over the backend: one writer at a time, many readers.

The writer lock is the object ``lock``, put only if absent; it names host, pid, command and
start time, so a second writer can say who holds it, and a holder that died on this host is
recognised as stale and taken over. Its bytes are allocated once: a released lock becomes
``lock.spare``, which the next writer's put recycles, so delete and compact can take the
lock on a disk with no byte free.

Each reader (restore, cat, mount, check) puts a registration ``readers/<host>-<pid>-<random>
.json`` while it runs. Compaction deletes packs only inside ``readers_excluded``: it puts
``readers-paused/<...>.json`` and then lists the readers; a reader puts its registration and
then looks for a pause. Each writes before it looks, so at least one of them sees the other:
the compaction then keeps its packs, or the reader waits until the pause is over. A
registration or pause of a dead process on this host is stale and removed; one of another
host is trusted until it is removed (a lease with an expiry is the plan for repositories
shared between hosts).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import secrets
import socket
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from ..errors import LockHolder, RepositoryLocked
from .backend import Backend, is_access_denied

log = logging.getLogger(__name__)

LOCK_FILE = "lock"
LOCK_SPARE_FILE = "lock.spare"
READERS_PREFIX = "readers/"
PAUSES_PREFIX = "readers-paused/"
POLL_INTERVAL_S = 0.2
LOCK_FILE_BYTES = 4096  # the holder text, padded: one block, reused in place
MAX_COMMAND_CHARS = 512
_REGISTRATION = re.compile(r"(?P<host>.+)-(?P<pid>[0-9]+)-[0-9a-f]{16}\.json")


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


def _is_stale(holder: LockHolder) -> bool:
    """Held by a process of this host that is gone."""
    return holder.host == socket.gethostname() and not _is_alive(holder)


def this_process(command: str) -> LockHolder:
    return LockHolder(socket.gethostname(), os.getpid(), command, datetime.now(timezone.utc),
                      _process_start(os.getpid()))


def _encode(holder: LockHolder, padded_bytes: int = 0) -> bytes:
    """The holder as JSON, padded with spaces (JSON ignores them) to ``padded_bytes``, so
    that every lock has the same size and a spare one is rewritten in place."""
    command = holder.command
    if len(command) > MAX_COMMAND_CHARS:
        command = command[:MAX_COMMAND_CHARS] + "..."
    body = json.dumps({"host": holder.host, "pid": holder.pid, "command": command,
                       "since": holder.since.isoformat(),
                       "process_start": holder.process_start}).encode()
    return body.ljust(padded_bytes)


def _decode(data: bytes) -> LockHolder:
    """ValueError, KeyError or TypeError if ``data`` is not a holder."""
    body = json.loads(data)
    return LockHolder(body["host"], int(body["pid"]), body["command"],
                      datetime.fromisoformat(body["since"]), body.get("process_start", ""))


def _unique_name(prefix: str, holder: LockHolder) -> str:
    return f"{prefix}{holder.host}-{holder.pid}-{secrets.token_hex(8)}.json"


def prepare_lock_files(backend: Backend) -> None:
    """Allocate the spare lock of a new repository, so that no later writer needs space to
    take the lock."""
    backend.put(LOCK_SPARE_FILE, bytes(LOCK_FILE_BYTES))


def read_holder(backend: Backend) -> LockHolder | None:
    try:
        return _decode(backend.get(LOCK_FILE))
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError):
        # Unreadable (damaged by hand or by a disk fault): only break-lock removes it.
        return LockHolder("?", 0, "an unknown command (damaged lock file)",
                          datetime.now(timezone.utc), "")


def _retire(backend: Backend) -> None:
    """Keep the lock's storage for the next writer: it becomes the spare."""
    try:
        backend.move(LOCK_FILE, LOCK_SPARE_FILE)
    except FileNotFoundError:
        pass


class WriterLock:
    """The exclusive lock of backup, delete, prune and compact."""

    def __init__(self, backend: Backend, command: str, wait_s: float = 0.0):
        self.backend = backend
        self.wait_s = wait_s
        self.holder = this_process(command)
        self._held = False

    def _try_create(self) -> bool:
        return self.backend.put_if_absent(LOCK_FILE, _encode(self.holder, LOCK_FILE_BYTES),
                                          reuse=LOCK_SPARE_FILE)

    def _take_over_if_stale(self) -> LockHolder | None:
        """Remove a lock whose holder died on this host; return the live holder otherwise."""
        with self.backend.host_mutex():
            holder = read_holder(self.backend)
            if holder is None:
                return None
            if _is_stale(holder):
                log.warning("taking over a stale lock of %s (pid %d on %s, since %s): that "
                            "process is gone", holder.command, holder.pid, holder.host,
                            f"{holder.since:%Y-%m-%d %H:%M:%S}")
                _retire(self.backend)
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
        with self.backend.host_mutex():
            current = read_holder(self.backend)
            if current and current.pid == self.holder.pid and current.host == self.holder.host:
                _retire(self.backend)

    def __enter__(self) -> "WriterLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def break_lock(backend: Backend) -> LockHolder | None:
    """Remove the writer lock whoever holds it; returns the holder that was removed."""
    holder = read_holder(backend)
    _retire(backend)
    return holder


def _live_holders(backend: Backend, prefix: str) -> list[LockHolder]:
    """The holders of the registrations under ``prefix``; those of dead processes on this
    host are removed on the way."""
    holders = []
    for name in backend.list(prefix):
        if not _REGISTRATION.fullmatch(name[len(prefix):]):
            continue
        try:
            holder = _decode(backend.get(name))
        except FileNotFoundError:
            continue  # ended while we listed
        except (ValueError, KeyError, TypeError):
            log.warning("%s/%s is not a registration diskvault wrote; it is left alone",
                        backend.location, name)
            continue
        if _is_stale(holder):
            backend.delete(name)
        else:
            holders.append(holder)
    return holders


def active_readers(backend: Backend) -> list[LockHolder]:
    """The readers running now (a registration whose process is gone on this host is
    removed, not counted)."""
    return _live_holders(backend, READERS_PREFIX)


class ReaderLock:
    """A reader's registration, held for as long as it runs. On a read-only repository
    there is none: nothing can be registered there, and no writer can run there either."""

    def __init__(self, backend: Backend, command: str = "reader"):
        self.backend = backend
        holder = this_process(command)
        self._name: str | None = _unique_name(READERS_PREFIX, holder)
        while True:
            if not self._register(_encode(holder)):
                return
            if not _live_holders(backend, PAUSES_PREFIX):
                return
            self.backend.delete(self._name)  # a compaction is deleting packs: let it end
            while _live_holders(backend, PAUSES_PREFIX):
                time.sleep(POLL_INTERVAL_S)

    def _register(self, data: bytes) -> bool:
        try:
            self.backend.put(self._name, data)
        except OSError as error:
            if is_access_denied(error):
                self._name = None
                return False
            if error.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            log.warning("the disk of %s is full: this reader runs unregistered, so a "
                        "compaction now could delete packs it reads", self.backend.location)
            self._name = None
            return False
        return True

    def release(self) -> None:
        if self._name is not None:
            self.backend.delete(self._name)
            self._name = None

    def __enter__(self) -> "ReaderLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


@contextmanager
def readers_excluded(backend: Backend):
    """Yield True if no reader is running (and none can start) for the block's duration."""
    holder = this_process("readers excluded")
    name = _unique_name(PAUSES_PREFIX, holder)
    backend.put(name, _encode(holder))
    try:
        yield not active_readers(backend)
    finally:
        backend.delete(name)
