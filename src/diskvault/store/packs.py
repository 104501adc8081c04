"""Pack layout: immutable files of chunk records with a self-describing footer.

    header   8 bytes   b"DVPACK" + format version (2 bytes, big endian)
    records  the stored bytes of each chunk, back to back
    footer   one 49-byte entry per record: digest (32), offset (u64), stored length
             (u32), raw length (u32), flags (u8) -- little endian
    trailer  record count (u32), blake3 of the footer (32), b"DVPKEND1"

The footer lets the index be rebuilt from the packs alone (see docs/format.md).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import blake3

from .backend import LocalBackend, PackSink
from ..errors import CorruptData

PACK_MAGIC = b"DVPACK\x00\x01"
TRAILER_MAGIC = b"DVPKEND1"
ENTRY = struct.Struct("<32sQIIB")
TRAILER = struct.Struct("<I32s8s")

FLAG_ZSTD = 0x01  # record is zstd-compressed; other bits reserved (e.g. encryption)


@dataclass(frozen=True)
class PackEntry:
    digest: bytes
    offset: int
    stored_size: int
    raw_size: int
    flags: int


class PackWriter:
    """Appends records to one new pack; ``finish`` writes the footer and makes it durable."""

    def __init__(self, backend: LocalBackend, pack_id: str):
        self.pack_id = pack_id
        self._sink: PackSink = backend.create(pack_id)
        self._sink.write(PACK_MAGIC)
        self.size = len(PACK_MAGIC)
        self.entries: list[PackEntry] = []

    def add(self, digest: bytes, stored, raw_size: int, flags: int) -> PackEntry:
        entry = PackEntry(digest, self.size, len(stored), raw_size, flags)
        self._sink.write(stored)
        self.size += len(stored)
        self.entries.append(entry)
        return entry

    def finish(self) -> list[PackEntry]:
        footer = b"".join(ENTRY.pack(e.digest, e.offset, e.stored_size, e.raw_size, e.flags)
                          for e in self.entries)
        self._sink.write(footer)
        self._sink.write(TRAILER.pack(len(self.entries), blake3.blake3(footer).digest(),
                                      TRAILER_MAGIC))
        self._sink.finish()
        self.size += len(footer) + TRAILER.size
        return self.entries

    def abort(self) -> None:
        self._sink.abort()


def read_footer(backend: LocalBackend, pack_id: str) -> list[PackEntry]:
    """The entries of a pack, from its footer alone; CorruptData if the footer is damaged."""
    size = backend.size(pack_id)
    if size < len(PACK_MAGIC) + TRAILER.size:
        raise CorruptData(f"pack {pack_id} is truncated ({size} bytes)")
    count, footer_digest, magic = TRAILER.unpack(
        backend.read(pack_id, size - TRAILER.size, TRAILER.size))
    footer_start = size - TRAILER.size - count * ENTRY.size
    if magic != TRAILER_MAGIC or footer_start < len(PACK_MAGIC):
        raise CorruptData(f"pack {pack_id} has no valid footer (truncated or damaged)")
    footer = backend.read(pack_id, footer_start, count * ENTRY.size)
    if blake3.blake3(footer).digest() != footer_digest:
        raise CorruptData(f"pack {pack_id}: footer checksum mismatch")
    entries = [PackEntry(*ENTRY.unpack_from(footer, i * ENTRY.size)) for i in range(count)]
    for entry in entries:
        if entry.offset < len(PACK_MAGIC) or entry.offset + entry.stored_size > footer_start:
            raise CorruptData(f"pack {pack_id}: footer entry points outside the records")
    return entries
