"""Where options go and what the repository option may name, through the real command
line: -r and --debug before or after the command, URLs refused, local names kept."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ..conftest import run_cli, write_image
from .test_errors import EXIT_BAD_INPUT, assert_one_line_error


@pytest.fixture
def backed_up(tmp_path: Path) -> str:
    """A repository (path as str) holding one snapshot of series vm."""
    repo = str(tmp_path / "repo")
    run_cli("init", "-r", repo, "--chunk-size", "4096", check=True)
    image = write_image(tmp_path / "vm.img", 200_000, "random", seed=7)
    run_cli("backup", "-r", repo, str(image), "--name", "vm", check=True)
    return repo


# -- -r/--repo and --debug before or after the command ---------------------------------
@pytest.mark.parametrize("argv", [["-r", "{repo}", "list", "--json"],
                                  ["--repo", "{repo}", "list", "--json"],
                                  ["list", "--json", "-r", "{repo}"]])
def test_repo_option_is_accepted_before_and_after_the_command(backed_up, argv):
    result = run_cli(*[a.format(repo=backed_up) for a in argv], check=True)
    assert [s["name"] for s in json.loads(result.stdout)] == ["vm"]


def test_repo_option_closest_to_the_command_wins_over_the_other_and_the_environment(
        backed_up, tmp_path):
    nowhere = str(tmp_path / "nowhere")
    env = {"DISKVAULT_REPO": nowhere}
    assert run_cli("-r", backed_up, "list", env=env, check=True).returncode == 0
    after = run_cli("-r", backed_up, "list", "-r", nowhere)
    assert_one_line_error(after, EXIT_BAD_INPUT, "nowhere")
    before = run_cli("-r", nowhere, "list", env={"DISKVAULT_REPO": backed_up})
    assert_one_line_error(before, EXIT_BAD_INPUT, "nowhere")


@pytest.mark.parametrize("argv", [["--debug", "list", "-r", "{nowhere}"],
                                  ["list", "--debug", "-r", "{nowhere}"],
                                  ["-r", "{nowhere}", "list", "--debug"]])
def test_debug_is_accepted_before_and_after_the_command(tmp_path, argv):
    nowhere = str(tmp_path / "nowhere")
    result = run_cli(*[a.format(nowhere=nowhere) for a in argv])
    assert result.returncode != 0
    assert "Traceback (most recent call last)" in result.stderr.decode()
    assert "RepositoryNotFound" in result.stderr.decode()


# -- what -r may name ------------------------------------------------------------------
@pytest.mark.parametrize("spec", ["sftp:backup@host:/srv/repo", "backup@host:/srv/repo",
                                  "host:repo", "s3://bucket/prefix", "file:///srv/repo"])
@pytest.mark.parametrize("command", [["init"], ["list"], ["check"], ["info"]])
def test_a_url_or_remote_spec_as_repository_is_refused_and_nothing_is_created(
        tmp_path, monkeypatch, spec, command):
    monkeypatch.chdir(tmp_path)
    result = run_cli(*command, "-r", spec)
    assert_one_line_error(result, EXIT_BAD_INPUT, spec, "local folders only")
    via_environment = run_cli(*command, env={"DISKVAULT_REPO": spec})
    assert_one_line_error(via_environment, EXIT_BAD_INPUT, spec, "local folders only")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["./a:b", "{tmp}/backups/a:b", "{tmp}/x@host:y"])
def test_a_local_path_with_a_colon_after_a_slash_is_a_repository(tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    repo = name.format(tmp=tmp_path)
    run_cli("init", "-r", repo, check=True)
    assert run_cli("list", "-r", repo, check=True).returncode == 0
    assert (tmp_path / repo / "config").is_file()
