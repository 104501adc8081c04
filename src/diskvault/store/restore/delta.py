"""Delta restore's comparison: which manifest entries a target (an older copy of the image)
already holds. A data entry matches when the chunk id of the target's bytes there is the
entry's digest; a zero run matches when the target holds zeros there. The target is read in
large sequential batches and hashed on the pool (blake3 releases the GIL)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor
from dataclasses import dataclass

from ..format.manifest import Span
from ..pipeline import ordered_map

BATCH_BYTES = 8 * 1024 * 1024  # target bytes read and compared by one pool task
BATCHES_IN_FLIGHT = 4
_ZEROS = bytes(BATCH_BYTES)


@dataclass
class DeltaCounts:
    """What a restore did to its target: bytes compared with it, bytes written to it."""

    compared_bytes: int = 0
    written_bytes: int = 0


def span_batches(spans: Iterable[Span], batch_bytes: int = BATCH_BYTES) -> Iterator[list[Span]]:
    """Consecutive spans grouped into reads of about ``batch_bytes`` (a longer span, a long
    zero run say, is a batch of its own and is read in pieces); a gap between spans (only
    some of the image compared) starts a new batch, so a gap is never read."""
    batch: list[Span] = []
    size = 0
    for span in spans:
        if batch and (size + span.length > batch_bytes
                      or span.offset != batch[-1].offset + batch[-1].length):
            yield batch
            batch, size = [], 0
        batch.append(span)
        size += span.length
    if batch:
        yield batch


def spans_within(spans: Iterable[Span], ranges: Iterable[tuple[int, int]]) -> Iterator[Span]:
    """The spans that overlap any of ``ranges`` ([start, end), ordered, as store/read/diff.py
    gives them): where a target known to hold another snapshot can differ from this one."""
    pending = iter(ranges)
    current = next(pending, None)
    for span in spans:
        while current is not None and current[1] <= span.offset:
            current = next(pending, None)
        if current is None:
            return
        if current[0] < span.offset + span.length:
            yield span


def holds_zeros(fd: int, offset: int, length: int) -> bool:
    """Whether the target reads as zeros over [offset, offset + length)."""
    end = offset + length
    while offset < end:
        step = min(end - offset, BATCH_BYTES)
        data = os.pread(fd, step, offset)
        if data != _ZEROS[:step]:
            return False
        offset += step
    return True


def differing_in_batch(fd: int, batch: list[Span], chunk_id: Callable[[bytes], bytes],
                       target_size: int) -> list[Span]:
    """The spans of ``batch`` whose bytes in the target differ from the snapshot's."""
    start = batch[0].offset
    end = batch[-1].offset + batch[-1].length
    if batch[0].digest is None and end - start > BATCH_BYTES:  # a long zero run alone
        same = end <= target_size and holds_zeros(fd, start, end - start)
        return [] if same else batch
    data = os.pread(fd, end - start, start)
    view = memoryview(data)
    differing = []
    for span in batch:
        first = span.offset - start
        if first + span.length > len(data):
            differing.append(span)  # past the end of the target
        elif span.digest is None:
            # bytes, not memoryview, comparison: memcmp rather than an element loop
            if data[first:first + span.length] != _ZEROS[:span.length]:
                differing.append(span)
        elif chunk_id(view[first:first + span.length]) != span.digest:
            differing.append(span)
    return differing


def differing_spans(fd: int, spans: Iterable[Span], chunk_id: Callable[[bytes], bytes],
                    pool: Executor, counts: DeltaCounts,
                    progress: Callable[[int], None] | None = None) -> Iterator[Span]:
    """The spans the target open as ``fd`` does not already hold, in image order;
    ``counts.compared_bytes`` grows by what was read from the target, and ``progress``
    hears the image offset compared up to."""
    target_size = os.lseek(fd, 0, os.SEEK_END)

    def compare(batch: list[Span]) -> list[Span]:
        return differing_in_batch(fd, batch, chunk_id, target_size)

    for batch, differing in ordered_map(pool, compare, span_batches(spans),
                                        window=BATCHES_IN_FLIGHT):
        end = batch[-1].offset + batch[-1].length
        counts.compared_bytes += max(0, min(end, target_size) - batch[0].offset)
        yield from differing
        if progress:
            progress(end)
