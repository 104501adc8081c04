"""Chunks as stored: the codec (raw bytes <-> stored bytes). New chunks are stored by a
backup's WriteSession; read/chunk_reader.py turns a digest back into verified raw bytes."""

from __future__ import annotations

import threading
from typing import Protocol

from ...errors import AuthenticationFailed, CorruptData
from .config import Compression
from .crypto import NoEncryption, RecordCipher, RecordKind, associated_data
from .packs import FLAG_SEALED, FLAG_ZSTD


class StoredRecord(Protocol):
    """Where a record's flags and sizes come from: a pack footer's entry or the index's
    location of a chunk."""
    flags: int
    stored_size: int
    raw_size: int


class RecordUnreadable(CorruptData):
    """A stored record that does not give back its chunk; the message is the problem alone
    ("does not decompress"): the caller names the chunk and the pack."""


class Codec:
    """Raw chunk <-> stored record: zstd (one compressor/decompressor per thread: they are
    not thread-safe), then, in an encrypted repository, sealed with the chunk id and the
    repository id as associated data (so a record swapped with another, or brought in from
    another repository, does not open). Sealing and opening release the GIL and run in the
    same pool tasks as compression and decompression."""

    def __init__(self, compression: Compression, cipher: RecordCipher | None = None,
                 repository_id: str | None = None):
        self._level = compression.level
        self._enabled = compression.codec == "zstd"
        self._local = threading.local()
        self.cipher: RecordCipher = cipher or NoEncryption()
        self._repository_id = repository_id

    def chunk_id(self, raw) -> bytes:
        """The id of a chunk (or manifest block): blake3, keyed in an encrypted repository."""
        return self.cipher.chunk_id(raw)

    def _associated(self, digest: bytes) -> bytes:
        # Data chunks and manifest blocks share one id space (equal bytes, equal id, one
        # record), so both are sealed as RecordKind.CHUNK.
        return associated_data(RecordKind.CHUNK, self._repository_id, digest)

    def compress(self, raw, digest: bytes) -> tuple[bytes, int]:
        """Stored bytes and flags; raw bytes are kept when compression does not save space.
        ``digest`` is the chunk's id (bound into a sealed record)."""
        stored, flags = raw, 0
        if self._enabled:
            compressor = getattr(self._local, "compressor", None)
            if compressor is None:
                import zstandard  # on first use: opening a repository to list it needs none

                compressor = self._local.compressor = zstandard.ZstdCompressor(level=self._level)
            packed = compressor.compress(raw)
            if len(packed) < len(raw):
                stored, flags = packed, FLAG_ZSTD
        if self.cipher.encrypted:
            return self.cipher.seal(stored, self._associated(digest)), flags | FLAG_SEALED
        return bytes(stored), flags

    def decompress(self, stored, location: StoredRecord, digest: bytes) -> bytes:
        """The raw bytes of a record (not yet checked against ``digest``); RecordUnreadable
        if it does not open or decompress."""
        if bool(location.flags & FLAG_SEALED) != self.cipher.encrypted:
            raise RecordUnreadable("is encrypted in a plaintext repository" if location.flags
                                   & FLAG_SEALED else "is not encrypted in an encrypted "
                                   "repository (planted or altered)")
        if self.cipher.encrypted:
            try:
                stored = self.cipher.open_sealed(stored, self._associated(digest))
            except AuthenticationFailed:
                raise RecordUnreadable("failed authentication: it was damaged, altered or "
                                       "swapped with another record") from None
        if not location.flags & FLAG_ZSTD:
            return stored
        import zstandard  # loaded once, then a lookup: see compress

        decompressor = getattr(self._local, "decompressor", None)
        if decompressor is None:
            decompressor = self._local.decompressor = zstandard.ZstdDecompressor()
        try:
            return decompressor.decompress(stored, max_output_size=location.raw_size)
        except zstandard.ZstdError:
            raise RecordUnreadable("does not decompress") from None

    def problem(self, stored, location: StoredRecord,
                digest: bytes) -> tuple[bytes | None, str | None]:
        """(raw bytes, None) when ``stored`` is the chunk ``digest`` names, else (None, why)."""
        if len(stored) != location.stored_size:
            return None, f"is cut short ({len(stored)} of {location.stored_size} bytes)"
        try:
            raw = self.decompress(stored, location, digest)
        except RecordUnreadable as error:
            return None, str(error)
        if len(raw) != location.raw_size:
            return None, f"decompresses to {len(raw)} bytes, not {location.raw_size}"
        if self.chunk_id(raw) != digest:
            return None, "does not match its digest"
        return raw, None
