"""Filling packs: records go in, full packs come out durable, and only then indexed.

The one place that holds the format's order of durability for packs: a pack is written
and fsynced (``PackWriter.finish``) before ``commit`` may point any index entry at it.
Backups, compaction and repair's salvage all fill their packs here.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable

from ..format.packs import PackEntry, PackStore, PackWriter

Commit = Callable[[str, list[PackEntry], int], None]  # pack id, its entries, its file size
DurablePack = tuple[str, list[PackEntry], int]  # what a Commit is given
Run = Callable[[Callable[[], None]], None]  # runs a pack's sealing, now or on another thread


def seal(pack: PackWriter, commit: Commit) -> None:
    """Make ``pack`` durable, then ``commit`` its entries; a pack that cannot be finished
    is removed, and nothing is committed."""
    try:
        entries = pack.finish()  # fsync + rename + fsync dir: durable from here on
    except BaseException:
        pack.abort()
        raise
    commit(pack.pack_id, entries, pack.size)  # only now may the index point into it


def run_now(work: Callable[[], None]) -> None:
    work()


class PackFiller:
    """Appends records to new packs of about ``target_bytes`` each. A pack that reaches
    the target, and the last one at ``finish``, is sealed through ``run`` (default: at
    once, on the caller's thread). Used from one thread at a time."""

    def __init__(self, packs: PackStore, target_bytes: int, commit: Commit,
                 run: Run = run_now):
        self._store = packs
        self._target_bytes = target_bytes
        self._commit = commit
        self._run = run
        self._pack: PackWriter | None = None

    def add(self, digest: bytes, stored, raw_size: int, flags: int) -> None:
        if self._pack is None:
            self._pack = PackWriter(self._store, self._store.new_pack_id())
        self._pack.add(digest, stored, raw_size, flags)
        if self._pack.size >= self._target_bytes:
            self.finish()

    def finish(self) -> None:
        """Seal the open pack, if any: after ``run`` has run it, all added is committed."""
        if self._pack is not None:
            pack, self._pack = self._pack, None
            self._run(functools.partial(seal, pack, self._commit))

    def abort(self) -> None:
        """Drop the open pack (its temp file goes); sealed packs stay."""
        if self._pack is not None:
            pack, self._pack = self._pack, None
            pack.abort()


class BatchedCommit:
    """A Commit that gathers durable packs and hands them to ``commit_many`` together, in
    the order they became durable, once they hold ``max_entries`` records (and at
    ``flush``): one index transaction then serves several packs. Packs are sealed on
    several threads; one batch is committed at a time."""

    def __init__(self, commit_many: Callable[[list[DurablePack]], None], max_entries: int):
        self._commit_many = commit_many
        self._max_entries = max_entries
        self._lock = threading.Lock()
        self._pending: list[DurablePack] = []
        self._pending_entries = 0

    def __call__(self, pack_id: str, entries: list[PackEntry], file_size: int) -> None:
        with self._lock:
            self._pending.append((pack_id, entries, file_size))
            self._pending_entries += len(entries)
            if self._pending_entries >= self._max_entries:
                self._commit_pending()

    def flush(self) -> None:
        """Commit the packs gathered so far: after this, every pack given is committed."""
        with self._lock:
            self._commit_pending()

    def _commit_pending(self) -> None:
        if self._pending:
            packs, self._pending, self._pending_entries = self._pending, [], 0
            self._commit_many(packs)
