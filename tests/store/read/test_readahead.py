"""The image reader's read-ahead: streams get it (several at once, each read in pack ranges), a
parser's small metadata reads do not (they would fetch many times what they need), and a reader
may be told not to read ahead at all."""

from __future__ import annotations

import threading
import time

from diskvault.store.read.reader import READAHEAD_MIN_READ_BYTES

MIB = 1 << 20
DEADLINE_S = 10.0
MANIFEST_BYTES = 64 * 1024  # the manifest blocks of an 8 MiB image come through get() too


class Fetched:
    """Bytes of chunks fetched and verified (from any thread, one by one or as part of a
    pack range), and range requests made to the backend, while installed on the repository."""

    def __init__(self, repo, monkeypatch):
        self.bytes = 0
        self.requests = 0
        self._lock = threading.Lock()
        chunks = repo.storage.chunks
        verify, get_range = chunks.verified, chunks.packs.backend.get_range

        def counting(*args) -> bytes:
            data = verify(*args)
            with self._lock:
                self.bytes += len(data)
            return data

        def requesting(*args) -> bytes:
            with self._lock:
                self.requests += 1
            return get_range(*args)

        monkeypatch.setattr(chunks, "verified", counting)
        monkeypatch.setattr(chunks.packs.backend, "get_range", requesting)

    def settled(self, reader) -> int:
        """The count once the reader's queued fetches are done."""
        deadline = time.monotonic() + DEADLINE_S
        while reader.fetches_running():
            assert time.monotonic() < deadline, "queued chunk fetches did not finish"
            time.sleep(0.01)
        return self.bytes


def test_small_sequential_reads_fetch_only_the_chunks_they_touch(repo, make_image, monkeypatch):
    record = repo.backup(make_image(8 * MIB))
    reader = repo.open_image(record)
    fetched = Fetched(repo, monkeypatch)
    for offset in range(0, MIB, 4096):  # like a parser reading inode blocks one by one
        reader.read(offset, 4096)
    assert fetched.settled(reader) <= MIB + repo.config.chunker.max_bytes + MANIFEST_BYTES


def test_a_stream_of_large_reads_is_read_ahead(repo, make_image, monkeypatch):
    record = repo.backup(make_image(8 * MIB))
    reader = repo.open_image(record)
    fetched = Fetched(repo, monkeypatch)
    for offset in range(0, 2 * MIB, READAHEAD_MIN_READ_BYTES):
        reader.read(offset, READAHEAD_MIN_READ_BYTES)
    assert fetched.settled(reader) > 3 * MIB


def test_a_reader_without_read_ahead_fetches_nothing_beyond_its_reads(repo, make_image,
                                                                      monkeypatch):
    record = repo.backup(make_image(8 * MIB))
    reader = repo.open_image(record, readahead_max_bytes=0)
    fetched = Fetched(repo, monkeypatch)
    for offset in range(0, 2 * MIB, MIB):
        assert len(reader.read(offset, MIB)) == MIB
    assert fetched.settled(reader) <= 2 * MIB + repo.config.chunker.max_bytes + MANIFEST_BYTES


def test_two_interleaved_streams_are_each_read_ahead_in_pack_ranges(repo, make_image,
                                                                     monkeypatch):
    """Like two NBD connections, or a guest booting while a block job copies its disk: the
    requests of two sequential streams alternate, and each stream keeps its read-ahead."""
    record = repo.backup(make_image(16 * MIB))
    reader = repo.open_image(record)
    reader.read(0, READAHEAD_MIN_READ_BYTES)  # the manifest blocks, now cached
    fetched = Fetched(repo, monkeypatch)
    for offset in range(READAHEAD_MIN_READ_BYTES, 2 * MIB, READAHEAD_MIN_READ_BYTES):
        reader.read(offset, READAHEAD_MIN_READ_BYTES)
        reader.read(8 * MIB + offset, READAHEAD_MIN_READ_BYTES)
    assert fetched.settled(reader) > 2 * 3 * MIB  # each stream read well past its 2 MiB
    chunks = fetched.bytes // repo.config.chunker.avg_bytes
    assert fetched.requests < chunks / 4, "read-ahead should read neighbouring chunks at once"
