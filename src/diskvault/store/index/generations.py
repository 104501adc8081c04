"""Two generations of the index's tables in its one LMDB environment, so that no process
ever sees a rebuild half done.

The locations and the packs exist twice (``chunks``/``packs``, the names of an index
written before generations, and ``chunks.1``/``packs.1``); the ``meta`` record
``generation`` names the live pair (none: 0). Every transaction reads it first and uses
that pair, and an LMDB read transaction is a snapshot: a reader sees one whole generation
throughout. A rebuild fills the spare pair in bounded transactions, then makes it live,
with the identity, and empties the old pair and every table kept beside them, in one small
transaction (bulk_load.rebuild). A kill before that leaves the old index live and whole,
and the next rebuild empties the half-filled spare first.

Processes that fill the index coordinate through an flock beside it (``rebuild.lock``, held
by nobody once its holder dies): a rebuild holds it exclusively from the moment it decides
to rebuild until its switch, a catch-up shared from reading what the index knows until its
packs are in. So a catch-up's packs never land in a generation switched away under it, and
of two processes that distrust the index at once the second waits, then finds it rebuilt.
"""

from __future__ import annotations

import fcntl
import os
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import lmdb

from ..host.durable import PRIVATE_FILE_MODE

META_TABLE = b"meta"
GENERATION_KEY = b"generation"  # in META_TABLE: the live generation (absent: 0)
GENERATION = struct.Struct("<B")
GENERATIONS = (0, 1)
LOCK_FILE = "rebuild.lock"

Tables = tuple  # (chunks, packs): one generation's LMDB handles


def table_names(generation: int) -> tuple[bytes, bytes]:
    """The locations and packs tables of ``generation`` (0 keeps the names of an index
    written before there were generations: such an index opens as generation 0)."""
    suffix = b"" if generation == 0 else b".%d" % generation
    return b"chunks" + suffix, b"packs" + suffix


def spare(generation: int) -> int:
    return 1 - generation


def live_generation(txn: lmdb.Transaction, meta) -> int:
    """The generation ``txn`` sees as live; struct.error (as for any value that does not
    decode: damage) if the record names none."""
    value = txn.get(GENERATION_KEY, db=meta)
    if value is None:
        return 0
    (generation,) = GENERATION.unpack(value)
    if generation not in GENERATIONS:
        raise struct.error(f"the live generation is recorded as {generation}")
    return generation


def make_live(txn: lmdb.Transaction, meta, generation: int) -> None:
    txn.put(GENERATION_KEY, GENERATION.pack(generation), db=meta)


def open_tables(env: lmdb.Environment, readonly: bool) -> tuple[object, dict[int, Tables]]:
    """The meta table and each generation's tables, created where missing unless
    ``readonly`` (then a generation never made is left out; generation 0 must exist)."""
    meta = env.open_db(META_TABLE, create=not readonly)
    tables = {}
    for generation in GENERATIONS:
        try:
            tables[generation] = tuple(env.open_db(name, create=not readonly)
                                       for name in table_names(generation))
        except lmdb.NotFoundError:
            if generation == 0:
                raise
    return meta, tables


@contextmanager
def fill_lock(folder: Path, exclusive: bool) -> Iterator[None]:
    """The index's fill lock (see the module docstring), waited for; exclusive for a
    rebuild, shared for a catch-up. Not for the same thread twice: flock locks of two
    descriptors conflict even within one process."""
    fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                 PRIVATE_FILE_MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)  # the lock goes with it
