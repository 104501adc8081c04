"""What this host remembers of runs: private files in the state folder, bounded, shared by
runs that end at once, found again under the id last seen at a location."""

import json
import multiprocessing
import stat
from datetime import datetime, timedelta, timezone

from diskvault.ops import runs as runs_module
from diskvault.ops.runs import (KEPT_RUNS, Run, load_runs, location_key, note_repository_id,
                                record_run, repository_keys, runs_folder)

NOW = datetime(2026, 12, 7, 9, 0, tzinfo=timezone.utc)
REPOSITORY_ID = "0123456789abcdef0123456789abcdef"


def a_run(minute: int, series="vm1", exit_code=0) -> Run:
    finished = NOW + timedelta(minutes=minute)
    return Run("backup", series, finished - timedelta(seconds=30), finished, exit_code,
               "" if exit_code == 0 else "failed", {"bytes_read": minute})


def test_runs_come_back_oldest_first_in_private_files():
    record_run(REPOSITORY_ID, a_run(2, exit_code=74))
    record_run(REPOSITORY_ID, a_run(1))
    record_run(REPOSITORY_ID, Run("check", None, NOW, NOW, 0))
    loaded = load_runs(REPOSITORY_ID)
    assert [(r.command, r.series, r.exit_code) for r in loaded] == [
        ("check", None, 0), ("backup", "vm1", 0), ("backup", "vm1", 74)]
    assert loaded[1] == a_run(1)
    for path in [runs_folder(), *runs_folder().rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), path


def test_a_series_keeps_only_its_newest_runs():
    for minute in range(KEPT_RUNS + 5):
        record_run(REPOSITORY_ID, a_run(minute))
    kept = load_runs(REPOSITORY_ID)
    assert len(kept) == KEPT_RUNS and kept[0].figures["bytes_read"] == 5


def test_series_names_that_are_not_file_names_stay_apart():
    for series in ("a/b", "../x", "a b", "repository"):
        record_run(REPOSITORY_ID, a_run(1, series=series))
    assert sorted(r.series for r in load_runs(REPOSITORY_ID)) == ["../x", "a b", "a/b",
                                                                   "repository"]
    assert all(p.parent.name == REPOSITORY_ID for p in runs_folder().rglob("*.json"))


def test_a_damaged_file_counts_as_empty_and_is_rewritten():
    record_run(REPOSITORY_ID, a_run(1))
    path = next((runs_folder() / REPOSITORY_ID).glob("*.json"))
    path.write_text("{not json")
    assert load_runs(REPOSITORY_ID) == []
    record_run(REPOSITORY_ID, a_run(2))
    assert [r.figures["bytes_read"] for r in load_runs(REPOSITORY_ID)] == [2]
    json.loads(path.read_text())


def _record_many(first: int) -> None:
    for minute in range(first, first + 20):
        record_run(REPOSITORY_ID, a_run(minute))


def test_runs_ending_at_once_in_two_processes_are_all_kept():
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_record_many, args=(first,)) for first in (0, 20)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    assert sorted(r.figures["bytes_read"] for r in load_runs(REPOSITORY_ID)) == list(range(40))


def test_a_location_is_filed_under_the_id_last_seen_there():
    location = "/backups/vm1"
    assert repository_keys(location, None) == (location_key(location),)
    note_repository_id(location, REPOSITORY_ID)
    assert repository_keys(location, None) == (REPOSITORY_ID, location_key(location))
    assert repository_keys("/backups/other", None) == (location_key("/backups/other"),)
    assert runs_module.ID_FILE in {p.name for p in runs_folder().rglob("*")}
