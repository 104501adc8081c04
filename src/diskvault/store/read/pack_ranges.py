"""Reading records of packs as few range requests as possible: neighbouring records of one
pack merged into one read (through gaps up to the backend's ``read_gap_bytes``), each range
decompressed and verified. The read plan (images) and the manifest's blocks both read so."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from ...errors import CorruptData, MissingChunk
from ..format.block_list import BlockRef
from ..index.records import ChunkLocation
from .chunk_reader import ChunkReader

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


RangeResult = dict[bytes, "bytes | CorruptData"]


def read_range(chunks: ChunkReader, pack_range: PackRange) -> RangeResult:
    """Every record of one range read, decompressed and verified; a record that fails maps
    to its error, raised when the image reaches it (so it names the right offset)."""
    return dict(verified_records(chunks, pack_range))


def verified_records(chunks: ChunkReader,
                     pack_range: PackRange) -> Iterator[tuple[bytes, bytes | CorruptData]]:
    """(digest, verified bytes or the error that stops it) for each record of one range, one
    at a time: a caller that uses each record as it comes finds its bytes still in the CPU's
    cache. A pack found missing (compacted away elsewhere) has its records read one by one
    where the index, caught up, now puts them (ChunkReader.get)."""
    try:
        stored = memoryview(chunks.packs.read(pack_range.pack_id, pack_range.offset,
                                              pack_range.length))
    except MissingChunk:
        yield from _read_records_anew(chunks, pack_range)
        return
    for digest, location in pack_range.records:
        start = location.offset - pack_range.offset
        try:
            yield digest, chunks.verified(digest, location,
                                          stored[start:start + location.stored_size])
        except CorruptData as error:
            yield digest, error


def _read_records_anew(chunks: ChunkReader,
                       pack_range: PackRange) -> Iterator[tuple[bytes, bytes | CorruptData]]:
    for digest, _ in pack_range.records:
        try:
            yield digest, chunks.get(digest)
        except CorruptData as error:
            yield digest, error


def read_blocks(chunks: ChunkReader, blocks: list[BlockRef]) -> dict[bytes, bytes | CorruptData]:
    """The blocks' verified bytes (or the error that stops each), read as coalesced pack
    ranges: a manifest's blocks lie together in few packs, so an object store answers a
    whole batch in one or two requests rather than one per block."""
    found: dict[bytes, bytes | CorruptData] = {}
    locations = {}
    for block in blocks:
        try:
            locations[block.digest] = chunks.locate(block.digest)
        except CorruptData as error:
            found[block.digest] = error
    for pack_range in coalesce(locations, chunks.packs.backend.read_gap_bytes):
        try:
            found.update(read_range(chunks, pack_range))
        except CorruptData as error:  # the whole range failed (a missing pack)
            found.update((digest, error) for digest, _ in pack_range.records)
    return found
