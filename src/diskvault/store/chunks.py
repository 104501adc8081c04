"""Chunks as stored: the codec (raw bytes <-> stored bytes), and the reader that turns a
digest into verified raw bytes. New chunks are stored by a backup's WriteSession.
"""

from __future__ import annotations

import threading

import blake3
import zstandard

from ..errors import CorruptData, MissingChunk
from .config import Compression
from .index import ChunkIndex, ChunkLocation
from .packs import FLAG_ZSTD, PackStore


class Codec:
    """zstd with one compressor/decompressor per thread (they are not thread-safe)."""

    def __init__(self, compression: Compression):
        self._level = compression.level
        self._enabled = compression.codec == "zstd"
        self._local = threading.local()

    def compress(self, raw) -> tuple[bytes, int]:
        """Stored bytes and flags; raw bytes are kept when compression does not save space."""
        if self._enabled:
            compressor = getattr(self._local, "compressor", None)
            if compressor is None:
                compressor = self._local.compressor = zstandard.ZstdCompressor(level=self._level)
            packed = compressor.compress(raw)
            if len(packed) < len(raw):
                return packed, FLAG_ZSTD
        return bytes(raw), 0

    def decompress(self, stored: bytes, location: ChunkLocation) -> bytes:
        if not location.flags & FLAG_ZSTD:
            return stored
        decompressor = getattr(self._local, "decompressor", None)
        if decompressor is None:
            decompressor = self._local.decompressor = zstandard.ZstdDecompressor()
        return decompressor.decompress(stored, max_output_size=location.raw_size)


class ChunkReader:
    """digest -> verified raw bytes. Thread-safe."""

    def __init__(self, packs: PackStore, index: ChunkIndex, codec: Codec):
        self.packs = packs
        self.index = index
        self.codec = codec

    def locate(self, digest: bytes) -> ChunkLocation:
        location = self.index.lookup(digest)
        if location is None:
            raise MissingChunk(f"chunk {digest.hex()[:16]} is not in the index (run "
                               f"'diskvault check': if a pack holds it, or the index is "
                               f"damaged, 'diskvault check --repair' indexes it again)")
        return location

    def announce(self, digest: bytes) -> ChunkLocation:
        """Locate a chunk that will be read soon and let the kernel start fetching it
        (an asynchronous read-ahead: cold restores and mounts wait less on the disk)."""
        location = self.locate(digest)
        self.packs.advise_will_need(location.pack_id, location.offset, location.stored_size)
        return location

    def get(self, digest: bytes, location: ChunkLocation | None = None) -> bytes:
        """The verified raw bytes of a chunk (``location`` if already known)."""
        location = location or self.locate(digest)
        stored = self.packs.read(location.pack_id, location.offset, location.stored_size)
        if len(stored) != location.stored_size:
            raise CorruptData(f"chunk {digest.hex()[:16]} is cut short in pack "
                              f"{location.pack_id}")
        try:
            raw = self.codec.decompress(stored, location)
        except zstandard.ZstdError:
            raise CorruptData(f"chunk {digest.hex()[:16]} in pack {location.pack_id} does not "
                              f"decompress") from None
        if len(raw) != location.raw_size or blake3.blake3(raw).digest() != digest:
            raise CorruptData(f"chunk {digest.hex()[:16]} in pack {location.pack_id} does not "
                              f"match its digest")
        return raw
