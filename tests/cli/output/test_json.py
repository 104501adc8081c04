"""--json: every command that reports something prints one JSON document on stdout with
what its human form says, and nothing else there."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from diskvault.store.repository import Repository
from tests.conftest import SMALL_CHUNKS, run_cli, write_image
from tests.fsimages import make_ext4, populate_tree


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """Three snapshots of series vm1 and one of series fs (a bare ext4 image)."""
    folder = tmp_path_factory.mktemp("json")
    with Repository.init(folder / "repo", chunk_size=SMALL_CHUNKS) as repository:
        image = write_image(folder / "vm1.img", 300_000, "mixed", seed=2)
        for night in range(3):
            with open(image, "r+b") as handle:
                handle.seek(50_000 * night)
                handle.write(b"night %d" % night * 1000)
            repository.backup(image, name="vm1")
        tree = populate_tree(folder / "tree", many=5)
        repository.backup(make_ext4(folder / "fs.img", tree, 8), name="fs")
    return folder / "repo"


@pytest.fixture
def repo(template, tmp_path) -> str:
    shutil.copytree(template, tmp_path / "repo")
    return str(tmp_path / "repo")


def json_of(*args: str) -> dict | list:
    result = run_cli(*args, check=True)
    return json.loads(result.stdout)  # one document: json.loads refuses anything after it


def test_init_json_names_the_repository_and_its_settings(tmp_path):
    body = json_of("init", "-r", str(tmp_path / "new"), "--chunk-size", "8192", "--json")
    assert body["path"] == str(tmp_path / "new") and len(body["repository_id"]) == 32
    assert body["chunker"]["avg_bytes"] == 8192


def test_restore_json_says_what_was_restored_where(repo, tmp_path):
    target = tmp_path / "out.img"
    result = run_cli("restore", "-r", repo, "vm1", str(target), "--json", check=True)
    body = json.loads(result.stdout)
    assert body["target"] == str(target) and body["image_bytes"] == target.stat().st_size
    assert body["snapshot"]["name"] == "vm1"
    assert result.stderr == b""  # the human line is replaced, not added


def test_delete_json_lists_the_deleted_snapshots(repo):
    first = json_of("list", "-r", repo, "--json")[0]
    body = json_of("delete", "-r", repo, first["id"], "--json")
    assert [s["id"] for s in body["deleted"]] == [first["id"]]


@pytest.mark.parametrize("dry_run", [True, False])
def test_prune_json_gives_each_snapshot_its_fate_and_reason(repo, dry_run):
    body = json_of("prune", "-r", repo, "--keep-last", "1", "--json",
                   *(["--dry-run"] if dry_run else []))
    assert body["dry_run"] is dry_run and (body["kept"], body["removed"]) == (2, 2)
    kept = {d["name"]: d["kept_because"] for d in body["decisions"] if d["kept"]}
    assert kept == {"vm1": "last #1", "fs": "last #1"}
    remaining = json_of("list", "-r", repo, "--json")
    assert len(remaining) == (4 if dry_run else 2)


def test_pull_json_counts_what_was_copied(repo, tmp_path):
    body = json_of("pull", "-r", repo, "fs", "/", str(tmp_path / "copy"), "--json")
    assert body["files"] > 0 and body["bytes"] > 0 and body["problems"] == []
    assert body["destination"] == str(tmp_path / "copy")


def test_break_lock_json_says_whether_there_was_a_lock(repo):
    assert json_of("break-lock", "-r", repo, "--json") == {"removed_lock": None}


@pytest.mark.parametrize("argv", [
    ["init", "-r", "{tmp}/other"], ["backup", "-r", "{repo}", "{tmp}/new.img"],
    ["list", "-r", "{repo}"], ["info", "-r", "{repo}"], ["info", "-r", "{repo}", "vm1"],
    ["restore", "-r", "{repo}", "vm1", "{tmp}/restored.img"],
    ["diff", "-r", "{repo}", "vm1", "fs"], ["delete", "-r", "{repo}", "fs", "--all-of-series"],
    ["prune", "-r", "{repo}", "--keep-last", "2"], ["compact", "-r", "{repo}"],
    ["check", "-r", "{repo}"], ["check", "-r", "{repo}", "--repair"],
    ["break-lock", "-r", "{repo}"], ["ls", "-r", "{repo}", "fs"],
    ["ls", "-r", "{repo}", "fs", "/"], ["pull", "-r", "{repo}", "fs", "/", "{tmp}/pulled"]],
    ids=lambda argv: " ".join(a for a in argv if "{" not in a and a != "-r"))
def test_every_reporting_command_prints_one_json_document(repo, tmp_path, argv):
    write_image(tmp_path / "new.img", 100_000, seed=9)
    args = [a.format(repo=repo, tmp=tmp_path) for a in argv]
    result = run_cli(*args, "--json", check=True)
    json.loads(result.stdout)
    assert result.stdout.endswith(b"}\n") or result.stdout.endswith(b"]\n")
    assert os.path.isdir(repo)
