"""delete and prune on real repositories: what is removed, why the rest is kept, and the
guards (no rules, an emptied series, a mistyped selector). The retention rules themselves
are tested on plain values in test_retention.py."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import pytest

from diskvault.errors import BadInput, RepositoryLocked, SnapshotNotFound
from diskvault.maintenance.compact import compact
from diskvault.maintenance.prune import PROTECTED_REASON, delete_snapshots, prune
from diskvault.maintenance.retention import KeepPolicy

from ..conftest import in_both_modes
from .support import assert_all_restore, back_up, pack_bytes

encryption = in_both_modes()

UTC = timezone.utc
NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)  # a Tuesday


@pytest.fixture
def dated(repo, tmp_path):
    """make(series, *iso_times) -> records backed up and re-dated to those UTC times."""
    contents: dict[str, bytes] = {}
    rng = random.Random(7)

    def make(series: str, *times: str):
        records = []
        for text in times:
            data = rng.randbytes(20_000)
            record = back_up(repo, tmp_path, series, data)
            record.time = datetime.fromisoformat(text).replace(tzinfo=UTC)
            repo.storage.snapshots.save(record)
            contents[record.id] = data
            records.append(record)
        return records

    make.contents = contents
    return make


def times_of(records) -> list[str]:
    return [f"{r.time:%Y-%m-%d %H:%M}" for r in records]


def test_prune_keeps_per_series_what_the_rules_keep_and_says_why_oldest_first(repo, dated):
    dated("vm1", "2026-03-10T03:00", "2026-03-09T03:00", "2026-03-08T03:00",
          "2026-03-01T03:00", "2026-02-20T03:00")
    dated("vm2", "2026-03-10T04:00", "2026-03-02T04:00")
    plan = prune(repo.storage, KeepPolicy(daily=2, monthly=2), now=NOW)
    assert [(d.record.name, f"{d.record.time:%m-%d}", d.reason) for d in plan.decisions] == [
        ("vm1", "02-20", "monthly #2"),
        ("vm1", "03-01", None),
        ("vm1", "03-08", None),
        ("vm1", "03-09", "daily #2"),
        ("vm1", "03-10", "daily #1, monthly #1"),
        ("vm2", "03-02", "daily #2"),
        ("vm2", "03-10", "daily #1, monthly #1"),
    ]
    assert sorted(times_of(repo.list_snapshots())) == sorted(times_of(plan.kept))
    kept = {r.id: dated.contents[r.id] for r in plan.kept}
    assert_all_restore(repo, kept)


def test_dry_run_changes_nothing(repo, dated):
    made = dated("vm1", "2026-03-10T03:00", "2026-03-09T03:00", "2026-03-08T03:00")
    plan = prune(repo.storage, KeepPolicy(last=1), dry_run=True, now=NOW)
    assert plan.dry_run and len(plan.removed) == 2
    assert {r.id for r in repo.list_snapshots()} == {r.id for r in made}


def test_prune_without_any_rule_is_refused_unless_explicitly_allowed(repo, dated):
    dated("vm1", "2026-03-10T03:00", "2026-03-09T03:00")
    with pytest.raises(BadInput, match="--allow-delete-all"):
        prune(repo.storage, KeepPolicy(), now=NOW)
    assert len(repo.list_snapshots()) == 2
    plan = prune(repo.storage, KeepPolicy(), allow_delete_all=True, now=NOW)
    assert len(plan.removed) == 2 and repo.list_snapshots() == []


def test_a_series_the_rules_would_empty_keeps_its_newest_snapshot(repo, dated):
    dated("stale", "2026-02-01T03:00", "2026-02-02T03:00")  # the job stopped a month ago
    dated("fresh", "2026-03-09T03:00", "2026-03-10T03:00")
    plan = prune(repo.storage, KeepPolicy(within=timedelta(days=7)), now=NOW)
    assert plan.protected_series == ["stale"]
    stale = [d for d in plan.decisions if d.record.name == "stale"]
    assert [(f"{d.record.time:%m-%d}", d.reason) for d in stale] == [
        ("02-01", None), ("02-02", PROTECTED_REASON)]
    assert len(repo.list_snapshots()) == 3


def test_allow_delete_all_lets_the_rules_empty_a_series(repo, dated):
    dated("stale", "2026-02-01T03:00", "2026-02-02T03:00")
    plan = prune(repo.storage, KeepPolicy(within=timedelta(days=7)), allow_delete_all=True, now=NOW)
    assert plan.protected_series == [] and repo.list_snapshots() == []


def test_prune_with_name_touches_only_that_series(repo, dated):
    dated("vm1", "2026-03-10T03:00", "2026-03-09T03:00")
    other = dated("vm2", "2026-03-10T04:00", "2026-03-09T04:00")
    plan = prune(repo.storage, KeepPolicy(last=1), name="vm1", now=NOW)
    assert {d.record.name for d in plan.decisions} == {"vm1"} and len(plan.removed) == 1
    assert {r.id for r in other} <= {r.id for r in repo.list_snapshots()}
    with pytest.raises(BadInput, match="no snapshots in series"):
        prune(repo.storage, KeepPolicy(last=1), name="vm3", now=NOW)


def test_prune_and_delete_take_the_writer_lock(repo, dated):
    dated("vm1", "2026-03-10T03:00", "2026-03-09T03:00")
    with repo.writer_lock("backup elsewhere"):
        with pytest.raises(RepositoryLocked, match="backup elsewhere"):
            prune(repo.storage, KeepPolicy(last=1), now=NOW)
        with pytest.raises(RepositoryLocked):
            delete_snapshots(repo.storage, ["latest"])
    assert len(repo.list_snapshots()) == 2


def test_delete_accepts_every_selector_and_a_typo_deletes_nothing(repo, dated):
    a1, a2 = dated("vm1", "2026-03-08T03:00", "2026-03-09T03:00")
    b1, b2 = dated("vm2", "2026-03-08T04:00", "2026-03-10T04:00")
    with pytest.raises(SnapshotNotFound):
        delete_snapshots(repo.storage, [a1.id, "no-such-snapshot"])
    assert len(repo.list_snapshots()) == 4
    deleted = delete_snapshots(repo.storage, [a1.id[:6], a2.id, "latest", "latest"])
    assert [r.id for r in deleted] == [a1.id, a2.id, b2.id]
    assert [r.id for r in repo.list_snapshots()] == [b1.id]


def test_a_series_name_deletes_nothing_without_all_of_series(repo, dated):
    dated("vm1", "2026-03-08T03:00", "2026-03-09T03:00")
    with pytest.raises(BadInput, match="'vm1' is a series name .2 snapshots.*--all-of-series"):
        delete_snapshots(repo.storage, ["vm1"])
    assert len(repo.list_snapshots()) == 2


def test_all_of_series_deletes_every_snapshot_of_the_series_and_no_other(repo, dated):
    a1, a2 = dated("vm1", "2026-03-08T03:00", "2026-03-09T03:00")
    b1, = dated("vm2", "2026-03-08T04:00")
    deleted = delete_snapshots(repo.storage, ["vm1", a2.id[:8]], all_of_series=True)
    assert [r.id for r in deleted] == [a1.id, a2.id]
    assert [r.id for r in repo.list_snapshots()] == [b1.id]


def test_delete_dry_run_names_the_snapshots_and_removes_none(repo, dated):
    a1, a2 = dated("vm1", "2026-03-08T03:00", "2026-03-09T03:00")
    with repo.writer_lock("backup elsewhere"):  # a dry run needs no lock
        planned = delete_snapshots(repo.storage, ["vm1"], all_of_series=True, dry_run=True)
    assert [r.id for r in planned] == [a1.id, a2.id]
    assert len(repo.list_snapshots()) == 2


def test_prune_then_compact_gives_the_space_back(repo, dated):
    dated("vm1", *(f"2026-03-0{day}T03:00" for day in range(1, 9)))
    before = pack_bytes(repo.root)
    plan = prune(repo.storage, KeepPolicy(last=2), now=NOW)
    assert pack_bytes(repo.root) == before  # prune only forgets records
    result = compact(repo.storage, threshold=0.0)
    assert result.bytes_freed > 0
    assert pack_bytes(repo.root) < before * 3 / 8
    assert_all_restore(repo, {r.id: dated.contents[r.id] for r in plan.kept})
