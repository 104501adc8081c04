"""A backup's packs on an object store: several go up at once, and the
index learns of a pack only once its upload completed (real radosgw, tests/ceph.py)."""

from __future__ import annotations

import os
import threading
import time
import uuid

import blake3

from diskvault.store.backup.write_session import WriteSession
from diskvault.store.format.codec import Codec
from diskvault.store.format.config import Compression
from diskvault.store.format.packs import PackStore, pack_id_of
from diskvault.store.index.chunk_index import ChunkIndex

OVERLAP_DEADLINE_S = 10.0


class OverlapWatch:
    """Wraps a backend's ``put``: each put of a pack waits (up to a deadline) until another
    one is under way, and the most at once is kept; puts one after another stay at 1."""

    def __init__(self, backend, index: ChunkIndex):
        self._put = backend.put
        self._index = index
        self._lock = threading.Lock()
        self.running = 0
        self.most = 0
        self.indexed_before_complete: list[str] = []
        backend.put = self.put

    def put(self, name: str, data) -> None:
        with self._lock:
            self.running += 1
            self.most = max(self.most, self.running)
        deadline = time.monotonic() + OVERLAP_DEADLINE_S
        while self.most < 2 and time.monotonic() < deadline:
            time.sleep(0.01)  # polling the other uploader, with a deadline
        try:
            pack_id = pack_id_of(name)
            if pack_id and pack_id in self._index.known_packs():
                self.indexed_before_complete.append(pack_id)
            self._put(name, data)
        finally:
            with self._lock:
                self.running -= 1


def test_several_packs_go_up_at_once_and_are_indexed_after_their_upload(
        s3_environment, tmp_path):
    from diskvault.store.backends.s3 import open_s3_backend  # boto3 only when S3 is tested
    backend = open_s3_backend(f"s3://{s3_environment.bucket}/uploads-{uuid.uuid4().hex[:8]}")
    index = ChunkIndex(tmp_path / "index")
    watch = OverlapWatch(backend, index)
    chunks = [os.urandom(64 << 10) for _ in range(48)]
    with WriteSession(PackStore(backend), index, Codec(Compression.parse("zstd:3")),
                      pack_target_bytes=512 << 10) as session:
        session.store_missing([(blake3.blake3(c).digest(), c) for c in chunks])
        session.flush()
    assert watch.most >= 2
    assert watch.indexed_before_complete == []
    listed = {pack_id_of(name) for name in backend.list("packs/")}
    assert listed == index.known_packs() and len(listed) >= 6
    assert all(index.lookup(blake3.blake3(c).digest()) for c in chunks)
    assert backend.list_unfinished("packs/") == []
    backend.close()
    index.close()
