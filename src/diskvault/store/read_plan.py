"""Reading a snapshot's image in windows: the chunks a window of the image needs, each
fetched once, read in pack order with neighbouring records of one pack merged into one range
request, decompressed and verified on the pool, then handed back in image order.

One range request per run of neighbours matters most on an object store (a round trip per
request); on a local disk it turns many small preads into a few large ones."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field

from ..errors import CorruptData
from .chunks import ChunkReader
from .image_map import damage_context
from .index import ChunkLocation
from .manifest import Span
from .snapshots import SnapshotRecord

WINDOW_BYTES = 64 * 1024 * 1024  # image data planned at once; two windows are in memory
RANGE_MAX_BYTES = 8 * 1024 * 1024  # one request, and one pool task, reads at most this


@dataclass
class PackRange:
    """One read of a pack: [offset, offset + length), holding ``records``."""

    pack_id: str
    offset: int
    length: int
    records: list[tuple[bytes, ChunkLocation]] = field(default_factory=list)


def coalesce(locations: dict[bytes, ChunkLocation], gap: int,
             max_bytes: int = RANGE_MAX_BYTES) -> list[PackRange]:
    """The records at ``locations`` as few range reads as possible: ordered by pack and
    offset, neighbours at most ``gap`` apart merged while a range stays within
    ``max_bytes`` (a single larger record still gets its own range)."""
    ranges: list[PackRange] = []
    ordered = sorted(locations.items(), key=lambda item: (item[1].pack_id, item[1].offset))
    for digest, location in ordered:
        last = ranges[-1] if ranges else None
        end = location.offset + location.stored_size
        if last is not None and last.pack_id == location.pack_id \
                and location.offset - (last.offset + last.length) <= gap \
                and end - last.offset <= max_bytes:
            last.length = max(last.length, end - last.offset)
        else:
            last = PackRange(location.pack_id, location.offset, location.stored_size)
            ranges.append(last)
        last.records.append((digest, location))
    return ranges


def data_windows(spans: Iterable[Span], window_bytes: int = WINDOW_BYTES) -> Iterator[list[Span]]:
    """``spans`` in consecutive groups holding about ``window_bytes`` of data each (zero
    runs cost no memory and do not count)."""
    window: list[Span] = []
    data = 0
    for span in spans:
        window.append(span)
        if span.digest is not None:
            data += span.length
            if data >= window_bytes:
                yield window
                window, data = [], 0
    if window:
        yield window


RangeResult = dict[bytes, "bytes | CorruptData"]


def read_range(chunks: ChunkReader, pack_range: PackRange) -> RangeResult:
    """Every record of one range read, decompressed and verified; a record that fails maps
    to its error, raised when the image reaches it (so it names the right offset)."""
    stored = memoryview(chunks.packs.read(pack_range.pack_id, pack_range.offset,
                                          pack_range.length))
    result: RangeResult = {}
    for digest, location in pack_range.records:
        start = location.offset - pack_range.offset
        try:
            result[digest] = chunks.verified(digest, location,
                                             stored[start:start + location.stored_size])
        except CorruptData as error:
            result[digest] = error
    return result


class _PlannedWindow:
    """One window whose reads are in flight on the pool."""

    def __init__(self, chunks: ChunkReader, record: SnapshotRecord, spans: list[Span],
                 pool: Executor):
        self.record = record
        self.spans = spans
        locations: dict[bytes, ChunkLocation] = {}
        for span in spans:
            if span.digest is not None and span.digest not in locations:
                try:
                    locations[span.digest] = chunks.locate(span.digest)
                except CorruptData as error:
                    raise damage_context(record, span.offset, error) from None
        self.futures: dict[bytes, Future] = {}
        for pack_range in coalesce(locations, chunks.packs.backend.read_gap_bytes):
            try:
                chunks.packs.advise_will_need(pack_range.pack_id, pack_range.offset,
                                              pack_range.length)
            except CorruptData:
                pass  # a missing pack: its read fails too, naming the image offset
            future = pool.submit(read_range, chunks, pack_range)
            self.futures.update((digest, future) for digest, _ in pack_range.records)

    def pieces(self) -> Iterator[tuple[Span, bytes | None]]:
        for span in self.spans:
            if span.digest is None:
                yield span, None
                continue
            try:
                data = self.futures[span.digest].result()[span.digest]
            except CorruptData as error:  # the whole range failed (a missing pack)
                data = error
            if isinstance(data, CorruptData):
                raise damage_context(self.record, span.offset, data) from None
            yield span, data

    def cancel(self) -> None:
        for future in self.futures.values():
            future.cancel()


def planned_pieces(chunks: ChunkReader, record: SnapshotRecord, spans: Iterable[Span],
                   pool: Executor,
                   window_bytes: int = WINDOW_BYTES) -> Iterator[tuple[Span, bytes | None]]:
    """(span, verified bytes) for ``spans`` in order, or (span, None) for a zero run; the
    next window is read while this one is consumed."""
    planned: deque[_PlannedWindow] = deque()
    try:
        for window in data_windows(spans, window_bytes):
            planned.append(_PlannedWindow(chunks, record, window, pool))
            if len(planned) == 2:
                yield from planned[0].pieces()
                planned.popleft()
        while planned:
            yield from planned[0].pieces()
            planned.popleft()
    finally:
        for window in planned:  # the consumer stopped early, or a read failed
            window.cancel()
