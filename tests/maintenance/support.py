"""Helpers shared by the delete/prune/compact/check/repair tests: small-pack repositories,
images that evolve like a disk between nights, and bit-exact restore checks."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import random
import shutil
import sys
import uuid
from pathlib import Path

import lmdb

from diskvault.store.backends.local import LocalBackend
from diskvault.store.format.config import PLAINTEXT_MODE, write_config
from diskvault.store.format.crypto import SEAL_OVERHEAD_BYTES
from diskvault.store.format.packs import PACK_MAGIC, SEALED_TRAILER, TRAILER, PackStore
from diskvault.store.format.snapshots import SnapshotRecord
from diskvault.store.keys.encryption import config_mac
from diskvault.store.repository import Repository

KiB = 1024
PACK_HEAD_AND_TRAILER = 8 + 44  # bytes of a pack that are not records or footer entries


def pack_framing_bytes(repository: Repository) -> int:
    """PACK_HEAD_AND_TRAILER of this repository's format: in an encrypted one of version 3
    the trailer is shorter and the sealed footer adds its nonce and tag."""
    if repository.config.hides_lengths:
        return len(PACK_MAGIC) + SEALED_TRAILER.size + SEAL_OVERHEAD_BYTES
    return len(PACK_MAGIC) + TRAILER.size


def small_pack_repository(root: Path, chunk_size: int = 1024,
                          pack_target_bytes: int = 32 * 1024,
                          encryption: str = PLAINTEXT_MODE) -> Repository:
    """A repository whose backups write many small packs, so compaction has choices."""
    with Repository.init(root, chunk_size=chunk_size, encryption=encryption) as repository:
        rewrite_config(repository, pack_target_bytes=pack_target_bytes)
    return Repository.open(root)


def rewrite_config(repository: Repository, **changes) -> None:
    """Change settings of a new repository's config, authenticated again if encrypted."""
    config = dataclasses.replace(repository.config, **changes)
    if config.encrypted:
        config = dataclasses.replace(config, mac=config_mac(repository.storage.cipher, config))
    write_config(LocalBackend(repository.root), config)


def evolve(data: bytearray, rng: random.Random, changes: int = 3) -> bytearray:
    """A night of change: rewritten ranges, a zeroed range, sometimes growth or shrinkage."""
    for _ in range(changes):
        start = rng.randrange(max(1, len(data)))
        length = rng.randrange(1, 8192)
        data[start:start + length] = rng.randbytes(min(length, len(data) - start))
    if rng.random() < 0.3 and len(data) > 16384:
        start = rng.randrange(len(data) - 8192)
        data[start:start + 8192] = bytes(8192)
    if rng.random() < 0.2:
        data += rng.randbytes(rng.randrange(1, 20000))
    elif rng.random() < 0.1 and len(data) > 20000:
        del data[rng.randrange(10000, len(data)):]
    return data


def nightly(repository, folder: Path, nights: int, seed: int = 1, size: int = 256 * KiB,
            name: str = "vm") -> dict[str, bytes]:
    """Back up an image that evolves like a disk, night after night: id -> bytes."""
    rng = random.Random(seed)
    data = bytearray(rng.randbytes(size))
    expected = {}
    for _ in range(nights):
        expected[back_up(repository, folder, name, bytes(data)).id] = bytes(data)
        evolve(data, rng)
    return expected


def back_up(repository: Repository, folder: Path, name: str, data: bytes) -> SnapshotRecord:
    image = folder / f"{name}.img"
    image.write_bytes(data)
    return repository.backup(image, name=name)


def restored(repository: Repository, record: SnapshotRecord) -> bytes:
    out = io.BytesIO()
    repository.cat(record, out)
    return out.getvalue()


def assert_restore(repository: Repository, expected: dict[str, bytes]) -> None:
    """Each of these snapshots restores bit-exact."""
    records = {r.id: r for r in repository.list_snapshots()}
    for snapshot_id, data in expected.items():
        assert restored(repository, records[snapshot_id]) == data, snapshot_id


def assert_all_restore(repository: Repository, expected: dict[str, bytes]) -> None:
    """Exactly the expected snapshots exist, and each restores bit-exact."""
    assert {r.id for r in repository.list_snapshots()} == set(expected)
    assert_restore(repository, expected)


def pack_bytes(root: Path) -> int:
    packs = PackStore(LocalBackend(root))
    return sum(packs.size(pack_id) for pack_id in packs.list())


