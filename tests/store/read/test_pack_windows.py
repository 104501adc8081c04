"""Chunks read through windows of their packs: every chunk comes back verified and exact,
also one that straddles two windows, and the chunks of one window cost one read."""

from __future__ import annotations

import threading

from diskvault.store.format.manifest import decode_block
from diskvault.store.read.pack_windows import PackWindows

WINDOW_BYTES = 64 * 1024
MIB = 1 << 20


class PackReads:
    """The pack reads made through the repository's pack store while installed."""

    def __init__(self, repo, monkeypatch):
        self.count = 0
        self._lock = threading.Lock()
        read = repo.storage.packs.read

        def counting(pack_id: str, offset: int, length: int) -> bytes:
            with self._lock:
                self.count += 1
            return read(pack_id, offset, length)

        monkeypatch.setattr(repo.storage.packs, "read", counting)


def data_digests(repo, record) -> list[bytes]:
    return [entry.digest for block in record.blocks
            for entry in decode_block(repo.storage.chunks.get(block.digest))
            if entry.digest is not None]


def test_every_chunk_read_through_windows_is_the_chunk_and_a_window_is_read_once(
        repo, make_image, monkeypatch):
    record = repo.backup(make_image(2 * MIB))
    digests = data_digests(repo, record)
    locations = [repo.storage.chunks.locate(digest) for digest in digests]
    assert any(location.offset // WINDOW_BYTES
               != (location.offset + location.stored_size - 1) // WINDOW_BYTES
               for location in locations)  # some chunk straddles two windows
    expected = [repo.storage.chunks.get(digest) for digest in digests]
    windows = PackWindows(repo.storage.chunks, WINDOW_BYTES)
    reads = PackReads(repo, monkeypatch)

    assert [windows.get(digest) for digest in digests] == expected

    spanned = {(location.pack_id, number) for location in locations
               for number in range(location.offset // WINDOW_BYTES,
                                   (location.offset + location.stored_size - 1)
                                   // WINDOW_BYTES + 1)}
    assert reads.count == len(spanned) < len(digests)
