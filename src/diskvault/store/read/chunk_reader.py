"""The reader that turns a digest into verified raw bytes: located through the index, read
from its pack, opened by the codec and checked against the digest."""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import AbstractContextManager

from ...errors import CorruptData, MissingChunk
from ..format.codec import Codec
from ..format.packs import PackStore
from ..index.chunk_index import ChunkIndex
from ..index.records import ChunkLocation


class ChunkReader:
    """digest -> verified raw bytes. Thread-safe. A pack found missing (compacted away on
    another host since the index was read) makes it call ``on_missing_pack`` (which
    catches the index up) and read the chunk once more where the index now puts it; a chunk
    not in the index is looked up again once a catch-up under way has ended."""

    def __init__(self, packs: PackStore, index: ChunkIndex, codec: Codec,
                 on_missing_pack: Callable[[], object] | None = None):
        self.packs = packs
        self.index = index
        self.codec = codec
        self._on_missing_pack = on_missing_pack
        self._refresh_lock = threading.RLock()  # a catch-up may look chunks up
        self._refreshes = 0  # catch-ups so far: threads that met one missing pack share one

    def catching_up(self) -> AbstractContextManager:
        """Held while the index is caught up (Storage.catch_up_index): a lookup that misses
        meanwhile waits for the catch-up to end and looks again."""
        return self._refresh_lock

    def use_index(self, index: ChunkIndex) -> None:
        """Read through ``index`` from now on (the storage replaced its index)."""
        self.index = index

    def locate(self, digest: bytes) -> ChunkLocation:
        location = self.index.lookup(digest)
        if location is None and self._on_missing_pack is not None:
            # A catch-up running on another thread may be indexing the pack that holds it,
            # or rebuilding the index (seen only once whole): look again when it ends.
            with self.catching_up():
                location = self.index.lookup(digest)
        if location is None:
            raise MissingChunk(f"chunk {digest.hex()[:16]} is not in the index (run "
                               f"'diskvault check': if a pack holds it, or the index is "
                               f"damaged, 'diskvault check --repair' indexes it again)")
        return location

    def get(self, digest: bytes, location: ChunkLocation | None = None) -> bytes:
        """The verified raw bytes of a chunk (``location`` if already known)."""
        location = location or self.locate(digest)
        refreshes = self._refreshes
        try:
            stored = self.packs.read(location.pack_id, location.offset, location.stored_size)
        except MissingChunk:
            if self._on_missing_pack is None:
                raise
            self._refresh(refreshes)
            location = self.locate(digest)
            stored = self.packs.read(location.pack_id, location.offset, location.stored_size)
        return self.verified(digest, location, stored)

    def _refresh(self, seen: int) -> None:
        """Catch the index up, unless another thread did since this read began."""
        with self._refresh_lock:
            if self._refreshes == seen:
                self._on_missing_pack()
                self._refreshes += 1

    def verified(self, digest: bytes, location: ChunkLocation, stored) -> bytes:
        """The raw bytes of the record ``stored`` read at ``location``, proven to be the
        chunk ``digest``; CorruptData naming the chunk and the pack if not."""
        raw, problem = self.codec.problem(stored, location, digest)
        if problem:
            raise CorruptData(f"chunk {digest.hex()[:16]} in pack {location.pack_id} {problem}")
        # A raw record read as part of a larger range is a view of it: callers get bytes.
        return raw if isinstance(raw, bytes) else bytes(raw)
