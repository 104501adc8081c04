"""Chunks read through windows of their packs: every chunk comes back verified and exact,
also one that straddles two windows, the chunks of one window cost one read (one by one or
as short ranges), a range longer than two windows is read as it is, and a window whose bytes
failed verification is not kept."""

from __future__ import annotations

import threading

import pytest

from diskvault.errors import CorruptData
from diskvault.store.format.manifest import decode_block
from diskvault.store.format.packs import pack_name
from diskvault.store.read.pack_ranges import coalesce, read_range
from diskvault.store.read.pack_windows import WindowedChunks

from .test_corruption import flip_byte

WINDOW_BYTES = 64 * 1024
LARGE_WINDOW_BYTES = 256 * 1024  # as large as the largest chunk: a record spans at most two
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
    windows = WindowedChunks(repo.storage.chunks, WINDOW_BYTES)
    reads = PackReads(repo, monkeypatch)

    assert [windows.get(digest) for digest in digests] == expected

    spanned = {(location.pack_id, number) for location in locations
               for number in range(location.offset // WINDOW_BYTES,
                                   (location.offset + location.stored_size - 1)
                                   // WINDOW_BYTES + 1)}
    assert reads.count == len(spanned) < len(digests)


def test_a_window_whose_chunk_failed_verification_is_read_anew_next_time(repo, make_image):
    record = repo.backup(make_image(MIB))
    digest = data_digests(repo, record)[3]
    location = repo.storage.chunks.locate(digest)
    pack = repo.storage.backend.root / pack_name(location.pack_id)
    windows = WindowedChunks(repo.storage.chunks, WINDOW_BYTES)

    flip_byte(pack, location.offset + location.stored_size // 2)
    with pytest.raises(CorruptData, match=digest.hex()[:16]):
        windows.get(digest)
    flip_byte(pack, location.offset + location.stored_size // 2)  # repaired (a copy put back)
    assert windows.get(digest) == repo.storage.chunks.get(digest)


def test_range_reads_of_neighbours_share_the_windows_and_a_long_range_is_read_directly(
        repo, make_image, monkeypatch):
    record = repo.backup(make_image(2 * MIB))
    digests = data_digests(repo, record)
    expected = {digest: repo.storage.chunks.get(digest) for digest in digests}
    locations = {digest: repo.storage.chunks.locate(digest) for digest in digests}
    windows = WindowedChunks(repo.storage.chunks, LARGE_WINDOW_BYTES)
    reads = PackReads(repo, monkeypatch)

    short = coalesce(locations, gap=0, max_bytes=LARGE_WINDOW_BYTES // 2)
    assert {digest: data for pack_range in short
            for digest, data in read_range(windows, pack_range).items()} == expected
    spanned = {(location.pack_id, number) for location in locations.values()
               for number in range(location.offset // LARGE_WINDOW_BYTES,
                                   (location.offset + location.stored_size - 1)
                                   // LARGE_WINDOW_BYTES + 1)}
    assert reads.count == len(spanned) < len(short)

    reads.count = 0
    whole = coalesce(locations, gap=0, max_bytes=4 * MIB)
    assert len(whole) == 1
    assert read_range(windows, whole[0]) == expected
    assert reads.count == 1
