"""The Backend: every byte of a repository (packs, snapshot records, config, locks, reader
registrations, temp files) goes through these few operations, named after what an object
store can do, so that a local folder and an S3 bucket are two implementations of one
protocol.

Objects are named by slash-separated keys relative to the repository root, exactly the
paths of format version 1: ``config``, ``snapshots/<id>.json``, ``packs/<xx>/<id>.pack``,
``lock``, ``readers/...``. A missing object is ``FileNotFoundError`` (an object store maps
its 404 to it).
"""

from __future__ import annotations

import errno
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import ContextManager, Protocol

log = logging.getLogger(__name__)


class Upload(Protocol):
    """An object written in parts (a 64 MiB pack), visible under its name only once
    ``complete`` returns -- a temp file renamed into place, or an S3 multipart upload."""

    def write(self, data) -> None: ...

    def complete(self) -> None: ...

    def abort(self) -> None:
        """Drop what was written; safe to call again, or after a failed ``complete``."""


@dataclass(frozen=True)
class ObjectAge:
    """How long ago an object was last written, by the storage's own clock (never more
    than the truth), and how far this host's clock runs ahead of the storage's."""

    age_s: float
    host_ahead_s: float  # negative: behind


class Backend(Protocol):
    location: str  # how messages name the repository
    # Where its bytes are, fully (an object store's endpoint too): two copies of one
    # repository have one id but two places, and never share an index cache.
    place: str
    # Pack uploads worth finishing at once: above 1 on an object store, paced by requests
    # in flight, not by a disk.
    uploads_in_flight: int
    read_gap_bytes: int  # a range read goes through a gap this small rather than split
    # A random reader (the mount, ls, pull) fetches a record with the aligned window of its
    # pack around it, so that its neighbours cost no request of their own; 0: just the record.
    read_window_bytes: int
    # Worker threads for reads: None, one per core (a disk); an object store's read waits on
    # the network, so more keep more range requests in flight.
    reads_in_flight: int | None
    # The repository's folder on this machine; None where its bytes are not files here.
    root: Path | None
    # The index is this user's cache, rebuilt from the packs (an object store), not a file
    # of the repository that every process opening it shares (a local folder).
    index_is_cache: bool
    # S3 Object Lock once use_object_lock was called (store/backends/s3_lock.py: retention,
    # extension, legal holds, deleting versions); None where there is none.
    object_lock: object | None

    def index_folder(self, repository_id: str) -> Path:
        """Where the index of this repository lives (a cache's folders are made 0700)."""

    def disk_folders(self) -> list[Path]:
        """The folders of this machine that the repository's objects fill: where a full
        disk stops a writer and a space reserve helps; none for an object store."""

    def contains(self, path: Path) -> bool:
        """Whether ``path`` (existing or not) lies inside the repository's own files."""

    def requests_made(self) -> dict[str, int] | None:
        """The requests made so far, by operation, where each one costs; None for a
        local folder."""

    def put(self, name: str, data: bytes) -> None:
        """Store ``data`` as ``name``, replacing it whole: readers see the old or the new."""

    def put_if_absent(self, name: str, data: bytes, reuse: str | None = None) -> bool:
        """Store ``data`` as ``name`` unless it exists (False then); never seen partial.
        ``reuse`` names an object whose storage may be recycled for it (local: its blocks
        are rewritten in place, so this works on a full disk); it is gone afterwards."""

    def open_upload(self, name: str) -> Upload: ...

    def get(self, name: str) -> bytes: ...

    def get_range(self, name: str, offset: int, length: int) -> bytes:
        """``length`` bytes at ``offset``; fewer (or none) past the end."""

    def prefetch(self, name: str, offset: int, length: int) -> None:
        """A hint that this range is read soon (may do nothing)."""

    def stat(self, name: str) -> int | None:
        """The object's size, None if it does not exist."""

    def age(self, name: str) -> ObjectAge | None:
        """How long ago ``name`` was last written, measured by the storage's clock alone
        (its modification time against the storage's now), so a host whose clock is wrong
        still judges a lease right; None if it does not exist."""

    def list(self, prefix: str) -> list[str]:
        """Names of the objects under ``prefix``, sorted; unfinished puts never show."""

    def list_foreign(self, prefix: str) -> list[str]:
        """Entries under ``prefix`` that are not objects (a link, a device; a local folder
        with no object in it, named with a trailing slash): not diskvault's unless the caller
        knows them, reported by check. On an object store: keys no object name can be."""

    def list_unfinished(self, prefix: str) -> list[str]:
        """Leftovers of puts and uploads under ``prefix`` whose writer died."""

    def discard_unfinished(self, prefix: str) -> None:
        """Remove those leftovers. Only a writer holding the lock calls this."""

    def delete(self, name: str) -> None:
        """Remove ``name``; nothing if it is already gone."""

    def move(self, name: str, new_name: str) -> None:
        """Give an object a new name, replacing what had it (local: a rename)."""

    def use_object_lock(self, settings, retained: dict, verify: bool = False) -> None:
        """Put the objects under the prefixes of ``retained`` (prefix -> extra time) with
        the retention of ``settings`` (config.ObjectLockSettings); ``verify`` that the
        storage has Object Lock first. BadInput where it cannot."""

    def read_only_reason(self) -> str | None:
        """Why nothing can be written here, or None if writers can work."""

    def host_mutex(self) -> ContextManager[None]:
        """Serialises processes of this host (a stale lock is taken over under it)."""

    def close(self) -> None: ...


def check_object_name(name: str) -> list[str]:
    """The parts of a valid name; ValueError for one that could leave the store (an empty
    part, ``.``, ``..``) on any backend."""
    parts = name.split("/")
    if not name or any(part in ("", ".", "..") for part in parts):
        raise ValueError(f"bad object name {name!r}")
    return parts



def is_access_denied(error: OSError) -> bool:
    """The errors of writing where one may not: a read-only filesystem or a folder of
    another user."""
    return error.errno in (errno.EACCES, errno.EPERM, errno.EROFS)


class StrayNotice:
    """Entries under a prefix that are not diskvault's are left alone and named once per
    process: a warning at the first listing that meets them, none once a caller (check)
    reports them itself."""

    def __init__(self, backend: Backend, prefix: str, kind: str):
        self._where = f"{backend.location}/{prefix}"
        self._kind = kind
        self._said = False

    def warn(self, strays: list[str]) -> None:
        if strays and not self._said:
            self._said = True
            log.warning("%d entries under %s are not %s and are left alone (%s); 'diskvault "
                        "check' lists them", len(strays), self._where, self._kind,
                        ", ".join(strays[:3]) + (", ..." * (len(strays) > 3)))

    def reported_elsewhere(self) -> None:
        self._said = True
