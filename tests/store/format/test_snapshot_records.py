"""Every record of a listing held as a header, and read again, checked whole, on each pass."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from diskvault.errors import CorruptData
from diskvault.store.backends.local import LocalBackend
from diskvault.store.format.block_list import BlockRef
from diskvault.store.format.snapshot_store import SnapshotStore
from diskvault.store.format.snapshots import BackupStats, SnapshotRecord, record_name

T0 = datetime(2026, 11, 1, 3, 15, tzinfo=timezone.utc)


@pytest.fixture
def store(tmp_path) -> SnapshotStore:
    (tmp_path / "snapshots").mkdir()
    store = SnapshotStore(LocalBackend(tmp_path))
    for night in (2, 0, 1):  # saved out of order: listed oldest first
        store.save(SnapshotRecord(
            f"{night:016x}", "vm", T0 + timedelta(days=night), "/vm.img", 3 << 20, "h", [],
            BackupStats(), blocks=[BlockRef(bytes([night, n]) * 16, n << 20) for n in range(3)]))
    return store


def test_a_listing_holds_headers_and_each_pass_gives_the_whole_records(store):
    records, damaged = store.scan()
    assert not damaged and len(records) == 3
    assert [r.id for r in records.headers] == [f"{n:016x}" for n in range(3)]
    assert all(header.blocks is None for header in records.headers)
    for _ in range(2):  # a pass reads them again, as often as asked
        assert [r.blocks[1].digest for r in records] == [bytes([n, 1]) * 16 for n in range(3)]


def test_a_record_deleted_since_the_listing_is_left_out_and_one_damaged_since_stops_the_pass(
        store, tmp_path):
    records = store.all()
    store.delete(f"{0:016x}")
    assert [r.id for r in records] == [f"{1:016x}", f"{2:016x}"]
    path = tmp_path / record_name(f"{1:016x}")
    path.write_bytes(path.read_bytes().replace(b'"size":3145728', b'"size":3145729'))
    with pytest.raises(CorruptData, match="checksum mismatch"):
        list(records)
