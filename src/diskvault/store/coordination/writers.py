"""Backup registrations: how backups (and copies into a repository) announce themselves, so
that any number of them run side by side while the exclusive operations (prune, delete,
compact, repair, protect, key changes) wait for them or refuse, naming them.

A backup puts ``writers/<32 random hex>-<n>.json``, a lease (leases.py) naming its holder
(sealed in an encrypted repository), and renews it by putting ``-<n+1>`` and then trying to
remove ``-<n>``. So nothing a backup needs is a delete or an overwrite: a host whose
credentials may only create objects backs up as well as any, and what it could not remove
expires by the storage's clock. The newest number of a token is the registration; older
ones are leftovers that an exclusive operation removes. The token begins with the
backup's writer tag, which begins the id of every pack it writes: so another backup tells
the unfinished packs of a writer that is gone (no live registration with its tag) from
those of one still running, and removes only the former.

An exclusive operation, holding the writer lock, removes registrations that are stale (of
this host: their process is gone; of another: not renewed for their lease's length by the
storage's clock) and counts the rest as running backups. A backup whose registration was
removed as stale has lost it: its renewal and ``ensure_held`` find it gone, and it records
nothing more.
"""

from __future__ import annotations

import logging
import re
import secrets
import threading
from collections import defaultdict

from ...errors import DiskvaultError, LockHolder
from ..backends.protocol import Backend
from ..format.packs import WRITER_TAG_HEX_DIGITS
from .heartbeat import Heartbeat
from .leases import LeaseFormat, LeaseTiming, staleness

log = logging.getLogger(__name__)

WRITERS_PREFIX = "writers/"
_NAME = re.compile(r"([0-9a-f]{32})-([0-9]+)\.json")


def registration_name(token: str, number: int) -> str:
    return f"{WRITERS_PREFIX}{token}-{number}.json"


def try_delete(backend: Backend, name: str) -> None:
    """Remove ``name`` if these credentials may; a refusal (a write-only client) is fine:
    what a registration leaves expires by the storage's clock."""
    try:
        backend.delete(name)
    except (OSError, DiskvaultError) as error:
        log.debug("could not remove %s/%s (it expires): %s", backend.location, name, error)


def _registrations(backend: Backend) -> dict[str, list[int]]:
    """The numbers put under each token, highest last; names not ours are left alone."""
    numbers: dict[str, list[int]] = defaultdict(list)
    for name in backend.list(WRITERS_PREFIX):
        match = _NAME.fullmatch(name[len(WRITERS_PREFIX):])
        if match:
            numbers[match[1]].append(int(match[2]))
    return {token: sorted(found) for token, found in numbers.items()}


def running_backups(backend: Backend, leases: LeaseFormat) -> list[LockHolder]:
    """The backups registered now. Called by the holder of the writer lock, which may
    delete: stale registrations, and the superseded numbers of live ones, are removed."""
    return list(live_registrations(backend, leases).values())


def running_writer_tags(backend: Backend, leases: LeaseFormat) -> set[str]:
    """The writer tags (the first hex digits of the token, which begin the ids of the packs
    it writes) of the backups registered now: whose unfinished packs are not leftovers."""
    return {token[:WRITER_TAG_HEX_DIGITS] for token in live_registrations(backend, leases)}


def live_registrations(backend: Backend, leases: LeaseFormat) -> dict[str, LockHolder]:
    """The holder of each live registration, by token; stale registrations and the
    superseded numbers of live ones are removed where the credentials allow."""
    running = {}
    for token, numbers in _registrations(backend).items():
        for number in numbers[:-1]:
            try_delete(backend, registration_name(token, number))
        try:
            newest, data = _newest(backend, token, numbers[-1])
        except FileNotFoundError:
            continue  # withdrawn since the listing: that backup ended
        try:
            lease = leases.decode(data, newest)
        except (ValueError, KeyError, TypeError):
            log.warning("%s/%s is not a registration diskvault wrote; it is left alone",
                        backend.location, newest)
            continue
        why = staleness(lease, backend, newest)
        if why is None:
            running[token] = lease.holder
            continue
        holder = lease.holder
        log.warning("removing the stale registration of %s (pid %d on %s, since %s): %s",
                    holder.command, holder.pid, holder.host,
                    f"{holder.since:%Y-%m-%d %H:%M:%S}", why)
        try_delete(backend, newest)
    return running


def _newest(backend: Backend, token: str, number: int) -> tuple[str, bytes]:
    """The name and bytes of the token's newest registration, ``number`` as listed. A
    renewal puts the next number before it removes the last, so one gone since the
    listing has a successor (listed again) unless the backup withdrew it: then
    FileNotFoundError. Never a live backup taken for ended."""
    while True:
        name = registration_name(token, number)
        try:
            return name, backend.get(name)
        except FileNotFoundError:
            later = [n for n in _registrations(backend).get(token, []) if n > number]
            if not later:
                raise
            number = later[-1]


class WriterRegistration:
    """One backup's registration, renewed under new names while it is held."""

    def __init__(self, backend: Backend, holder: LockHolder, timing: LeaseTiming,
                 leases: LeaseFormat, writer_tag: str):
        """``writer_tag``: the tag that begins the ids of the packs this backup writes
        (PackStore.writer_tag); it begins the registration's token."""
        self.backend = backend
        self._holder = holder
        self._timing = timing
        self._leases = leases
        self._token = writer_tag + secrets.token_hex(16 - len(writer_tag) // 2)
        self._number = -1  # none put yet
        self._heartbeat: Heartbeat | None = None
        self._renewing = threading.Lock()  # a renewal and a look never see half of the other
        self.lost = False

    @property
    def name(self) -> str:
        return registration_name(self._token, self._number)

    def put(self) -> None:
        """Put the next number (the first, or one after a withdrawal)."""
        self._number += 1
        self.backend.put(self.name, self._encoded())

    def _encoded(self) -> bytes:
        return self._leases.encode(self._holder, self._token, self._timing, self.name)

    def keep_renewed(self) -> None:
        self._heartbeat = Heartbeat(self._renew, self._timing.refresh_s,
                                    f"renew {self.backend.location}/{self.name}")

    def _renew(self) -> bool:
        with self._renewing:
            if not self._still_registered():
                log.warning("the registration of %s in %s was removed as stale (an "
                            "exclusive operation found it unrenewed): it records nothing "
                            "more", self._holder.command, self.backend.location)
                return False
            previous = self.name
            self.put()
        try_delete(self.backend, previous)
        return True

    def still_registered(self) -> bool:
        """One look (a stat): False once an exclusive operation removed it as stale, and
        from then on."""
        with self._renewing:
            return self._still_registered()

    def _still_registered(self) -> bool:
        if not self.lost and self.backend.stat(self.name) is None:
            self.lost = True
        return not self.lost

    def withdraw(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.stop()
            self._heartbeat = None
        if self._number >= 0:
            try_delete(self.backend, self.name)
