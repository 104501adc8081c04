"""A repository that no longer holds a snapshot this host saw -- an older copy put back, a
record removed or withheld -- or whose generation counter went down is reported with one
line and exit 1, never used or built upon; what this host removed itself is not reported."""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timezone
from pathlib import Path

import pytest

from diskvault.store.format.generations import KEPT_BY_COMPACT
from tests.conftest import run_cli, write_image

EXIT_FAILURE = 1


@pytest.fixture
def two_nights(repo, tmp_path):
    """A repository after two backups of vm1, and a copy of its snapshots/ folder taken
    after the first: (repo path, image, [first id, second id], the older snapshots/)."""
    root = str(repo.root)
    repo.close()
    image = write_image(tmp_path / "vm1.img", 300_000, "random", seed=1)
    ids = [_backup(root, image)]
    older = tmp_path / "snapshots-after-night-1"
    shutil.copytree(Path(root) / "snapshots", older)
    ids.append(_backup(root, image))
    return root, image, ids, older


def _backup(root: str, image: Path) -> str:
    made = run_cli("backup", "-r", root, str(image), "--name", "vm1", "--json", check=True)
    return json.loads(made.stdout)["id"]


def _listed(root: str) -> list[str]:
    return [s["id"] for s in json.loads(run_cli("list", "-r", root, "--json", check=True).stdout)]


def _assert_reported(result, root: str, snapshot_id: str) -> None:
    assert result.returncode == EXIT_FAILURE
    [line] = result.stderr.decode().strip().splitlines()
    assert line.startswith(f"diskvault: error: snapshot {snapshot_id[:8]} of vm1, seen here "
                           f"on ")
    assert f"is gone from {root}: the repository was rolled back or a record is withheld; " \
           f"if it was deleted from another host or an older copy was put back on purpose, " \
           f"run 'diskvault list -r {root} --accept-missing'" in line


def test_snapshots_put_back_to_an_older_copy_are_reported_and_never_built_upon(two_nights):
    root, image, ids, older = two_nights
    shutil.rmtree(Path(root) / "snapshots")
    shutil.copytree(older, Path(root) / "snapshots")
    _assert_reported(run_cli("list", "-r", root), root, ids[1])
    _assert_reported(run_cli("backup", "-r", root, str(image), "--name", "vm1"), root, ids[1])
    _assert_reported(run_cli("prune", "-r", root, "--keep-last", "1"), root, ids[1])
    assert sorted(p.name for p in (Path(root) / "snapshots").iterdir()) == [f"{ids[0]}.json"]

    accepted = run_cli("list", "-r", root, "--accept-missing", check=True)
    assert f"snapshot {ids[1][:8]} of vm1, seen here on " in accepted.stderr.decode()
    assert _listed(root) == [ids[0]]
    new = _backup(root, image)
    assert _listed(root) == [ids[0], new]


def test_a_record_removed_by_hand_is_reported(two_nights):
    root, _, ids, _ = two_nights
    (Path(root) / "snapshots" / f"{ids[1]}.json").unlink()
    _assert_reported(run_cli("list", "-r", root), root, ids[1])
    _assert_reported(run_cli("check", "-r", root), root, ids[1])


def test_snapshots_this_host_deleted_or_pruned_are_not_reported(two_nights):
    root, image, ids, _ = two_nights
    third = _backup(root, image)
    run_cli("delete", "-r", root, third, check=True)  # the newest of its series
    assert _listed(root) == ids
    run_cli("prune", "-r", root, "--keep-last", "1", check=True)
    assert _listed(root) == ids[1:]


def test_a_removal_undone_by_an_older_copy_is_reported_by_the_generation_counter(
        repo, tmp_path):
    """Every series keeps its newest snapshot, so only the counter can tell: a prune of vm2
    (a series this host never listed before) made after the copy, undone by putting the
    copy back."""
    root = Path(str(repo.root))
    repo.close()
    image = write_image(tmp_path / "vm1.img", 200_000, "random", seed=2)
    _backup(str(root), image)
    for _ in range(2):
        run_cli("backup", "-r", str(root), str(image), "--name", "vm2", "--json", check=True,
                env={"XDG_STATE_HOME": str(tmp_path / "another-host")})
    older = tmp_path / "repository-before-prune"
    shutil.copytree(root, older, symlinks=True)
    run_cli("prune", "-r", str(root), "--name", "vm2", "--keep-last", "1", check=True)
    counter = max(int(p.name) for p in (root / "generations").iterdir())
    shutil.rmtree(root)
    shutil.copytree(older, root, symlinks=True)

    reported = run_cli("list", "-r", str(root))
    assert reported.returncode == EXIT_FAILURE
    [line] = reported.stderr.decode().strip().splitlines()
    assert line == (f"diskvault: error: the generation counter of {root} is {counter - 1}, "
                    f"below the {counter} seen here on {datetime.now(timezone.utc).date()}: the repository was "
                    f"rolled back or records are withheld; if an older copy was put back on "
                    f"purpose, run 'diskvault list -r {root} --accept-missing'")
    run_cli("list", "-r", str(root), "--accept-missing", check=True)
    assert len(_listed(str(root))) == 3
    _backup(str(root), image)  # counts on from the older copy's counter


def test_compact_keeps_only_the_highest_generations(repo, tmp_path):
    root = Path(str(repo.root))
    repo.close()
    image = write_image(tmp_path / "vm1.img", 100_000, "random", seed=3)
    made = [_backup(str(root), image) for _ in range(KEPT_BY_COMPACT + 2)]
    run_cli("protect", "-r", str(root), made[0], check=True)
    run_cli("delete", "-r", str(root), made[1], check=True)
    counted = sorted(int(p.name) for p in (root / "generations").iterdir())
    assert counted == list(range(1, KEPT_BY_COMPACT + 5))  # each backup, protect, delete
    run_cli("compact", "-r", str(root), check=True)
    kept = sorted(int(p.name) for p in (root / "generations").iterdir())
    assert kept == counted[-KEPT_BY_COMPACT:]
    _backup(str(root), image)
    assert max(int(p.name) for p in (root / "generations").iterdir()) == counted[-1] + 1
