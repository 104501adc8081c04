"""Locks over the backend: one writer at a time, many readers, on one host or many.

The writer lock is the object ``lock``, put only if absent; it names host, pid, command and
start time, so a second writer can say who holds it. Its holder rewrites it every
``refresh_s`` (60 s) with a new ``refreshed`` time and ``expires`` = refreshed + ``stale_s``
(300 s: several refreshes, so one slow request does not lose it), first checking that the
lock still carries its random ``token``. A lock is stale, and is taken over:

- on this host, when its process is gone (at once; a live process of this host is never
  stale, whatever its age: we can see it run);
- of another host, when it has not been refreshed for ``stale_s`` (its ``expires`` passed).
  A lock without ``expires`` (an older diskvault, which never refreshes) is never stale by age:
  only ``break-lock`` removes it.

A holder that finds its token gone (another host took the lock over after it stopped
refreshing: a process paused or cut off for longer than ``stale_s``) has lost the lock: its
heartbeat stops, and ``ensure_held`` -- which a writer calls before it commits, e.g. before a
backup writes its snapshot record -- raises ``LockLost``, so it writes nothing more that
counts. Between the refresh's check and its put another host could take the lock; that
window is one request long, against a stale time of minutes.

Its bytes are allocated once: a released lock becomes ``lock.spare``, which the next
writer's put recycles, so delete and compact can take the lock on a disk with no byte free.

Each reader (restore, cat, mount, check) puts a registration ``readers/<host>-<pid>-<random>
.json`` while it runs, a lease renewed like the writer lock (``refreshed``, ``expires``).
Compaction deletes packs only inside ``readers_excluded``: it puts ``readers-paused/<...>
.json`` (itself a lease) and then lists the readers; a reader puts its registration and
then looks for a pause. Each writes before it looks, so at least one of them sees the other:
the compaction then keeps its packs, or the reader waits until the pause is over. A
registration or pause counts as alive: on this host while its process lives; of another host
until its lease expired plus a grace period (``READER_GRACE_S``, 60 s, for clocks that
differ a little and renewals that are late); without ``expires`` (an older diskvault) until
it is removed. Hosts' clocks must agree to within the grace period (NTP). Dead ones are
removed on the way.
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
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from ..errors import LockHolder, LockLost, RepositoryLocked
from .backend import Backend, is_access_denied
from .heartbeat import Heartbeat

log = logging.getLogger(__name__)

LOCK_FILE = "lock"
LOCK_SPARE_FILE = "lock.spare"
READERS_PREFIX = "readers/"
PAUSES_PREFIX = "readers-paused/"
POLL_INTERVAL_S = 0.2
LOCK_FILE_BYTES = 4096  # the holder text, padded: one block, reused in place
MAX_COMMAND_CHARS = 512
READER_GRACE_S = 60.0
_REGISTRATION = re.compile(r"(?P<host>.+)-(?P<pid>[0-9]+)-[0-9a-f]{16}\.json")


@dataclass(frozen=True)
class LeaseTiming:
    """How often a holder rewrites its lock or registration, and after how long without a
    rewrite another host may take it for gone. Tests make both small."""

    refresh_s: float = 60.0
    stale_s: float = 300.0


DEFAULT_TIMING = LeaseTiming()


@dataclass(frozen=True)
class Lease:
    """A lock or registration as read back: its holder, the token of the process that
    wrote it, and when it expires (None: written by a diskvault that never renews)."""

    holder: LockHolder
    token: str = ""
    refreshed: datetime | None = None
    expires: datetime | None = None


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


def _is_stale(lease: Lease, grace_s: float = 0.0) -> bool:
    """Held by a process of this host that is gone, or by another host whose lease
    expired more than ``grace_s`` ago."""
    if lease.holder.host == socket.gethostname():
        return not _is_alive(lease.holder)
    return lease.expires is not None and \
        datetime.now(timezone.utc) > lease.expires + timedelta(seconds=grace_s)


def this_process(command: str) -> LockHolder:
    return LockHolder(socket.gethostname(), os.getpid(), command, datetime.now(timezone.utc),
                      _process_start(os.getpid()))


def _encode(holder: LockHolder, token: str, timing: LeaseTiming,
            padded_bytes: int = 0) -> bytes:
    """The holder and a lease from now as JSON, padded with spaces (JSON ignores them) to
    ``padded_bytes``, so that every lock has the same size and a spare one is rewritten in
    place."""
    command = holder.command
    if len(command) > MAX_COMMAND_CHARS:
        command = command[:MAX_COMMAND_CHARS] + "..."
    now = datetime.now(timezone.utc)
    body = json.dumps({"host": holder.host, "pid": holder.pid, "command": command,
                       "since": holder.since.isoformat(),
                       "process_start": holder.process_start, "token": token,
                       "refreshed": now.isoformat(),
                       "expires": (now + timedelta(seconds=timing.stale_s)).isoformat()})
    return body.encode().ljust(padded_bytes)


def _optional_time(body: dict, key: str) -> datetime | None:
    return datetime.fromisoformat(body[key]) if body.get(key) else None


def _decode(data: bytes) -> Lease:
    """ValueError, KeyError or TypeError if ``data`` is not a lease."""
    body = json.loads(data)
    holder = LockHolder(body["host"], int(body["pid"]), body["command"],
                        datetime.fromisoformat(body["since"]), body.get("process_start", ""))
    return Lease(holder, str(body.get("token", "")), _optional_time(body, "refreshed"),
                 _optional_time(body, "expires"))


def _unique_name(prefix: str, holder: LockHolder) -> str:
    return f"{prefix}{holder.host}-{holder.pid}-{secrets.token_hex(8)}.json"


def prepare_lock_files(backend: Backend) -> None:
    """Allocate the spare lock of a new repository, so that no later writer needs space to
    take the lock."""
    backend.put(LOCK_SPARE_FILE, bytes(LOCK_FILE_BYTES))


def read_lease(backend: Backend, name: str = LOCK_FILE) -> Lease | None:
    """The writer lock (or the registration ``name``) as it stands; None if absent."""
    try:
        return _decode(backend.get(name))
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError):
        # Unreadable (damaged by hand or by a disk fault): only break-lock removes it.
        return Lease(LockHolder("?", 0, "an unknown command (damaged lock file)",
                                datetime.now(timezone.utc), ""))


def read_holder(backend: Backend) -> LockHolder | None:
    lease = read_lease(backend)
    return lease.holder if lease else None


def _retire(backend: Backend) -> None:
    """Keep the lock's storage for the next writer: it becomes the spare."""
    try:
        backend.move(LOCK_FILE, LOCK_SPARE_FILE)
    except FileNotFoundError:
        pass


