"""One snapshot held open for an NBD export: reads through the verifying ImageReader, and
the extents (data, or a zero run) that clients use to skip holes. Runs inside nbdkit."""

from __future__ import annotations

import os
from contextlib import ExitStack

from ..store.backends.location import as_location
from ..store.format.crypto import KEY_BYTES, Keys
from ..store.repository import Repository


class SnapshotExport:
    """The repository opened with keys the ``serve`` process unlocked (never a passphrase),
    registered as a reader for as long as the export runs, so compaction keeps its packs."""

    def __init__(self, location: str, snapshot_id: str, keys: Keys | None):
        self._resources = ExitStack()
        with ExitStack() as opening:
            repository = opening.enter_context(Repository.open(as_location(location), keys=keys))
            opening.enter_context(repository.reader_lock())
            self.record = repository.load_snapshot(snapshot_id)
            self.reader = repository.open_image(self.record)
            self.reader.load_manifest()  # a random read then costs one pack range read
            self._resources = opening.pop_all()
        self.size = self.record.size

    def read(self, offset: int, length: int) -> bytes:
        """Verified bytes; a damaged or missing chunk raises CorruptData, never wrong bytes."""
        return self.reader.read(offset, length)

    def extents(self, offset: int, length: int) -> list[tuple[int, int, bool]]:
        """(offset, length, is_zero) covering [offset, offset + length) in order, from the
        manifest alone (no chunk is read): zero runs are the image's holes and zero chunks."""
        end = min(offset + length, self.size)
        extents, position = [], offset
        while position < end:
            data = self.reader.seek_data(position, end)
            if data > position:
                extents.append((position, data - position, True))
            if data >= end:
                break
            position = self.reader.seek_hole(data, end)
            extents.append((data, position - data, False))
        return extents

    def close(self) -> None:
        self._resources.close()


def read_keys(fd: int) -> Keys:
    """The master key the ``serve`` process wrote into the pipe ``fd`` (then closed): a key
    in a pipe, unlike one in argv or the environment, is not shown in /proc."""
    with os.fdopen(fd, "rb") as pipe:
        master_key = pipe.read(KEY_BYTES + 1)
    if len(master_key) != KEY_BYTES:
        raise ValueError(f"keys-fd={fd} gave {len(master_key)} bytes, not a master key")
    return Keys(master_key)
