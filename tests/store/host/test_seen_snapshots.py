"""This host's memory of each series' newest snapshot: the pure rules, and the file."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from diskvault.errors import SnapshotGone
from diskvault.store.host.seen_snapshots import (Memory, SnapshotMemory, gone_snapshots,
                                                 with_newest)

TODAY = date(2026, 12, 6)
BASE = datetime(2026, 12, 1, tzinfo=timezone.utc)


@dataclass(frozen=True)
class Record:  # what the memory reads of a SnapshotRecord
    id: str
    name: str
    time: datetime


records = st.lists(st.builds(Record, id=st.sampled_from([f"{n:016x}" for n in range(12)]),
                             name=st.sampled_from(["vm1", "vm2"]),
                             time=st.integers(0, 50).map(lambda h: BASE + timedelta(hours=h))),
                   unique_by=lambda r: r.id, max_size=12)


@given(records)
def test_the_newest_of_each_series_is_remembered_and_is_never_gone_while_listed(listed):
    memory = with_newest(Memory(), listed, TODAY)
    for series in {r.name for r in listed}:
        newest = max((r for r in listed if r.name == series), key=lambda r: (r.time, r.id))
        assert memory.newest[series].id == newest.id
    assert gone_snapshots(memory, {r.id for r in listed}) == []


@given(records, records)
def test_an_older_listing_never_replaces_what_was_remembered(first, second):
    remembered = with_newest(Memory(), first, TODAY)
    after = with_newest(remembered, second, TODAY)
    for series, seen in remembered.newest.items():
        assert (after.newest[series].time, after.newest[series].id) >= (seen.time, seen.id)


@given(records)
def test_a_listing_without_a_series_newest_reports_it_unless_it_was_removed_here(listed):
    memory = with_newest(Memory(), listed, TODAY)
    present = {r.id for r in listed}
    for seen in memory.newest.values():
        assert seen in gone_snapshots(memory, present - {seen.id})
        removed_here = Memory(memory.newest, [seen.id])
        assert seen not in gone_snapshots(removed_here, present - {seen.id})


def test_memory_is_a_private_file_per_place_and_removals_here_are_not_reported(tmp_path):
    one = Record("a" * 16, "vm1", BASE)
    two = Record("b" * 16, "vm1", BASE + timedelta(days=1))
    here = SnapshotMemory("0" * 32, "/backups/vm1", "/backups/vm1")
    here.check_and_remember({one.id, two.id}, [one, two])
    assert here.path.stat().st_mode & 0o777 == 0o600
    assert here.path.parent.stat().st_mode & 0o777 == 0o700
    elsewhere = SnapshotMemory("0" * 32, "/mnt/copy-of-vm1", "/mnt/copy-of-vm1")
    elsewhere.check_and_remember({one.id}, [one])  # another place: its own memory
    with pytest.raises(SnapshotGone, match=f"snapshot {two.id[:8]} of vm1, seen here on .* is "
                                           f"gone from /backups/vm1: the repository was rolled "
                                           f"back or a record is withheld"):
        here.check_and_remember({one.id}, [one])
    here.removing(two.id)
    here.check_and_remember({one.id}, [one])
    here.check_and_remember({one.id, two.id}, [one, two])  # a listing older than the removal
    here.check_and_remember({one.id}, [one])


def test_an_unwritable_state_folder_turns_the_check_off_instead_of_failing(tmp_path,
                                                                         monkeypatch):
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the state folder should be")
    monkeypatch.setenv("XDG_STATE_HOME", str(blocked))
    memory = SnapshotMemory("0" * 32, "/backups/vm1", "/backups/vm1")
    memory.check_and_remember({"a" * 16}, [Record("a" * 16, "vm1", BASE)])
    memory.check_and_remember(set(), [])


def test_a_snapshot_recorded_beside_a_listing_after_it_was_made_is_not_reported_gone(tmp_path):
    listed = Record("a" * 16, "vm1", BASE)
    beside = Record("b" * 16, "vm2", BASE)  # a backup beside us saved and remembered it
    memory = SnapshotMemory("0" * 32, "/backups/fleet", "/backups/fleet")
    memory.remember([beside])
    memory.check_and_remember({listed.id}, [listed], exists=lambda i: i == beside.id)
    with pytest.raises(SnapshotGone):
        memory.check_and_remember({listed.id}, [listed], exists=lambda i: False)


def test_the_highest_generation_is_remembered_and_a_lower_one_reported(tmp_path):
    here = SnapshotMemory("1" * 32, "/backups/vm1", "/backups/vm1")
    here.check_and_remember(set(), [], generation=4)
    here.remember([], 5)  # added here
    here.check_and_remember(set(), [], generation=3 + 3)  # another host's change: higher
    with pytest.raises(SnapshotGone, match=r"^the generation counter of /backups/vm1 is 5, "
                                           r"below the 6 seen here on \d{4}-\d\d-\d\d: the "
                                           r"repository was rolled back"):
        here.check_and_remember(set(), [], generation=5)
    assert here.accept_missing(set(), 5) == []
    here.check_and_remember(set(), [], generation=5)


def test_a_memory_written_before_the_counter_reads_as_none_seen(tmp_path):
    here = SnapshotMemory("2" * 32, "/backups/vm1", "/backups/vm1")
    here.path.parent.mkdir(mode=0o700, parents=True)
    here.path.write_text('{"version": 1, "newest": {}, "removed": []}')
    here.check_and_remember(set(), [], generation=0)  # a repository without generations/
    here.check_and_remember(set(), [], generation=1)


def test_a_generation_added_beside_a_listing_is_not_taken_for_a_rollback(tmp_path):
    """A backup beside this command added 2 (and remembered it on this host) after this
    command listed 1: a second look finds 2, so nothing is reported."""
    here = SnapshotMemory("3" * 32, "/backups/vm1", "/backups/vm1")
    here.remember([], 2)
    here.check_and_remember(set(), [], generation=1, generation_now=lambda: 2)
    with pytest.raises(SnapshotGone, match="generation counter of /backups/vm1 is 1, below"):
        here.check_and_remember(set(), [], generation=1, generation_now=lambda: 1)
