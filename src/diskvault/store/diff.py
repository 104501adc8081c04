"""Changed byte ranges between two snapshots, from their manifests alone (no chunk data).

Manifest blocks that are identical and at the same offset in both snapshots are
skipped without being read; elsewhere entries are compared span by span.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from .manifest import ManifestEntry, spans
from .snapshots import SnapshotRecord

LoadBlock = Callable[[bytes], list[ManifestEntry]]


def _identity_spans(record: SnapshotRecord, shared: set[tuple[bytes, int]],
                    load_block: LoadBlock) -> Iterator[tuple[int, int, object]]:
    """(offset, end, identity) covering the image; a shared block is one opaque span."""
    ends = [b.offset for b in record.blocks[1:]] + [record.size]
    for block, end in zip(record.blocks, ends):
        if (block.digest, block.offset) in shared:
            yield block.offset, end, ("block", block.digest)
            continue
        for span in spans(load_block(block.digest), block.offset):
            yield span.offset, span.offset + span.length, span.digest


def _shared_blocks(a: SnapshotRecord, b: SnapshotRecord) -> set[tuple[bytes, int]]:
    def keyed(record: SnapshotRecord) -> set[tuple[bytes, int, int]]:
        ends = [x.offset for x in record.blocks[1:]] + [record.size]
        return {(x.digest, x.offset, end) for x, end in zip(record.blocks, ends)}
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



