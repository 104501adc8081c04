"""Where each byte of a snapshot's image lives: its manifest entries placed at their
offsets, and the error context that names a snapshot and byte offset. Shared by every flow
that reads an image (restore, the random-access reader, diff, hints for the next backup)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

from ...errors import CorruptData
from ..format.manifest import Span, placed_entries, spans
from ..format.snapshots import SnapshotRecord
from ..pipeline import batches
from .chunk_reader import ChunkReader
from .pack_ranges import read_blocks

BLOCKS_PER_READ = 256  # manifest blocks fetched at once, in as few range reads as possible

log = logging.getLogger(__name__)


def damage_context(record: SnapshotRecord, offset: int, error: CorruptData) -> CorruptData:
    """The same error, naming the snapshot and byte offset a user can act on."""
    return type(error)(f"snapshot {record.short_id} ({record.name}, {record.time_label}) at "
                       f"byte offset {offset}: {error}")


def image_spans(chunks: ChunkReader, record: SnapshotRecord) -> Iterator[Span]:
    """Every entry of the snapshot's manifest, placed at its offset; each block is proven
    to fill exactly the range the record gives it."""
    blocks = zip(record.blocks, record.blocks.ends(record.size))
    for batch in batches(blocks, BLOCKS_PER_READ):
        data = read_blocks(chunks, [block for block, _ in batch])
        for block, end in batch:
            try:
                found = data[block.digest]
                if isinstance(found, CorruptData):
                    raise found
                entries = placed_entries(found, block.offset, end)
            except CorruptData as error:
                raise damage_context(record, block.offset, error) from None
            yield from spans(entries, block.offset)


def cutting_hints(chunks: ChunkReader, record: SnapshotRecord) -> Iterator:
    """The snapshot's chunks as cutting hints for the next image cut by the same chunker
    (chunker.hints_from_spans); a damaged manifest only costs speed (the hints stop),
    never the backup or copy that uses them."""
    from ..backup.chunker import hints_from_spans  # on use: it loads fastcdc

    try:
        yield from hints_from_spans(image_spans(chunks, record), record.holes_as_zeros)
    except CorruptData as error:
        log.warning("snapshot %s of %s unreadable, cutting without its hints: %s",
                    record.short_id, record.name, error)
