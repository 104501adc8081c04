"""The mount's open images: one shared reader per snapshot, its partitions and their data
bytes found once.

A reader's caches are worth keeping between opens (a loop mount and `ls` open and close a
file often), so the last few idle readers stay open; older ones are dropped, keeping memory
bounded however many snapshots are browsed.
"""

from __future__ import annotations

import logging
import threading

from ..errors import CorruptData
from ..image.volumes import Partition, list_partitions
from ..lru import LRU
from ..store.format.snapshots import SnapshotRecord
from ..store.read.reader import ImageReader
from ..store.repository import Repository

log = logging.getLogger(__name__)

IDLE_READERS = 4


class ImageCatalogue:
    """Readers by snapshot id, counted by use; thread-safe."""

    def __init__(self, repository: Repository, idle_readers: int = IDLE_READERS,
                 **cache_sizes: int):
        self._repository = repository
        self._cache_sizes = cache_sizes
        self._in_use: dict[str, tuple[ImageReader, int]] = {}
        self._idle: LRU[str, ImageReader] = LRU(idle_readers)
        self._partitions: dict[str, list[Partition]] = {}
        self._partition_data_bytes: dict[tuple[str, int], int] = {}
        self._lock = threading.Lock()

    def acquire(self, record: SnapshotRecord) -> ImageReader:
        """The snapshot's reader; pair every call with ``release``."""
        with self._lock:
            reader, users = self._in_use.get(record.id, (None, 0))
            if reader is None:
                reader = self._idle.pop(record.id, None)
            if reader is None:
                reader = self._repository.open_image(record, **self._cache_sizes)
            self._in_use[record.id] = (reader, users + 1)
            return reader

    def release(self, record: SnapshotRecord) -> None:
        with self._lock:
            reader, users = self._in_use.pop(record.id)
            if users > 1:
                self._in_use[record.id] = (reader, users - 1)
                return
            self._idle.put(record.id, reader)

    def partitions(self, record: SnapshotRecord) -> list[Partition]:
        """The image's partitions ([] without a readable table); read once per snapshot,
        since a snapshot never changes."""
        with self._lock:
            known = self._partitions.get(record.id)
        if known is not None:
            return known
        reader = self.acquire(record)
        try:
            found = list_partitions(reader.open())
        except CorruptData as error:
            log.error("snapshot %s (%s, %s): its partitions are not shown: %s",
                      record.short_id, record.name, record.time_label, error)
            found = []
        finally:
            self.release(record)
        with self._lock:
            self._partitions[record.id] = found
        return found

    def data_bytes(self, record: SnapshotRecord, partition: Partition | None) -> int:
        """What st_blocks counts for the image or one of its partitions: its bytes outside
        zero runs, so that `cp` sees a sparse file and asks where the holes are. The image's
        come from the record; a partition's from the manifest, read once per snapshot."""
        if partition is None:
            return max(0, record.size - record.stats.zero_bytes)
        key = (record.id, partition.number)
        with self._lock:
            known = self._partition_data_bytes.get(key)
        if known is not None:
            return known
        reader = self.acquire(record)
        try:
            found = reader.data_bytes(partition.offset, partition.offset + partition.size)
        except CorruptData as error:
            log.error("snapshot %s (%s, %s): partition %d is shown as all data: %s",
                      record.short_id, record.name, record.time_label, partition.number, error)
            found = partition.size
        finally:
            self.release(record)
        with self._lock:
            self._partition_data_bytes[key] = found
        return found
