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
                                  "host:repo", "file:///srv/repo"])
@pytest.mark.parametrize("command", [["init"], ["list"], ["check"], ["info"]])
def test_a_url_or_remote_spec_as_repository_is_refused_and_nothing_is_created(
        tmp_path, monkeypatch, spec, command):
    monkeypatch.chdir(tmp_path)
    result = run_cli(*command, "-r", spec)
    assert_one_line_error(result, EXIT_BAD_INPUT, spec, "does not know")
    via_environment = run_cli(*command, env={"DISKVAULT_REPO": spec})
    assert_one_line_error(via_environment, EXIT_BAD_INPUT, spec, "does not know")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["./a:b", "{tmp}/backups/a:b", "{tmp}/x@host:y"])
def test_a_local_path_with_a_colon_after_a_slash_is_a_repository(tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    repo = name.format(tmp=tmp_path)
    run_cli("init", "-r", repo, check=True)
    assert run_cli("list", "-r", repo, check=True).returncode == 0
    assert (tmp_path / repo / "config").is_file()


# -- settings: checked at init (exit 2, naming the option) and when read (exit 1) ------
@pytest.mark.parametrize("option, value, says", [
    ("--chunk-size", "0", "256..67108864"), ("--chunk-size", "-4096", "256..67108864"),
    ("--chunk-size", "1000", "power of two"), ("--chunk-size", "134217728", "256..67108864"),
    ("--compression", "zstd:99", "1..22"), ("--compression", "zstd:0", "1..22"),
    ("--compression", "lz4", "zstd:N"), ("--compression", "zstd:fast", "number")])
def test_init_refuses_a_setting_out_of_range_naming_the_option(tmp_path, option, value, says):
    result = run_cli("init", "-r", str(tmp_path / "repo"), option, value)
    assert_one_line_error(result, EXIT_BAD_INPUT, f"{option} {value}:", says)
    assert not (tmp_path / "repo").exists()


def edit_config(repo: str, edit) -> None:
    path = Path(repo) / "config"
    config = json.loads(path.read_text())
    edit(config)
    path.write_text(json.dumps(config))


def set_value(*keys_and_value):
    *keys, last, value = keys_and_value

    def edit(config):
        for key in keys:
            config = config[key]
        config[last] = value
    return edit


@pytest.mark.parametrize("edit, says", [
    (set_value("compression", "level", 99), "zstd level 99 is outside 1..22"),
    (set_value("compression", "codec", "lz4"), "codec 'lz4'"),
    (set_value("chunker", "avg_bytes", 0), "avg_bytes) 0"),
    (set_value("chunker", "avg_bytes", 3000), "power of two"),
    (set_value("chunker", "min_bytes", 1 << 20), "min_bytes) 1048576"),
    (set_value("chunker", "max_bytes", 512), "max_bytes) 512"),
    (set_value("chunker", "avg_bytes", "4096"), 'chunker.avg_bytes is "4096", not a whole'),
    (set_value("chunker", "min_bytes", True), "chunker.min_bytes is true"),
    (set_value("chunker", [4096]), "chunker is [4096], not an object"),
    (set_value("hash", "sha256"), "hash 'sha256'"),
    (set_value("pack_target_bytes", 0), "pack_target_bytes 0 is outside"),
    (set_value("pack_target_bytes", 1.5), "pack_target_bytes is 1.5"),
    (set_value("repository_id", "x"), "repository_id 'x'"),
    (lambda config: config.pop("hash"), "hash is missing"),
    (lambda config: config["compression"].pop("level"), "compression.level is missing"),
    (set_value("append_only", "yes"), 'append_only is "yes", not true or false'),
    (set_value("object_lock", {"mode": "strict", "days": 3}), "object_lock.mode 'strict'"),
    (set_value("object_lock", {"mode": "governance", "days": 0}), "object_lock.days 0"),
    (set_value("object_lock", {"mode": "governance"}), "object_lock.days is missing")])
def test_a_hand_edited_config_is_one_line_naming_the_setting(backed_up, edit, says):
    edit_config(backed_up, edit)
    result = run_cli("list", "-r", backed_up)
    assert_one_line_error(result, 1, f"config of repository {backed_up} is invalid", says)


@pytest.mark.parametrize("command", [["backup", "{image}"], ["check", "--repair"], ["info"],
                                     ["cat", "latest"]])
def test_every_command_reads_the_config_through_the_same_checks(backed_up, tmp_path, command):
    edit_config(backed_up, set_value("chunker", "avg_bytes", 0))
    image = str(write_image(tmp_path / "new.img", 50_000))
    result = run_cli(*[a.format(image=image) for a in command], "-r", backed_up)
    assert_one_line_error(result, 1, f"config of repository {backed_up} is invalid",
                          "avg_bytes) 0")
