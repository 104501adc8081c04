"""delete, prune, compact and check through the real command line: output a person reads,
JSON a script reads, and exit codes (0 fine, 1 damage, 2 bad input, 73 locked)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from diskvault.store.backends.local import LocalBackend
from diskvault.store.coordination.locking import WriterLock
from diskvault.store.repository import Repository
from tests.conftest import run_cli, write_image

EXIT_DAMAGE, EXIT_BAD_INPUT, EXIT_LOCKED = 1, 2, 73


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """A repository with four snapshots of an evolving image (series vm1) and one of
    another (series vm2), built once in-process; returns (path, ids oldest first)."""
    folder = tmp_path_factory.mktemp("template")
    with Repository.init(folder / "repo", chunk_size=4096) as repository:
        image = write_image(folder / "vm1.img", 600_000, "mixed", seed=3)
        ids = []
        for night in range(4):
            with open(image, "r+b") as handle:
                handle.seek(100_000 * night)
                handle.write(b"night %d " % night * 5000)
            ids.append(repository.backup(image, name="vm1").id)
        other = write_image(folder / "vm2.img", 200_000, "random", seed=4)
        ids.append(repository.backup(other, name="vm2").id)
    return folder / "repo", ids


@pytest.fixture
def nightly(template, tmp_path):
    """A fresh copy of the template repository: (repo path as str, ids oldest first)."""
    source, ids = template
    shutil.copytree(source, tmp_path / "repo")
    return str(tmp_path / "repo"), ids


def lines(result) -> list[str]:
    return result.stdout.decode().splitlines()


def error_line(result) -> str:
    [line] = result.stderr.decode().strip().splitlines()
    return line


def test_delete_names_what_it_deleted_and_points_to_compact(nightly):
    repo, ids = nightly
    result = run_cli("delete", "-r", repo, ids[0][:7], ids[4], check=True)
    out = lines(result)
    assert out[0].startswith(f"deleted snapshot {ids[0][:8]} (vm1, ")
    assert out[1].startswith(f"deleted snapshot {ids[4][:8]} (vm2, ")
    assert "diskvault compact" in result.stderr.decode()
    left = json.loads(run_cli("list", "-r", repo, "--json", check=True).stdout)
    assert [s["id"] for s in left] == ids[1:4]


def test_delete_of_a_series_name_needs_all_of_series_and_dry_run_changes_nothing(nightly):
    repo, ids = nightly
    refused = run_cli("delete", "-r", repo, "vm1")
    assert refused.returncode == EXIT_BAD_INPUT
    assert "'vm1' is a series name (4 snapshots)" in error_line(refused)
    planned = run_cli("delete", "-r", repo, "vm1", "--all-of-series", "--dry-run", check=True)
    assert [line.split()[3] for line in lines(planned)[:-1]] == [i[:8] for i in ids[:4]]
    assert lines(planned)[-1] == "4 snapshots to delete (dry run: nothing was changed)"
    assert len(json.loads(run_cli("list", "-r", repo, "--json").stdout)) == 5
    done = json.loads(run_cli("delete", "-r", repo, "vm1", "--all-of-series", "--json",
                              check=True).stdout)
    assert not done["dry_run"] and [s["id"] for s in done["deleted"]] == ids[:4]
    left = json.loads(run_cli("list", "-r", repo, "--json", check=True).stdout)
    assert [s["id"] for s in left] == ids[4:]


def test_delete_of_an_unknown_snapshot_exits_2_and_deletes_nothing(nightly):
    repo, ids = nightly
    result = run_cli("delete", "-r", repo, ids[0], "nonexistent")
    assert result.returncode == EXIT_BAD_INPUT
    assert error_line(result).startswith("diskvault: error: no snapshot 'nonexistent'")
    assert len(json.loads(run_cli("list", "-r", repo, "--json").stdout)) == 5


def test_prune_dry_run_shows_every_snapshot_with_its_fate_and_reason(nightly):
    repo, ids = nightly
    out = lines(run_cli("prune", "-r", repo, "--keep-last", "2", "--dry-run", check=True))
    assert out[0].split() == ["ID", "NAME", "TIME", "(UTC)", "ACTION", "KEPT", "BECAUSE"]
    rows = {line.split()[0]: line for line in out[1:6]}
    assert set(rows) == {i[:8] for i in ids}
    assert "keep" in rows[ids[3][:8]] and "last #1" in rows[ids[3][:8]]
    assert "would remove" in rows[ids[0][:8]]
    assert out[-1] == "3 kept, 2 to remove (dry run: nothing was changed)"
    assert len(json.loads(run_cli("list", "-r", repo, "--json").stdout)) == 5


def test_prune_then_compact_frees_space(nightly):
    repo, ids = nightly
    pruned = run_cli("prune", "-r", repo, "--keep-last", "1", check=True)
    assert lines(pruned)[-1] == "2 kept, 3 removed"
    result = json.loads(run_cli("compact", "-r", repo, "--json", check=True).stdout)
    assert result["bytes_freed"] > result["bytes_written"] and result["packs_waiting"] == 0
    text = lines(run_cli("compact", "-r", repo, "--threshold", "0", check=True))
    assert text[1].startswith("freed ")
    target = Path(repo).parent / "restored.img"
    run_cli("restore", "-r", repo, "vm1", str(target), check=True)
    assert target.stat().st_size == 600_000


def test_compact_dry_run_prints_the_plan_and_changes_nothing(nightly):
    repo, ids = nightly
    run_cli("delete", "-r", repo, ids[0], ids[1], check=True)
    planned = json.loads(run_cli("compact", "-r", repo, "--dry-run", "--json",
                                 "--threshold", "0", check=True).stdout)
    assert planned["dry_run"] and planned["bytes_to_free"] > 0
    assert planned["bytes_to_free"] == planned["bytes_to_delete"] - planned["bytes_to_copy"]
    text = lines(run_cli("compact", "-r", repo, "--dry-run", "--threshold", "0", check=True))
    assert text[-1].startswith("would free ") and "nothing was changed" in text[-1]
    assert {row.split()[0] for row in text[1:-2]} == {
        fate["pack_id"] for fate in planned["delete"] + planned["rewrite"]}
    done = json.loads(run_cli("compact", "-r", repo, "--json", "--threshold", "0",
                              check=True).stdout)
    assert done["bytes_freed"] == planned["bytes_to_delete"]
    assert done["chunks_copied"] == planned["records_to_copy"]


def test_compact_dry_run_works_on_a_repository_compacted_before(nightly):
    """The tables a compaction leaves are opened by a later process's dry run (once they
    were opened inside a read transaction, and unusable after it)."""
    repo, ids = nightly
    run_cli("delete", "-r", repo, ids[0], check=True)
    run_cli("compact", "-r", repo, "--threshold", "0", check=True)
    run_cli("delete", "-r", repo, ids[1], check=True)
    planned = json.loads(run_cli("compact", "-r", repo, "--dry-run", "--json",
                                 "--threshold", "0", check=True).stdout)
    done = json.loads(run_cli("compact", "-r", repo, "--json", "--threshold", "0",
                              check=True).stdout)
    assert done["bytes_freed"] == planned["bytes_to_delete"]


def test_prune_refuses_bad_input_with_one_line_and_exit_2(nightly):
    repo, _ = nightly
    no_rule = run_cli("prune", "-r", repo)
    assert no_rule.returncode == EXIT_BAD_INPUT
    assert "at least one --keep-* rule" in error_line(no_rule)
    duration = run_cli("prune", "-r", repo, "--keep-within", "2 weeks")
    assert duration.returncode == EXIT_BAD_INPUT
    assert "cannot read duration" in error_line(duration)
    negative = run_cli("prune", "-r", repo, "--keep-daily", "-1")
    assert negative.returncode == EXIT_BAD_INPUT
    threshold = run_cli("compact", "-r", repo, "--threshold", "100")
    assert threshold.returncode == EXIT_BAD_INPUT


def test_prune_warns_when_it_keeps_a_series_the_rules_would_empty(nightly):
    repo, ids = nightly
    with Repository.open(Path(repo)) as repository:  # vm2's job stopped long ago
        record = repository.find_snapshot("vm2")
        record.time = record.time.replace(year=2020)
        repository.storage.snapshots.save(record)
    result = run_cli("prune", "-r", repo, "--keep-within", "1h", "--name", "vm2",
                     "--dry-run", check=True)
    assert "protected" in lines(result)[1]
    assert "its newest one is kept anyway" in result.stderr.decode()


def test_writers_exit_73_while_another_writer_holds_the_lock(nightly):
    repo, ids = nightly
    with WriterLock(LocalBackend(Path(repo)), "backup of another image"):
        for args in (["compact"], ["delete", ids[0]], ["prune", "--keep-last", "1"],
                     ["compact", "--lock-wait", "0.3"], ["check", "--repair"]):
            result = run_cli(*args, "-r", repo)
            assert result.returncode == EXIT_LOCKED, args
            assert "locked by backup of another image" in error_line(result)
        assert run_cli("check", "-r", repo).returncode == 0  # a reader runs beside a writer
    assert run_cli("compact", "-r", repo, "--lock-wait", "5").returncode == 0


def test_check_exits_0_when_sound_and_1_with_the_damage_named(nightly):
    repo, ids = nightly
    sound = run_cli("check", "-r", repo, "--read-data", check=True)
    assert lines(sound)[-1] == "no damage found"
    packs = sorted(Path(repo, "packs").glob("*/*.pack"))
    packs[0].unlink()
    damaged = run_cli("check", "-r", repo)
    assert damaged.returncode == EXIT_DAMAGE
    text = damaged.stdout.decode()
    assert f"damaged: pack {packs[0].stem}: is missing" in text
    assert "snapshots that cannot be restored in full:" in text
    assert error_line(damaged).startswith("diskvault: error: check found damage")
    report = json.loads(run_cli("check", "-r", repo, "--json").stdout)
    assert report["damaged"] and report["damaged_snapshots"]
    assert {s["id"] for s in report["damaged_snapshots"]} <= set(ids)


def test_a_deleted_index_is_rebuilt_by_the_next_command_and_by_check_repair(nightly):
    repo, ids = nightly
    shutil.rmtree(Path(repo, "index"))
    before = run_cli("check", "-r", repo, check=True)  # rebuilt from the packs at open
    assert lines(before)[-1] == "no damage found"
    shutil.rmtree(Path(repo, "index"))
    repaired = run_cli("check", "-r", repo, "--repair", check=True)
    assert "repair: rebuilt the index from" in repaired.stdout.decode()
    assert lines(repaired)[-1] == "no damage found"
    run_cli("cat", "-r", repo, ids[0], check=True)


def test_check_repair_reports_what_stays_lost_and_exits_1(nightly):
    repo, ids = nightly
    packs = sorted(Path(repo, "packs").glob("*/*.pack"))
    packs[-1].unlink()
    repaired = run_cli("check", "-r", repo, "--repair")
    assert repaired.returncode == EXIT_DAMAGE
    text = repaired.stdout.decode()
    assert f"repair: pack {packs[-1].stem} is missing" in text
    assert "snapshots that cannot be restored in full:" in text


def test_protected_snapshot_is_refused_by_delete_and_kept_by_prune_until_unprotected(nightly):
    repo, ids = nightly
    marked = run_cli("protect", "-r", repo, ids[0][:8], check=True)
    assert lines(marked)[0].endswith(": protected")
    assert (Path(repo) / "protected" / ids[0]).stat().st_mode & 0o777 == 0o600
    again = run_cli("protect", "-r", repo, ids[0], check=True)
    assert lines(again)[0].endswith(": already protected")
    for dry_run in ((), ("--dry-run",)):
        refused = run_cli("delete", "-r", repo, ids[1], ids[0], *dry_run)
        assert refused.returncode == EXIT_DAMAGE
        assert error_line(refused) == (
            f"diskvault: error: snapshot {ids[0][:8]} (vm1) is protected: nothing was "
            f"deleted; run 'diskvault unprotect {ids[0][:8]}' first if it is to go")
    assert len(json.loads(run_cli("list", "-r", repo, "--json").stdout)) == 5
    pruned = run_cli("prune", "-r", repo, "--keep-last", "1", check=True)
    rows = {line.split()[0]: line for line in lines(pruned)[1:6]}
    assert rows[ids[0][:8]].split()[-2:] == ["keep", "protected"]
    assert "removed" in rows[ids[1][:8]]
    assert lines(run_cli("unprotect", "-r", repo, ids[0], check=True))[0].endswith(
        ": unprotected")
    run_cli("delete", "-r", repo, ids[0], check=True)
    left = json.loads(run_cli("list", "-r", repo, "--json", check=True).stdout)
    assert ids[0] not in {s["id"] for s in left}


def test_prune_keep_tag_keeps_the_tagged_snapshots_and_says_so(nightly, tmp_path):
    repo, ids = nightly
    image = write_image(tmp_path / "vm1.img", 100_000, "random", seed=9)
    tagged = json.loads(run_cli("backup", "-r", repo, str(image), "--name", "vm1", "--tag",
                                "release", "--json", check=True).stdout)
    run_cli("backup", "-r", repo, str(image), "--name", "vm1", check=True)
    plan = json.loads(run_cli("prune", "-r", repo, "--keep-last", "1", "--keep-tag",
                              "release", "--name", "vm1", "--json", check=True).stdout)
    kept = {d["id"]: d["kept_because"] for d in plan["decisions"] if d["kept"]}
    assert kept[tagged["id"]] == "tag release"
    assert len(kept) == 2 and not set(ids[:4]) & set(kept)