def _why_stale(lease: Lease) -> str:
    if lease.holder.host == socket.gethostname():
        return "that process is gone"
    return f"it was last refreshed at {lease.refreshed:%Y-%m-%d %H:%M:%S} UTC"


class WriterLock:
    """The exclusive lock of backup, delete, prune and compact, refreshed while held."""

    def __init__(self, backend: Backend, command: str, wait_s: float = 0.0,
                 timing: LeaseTiming = DEFAULT_TIMING):
        self.backend = backend
        self.wait_s = wait_s
        self.timing = timing
        self.holder = this_process(command)
        self._token = secrets.token_hex(16)
        self._heartbeat: Heartbeat | None = None
        self._taken_by: Lease | None = None  # set once the lock is found in other hands
        self._lost = False

    def _encoded(self) -> bytes:
        return _encode(self.holder, self._token, self.timing, LOCK_FILE_BYTES)

    def _try_create(self) -> bool:
        return self.backend.put_if_absent(LOCK_FILE, self._encoded(), reuse=LOCK_SPARE_FILE)

    def _take_over_if_stale(self) -> LockHolder | None:
        """Remove a stale lock; return the live holder otherwise."""
        with self.backend.host_mutex():
            lease = read_lease(self.backend)
            if lease is None:
                return None
            if _is_stale(lease):
                holder = lease.holder
                log.warning("taking over a stale lock of %s (pid %d on %s, since %s): %s",
                            holder.command, holder.pid, holder.host,
                            f"{holder.since:%Y-%m-%d %H:%M:%S}", _why_stale(lease))
                _retire(self.backend)
                return None
            return lease.holder

    def acquire(self) -> None:
        deadline = time.monotonic() + self.wait_s
        while True:
            if self._try_create():
                self._heartbeat = Heartbeat(self._refresh, self.timing.refresh_s,
                                            f"refresh the writer lock of {self.backend.location}")
                return
            holder = self._take_over_if_stale()
            if holder is None:
                continue
            if time.monotonic() >= deadline:
                raise RepositoryLocked(holder)
            time.sleep(POLL_INTERVAL_S)

    def _still_ours(self) -> bool:
        """Reads the lock; once it is found in other hands (or gone), it stays lost."""
        if not self._lost:
            lease = read_lease(self.backend)
            if lease is None or lease.token != self._token:
                self._lost, self._taken_by = True, lease
        return not self._lost

    def _refresh(self) -> bool:
        with self.backend.host_mutex():
            if not self._still_ours():
                log.warning("the writer lock of %s is no longer ours (%s took it over, or "
                            "it was broken): %s stops before it commits anything more",
                            self.backend.location,
                            self._taken_by.holder.host if self._taken_by else "nobody",
                            self.holder.command)
                return False  # the heartbeat ends: never overwrite another's lock
            self.backend.put(LOCK_FILE, self._encoded())
            return True

    def _lost_error(self) -> LockLost:
        return LockLost(self.backend.location, self.holder.command,
                        self._taken_by.holder if self._taken_by else None)

    def ensure_held(self) -> None:
        """LockLost unless the lock object still carries our token (one read): a writer
        calls it before it commits, so one whose lock was taken over commits nothing."""
        if not self._still_ours():
            raise self._lost_error()

    @property
    def held(self) -> bool:
        """False once the heartbeat (or ensure_held) found the lock in other hands."""
        return self._heartbeat is not None and not self._lost

    def release(self) -> None:
        if self._heartbeat is None:
            return
        self._heartbeat.stop()
        self._heartbeat = None
        if self._lost:
            return
        with self.backend.host_mutex():
            current = read_lease(self.backend)
            if current and current.token == self._token:
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