def pack_count(root: Path) -> int:
    return len(PackStore(LocalBackend(root)).list())


def fresh_pack_bytes(folder: Path, like: Repository, contents: list[tuple[str, bytes]]) -> int:
    """Pack bytes of a new repository (same config) holding only these images. A new
    folder each time: the same id at the same place losing its snapshots is a rollback."""
    root = folder / f"fresh-{uuid.uuid4().hex}"
    Repository.init(root).close()
    write_config(LocalBackend(root), like.config)
    with Repository.open(root) as fresh:
        for name, data in contents:
            back_up(fresh, folder, name, data)
    size = pack_bytes(root)
    shutil.rmtree(root)
    return size


def chunks_by_pack(repository: Repository) -> dict[str, set[bytes]]:
    """The digests the index locates in each pack."""
    grouped: dict[str, set[bytes]] = {}
    for digest, location in repository.storage.index.iter_chunks():
        grouped.setdefault(location.pack_id, set()).add(digest)
    return grouped


def referenced(repository: Repository, record: SnapshotRecord) -> set[bytes]:
    """Every chunk a snapshot needs: its manifest blocks and their data chunks."""
    digests = set()
    for block in repository.load_snapshot(record.id).blocks:  # a header lists none
        digests.add(block.digest)
        digests.update(e.digest for e in repository.load_manifest_block(block.digest)
                       if e.digest is not None)
    return digests


def chunk_offsets(repository: Repository, record: SnapshotRecord) -> dict[bytes, int]:
    """Where each data chunk of a snapshot first appears in its image."""
    offsets: dict[bytes, int] = {}
    for block in repository.load_snapshot(record.id).blocks:  # a header lists none
        offset = block.offset
        for entry in repository.load_manifest_block(block.digest):
            if entry.digest is not None:
                offsets.setdefault(entry.digest, offset)
            offset += entry.length
    return offsets


# LMDB notes each reader in this file (any command that reads the index writes to it).
LMDB_READER_TABLE = Path("index") / "lock.mdb"


def file_digests(root: Path) -> dict[str, str]:
    """The blake2 digest of every file in a repository but LMDB's reader table."""
    return {str(path.relative_to(root)): hashlib.blake2b(path.read_bytes()).hexdigest()
            for path in sorted(root.rglob("*"))
            if path.is_file() and path.relative_to(root) != LMDB_READER_TABLE}


def assert_plan_carried_out(plan, result, framing_bytes: int = PACK_HEAD_AND_TRAILER) -> None:
    """A compact (no reader running) did what the dry run of the moment before said;
    ``framing_bytes`` is the repository's pack_framing_bytes. A failure names both in full
    (packs kept as last copies, left damaged or waiting are in the result)."""
    planned = {"packs_reviewed": plan.packs_reviewed,
               "packs_deleted": len(plan.delete) + len(plan.rewrite),
               "packs_rewritten": len(plan.rewrite),
               "bytes_freed": plan.bytes_to_delete,
               "chunks_copied": plan.records_to_copy,
               "bytes_written": plan.bytes_to_copy + framing_bytes * result.packs_written}
    done = {name: getattr(result, name) for name in planned}
    assert done == planned, f"compact did not carry out its plan\nplan: {plan}\nresult: {result}"


class IndexCalls:
    """Counts this thread's calls into LMDB's ``kinds`` (Transaction, Cursor) named in
    ``NAMES`` (None: every method), through a profile hook that sees each call and
    replaces nothing."""

    NAMES: set[str] | None = None
    KINDS: tuple[type, ...] = (lmdb.Transaction, lmdb.Cursor)

    def __enter__(self) -> IndexCalls:
        self.count = 0
        sys.setprofile(self._hook)
        return self

    def __exit__(self, *exc) -> None:
        sys.setprofile(None)

    def _hook(self, frame, event, arg) -> None:
        if event == "c_call" and isinstance(getattr(arg, "__self__", None), self.KINDS) and (
                self.NAMES is None or getattr(arg, "__name__", None) in self.NAMES):
            self.count += 1


class IndexSeeks(IndexCalls):
    """The index's lookups: LMDB gets and cursor positionings."""

    NAMES = {"get", "set_key", "set_range", "set_key_dup", "set_range_dup"}


class CursorSteps(IndexCalls):
    """Every call on a cursor: a step, a positioning, a read of its entry, a deletion."""

    KINDS = (lmdb.Cursor,)
