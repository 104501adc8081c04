"""Encrypted repositories of format version 3 hide plaintext lengths: the chunker is keyed
(each repository cuts the same image its own way) and pack footers are sealed. Every path
that chunks uses the keyed chunker, with cuts equal to a full keyed read; repositories of
versions 2 (encrypted) and 1/2/3 (plaintext) cut exactly as before."""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

import pytest

from diskvault.errors import CorruptData
from diskvault.store.backends.local import LocalBackend
from diskvault.store.format.config import PLAINTEXT_MODE, REPOKEY_MODE
from diskvault.store.format.packs import (ENTRY, SEALED_TRAILER_MAGIC, TRAILER_MAGIC, PackStore,
                                          pack_name, read_footer)
from diskvault.store.format.snapshots import SnapshotRecord
from diskvault.store.read.image_map import image_spans
from diskvault.store.repository import Repository

from ...conftest import SMALL_CHUNKS, TEST_PASSPHRASE, write_image

MiB = 1024 * 1024


def new_repo(root: Path, encryption: str = REPOKEY_MODE, **options) -> Repository:
    return Repository.init(root, chunk_size=SMALL_CHUNKS, compression="zstd:3",
                           encryption=encryption, passphrase=TEST_PASSPHRASE, **options)


def lengths(repository: Repository, record: SnapshotRecord) -> list[int]:
    """The data chunks' lengths, in image order (zero runs left out)."""
    return [span.length for span in image_spans(repository.storage.chunks, record)
            if span.digest is not None]


def cuts(repository: Repository, record: SnapshotRecord) -> list[tuple[int, int]]:
    return [(span.offset, span.length) for span in image_spans(repository.storage.chunks, record)
            if span.digest is not None]


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    return write_image(tmp_path_factory.mktemp("image") / "disk.img", 2 * MiB, "mixed", seed=4)


def test_same_image_in_three_encrypted_repositories_cuts_three_ways(tmp_path, image):
    sequences = []
    for name in ("a", "b", "c"):
        with new_repo(tmp_path / name) as repository:
            sequences.append(lengths(repository, repository.backup(image)))
    with new_repo(tmp_path / "plain", PLAINTEXT_MODE) as plain:
        published = lengths(plain, plain.backup(image))
    assert len({tuple(s) for s in sequences + [published]}) == 4


def test_version_2_encrypted_and_plaintext_repositories_cut_as_published_fastcdc(tmp_path,
                                                                                 image):
    """A repository's chunking never changes: version 2 stays unkeyed, with clear footers."""
    with new_repo(tmp_path / "v2", version=2) as v2, \
            new_repo(tmp_path / "plain", PLAINTEXT_MODE) as plain:
        first = v2.backup(image)
        assert lengths(v2, first) == lengths(plain, plain.backup(image))
        assert lengths(v2, v2.backup(image)) == lengths(v2, first)
    assert json.loads((tmp_path / "v2" / "config").read_text())["version"] == 2
    for root in (tmp_path / "v2", tmp_path / "plain"):
        packs = PackStore(LocalBackend(root))
        assert all((root / pack_name(p)).read_bytes()[-8:] == TRAILER_MAGIC for p in packs.list())


def test_pack_footers_of_a_version_3_repository_are_sealed(tmp_path, image):
    root = tmp_path / "repo"
    with new_repo(root) as repository:
        repository.backup(image)
        packs = repository.storage.packs
        footers = {p: read_footer(packs, p) for p in packs.list()}
    assert json.loads((root / "config").read_text())["version"] == 3
    for pack_id, entries in footers.items():
        data = (root / pack_name(pack_id)).read_bytes()
        assert data[-8:] == SEALED_TRAILER_MAGIC
        for entry in entries:  # no entry, and no raw length, in the clear
            assert ENTRY.pack(entry.digest, entry.offset, entry.stored_size, entry.raw_size,
                              entry.flags) not in data
            assert entry.raw_size.to_bytes(4, "little") + bytes([entry.flags]) not in data
    # Without the key, nothing but the record count can be read from a pack's end.
    pack_id = next(iter(footers))
    with pytest.raises(CorruptData, match="sealed footer"):
        read_footer(PackStore(LocalBackend(root)), pack_id)


def test_a_pack_with_a_clear_footer_in_a_version_3_repository_is_refused(tmp_path, image):
    """A planted or altered pack whose footer is in the clear is never used."""
    with new_repo(tmp_path / "v2", version=2) as v2:
        v2.backup(image)
        clear_pack = v2.storage.packs.list()[0]
    root = tmp_path / "v3"
    with new_repo(root) as repository:
        target = root / pack_name(clear_pack)
        target.parent.mkdir(exist_ok=True)
        target.write_bytes((tmp_path / "v2" / pack_name(clear_pack)).read_bytes())
        with pytest.raises(CorruptData, match="footer in the clear"):
            read_footer(repository.storage.packs, clear_pack)


def edited(image: Path, target: Path) -> Path:
    data = bytearray(image.read_bytes())
    rng = random.Random(2)
    for offset in (100_000, 700_000, 1_500_000):
        data[offset: offset + 5000] = rng.randbytes(5000)
    data[1_200_000:1_200_000] = rng.randbytes(3333)  # an insertion shifts what follows
    target.write_bytes(bytes(data))
    return target


def test_hinted_nightly_backup_cuts_as_a_full_keyed_read(tmp_path, image):
    night2 = edited(image, tmp_path / "night2.img")
    with new_repo(tmp_path / "repo") as repository:
        repository.backup(image, "vm")
        hinted = repository.backup(night2, "vm")        # hints: the series' last snapshot
        full = repository.backup(night2, "fresh")       # no hints: a series of its own
        assert cuts(repository, hinted) == cuts(repository, full)
        assert hinted.blocks == full.blocks
        assert hinted.stats.new_chunks > 0


def test_stream_backup_cuts_as_a_file_backup(tmp_path, image):
    with new_repo(tmp_path / "repo") as repository:
        from_file = repository.backup(image, "file")
        from_stream = repository.backup_stream(io.BytesIO(image.read_bytes()), "stream")
        assert from_stream.blocks == from_file.blocks
