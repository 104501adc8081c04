"""Packs on their own: the footer lists every record as written (in the clear, or sealed as
in an encrypted repository of format version 3), a damaged footer is refused, and packs are
filled to their target and made durable before they are committed."""

from __future__ import annotations

from pathlib import Path

import blake3
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from diskvault.errors import CorruptData
from diskvault.store.backends.local import LocalBackend
from diskvault.store.backup.packing import PackFiller
from diskvault.store.format.crypto import Encrypted, Keys
from diskvault.store.format.packs import (FLAG_ZSTD, FOOTER_TAIL_BYTES, PackEntry, PackStore,
                                          PackWriter, read_footer)

PACK_ID = "ab" * 16
SEALED = Encrypted(Keys(bytes(range(32))), hides_lengths=True)
REPOSITORY_ID = "cd" * 16


def pack_store(root: Path, sealed: bool = False) -> PackStore:
    return PackStore(LocalBackend(root), SEALED if sealed else None, REPOSITORY_ID)


def write_pack(root: Path, records: list[tuple[bytes, int]], sealed: bool = False
               ) -> list[PackEntry]:
    packs = pack_store(root, sealed)
    writer = PackWriter(packs, PACK_ID)
    for data, flags in records:
        writer.add(blake3.blake3(data).digest(), data, len(data) * 2, flags)
    entries = writer.finish()
    return entries


def pack_file(root: Path) -> Path:
    (path,) = root.rglob("*.pack")
    return path


@settings(max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.binary(min_size=1, max_size=300), st.sampled_from([0, FLAG_ZSTD])),
                max_size=40))
def test_the_footer_lists_every_record_as_written(tmp_path_factory, records):
    root = tmp_path_factory.mktemp("packs")
    written = write_pack(root, records)
    packs = PackStore(LocalBackend(root))
    assert read_footer(packs, PACK_ID) == written
    for entry, (data, flags) in zip(written, records):
        assert packs.read(PACK_ID, entry.offset, entry.stored_size) == data
        assert (entry.raw_size, entry.flags) == (len(data) * 2, flags)


@pytest.mark.parametrize("sealed", [False, True], ids=["clear", "sealed"])
@pytest.mark.parametrize("from_end", [1, 10, 20, 45, 60])  # magic, count, checksum or tag, ...
def test_a_flipped_byte_in_the_footer_or_trailer_is_refused(tmp_path, from_end, sealed):
    write_pack(tmp_path, [(b"x" * 100, 0), (b"y" * 50, 0)], sealed)
    path = pack_file(tmp_path)
    data = bytearray(path.read_bytes())
    data[-from_end] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptData, match=f"pack {PACK_ID}"):
        read_footer(pack_store(tmp_path, sealed), PACK_ID)


@pytest.mark.parametrize("sealed", [False, True], ids=["clear", "sealed"])
def test_a_truncated_pack_is_refused(tmp_path, sealed):
    write_pack(tmp_path, [(b"x" * 100, 0)], sealed)
    path = pack_file(tmp_path)
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(CorruptData, match="no valid footer|truncated"):
        read_footer(pack_store(tmp_path, sealed), PACK_ID)


@pytest.mark.parametrize("sealed", [False, True], ids=["clear", "sealed"])
def test_a_footer_longer_than_the_first_tail_read_is_read_whole(tmp_path, sealed):
    records = [(bytes([i % 251]) * 3, 0) for i in range(FOOTER_TAIL_BYTES // 49 + 500)]
    written = write_pack(tmp_path, records, sealed)
    assert read_footer(pack_store(tmp_path, sealed), PACK_ID) == written


def test_a_sealed_footer_shows_no_length_and_opens_only_with_its_key_and_pack(tmp_path):
    written = write_pack(tmp_path, [(b"x" * 1000, 0), (b"y" * 777, FLAG_ZSTD)], sealed=True)
    data = pack_file(tmp_path).read_bytes()
    assert (1000).to_bytes(4, "little") not in data and (1554).to_bytes(4, "little") not in data
    other_key = Encrypted(Keys(bytes(32)), hides_lengths=True)
    with pytest.raises(CorruptData, match="footer failed authentication"):
        read_footer(PackStore(LocalBackend(tmp_path), other_key, REPOSITORY_ID), PACK_ID)
    assert read_footer(pack_store(tmp_path, sealed=True), PACK_ID) == written


class Committed:
    """What a PackFiller committed, checked at the moment of each commit."""

    def __init__(self, packs: PackStore):
        self.store = packs
        self.packs: list[tuple[str, list[PackEntry], int]] = []

    def commit(self, pack_id: str, entries: list[PackEntry], file_size: int) -> None:
        # Durable before committed: the pack is already under its final name, whole.
        assert read_footer(self.store, pack_id) == entries
        assert self.store.size(pack_id) == file_size
        self.packs.append((pack_id, entries, file_size))


def test_the_filler_starts_a_new_pack_once_the_target_is_reached(tmp_path):
    packs = PackStore(LocalBackend(tmp_path))
    committed = Committed(packs)
    filler = PackFiller(packs, 1000, committed.commit)
    records = [bytes([n]) * 300 for n in range(10)]
    for data in records:
        filler.add(blake3.blake3(data).digest(), data, len(data), 0)
    assert len(committed.packs) == 2  # each full after its fourth record (8 + 4 * 300 bytes)
    filler.finish()
    assert [len(entries) for _, entries, _ in committed.packs] == [4, 4, 2]
    assert sorted(packs.list()) == sorted(pack_id for pack_id, _, _ in committed.packs)


def test_an_aborted_filler_leaves_no_file_and_commits_nothing(tmp_path):
    packs = PackStore(LocalBackend(tmp_path))
    committed = Committed(packs)
    filler = PackFiller(packs, 1 << 20, committed.commit)
    filler.add(bytes(32), b"data", 4, 0)
    filler.abort()
    filler.finish()
    assert committed.packs == []
    assert list(packs.list()) == [] and list(packs.list_unfinished()) == []
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []
