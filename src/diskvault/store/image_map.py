"""Where each byte of a snapshot's image lives: its manifest entries placed at their
offsets, and the error context that names a snapshot and byte offset. Shared by every flow
that reads an image (restore, the random-access reader, diff, hints for the next backup)."""

from __future__ import annotations

from collections.abc import Iterator

from ..errors import CorruptData
from .chunks import ChunkReader
from .manifest import Span, block_ends, placed_entries, spans
from .snapshots import SnapshotRecord


def damage_context(record: SnapshotRecord, offset: int, error: CorruptData) -> CorruptData:
    """The same error, naming the snapshot and byte offset a user can act on."""
    return type(error)(f"snapshot {record.short_id} ({record.name}, {record.time_label}) at "
                       f"byte offset {offset}: {error}")


def image_spans(chunks: ChunkReader, record: SnapshotRecord) -> Iterator[Span]:
    """Every entry of the snapshot's manifest, placed at its offset; each block is proven
    to fill exactly the range the record gives it."""
    for block, end in zip(record.blocks, block_ends(record.blocks, record.size)):
        try:
            entries = placed_entries(chunks.get(block.digest), block.offset, end)
        except CorruptData as error:
            raise damage_context(record, block.offset, error) from None
        yield from spans(entries, block.offset)
