"""This user's folders on this host, as the XDG base directories name them: the cache (an
object store's index, its host mutexes) and the state (what diskvault knows of restore
targets). Nothing in them is the truth of a repository."""

from __future__ import annotations

import fcntl
import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .durable import make_private_folder


def user_cache_folder() -> Path:
    """``$XDG_CACHE_HOME/diskvault`` (default ``~/.cache/diskvault``)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "diskvault"


def user_state_folder() -> Path:
    """``$XDG_STATE_HOME/diskvault`` (default ``~/.local/state/diskvault``)."""
    base = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(base) / "diskvault"


PLACE_KEY_HEX_DIGITS = 16


def cached_index_folder(repository_id: str, place: str) -> Path:
    """Where this machine caches the index of the repository ``repository_id`` read at
    ``place`` (Backend.place): two copies of one repository (a cloned prefix, a replica on
    another endpoint, a copied folder) share an id but never a cache. The id is validated
    (32 hex digits) by the config before it names a folder."""
    return user_cache_folder() / repository_id / place_key(place) / "index"


def place_key(place: str) -> str:
    """A short, file-name-safe digest of a Backend.place, to keep apart what this host
    holds for two copies of one repository."""
    return hashlib.sha256(place.encode()).hexdigest()[:PLACE_KEY_HEX_DIGITS]


def cached_records_folder(repository_id: str, place: str) -> Path:
    """Where this machine keeps the snapshot records it read of that repository, beside its
    cached index (host/record_cache.py)."""
    return cached_index_folder(repository_id, place).parent / "snapshots"


def make_cached_index_folder(repository_id: str, place: str) -> Path:
    """cached_index_folder, its folders made: ``<cache>/diskvault/<repository id>/<place
    key>/``, each 0700 (the index names chunks)."""
    index_folder = cached_index_folder(repository_id, place)
    top = user_cache_folder()
    top.parent.mkdir(parents=True, exist_ok=True)
    for folder in (top, index_folder.parent.parent, index_folder.parent):
        make_private_folder(folder)
    return index_folder


@contextmanager
def cache_mutex(key: str) -> Iterator[None]:
    """An flock of a file in this user's cache (``<cache>/diskvault/locks/``) named by a
    digest of ``key``: it serialises this user's processes on this host around a repository
    whose bytes are not files here (Backend.host_mutex); a lock object in the repository
    serialises hosts."""
    folder = user_cache_folder() / "locks"
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    token = hashlib.sha256(key.encode()).hexdigest()[:32]
    fd = os.open(folder / f"{token}.lock",
                 os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
