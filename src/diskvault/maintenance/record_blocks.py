"""Every snapshot record and the manifest blocks they list, gathered in one read of each
record: what compact, prune and delete prove to exist before they forget anything."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from ..store.format.snapshot_store import SnapshotRecords
from ..store.index.sorted_runs import DigestSet
from ..store.storage import Storage
from .scratch import scratch_folder


@contextmanager
def records_with_blocks(storage: Storage, intact: bool = False
                        ) -> Iterator[tuple[SnapshotRecords, DigestSet]]:
    """(every readable snapshot, the manifest blocks they list, each once, in digest order,
    kept on disk), the blocks added as each record is read and checked: a record is read
    once, not once more for its blocks. ``intact``: CorruptData if any record is damaged
    (SnapshotStore.all_intact), else a damaged one is skipped with a warning."""
    with DigestSet(scratch_folder()) as blocks:
        def gather(record) -> None:
            for ref in record.blocks:
                blocks.add(ref.digest)

        listing = storage.snapshots.all_intact if intact else storage.snapshots.all
        yield listing(each=gather), blocks
