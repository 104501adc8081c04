"""A backup that reads only the changed ranges of an image and takes the rest from the
series' previous snapshot, without reading it (docs/change-maps.md).

Why the manifest equals that of a full read: a FastCDC cut depends only on the bytes from
the chunk's start to the cut. Walking the image from offset 0, at a position where both the
full read and the previous snapshot start a chunk ("in step"), a previous entry lying wholly
in unchanged bytes and followed by another entry is the very entry a full read would make,
and its end is in step again. Where an entry touches a change, the bytes are read and cut
from the in-step position until a cut lands on the start of a previous entry that can be
taken again. Only the image's end is not a cut, hence "followed by another entry".
Changed ranges are read as plain bytes (holes there read as zeros).

Zeros need no previous entry to start at: a chunk that starts at a cut and meets only zeros
is always ``zero_chunk_bytes`` long. So from an in-step position inside a previous zero run,
with no change before the run's end, whole zero chunks are taken without reading, and a
change inside a large zero area costs a read of about the change, not of the area's rest.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from ...errors import ChangeMapWrong
from ..format.config import ChunkerParams
from ..format.manifest import ManifestBuilder, Span
from ..format.snapshots import BackupStats
from .back_up import ImageRecorder, Progress
from .change_map import ChangedRanges
from .chunker import Chunker, ChunkId, piece_length
from .source import READ_BUFFER_BYTES, Extent, ImageSource
from .write_session import WriteSession

MISMATCHES_NAMED = 5
MAX_RUN_SPANS = 4096  # memory stays bounded over long unchanged stretches


class PreviousEntries:
    """The previous snapshot's spans (covering [0, base_size) exactly), walked forward
    once: which of them a full read of the new image would make too."""

    def __init__(self, spans: Iterable[Span], base_size: int, changes: ChangedRanges,
                 size: int):
        self._spans: Iterator[Span] = iter(spans)
        self._head: Span | None = next(self._spans, None)
        self._base_size = base_size
        self._changes = changes
        self._size = size

    def _at(self, position: int) -> Span | None:
        """The span starting at ``position``; ``position`` must not decrease."""
        span = self._around(position)
        return span if span is not None and span.offset == position else None

    def _around(self, position: int) -> Span | None:
        """The span holding ``position``; ``position`` must not decrease."""
        while self._head is not None and self._head.offset + self._head.length <= position:
            self._head = next(self._spans, None)
        return self._head

    def zeros_at(self, position: int, zero_chunk_bytes: int) -> int:
        """How many bytes of whole zero chunks a full read makes from ``position`` (in
        step) on: those inside a previous zero run and before the next change."""
        span = self._around(position)
        if span is None or span.digest is not None or span.offset > position:
            return 0
        end = min(span.offset + span.length, self._changes.next_change_start(position),
                  self._size)
        return max(end - position, 0) // zero_chunk_bytes * zero_chunk_bytes

    def _usable(self, end: int, limit: int) -> bool:
        # Only the base's last span may end without a cut (the image's end): it is usable
        # only where the new image ends too.
        return end <= limit and (end < self._base_size or end == self._size)

    def takeable_at(self, position: int) -> bool:
        """Whether the span starting at ``position`` can be taken (see take_run)."""
        span = self._at(position)
        return span is not None and self._usable(
            position + span.length, min(self._changes.next_change_start(position), self._size))

    def take_run(self, position: int) -> list[Span]:
        """The spans from ``position`` on that lie wholly in unchanged bytes inside the
        image and end in a cut: a full read makes each of them, given that ``position``
        is in step."""
        limit = min(self._changes.next_change_start(position), self._size)
        run = []
        span = self._at(position)
        while span is not None and len(run) < MAX_RUN_SPANS and \
                self._usable(span.offset + span.length, limit):
            run.append(span)
            span = self._head = next(self._spans, None)
        return run


@dataclass
class UnchangedSample:
    """A uniform sample (reservoir) of the data entries taken without reading."""

    capacity: int
    # Seeded from the system: a map must not be able to predict what is checked.
    rng: random.Random = field(
        default_factory=lambda: random.Random(random.SystemRandom().getrandbits(64)))
    seen: int = 0
    spans: list[Span] = field(default_factory=list)

    def offer(self, spans: list[Span]) -> None:
        if not self.capacity:
            return
        for span in spans:
            if span.digest is not None:
                self._offer(span)

    def _offer(self, span: Span) -> None:
        self.seen += 1
        if len(self.spans) < self.capacity:
            self.spans.append(span)
            return
        slot = self.rng.randrange(self.seen)
        if slot < self.capacity:
            self.spans[slot] = span


def record_changed(source: ImageSource, previous: PreviousEntries, changes: ChangedRanges,
                   params: ChunkerParams, session: WriteSession, pool, stats: BackupStats,
                   verify_unchanged: int = 0,
                   progress: Progress | None = None) -> ManifestBuilder:
    """The manifest of ``source`` with unchanged entries taken from ``previous``; then
    ``verify_unchanged`` of the taken data entries are read and proven (ChangeMapWrong)."""
    recorder = ImageRecorder(session, pool, stats)
    sample = UnchangedSample(verify_unchanged)
    zero_chunk_bytes = _chunker(params, session).zero_chunk_bytes
    position = 0
    while position < source.size:
        run = previous.take_run(position)
        zeros = 0 if run else previous.zeros_at(position, zero_chunk_bytes)
        if run:
            recorder.add_known(run)
            sample.offer(run)
            position = run[-1].offset + run[-1].length
        elif zeros:
            recorder.add_known([Span(position, zeros, None)])
            position += zeros
        else:
            position = _read_until_in_step(source, position, previous, changes, params,
                                           recorder, stats)
        if progress:
            progress(position)
    recorder.drain()
    _verify(source, sample.spans, session.codec.chunk_id)
    recorder.manifest.finish()
    return recorder.manifest


def _read_until_in_step(source: ImageSource, start: int, previous: PreviousEntries,
                        changes: ChangedRanges, params: ChunkerParams,
                        recorder: ImageRecorder, stats: BackupStats) -> int:
    """Read and cut from ``start`` (in step) until a cut lands where a previous entry
    or whole zero chunks can be taken again, or the image ends; returns that position."""
    chunker = _chunker(params, recorder.session)
    zero_chunk_bytes = chunker.zero_chunk_bytes
    # The first read covers the change ahead plus an average chunk, after which the cuts
    # usually fall in step again; later reads add an average chunk at a time.
    reach = changes.next_change_end(start) + params.avg_bytes
    offset = position = start
    while True:
        want = min(max(reach - offset, params.avg_bytes), READ_BUFFER_BYTES,
                   source.size - offset)
        (buffer,) = source.read_buffers(Extent(offset, want, False))
        stats.bytes_read += want
        offset += want
        chunks = chunker.feed(buffer)
        if offset == source.size:
            chunks += chunker.finish()
        kept = []
        for chunk in chunks:
            kept.append(chunk)
            position += piece_length(chunk)
            if position == source.size or previous.takeable_at(position) or \
                    previous.zeros_at(position, zero_chunk_bytes):
                recorder.add_chunks(kept)
                return position
        recorder.add_chunks(kept)


def _chunker(params: ChunkerParams, session: WriteSession) -> Chunker:
    return Chunker(params, permutation=session.codec.cipher.chunk_permutation)


def _verify(source: ImageSource, spans: list[Span], chunk_id: ChunkId) -> None:
    """Read the sampled entries and compare them with the previous snapshot's digests."""
    wrong = []
    for span in sorted(spans, key=lambda s: s.offset):
        (data,) = source.read_buffers(Extent(span.offset, span.length, False))
        if chunk_id(data) != span.digest:
            wrong.append(span)
    if wrong:
        named = ", ".join(f"{s.offset}+{s.length}" for s in wrong[:MISMATCHES_NAMED])
        raise ChangeMapWrong(
            f"source {source.path}: {len(wrong)} of {len(spans)} sampled ranges the change "
            f"map (or dirty bitmap) calls unchanged differ from the previous snapshot "
            f"(offset+length: {named}); nothing was recorded: the map is wrong or for another "
            f"base, back up without --changed-ranges (or --dirty-bitmap)")
