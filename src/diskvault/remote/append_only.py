"""What a client of an append-only server may still change: the reader registrations, which
a reader renews in place and removes (coordination/readers.py). Everything else -- packs,
snapshot records, config, keys, protection marks, the writer lock, backup registrations -- is
added, never overwritten, moved or deleted, whatever the client runs. A backup needs no more:
its registrations are new objects each time, and the ones it may not remove expire
(coordination/writers.py); the exclusive operations, which delete, are refused at their
first step.

So a client with an append-only key can still remove another's reader registration: that
may let a compaction run under a reader, which then retries; it erases no backup."""

from __future__ import annotations

from ..store.coordination.readers import PAUSES_PREFIX, READERS_PREFIX

CHANGEABLE_PREFIXES = (READERS_PREFIX, PAUSES_PREFIX)


def may_change(name: str) -> bool:
    """Whether an append-only server lets a client overwrite, move or delete ``name``."""
    return name.startswith(CHANGEABLE_PREFIXES)


def beside(name: str, last: str) -> str:
    """The name of ``last`` in the folder of ``name`` (put_if_absent's ``reuse``)."""
    folder, slash, _ = name.rpartition("/")
    return f"{folder}{slash}{last}"