def _live_holders(backend: Backend, prefix: str, grace_s: float) -> list[LockHolder]:
    """The holders of the registrations under ``prefix`` that count as alive; stale ones
    are removed on the way."""
    holders = []
    for name in backend.list(prefix):
        if not _REGISTRATION.fullmatch(name[len(prefix):]):
            continue
        try:
            lease = _decode(backend.get(name))
        except FileNotFoundError:
            continue  # ended while we listed
        except (ValueError, KeyError, TypeError):
            log.warning("%s/%s is not a registration diskvault wrote; it is left alone",
                        backend.location, name)
            continue
        if _is_stale(lease, grace_s):
            backend.delete(name)
        else:
            holders.append(lease.holder)
    return holders


def active_readers(backend: Backend, grace_s: float = READER_GRACE_S) -> list[LockHolder]:
    """The readers running now (a registration whose process is gone on this host, or
    whose lease expired ``grace_s`` ago on another, is removed, not counted)."""
    return _live_holders(backend, READERS_PREFIX, grace_s)


class _Registration:
    """An object under ``readers/`` or ``readers-paused/`` renewed while it is held."""

    def __init__(self, backend: Backend, prefix: str, holder: LockHolder,
                 timing: LeaseTiming):
        self.backend = backend
        self.name = _unique_name(prefix, holder)
        self._holder = holder
        self._timing = timing
        self._heartbeat: Heartbeat | None = None

    def put(self) -> None:
        self.backend.put(self.name, _encode(self._holder, "", self._timing))
        if self._heartbeat is None:
            self._heartbeat = Heartbeat(self._renew, self._timing.refresh_s,
                                        f"renew {self.backend.location}/{self.name}")

    def _renew(self) -> bool:
        self.backend.put(self.name, _encode(self._holder, "", self._timing))
        return True

    def delete(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.stop()
            self._heartbeat = None
        self.backend.delete(self.name)


class ReaderLock:
    """A reader's registration, held for as long as it runs. On a read-only repository
    there is none: nothing can be registered there, and no writer can run there either."""

    def __init__(self, backend: Backend, command: str = "reader",
                 timing: LeaseTiming = DEFAULT_TIMING, grace_s: float = READER_GRACE_S):
        self.backend = backend
        self._registration: _Registration | None = _Registration(
            backend, READERS_PREFIX, this_process(command), timing)
        while True:
            if not self._register():
                return
            if not _live_holders(backend, PAUSES_PREFIX, grace_s):
                return
            self._registration.delete()  # a compaction is deleting packs: let it end
            while _live_holders(backend, PAUSES_PREFIX, grace_s):
                time.sleep(POLL_INTERVAL_S)

    def _register(self) -> bool:
        try:
            self._registration.put()
        except OSError as error:
            if is_access_denied(error):
                self._registration = None
                return False
            if error.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            log.warning("the disk of %s is full: this reader runs unregistered, so a "
                        "compaction now could delete packs it reads", self.backend.location)
            self._registration = None
            return False
        return True

    def release(self) -> None:
        if self._registration is not None:
            self._registration.delete()
            self._registration = None

    def __enter__(self) -> "ReaderLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


@contextmanager
def readers_excluded(backend: Backend, grace_s: float = READER_GRACE_S,
                     timing: LeaseTiming = DEFAULT_TIMING):
    """Yield True if no reader is running (and none can start) for the block's duration."""
    pause = _Registration(backend, PAUSES_PREFIX, this_process("readers excluded"), timing)
    pause.put()
    try:
        yield not active_readers(backend, grace_s)
    finally:
        pause.delete()
