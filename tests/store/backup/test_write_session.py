"""The write session: what is stored or in flight is queued once, everything is durable
and indexed after flush, and an abandoned session keeps only the packs already durable."""

from __future__ import annotations

import os

import blake3
import pytest

from diskvault.errors import DiskvaultError
from diskvault.store.backends.local import LocalBackend
from diskvault.store.backup.write_session import WriteSession
from diskvault.store.format.codec import Codec
from diskvault.store.format.config import Compression
from diskvault.store.format.packs import PackStore, read_footer
from diskvault.store.index.chunk_index import ChunkIndex
from diskvault.store.read.chunk_reader import ChunkReader


class Parts:
    """A real pack folder, index and codec in tmp_path."""

    def __init__(self, root):
        self.backend = LocalBackend(root)
        self.packs = PackStore(self.backend)
        self.index = ChunkIndex(root / "index")
        self.codec = Codec(Compression.parse("zstd:3"))

    def session(self, pack_target_bytes: int = 1 << 20) -> WriteSession:
        return WriteSession(self.packs, self.index, self.codec, pack_target_bytes)

    def close(self) -> None:
        self.backend.close()
        self.index.close()


@pytest.fixture
def parts(tmp_path):
    opened = Parts(tmp_path)
    yield opened
    opened.close()


def chunk(n: int, size: int = 5000) -> tuple[bytes, bytes]:
    data = os.urandom(size - 8) + n.to_bytes(8, "little")
    return blake3.blake3(data).digest(), data


def test_a_chunk_repeated_in_flight_or_stored_is_queued_once(parts):
    first, second = chunk(1), chunk(2)
    with parts.session() as session:
        assert session.store_missing([first, first, second]) == 2
        assert session.store_missing([first]) == 0  # in flight
        session.flush()
        assert session.store_missing([second, chunk(3)]) == 1  # stored
        session.flush()
    assert session.counts.chunks == 3
    assert session.counts.raw_bytes == 3 * 5000
    with parts.session() as again:
        assert again.store_missing([first, second]) == 0


def test_after_flush_every_chunk_is_durable_indexed_and_reads_back(parts):
    chunks = [chunk(n) for n in range(40)]
    with parts.session(pack_target_bytes=50_000) as session:
        session.store_missing(chunks)
        session.flush()
    packs = list(parts.packs.list())
    assert len(packs) > 1
    assert sum(len(read_footer(parts.packs, p)) for p in packs) == len(chunks)
    reader = ChunkReader(parts.packs, parts.index, parts.codec)
    for digest, data in chunks:
        assert reader.get(digest) == data


def test_durable_packs_share_index_transactions(parts):
    """A transaction per pack wrote about an index page per chunk in a large index: the
    packs of a session are committed several to a transaction (LMDB counts them)."""
    chunks = [chunk(n) for n in range(200)]
    transactions_before = parts.index.env.info()["last_txnid"]
    with parts.session(pack_target_bytes=50_000) as session:
        session.store_missing(chunks)
        session.flush()
    assert len(list(parts.packs.list())) >= 20
    assert parts.index.env.info()["last_txnid"] - transactions_before == 1
    assert parts.index.are_indexed([d for d, _ in chunks]) == [True] * 200


def test_a_session_left_without_flush_indexes_the_packs_it_made_durable(parts):
    with parts.session(pack_target_bytes=50_000) as session:
        session.store_missing([chunk(n) for n in range(40)])
    packs = list(parts.packs.list())
    assert packs  # the full ones; the open one was dropped
    for pack in packs:
        assert all(parts.index.are_indexed([e.digest for e in read_footer(parts.packs, pack)]))


def test_leaving_a_session_by_an_error_keeps_only_durable_packs(parts):
    durable, pending = [chunk(n) for n in range(30)], [chunk(n) for n in range(30, 32)]
    with pytest.raises(RuntimeError), parts.session(pack_target_bytes=1 << 30) as session:
        session.store_missing(durable)
        session.flush()
        session.store_missing(pending)
        raise RuntimeError("source vanished")
    assert parts.index.are_indexed([d for d, _ in durable]) == [True] * 30
    assert parts.index.are_indexed([d for d, _ in pending]) == [False, False]
    assert list(parts.packs.list_unfinished()) == []
    with pytest.raises(DiskvaultError, match="abandoned"):
        session.store_missing([chunk(99)])
