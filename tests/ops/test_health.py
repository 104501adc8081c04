"""Which series are overdue or failing, from plain values (no repository)."""

from datetime import datetime, timedelta, timezone

from diskvault.ops.health import (LatestSnapshot, describe_age, last_check, overdue_series,
                                  series_health)
from diskvault.ops.runs import Run

NOW = datetime(2026, 12, 7, 9, 0, tzinfo=timezone.utc)


def run(command, series, hours_ago, exit_code=0, error=""):
    finished = NOW - timedelta(hours=hours_ago)
    return Run(command, series, finished - timedelta(minutes=5), finished, exit_code, error)


def test_series_older_than_max_age_or_without_snapshot_is_overdue():
    latest = {"vm1": LatestSnapshot("a" * 16, NOW - timedelta(hours=30)),
              "vm2": LatestSnapshot("b" * 16, NOW - timedelta(days=3))}
    runs = [run("backup", "db", 2, 74, "the object store kept failing")]
    health = series_health(latest, runs, NOW, max_age=timedelta(hours=36))
    assert [h.series for h in health] == ["db", "vm1", "vm2"]
    assert overdue_series(health) == ["db", "vm2"]
    assert health[0].latest is None and health[0].age is None


def test_without_max_age_nothing_is_overdue():
    latest = {"vm1": LatestSnapshot("a" * 16, NOW - timedelta(days=300))}
    assert overdue_series(series_health(latest, [], NOW)) == []


def test_a_failed_newest_run_is_failing_until_a_later_snapshot_exists():
    failed = run("backup", "vm1", 10, 2, "source vm1.img does not exist")
    older = {"vm1": LatestSnapshot("a" * 16, NOW - timedelta(hours=34))}
    newer = {"vm1": LatestSnapshot("a" * 16, NOW - timedelta(hours=1))}  # another host's
    assert series_health(older, [failed], NOW)[0].failing
    cleared = series_health(newer, [failed], NOW)[0]
    assert not cleared.failing and cleared.last_failure == failed
    recovered = series_health(older, [failed, run("backup", "vm1", 5)], NOW)[0]
    assert not recovered.failing and recovered.last_failure == failed


def test_last_check_is_the_newest_check_of_the_repository():
    runs = [run("check", None, 200), run("check", None, 30, 1, "check found damage"),
            run("prune", None, 1)]
    assert last_check(runs).error == "check found damage"
    assert last_check([run("backup", "vm1", 1)]) is None


def test_ages_read_short():
    assert describe_age(timedelta(days=3, hours=4, minutes=5)) == "3d 4h"
    assert describe_age(timedelta(hours=5, minutes=12)) == "5h 12m"
    assert describe_age(timedelta(seconds=40)) == "40s"
