"""The append-only mark: a repository created with it (or marked later with `diskvault config
--append-only on`) still takes backups, but prune, delete, compact and unprotect are refused
with one line and exit 77, and repair leaves damaged packs where they are; the mark keeps an
encrypted config authenticated, and one set by another host after a command opened the
repository still counts."""

from __future__ import annotations

import json
import os

import pytest

from diskvault.errors import EXIT_NO_PERMISSION, RepositoryAppendOnly
from diskvault.maintenance.append_only import set_append_only
from diskvault.maintenance.compact import compact
from diskvault.maintenance.prune import delete_snapshots, prune
from diskvault.maintenance.repair import repair_repository
from diskvault.maintenance.retention import KeepPolicy
from diskvault.store.format.config import PLAINTEXT_MODE, REPOKEY_MODE

from ..conftest import run_cli
from .support import assert_all_restore, back_up

REFUSING_COMMANDS = [("delete", "latest"), ("prune", "--keep-last", "1"), ("compact",),
                     ("unprotect", "latest")]


def test_append_only_repository_refuses_deleting_commands_with_one_line(tmp_path, make_image):
    root = tmp_path / "repo"
    run_cli("init", "-r", str(root), "--encryption", "none", "--append-only", check=True)
    for seed in (1, 2):
        run_cli("backup", "-r", str(root), str(make_image(200_000, seed=seed, name="vm.img")),
                check=True)
    run_cli("protect", "-r", str(root), "latest", check=True)
    before = sorted(p.name for p in root.rglob("*") if p.is_file())

    for command in REFUSING_COMMANDS:
        result = run_cli(command[0], "-r", str(root), *command[1:])

        assert result.returncode == EXIT_NO_PERMISSION, command
        [line] = result.stderr.decode().splitlines()
        assert "append-only" in line and "--append-only off" in line, line
        assert sorted(p.name for p in root.rglob("*") if p.is_file()) == before


def test_backups_still_work_and_clearing_the_mark_lets_an_administrator_prune(repo, tmp_path):
    set_append_only(repo.storage, True)
    expected = {back_up(repo, tmp_path, "vm", os.urandom(50_000) * n).id: None
                for n in (1, 2, 3)}
    with pytest.raises(RepositoryAppendOnly):
        prune(repo.storage, KeepPolicy(last=1))
    assert {r.id for r in repo.list_snapshots()} == set(expected)

    assert set_append_only(repo.storage, False) is True
    assert set_append_only(repo.storage, False) is False
    assert len(prune(repo.storage, KeepPolicy(last=1)).removed) == 2


def test_mark_set_by_another_host_after_open_still_refuses(repo, tmp_path):
    data = os.urandom(40_000)
    first = back_up(repo, tmp_path, "vm", data)
    run_cli("config", "-r", str(repo.root), "--append-only", "on", check=True)  # another host
    assert repo.config.append_only is False  # read before the mark was set

    with pytest.raises(RepositoryAppendOnly):
        delete_snapshots(repo.storage, [first.id])
    with pytest.raises(RepositoryAppendOnly):
        compact(repo.storage)
    assert_all_restore(repo, {first.id: data})


@pytest.mark.parametrize("encryption", [PLAINTEXT_MODE, REPOKEY_MODE],
                         ids=["plain", "encrypted"])
def shown_config(root) -> dict:
    """The config as another process opens it (an encrypted one authenticated)."""
    return json.loads(run_cli("config", "-r", str(root), "--json", check=True).stdout)


def test_mark_keeps_the_config_authenticated_and_leaves_no_trace_once_cleared(repo):
    config_file = repo.root / "config"
    original = json.loads(config_file.read_bytes())
    set_append_only(repo.storage, True)
    assert json.loads(config_file.read_bytes())["append_only"] is True
    assert shown_config(repo.root)["append_only"] is True  # an encrypted MAC checks out

    set_append_only(repo.storage, False)
    assert json.loads(config_file.read_bytes()) == original  # older diskvaults read it as before
    assert shown_config(repo.root)["append_only"] is False


def test_repair_of_an_append_only_repository_leaves_a_damaged_pack_in_place(repo, tmp_path):
    back_up(repo, tmp_path, "vm", os.urandom(300_000))
    set_append_only(repo.storage, True)
    pack = max(repo.root.glob("packs/*/*.pack"), key=lambda p: p.stat().st_size)
    os.truncate(pack, pack.stat().st_size // 2)
    repo.close()  # repair opens it as a command does

    report = repair_repository(repo.root)

    assert [p for p, _ in report.damaged_packs] == [pack.stem]
    assert report.set_aside_packs == [] and "append-only" in report.kept_in_place
    assert pack.exists() and not (repo.root / "damaged").exists()


def test_config_command_sets_and_clears_the_mark(tmp_path):
    root = tmp_path / "repo"
    run_cli("init", "-r", str(root), "--encryption", "none", check=True)
    assert "append-only: off" in run_cli("config", "-r", str(root), check=True).stdout.decode()
    on = json.loads(run_cli("config", "-r", str(root), "--append-only", "on", "--json",
                            check=True).stdout)
    assert on["append_only"] is True and on["changed"] is True
    assert run_cli("delete", "-r", str(root), "latest").returncode == EXIT_NO_PERMISSION
    run_cli("config", "-r", str(root), "--append-only", "off", check=True)
    assert "append-only: off" in run_cli("config", "-r", str(root), check=True).stdout.decode()
