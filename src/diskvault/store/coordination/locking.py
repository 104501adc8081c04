"""The writer lock over the backend: one exclusive operation at a time, on one host or
many, and none while a backup runs; backups themselves run side by side (``BackupLock``).

Backups and copies register (writers.py) and then read ``lock``; an exclusive operation
(prune, delete, compact, repair, protect, key changes) puts ``lock`` and then lists the
registrations. Each writes its own marker before it reads the other's, so of two that start
at once at least one sees the other and backs off: the backup withdraws its registration,
the exclusive operation gives the lock back, and each waits (``--lock-wait``) or refuses,
naming who runs.

The writer lock is the object ``lock``, put only if absent; it names host, pid, command and
start time, so a second writer can say who holds it (sealed in an encrypted repository:
leases.py's ``LeaseFormat``). Its holder rewrites it every
``refresh_s`` (60 s) with a new ``refreshed`` time and ``expires`` = refreshed + ``stale_s``
(300 s: several refreshes, so one slow request does not lose it), first checking that the
lock still carries its random ``token``. A lock is stale, and is taken over:

- on this host, when its process is gone (at once; a live process of this host is never
  stale, whatever its age: we can see it run);
- of another host, when it has not been refreshed for ``stale_s`` (the time from its
  ``refreshed`` to its ``expires``), measured by the storage's clock (leases.py), so a host
  whose clock is off never takes over a live lock. A lock without ``expires`` (an older
  diskvault, which never refreshes) is never stale by age: only ``break-lock`` removes it.

A holder that finds its token gone (another host took the lock over after it stopped
refreshing: a process paused or cut off for longer than ``stale_s``) has lost the lock: its
heartbeat stops, and ``ensure_held`` -- which a holder calls before every step that counts:
each record prune and delete remove, compact's index changes and pack deletions, repair's
rebuild -- raises ``LockLost``, so it writes nothing more that counts. A backup's
``ensure_held``, before its snapshot record, checks its registration instead (writers.py). Between the refresh's check and its put another host could take the lock; that
window is one request long, against a stale time of minutes.

Its bytes are allocated once: a released lock becomes ``lock.spare``, which the next
writer's put recycles, so delete and compact can take the lock on a disk with no byte free.

Readers register apart (readers.py); the lease format and staleness are leases.py's.
"""

from __future__ import annotations

import logging
import secrets
import time

from ...errors import (AppendOnlyRefused, LockHolder, LockLost, RegistrationLost,
                       RepositoryLocked, RepositoryReadOnly)
from ..backends.protocol import Backend
from .heartbeat import Heartbeat
from .leases import (DEFAULT_TIMING, PLAINTEXT_LEASES, POLL_INTERVAL_S, Lease, LeaseFormat,
                     LeaseTiming, staleness, this_process, unknown_holder)
from .writers import WriterRegistration, running_backups

log = logging.getLogger(__name__)

LOCK_FILE = "lock"
LOCK_SPARE_FILE = "lock.spare"
LOCK_FILE_BYTES = 4096  # the holder text, padded: one block, reused in place
DELETE_PROBE = "lock.delete-probe"  # never put: deleting it tells whether we may delete


def prepare_lock_files(backend: Backend) -> None:
    """Allocate the spare lock of a new repository, so that no later writer needs space to
    take the lock."""
    backend.put(LOCK_SPARE_FILE, bytes(LOCK_FILE_BYTES))


def read_lease(backend: Backend, name: str = LOCK_FILE,
               leases: LeaseFormat = PLAINTEXT_LEASES) -> Lease | None:
    """The writer lock (or the registration ``name``) as it stands; None if absent."""
    try:
        return leases.decode(backend.get(name), name)
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError):
        # Unreadable (damaged by hand or by a disk fault): only break-lock removes it.
        return Lease(unknown_holder())


def read_holder(backend: Backend, leases: LeaseFormat = PLAINTEXT_LEASES) -> LockHolder | None:
    lease = read_lease(backend, leases=leases)
    return lease.holder if lease else None


def _retire(backend: Backend) -> None:
    """Keep the lock's storage for the next writer: it becomes the spare."""
    try:
        backend.move(LOCK_FILE, LOCK_SPARE_FILE)
    except FileNotFoundError:
        pass


def take_over_if_stale(backend: Backend, leases: LeaseFormat) -> LockHolder | None:
    """Remove the lock if it is stale; return its live holder otherwise (None: no lock)."""
    with backend.host_mutex():
        # Looked for before it is read: it is absent at nearly every look, and a missing
        # object's stat answers sooner than its GET (radosgw sends a 404 with a body 40 ms
        # late, by Nagle's algorithm against the client's delayed ACK; a HEAD's has none).
        if backend.stat(LOCK_FILE) is None:
            return None
        lease = read_lease(backend, leases=leases)
        if lease is None:
            return None
        why = staleness(lease, backend, LOCK_FILE)
        if why is not None:
            holder = lease.holder
            log.warning("taking over a stale lock of %s (pid %d on %s, since %s): %s",
                        holder.command, holder.pid, holder.host,
                        f"{holder.since:%Y-%m-%d %H:%M:%S}", why)
            _retire(backend)
            return None
        return lease.holder


