"""Changed byte ranges between two snapshots, from their manifests alone (no chunk data).

Manifest blocks that are identical and at the same offset in both snapshots are
skipped without being read; elsewhere entries are compared span by span.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from ...errors import CorruptData
from ..format.manifest import placed_entries, spans
from ..format.snapshots import SnapshotRecord
from .image_map import damage_context

LoadBlock = Callable[[bytes], bytes]  # a manifest block's bytes, by digest


def _identity_spans(record: SnapshotRecord, shared: set[tuple[bytes, int]],
                    load_block: LoadBlock) -> Iterator[tuple[int, int, object]]:
    """(offset, end, identity) covering the image; a shared block is one opaque span."""
    for block, end in zip(record.blocks, record.blocks.ends(record.size)):
        if (block.digest, block.offset) in shared:
            yield block.offset, end, ("block", block.digest)
            continue
        try:
            entries = placed_entries(load_block(block.digest), block.offset, end)
        except CorruptData as error:
            raise damage_context(record, block.offset, error) from None
        for span in spans(entries, block.offset):
            yield span.offset, span.offset + span.length, span.digest


def _shared_blocks(a: SnapshotRecord, b: SnapshotRecord) -> set[tuple[bytes, int]]:
    def keyed(record: SnapshotRecord) -> set[tuple[bytes, int, int]]:
        return {(x.digest, x.offset, end)
                for x, end in zip(record.blocks, record.blocks.ends(record.size))}
    return {(digest, offset) for digest, offset, _ in keyed(a) & keyed(b)}


def changed_ranges(a: SnapshotRecord, b: SnapshotRecord,
                   load_block: LoadBlock) -> list[tuple[int, int]]:
    """Coalesced [start, end) ranges whose content differs (or exists in only one image)."""
    shared = _shared_blocks(a, b)
    left = _identity_spans(a, shared, load_block)
    right = _identity_spans(b, shared, load_block)
    ranges: list[tuple[int, int]] = []

    def mark(start: int, end: int) -> None:
        if ranges and ranges[-1][1] == start:
            ranges[-1] = (ranges[-1][0], end)
        elif end > start:
            ranges.append((start, end))

    l_span, r_span = next(left, None), next(right, None)
    position = 0
    while l_span and r_span:
        end = min(l_span[1], r_span[1])
        if l_span[2] != r_span[2]:
            mark(position, end)
        position = end
        if l_span[1] == end:
            l_span = next(left, None)
        if r_span[1] == end:
            r_span = next(right, None)
    mark(position, max(a.size, b.size))
    return ranges



