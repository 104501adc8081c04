"""The reader that turns a digest into verified raw bytes: located through the index, read
from its pack, opened by the codec and checked against the digest."""

from __future__ import annotations

from ...errors import CorruptData, MissingChunk
from ..format.codec import Codec
from ..format.packs import PackStore
from ..index.chunk_index import ChunkIndex, ChunkLocation


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
        return self.verified(digest, location, stored)

    def verified(self, digest: bytes, location: ChunkLocation, stored) -> bytes:
        """The raw bytes of the record ``stored`` read at ``location``, proven to be the
        chunk ``digest``; CorruptData naming the chunk and the pack if not."""
        raw, problem = self.codec.problem(stored, location, digest)
        if problem:
            raise CorruptData(f"chunk {digest.hex()[:16]} in pack {location.pack_id} {problem}")
        # A raw record read as part of a larger range is a view of it: callers get bytes.
        return raw if isinstance(raw, bytes) else bytes(raw)
