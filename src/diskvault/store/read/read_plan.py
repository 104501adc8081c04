"""Reading a snapshot's image in windows: the chunks a window of the image needs, each
fetched once, read in pack order with neighbouring records of one pack merged into one range
request, decompressed and verified on the pool, then handed back in image order -- or handed
on the pool, a few chunks at a time, to a ``deliver`` function (a restore's writes), while the
caller follows in image order.

One range request per run of neighbours matters most on an object store (a round trip per
request); on a local disk it turns many small preads into a few large ones."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future, wait

from ...errors import CorruptData
from ..format.manifest import Span
from ..format.snapshots import SnapshotRecord
from ..index.records import ChunkLocation
from .chunk_reader import ChunkReader
from .image_map import damage_context
from .pack_ranges import PackRange, coalesce, read_range, verified_records

WINDOW_BYTES = 64 * 1024 * 1024  # image data planned at once; two windows are in flight
# And at most this many spans: each costs Python objects (its span, location, future,
# bytes: ~1 KiB), so 64 MiB of 256-byte chunks held 0.5 GiB; 64 KiB chunks never reach it.
WINDOW_SPANS = 1 << 14
DELIVER_BYTES = 512 * 1024  # chunks handed on at once: still in the cache of the core
Deliver = Callable[[list[tuple[Span, bytes]]], None]


def data_windows(spans: Iterable[Span], window_bytes: int = WINDOW_BYTES,
                 window_spans: int = WINDOW_SPANS) -> Iterator[list[Span]]:
    """``spans`` in consecutive groups holding about ``window_bytes`` of data each (zero
    runs cost no bytes and do not count), and at most ``window_spans`` spans."""
    window: list[Span] = []
    data = 0
    for span in spans:
        window.append(span)
        if span.digest is not None:
            data += span.length
        if data >= window_bytes or len(window) >= window_spans:
            yield window
            window, data = [], 0
    if window:
        yield window


class _PlannedWindow:
    """One window whose reads are in flight on the pool."""

    def __init__(self, chunks: ChunkReader, record: SnapshotRecord, spans: list[Span],
                 pool: Executor, deliver: Deliver | None = None):
        self.record = record
        self.spans = spans
        self.delivering = deliver is not None
        locations: dict[bytes, ChunkLocation] = {}
        for span in spans:
            if span.digest is not None and span.digest not in locations:
                try:
                    locations[span.digest] = chunks.locate(span.digest)
                except CorruptData as error:
                    raise damage_context(record, span.offset, error) from None
        places: dict[bytes, list[Span]] = {}
        if deliver is not None:
            for span in spans:
                if span.digest is not None:
                    places.setdefault(span.digest, []).append(span)
        self.futures: dict[bytes, Future] = {}
        ranges = coalesce(locations, chunks.packs.backend.read_gap_bytes)
        for pack_range in ranges:
            if deliver is None:
                future = pool.submit(read_range, chunks, pack_range)
            else:
                future = pool.submit(_read_and_deliver, chunks, pack_range, places, deliver)
            self.futures.update((digest, future) for digest, _ in pack_range.records)
        # Then the read-ahead, which waits while the disk's queue is full: the pool starts
        # on the first ranges meanwhile instead of waiting for their submission.
        try:
            for pack_range in ranges:
                try:
                    chunks.packs.advise_will_need(pack_range.pack_id, pack_range.offset,
                                                  pack_range.length)
                except CorruptData:
                    pass  # a missing pack: its read fails too, naming the image offset
        except BaseException:
            self.cancel()  # the window is not handed back: its reads end here
            raise

    def pieces(self) -> Iterator[tuple[Span, bytes | None]]:
        for span in self.spans:
            if span.digest is None:
                yield span, None
                continue
            try:
                result = self.futures[span.digest].result()
                # Delivered records are not kept: only the failed ones are in the result.
                data = result.get(span.digest) if self.delivering else result[span.digest]
            except CorruptData as error:  # the whole range failed (a missing pack)
                data = error
            if isinstance(data, CorruptData):
                raise damage_context(self.record, span.offset, data) from None
            yield span, data

    def cancel(self) -> None:
        """Stop the reads not yet begun and wait for those running: once this returns, no
        read of this window delivers anything more (a restore's file may be closed)."""
        for future in self.futures.values():
            future.cancel()
        wait(self.futures.values())


def _read_and_deliver(chunks: ChunkReader, pack_range: PackRange,
                      places: dict[bytes, list[Span]],
                      deliver: Deliver) -> dict[bytes, CorruptData]:
    """The verified records of the range handed to ``deliver`` at every span they fill,
    about DELIVER_BYTES at a time, as they are verified; the records that failed map to
    their errors."""
    failed: dict[bytes, CorruptData] = {}
    batch: list[tuple[Span, bytes]] = []
    size = 0
    for digest, data in verified_records(chunks, pack_range):
        if isinstance(data, CorruptData):
            failed[digest] = data
            continue
        for span in places[digest]:
            batch.append((span, data))
            size += span.length
        if size >= DELIVER_BYTES:
            deliver(batch)
            batch, size = [], 0
    if batch:
        deliver(batch)
    return failed


def planned_pieces(chunks: ChunkReader, record: SnapshotRecord, spans: Iterable[Span],
                   pool: Executor, window_bytes: int = WINDOW_BYTES,
                   deliver: Deliver | None = None) -> Iterator[tuple[Span, bytes | None]]:
    """(span, verified bytes) for ``spans`` in order, or (span, None) for a zero run; the
    next window is read while this one is consumed. With ``deliver``, the data spans'
    bytes go to ``deliver([(span, bytes), ...])`` on the pool instead (in no set order, a
    few chunks at a time as they are verified) and come back as None: a span is yielded
    once its delivery is done, so whatever precedes it is delivered too. A chunk that fails
    raises, naming its offset, when the image reaches it; an error in ``deliver`` is raised
    there too."""
    planned: deque[_PlannedWindow] = deque()
    try:
        for window in data_windows(spans, window_bytes):
            planned.append(_PlannedWindow(chunks, record, window, pool, deliver))
            if len(planned) == 2:
                yield from planned[0].pieces()
                planned.popleft()
        while planned:
            yield from planned[0].pieces()
            planned.popleft()
    finally:
        for window in planned:  # the consumer stopped early, or a read failed
            window.cancel()
