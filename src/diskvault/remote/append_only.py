"""What a client of an append-only server may still change: the writer lock and the reader
registrations, which the lock protocol rewrites and removes (coordination/). Everything else
-- packs, snapshot records, config, keys, protection marks -- is added, never overwritten,
moved or deleted, whatever the client runs.

Until the registrations need no delete or overwrite, a client with an append-only key can
still remove another's lock or registration: that delays or confuses a writer, but erases no
backup."""

from __future__ import annotations

from ..store.coordination.locking import LOCK_FILE, LOCK_SPARE_FILE
from ..store.coordination.readers import PAUSES_PREFIX, READERS_PREFIX

CHANGEABLE_NAMES = frozenset({LOCK_FILE, LOCK_SPARE_FILE})
CHANGEABLE_PREFIXES = (READERS_PREFIX, PAUSES_PREFIX)


def may_change(name: str) -> bool:
    """Whether an append-only server lets a client overwrite, move or delete ``name``."""
    return name in CHANGEABLE_NAMES or name.startswith(CHANGEABLE_PREFIXES)


def beside(name: str, last: str) -> str:
    """The name of ``last`` in the folder of ``name`` (put_if_absent's ``reuse``)."""
    folder, slash, _ = name.rpartition("/")
    return f"{folder}{slash}{last}"
