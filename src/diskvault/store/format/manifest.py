"""Manifests: the ordered entries that make up an image, in content-defined blocks.

An entry is a data chunk (digest, length) or a run of zeros (length). Entries are
grouped into blocks that end after a data entry whose digest's first byte is zero
(within MIN..MAX entries), so two snapshots that differ in a few places share almost
every block. Each block is stored as a chunk; the snapshot record keeps the list of
(block digest, byte offset) for binary search.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from ...errors import CorruptData
from .block_list import DIGEST_BYTES, BlockList

BLOCK_MAGIC = b"DVM1"
ENTRY_HEAD = struct.Struct("<BQ")
KIND_DATA = 0
KIND_ZEROS = 1

MIN_BLOCK_ENTRIES = 64
MAX_BLOCK_ENTRIES = 1024


@dataclass(frozen=True, slots=True)  # held by the thousand: no __dict__ each
class ManifestEntry:
    length: int
    digest: bytes | None  # None for a zero run


def encode_block(entries: list[ManifestEntry]) -> bytes:
    parts = [BLOCK_MAGIC]
    for entry in entries:
        if entry.digest is None:
            parts.append(ENTRY_HEAD.pack(KIND_ZEROS, entry.length))
        else:
            parts.append(ENTRY_HEAD.pack(KIND_DATA, entry.length))
            parts.append(entry.digest)
    return b"".join(parts)


def decode_block(data: bytes) -> list[ManifestEntry]:
    if data[:4] != BLOCK_MAGIC:
        raise CorruptData("manifest block has a bad header")
    entries = []
    position, end = 4, len(data)
    try:
        while position < end:
            kind, length = ENTRY_HEAD.unpack_from(data, position)
            position += ENTRY_HEAD.size
            if kind == KIND_ZEROS:
                entries.append(ManifestEntry(length, None))
            elif kind == KIND_DATA and position + DIGEST_BYTES <= end:
                entries.append(ManifestEntry(length, data[position: position + DIGEST_BYTES]))
                position += DIGEST_BYTES
            else:
                raise CorruptData("manifest block has an unknown or truncated entry")
    except struct.error:
        raise CorruptData("manifest block is truncated") from None
    return entries


class ManifestBuilder:
    """Collects entries in image order and hands each finished block to ``store_block``.

    ``store_block(encoded) -> digest`` makes the block durable-to-be as a chunk.
    """

    def __init__(self, store_block: Callable[[bytes], bytes]):
        self._store_block = store_block
        self._entries: list[ManifestEntry] = []
        self._block_offset = 0
        self._offset = 0
        self.blocks = BlockList()

    @property
    def size(self) -> int:
        return self._offset

    def add_data(self, digest: bytes, length: int) -> None:
        if len(self._entries) >= MAX_BLOCK_ENTRIES:  # a zero run filled the block
            self._cut()
        self._entries.append(ManifestEntry(length, digest))
        self._offset += length
        count = len(self._entries)
        if count >= MAX_BLOCK_ENTRIES or (count >= MIN_BLOCK_ENTRIES and digest[0] == 0):
            self._cut()

    def add_zeros(self, length: int) -> None:
        """Zeros merge with a zero run before them, and a block never ends on a zero run
        until data follows: so the entries depend on where zeros are, not on how they
        arrived (a hole, all-zero chunks, or both)."""
        if not length:
            return
        self._offset += length
        if self._entries and self._entries[-1].digest is None:
            self._entries[-1] = ManifestEntry(self._entries[-1].length + length, None)
            return
        self._entries.append(ManifestEntry(length, None))

    def _cut(self) -> None:
        digest = self._store_block(encode_block(self._entries))
        self.blocks.append(digest, self._block_offset)
        self._block_offset = self._offset
        self._entries = []

    def finish(self) -> BlockList:
        if self._entries:
            self._cut()
        return self.blocks


@dataclass(frozen=True)
class Span:
    """One entry placed in the image: [offset, offset + length)."""

    offset: int
    length: int
    digest: bytes | None


def spans(entries: list[ManifestEntry], offset: int) -> Iterator[Span]:
    for entry in entries:
        yield Span(offset, entry.length, entry.digest)
        offset += entry.length


def layout_problem(blocks: BlockList, size: int) -> str | None:
    """Why a block list cannot describe an image of ``size`` bytes, or None when it can:
    the first block starts at 0, offsets strictly increase, the last one starts before
    ``size`` (every digest is a digest: a BlockList holds no other). Readers rely on each
    of these."""
    offsets = blocks.offsets
    if not offsets:
        return None if size == 0 else f"it lists no manifest blocks for {size} bytes"
    if offsets[0] != 0:
        return f"its first manifest block starts at byte offset {offsets[0]}, not 0"
    last = len(offsets) - 1
    for index, (start, end) in enumerate(zip(offsets, blocks.ends(size))):
        if end <= start:
            limit = "the image's size" if index == last else "the next block's offset"
            return (f"the manifest block at byte offset {start} does not start before "
                    f"{limit} {end}")
    return None


def block_length(entries: list[ManifestEntry]) -> int:
    """Bytes a block's entries cover; CorruptData for an empty entry (the builder never
    writes one, and a reader searching by offset would trip over it)."""
    covered = 0
    for entry in entries:
        if entry.length <= 0:
            raise CorruptData(f"manifest block has an empty entry {covered} bytes into it")
        covered += entry.length
    return covered


def fill_problem(covered: int, start: int, end: int) -> str | None:
    """Why a block covering ``covered`` bytes cannot sit at [start, end), or None."""
    if covered == end - start:
        return None
    return (f"manifest block covers {covered} bytes but the snapshot record places it at "
            f"[{start}, {end}) ({end - start} bytes): the record or the block is damaged; "
            f"run 'diskvault check'")


def placed_entries(data: bytes, start: int, end: int) -> list[ManifestEntry]:
    """Decode a manifest block that the snapshot record places at [start, end), proven to
    fill exactly that range: otherwise every later offset would be wrong."""
    entries = decode_block(data)
    problem = fill_problem(block_length(entries), start, end)
    if problem:
        raise CorruptData(problem)
    return entries
