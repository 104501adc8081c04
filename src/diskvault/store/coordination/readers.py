"""Reader registrations and pauses: readers and a compaction's pack deletion kept apart.

Each reader (restore, cat, mount, check) puts a registration ``readers/<32 random hex>.json``
while it runs (the name says nothing of the holder; the lease inside names it, sealed in an
encrypted repository), a lease renewed like the writer lock (``refreshed``, ``expires``).
Compaction deletes packs only inside ``readers_excluded``: it puts ``readers-paused/<...>
.json`` (itself a lease) and then lists the readers; a reader puts its registration and
then looks for a pause. Each writes before it looks, so at least one of them sees the other:
the compaction then keeps its packs, or the reader waits until the pause is over. A
registration or pause counts as alive: on this host while its process lives; of another host
until, by the storage's clock (leases.py), it went unrenewed for longer than its lease plus a
grace period (``READER_GRACE_S``, 60 s, for renewals that are late); without ``expires`` (an
older diskvault) until it is removed. Dead ones are removed on the way, where the
credentials allow: a write-only client's registration that it could not remove expires.
"""

from __future__ import annotations

import errno
import logging
import re
import secrets
import time
from contextlib import contextmanager

from ...errors import LockHolder
from ..backends.protocol import Backend, is_access_denied
from .heartbeat import Heartbeat
from .leases import (DEFAULT_TIMING, PLAINTEXT_LEASES, POLL_INTERVAL_S, LeaseFormat, LeaseTiming,
                     staleness, this_process)
from .writers import try_delete

log = logging.getLogger(__name__)

READERS_PREFIX = "readers/"
PAUSES_PREFIX = "readers-paused/"
READER_GRACE_S = 60.0
# Ours: a random name, or <host>-<pid>-<16 hex> as older releases named them.
_REGISTRATION = re.compile(r"(.+-[0-9]+-[0-9a-f]{16}|[0-9a-f]{32})\.json")


def _unique_name(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(16)}.json"



def _live_holders(backend: Backend, prefix: str, grace_s: float,
                  leases: LeaseFormat) -> list[LockHolder]:
    """The holders of the registrations under ``prefix`` that count as alive; stale ones
    are removed on the way."""
    holders = []
    for name in backend.list(prefix):
        if not _REGISTRATION.fullmatch(name[len(prefix):]):
            continue
        try:
            lease = leases.decode(backend.get(name), name)
        except FileNotFoundError:
            continue  # ended while we listed
        except (ValueError, KeyError, TypeError):
            log.warning("%s/%s is not a registration diskvault wrote; it is left alone",
                        backend.location, name)
            continue
        if staleness(lease, backend, name, grace_s) is not None:
            try_delete(backend, name)
        else:
            holders.append(lease.holder)
    return holders


def active_readers(backend: Backend, grace_s: float = READER_GRACE_S,
                   leases: LeaseFormat = PLAINTEXT_LEASES) -> list[LockHolder]:
    """The readers running now (a registration whose process is gone on this host, or
    whose lease expired ``grace_s`` ago on another, is removed, not counted)."""
    return _live_holders(backend, READERS_PREFIX, grace_s, leases)


class _Registration:
    """An object under ``readers/`` or ``readers-paused/`` renewed while it is held."""

    def __init__(self, backend: Backend, prefix: str, holder: LockHolder,
                 timing: LeaseTiming, leases: LeaseFormat):
        self.backend = backend
        self.name = _unique_name(prefix)
        self._holder = holder
        self._timing = timing
        self._leases = leases
        self._heartbeat: Heartbeat | None = None

    def put(self) -> None:
        self.backend.put(self.name, self._encoded())
        if self._heartbeat is None:
            self._heartbeat = Heartbeat(self._renew, self._timing.refresh_s,
                                        f"renew {self.backend.location}/{self.name}")

    def _renew(self) -> bool:
        self.backend.put(self.name, self._encoded())
        return True

    def _encoded(self) -> bytes:
        return self._leases.encode(self._holder, "", self._timing, self.name)

    def delete(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.stop()
            self._heartbeat = None
        try_delete(self.backend, self.name)  # a write-only client's expires


class ReaderLock:
    """A reader's registration, held for as long as it runs. On a read-only repository
    there is none: nothing can be registered there, and no writer can run there either."""

    def __init__(self, backend: Backend, command: str = "reader",
                 timing: LeaseTiming = DEFAULT_TIMING, grace_s: float = READER_GRACE_S,
                 leases: LeaseFormat = PLAINTEXT_LEASES):
        self.backend = backend
        self._registration: _Registration | None = _Registration(
            backend, READERS_PREFIX, this_process(command), timing, leases)
        while True:
            if not self._register():
                return
            if not _live_holders(backend, PAUSES_PREFIX, grace_s, leases):
                return
            self._registration.delete()  # a compaction is deleting packs: let it end
            while _live_holders(backend, PAUSES_PREFIX, grace_s, leases):
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
                     timing: LeaseTiming = DEFAULT_TIMING, leases: LeaseFormat = PLAINTEXT_LEASES):
    """Yield True if no reader is running (and none can start) for the block's duration."""
    pause = _Registration(backend, PAUSES_PREFIX, this_process("readers excluded"), timing,
                          leases)
    pause.put()
    try:
        yield not active_readers(backend, grace_s, leases)
    finally:
        pause.delete()
