"""How the index stores a chunk's location and a pack's statistics as LMDB values."""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from ..format.packs import PackEntry

LOCATION = struct.Struct("<16sQIIB")
LOCATION_PLACE = struct.Struct("<16sQ")  # how a location begins: pack and offset
PACK_STATS = struct.Struct("<QQQI")


@dataclass(frozen=True)
class ChunkLocation:
    pack_id: str
    offset: int
    stored_size: int
    raw_size: int
    flags: int

    def entry(self, digest: bytes) -> PackEntry:
        """The record as its pack's footer lists it: what the index knows of a pack whose
        footer is lost or not read."""
        return PackEntry(digest, self.offset, self.stored_size, self.raw_size, self.flags)


@dataclass(frozen=True)
class PackStats:
    file_size: int
    stored_bytes: int
    raw_bytes: int
    records: int


def decode_location(value: bytes) -> ChunkLocation:
    pack, offset, stored, raw, flags = LOCATION.unpack(value)
    return ChunkLocation(pack.hex(), offset, stored, raw, flags)


def encode_location(pack_key: bytes, entry: PackEntry) -> bytes:
    return LOCATION.pack(pack_key, entry.offset, entry.stored_size, entry.raw_size, entry.flags)


def pack_stats_row(entries: Sequence[PackEntry], file_size: int) -> bytes:
    """A pack's row in ``packs``: file size, stored and raw bytes, records."""
    return PACK_STATS.pack(file_size, sum(entry.stored_size for entry in entries),
                           sum(entry.raw_size for entry in entries), len(entries))


FINGERPRINT_MASK = (1 << 64) - 1


def fingerprint(pack_id: str, entries: Iterable[PackEntry]) -> int:
    """An order-free sum over the index entries these records would have: equal to the
    pack's fingerprint in ``pack_fingerprints`` when the index points at exactly these
    records (a process's own hash: compare only within one process)."""
    pack_key = bytes.fromhex(pack_id)
    return sum(hash(entry.digest + encode_location(pack_key, entry))
               for entry in entries) & FINGERPRINT_MASK


def pack_fingerprints(sums: Iterable[tuple[bytes, tuple[int, int]]]
                      ) -> Iterator[tuple[str, tuple[int, int]]]:
    """Per pack, in key order (``sums``: as ``ChunkIndex.add_fingerprints`` added them):
    how many index entries point into it and their fingerprint."""
    for pack_key, (count, total) in sums:
        yield pack_key.hex(), (count, total & FINGERPRINT_MASK)