class WriterLock:
    """The exclusive lock of prune, delete, compact and repair, refreshed while held."""

    def __init__(self, backend: Backend, command: str, wait_s: float = 0.0,
                 timing: LeaseTiming = DEFAULT_TIMING, leases: LeaseFormat = PLAINTEXT_LEASES):
        self.backend = backend
        self.wait_s = wait_s
        self.timing = timing
        self.leases = leases
        self.holder = this_process(command)
        self._token = secrets.token_hex(16)
        self._heartbeat: Heartbeat | None = None
        self._taken_by: Lease | None = None  # set once the lock is found in other hands
        self._lost = False

    def _encoded(self) -> bytes:
        return self.leases.encode(self.holder, self._token, self.timing, LOCK_FILE,
                                  LOCK_FILE_BYTES)

    def _try_create(self) -> bool:
        return self.backend.put_if_absent(LOCK_FILE, self._encoded(), reuse=LOCK_SPARE_FILE)

    def acquire(self) -> None:
        """Take the lock once no other holds it and no backup runs (two-phase: the lock is
        put, then the backups' registrations listed; with one running it is given back)."""
        self._ensure_may_delete()
        deadline = time.monotonic() + self.wait_s
        while True:
            if self._try_create():
                backups = running_backups(self.backend, self.leases)
                if not backups:
                    self._heartbeat = Heartbeat(
                        self._refresh, self.timing.refresh_s,
                        f"refresh the writer lock of {self.backend.location}")
                    return
                _retire(self.backend)
                holder, running = backups[0], len(backups)
            else:
                holder, running = take_over_if_stale(self.backend, self.leases), 0
                if holder is None:
                    continue
            if time.monotonic() >= deadline:
                raise RepositoryLocked(holder, running)
            time.sleep(POLL_INTERVAL_S)

    def _ensure_may_delete(self) -> None:
        """RepositoryReadOnly, before anything is touched, where these credentials may not
        delete (a write-only client): every exclusive operation deletes. The probe is a
        delete of an object that never exists: allowed, it changes nothing."""
        try:
            self.backend.delete(DELETE_PROBE)
        except RepositoryReadOnly as refused:
            why = ("its server serves it append-only" if isinstance(refused, AppendOnlyRefused)
                   else "these credentials may not (access denied)")
            raise type(refused)(
                f"{self.holder.command} deletes objects in {self.backend.location}, and {why}; "
                f"nothing was removed: backups and readers work here; run "
                f"{self.holder.command.split()[0]} from a host whose credentials may delete"
            ) from None

    def _still_ours(self) -> bool:
        """Reads the lock; once it is found in other hands (or gone), it stays lost."""
        if not self._lost:
            lease = read_lease(self.backend, leases=self.leases)
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
            current = read_lease(self.backend, leases=self.leases)
            if current and current.token == self._token:
                _retire(self.backend)

    def __enter__(self) -> "WriterLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def break_lock(backend: Backend, leases: LeaseFormat = PLAINTEXT_LEASES) -> LockHolder | None:
    """Remove the writer lock whoever holds it; returns the holder that was removed."""
    holder = read_holder(backend, leases)
    _retire(backend)
    return holder


class BackupLock:
    """What a backup or a copy holds: its registration (writers.py), renewed while it
    runs, beside any number of others; taken only while no exclusive operation holds the
    writer lock (a stale one is taken over). The same interface as WriterLock."""

    def __init__(self, backend: Backend, command: str, wait_s: float = 0.0,
                 timing: LeaseTiming = DEFAULT_TIMING, leases: LeaseFormat = PLAINTEXT_LEASES,
                 writer_tag: str = ""):
        self.backend = backend
        self.wait_s = wait_s
        self.leases = leases
        self.holder = this_process(command)
        self._registration = WriterRegistration(backend, self.holder, timing, leases,
                                                writer_tag)
        self._held = False

    def acquire(self) -> None:
        deadline = time.monotonic() + self.wait_s
        while True:
            self._registration.put()  # first our marker, then a look at theirs
            holder = take_over_if_stale(self.backend, self.leases)
            if holder is None:
                self._registration.keep_renewed()
                self._held = True
                return
            self._registration.withdraw()
            if time.monotonic() >= deadline:
                raise RepositoryLocked(holder)
            time.sleep(POLL_INTERVAL_S)

    def ensure_held(self) -> None:
        """RegistrationLost once an exclusive operation removed the registration as stale
        (one stat): a backup calls it before it records its snapshot."""
        if not self._registration.still_registered():
            raise RegistrationLost(self.backend.location, self.holder.command)

    @property
    def held(self) -> bool:
        return self._held and not self._registration.lost

    def release(self) -> None:
        if self._held:
            self._held = False
            self._registration.withdraw()

    def __enter__(self) -> "BackupLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
