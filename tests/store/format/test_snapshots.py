"""Snapshot selection by id, unique prefix, latest, series name; diff from manifests."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from diskvault.errors import AmbiguousSnapshot, SnapshotNotFound
from diskvault.store.backends.local import LocalBackend
from diskvault.store.format.snapshot_selection import select_snapshot
from diskvault.store.format.snapshot_store import SnapshotStore
from diskvault.store.format.snapshots import SNAPSHOTS_PREFIX, BackupStats, SnapshotRecord
from diskvault.store.host.seen_snapshots import SnapshotMemory

T0 = datetime(2026, 11, 1, 3, 15, tzinfo=timezone.utc)


def record(id_: str, name: str, hours: int) -> SnapshotRecord:
    return SnapshotRecord(id=id_, name=name, time=T0 + timedelta(hours=hours), source="/x",
                          size=0, host="h", tags=[], stats=BackupStats())


RECORDS = [record("aaaa1111", "vm1", 0), record("aaab2222", "vm1", 24),
           record("bbbb3333", "vm2", 30), record("cccc4444", "vm1", 48)]


@pytest.mark.parametrize("selector, expected", [
    ("aaaa1111", "aaaa1111"), ("latest", "cccc4444"), ("vm1", "cccc4444"),
    ("vm2", "bbbb3333"), ("aaab", "aaab2222"), ("cccc", "cccc4444")])
def test_selector_resolves(selector, expected):
    assert select_snapshot(RECORDS, selector).id == expected


def test_ambiguous_prefix_names_the_candidates():
    records = [*RECORDS, record("aaaa9999", "vm3", 70)]
    with pytest.raises(AmbiguousSnapshot, match="aaaa1111.*aaaa9999"):
        select_snapshot(records, "aaaa")


@pytest.mark.parametrize("selector", ["c", "cc", "ccc", ""])
def test_id_prefix_shorter_than_four_characters_is_refused(selector):
    with pytest.raises(AmbiguousSnapshot, match="at least 4 characters"):
        select_snapshot(RECORDS, selector)


def test_series_name_that_is_also_an_id_prefix_is_refused_naming_both():
    records = [*RECORDS, record("d1893812", "web", 50), record("eeee5555", "d189", 60)]
    with pytest.raises(AmbiguousSnapshot, match="series.*eeee5555.*id prefix of d1893812"):
        select_snapshot(records, "d189")


def test_short_series_name_is_not_taken_for_an_id_prefix():
    records = [*RECORDS, record("eeee5555", "cc", 60)]
    assert select_snapshot(records, "cc").id == "eeee5555"


def test_unknown_selector_and_empty_repository_are_clear_errors():
    with pytest.raises(SnapshotNotFound, match="no snapshot 'zzz'"):
        select_snapshot(RECORDS, "zzz")
    with pytest.raises(SnapshotNotFound, match="no snapshots"):
        select_snapshot([], "latest")


def test_record_json_round_trip_keeps_every_field(repo, make_image):
    original = repo.backup(make_image(50_000), name="vm", tags=("nightly", "x"))
    loaded = repo.storage.snapshots.load(original.id)
    assert loaded == original
    assert original.time_label.endswith("Z") and "T" in original.time_label


def test_diff_lists_exactly_the_changed_ranges(repo, make_image):
    image = make_image(2_000_000, "random", seed=1)
    first = repo.backup(image)
    with open(image, "r+b") as handle:
        handle.seek(1_000_000)
        handle.write(b"x" * 100)
    second = repo.backup(image)
    ranges = repo.diff(first, second)
    assert len(ranges) == 1
    start, end = ranges[0]
    assert start <= 1_000_000 and end >= 1_000_100
    assert end - start <= 3 * repo.config.chunker.max_bytes
    assert repo.diff(first, first) == []


def test_diff_of_images_of_different_sizes_marks_the_tail(repo, make_image):
    image = make_image(1_000_000, "random", seed=2)
    first = repo.backup(image)
    with open(image, "ab") as handle:
        handle.write(b"y" * 50_000)
    second = repo.backup(image)
    ranges = repo.diff(first, second)
    assert ranges[-1][1] == 1_050_000
    assert sum(e - s for s, e in ranges) < 100_000


class AnotherWriterRecordsAfterEachListing(LocalBackend):
    """A real folder on which, just after this process lists ``snapshots/``, a backup beside
    it records a snapshot and this host remembers it: the interleaving of side-by-side
    backups on one host, made certain."""

    def __init__(self, root: Path, memory: SnapshotMemory):
        super().__init__(root)
        self.beside = SnapshotStore(LocalBackend(root), memory=memory)

    def list(self, prefix: str) -> list[str]:
        names = super().list(prefix)
        if prefix == SNAPSHOTS_PREFIX:
            self.beside.save(SnapshotRecord(SnapshotRecord.new_id(), "vm1",
                                            datetime.now(timezone.utc), "vm1.img", 0, "h",
                                            [], BackupStats()))
        return names


@pytest.mark.parametrize("listing", ["scan", "summaries"])
def test_a_snapshot_recorded_beside_a_listing_is_not_taken_for_a_rolled_back_one(
        tmp_path, listing):
    memory = SnapshotMemory("4" * 32, str(tmp_path), str(tmp_path))
    (tmp_path / "snapshots").mkdir()
    store = SnapshotStore(AnotherWriterRecordsAfterEachListing(tmp_path, memory),
                          memory=memory)
    for _ in range(2):
        getattr(store, listing)()  # the second listing misses the newest; it exists
