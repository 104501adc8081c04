"""Shell completion in a real bash: the script `diskvault completion bash` prints registers
itself (`complete -p`), and the function it registers, called as bash calls it, offers the
commands, and for SNAPSHOT arguments and --name the repository's ids, series and latest."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from ...conftest import run_cli, write_image

# Complete the words given as arguments the way bash does on TAB: the function named by
# `complete -p diskvault`, with COMP_WORDS/COMP_CWORD set; one offer per line.
COMPLETE = r'''
source "$1"; shift
spec=$(complete -p diskvault) || exit 3
function=${spec##*-F }; function=${function%% *}
COMP_WORDS=(diskvault "$@"); COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))
COMP_LINE="${COMP_WORDS[*]}"; COMP_POINT=${#COMP_LINE}
"$function" diskvault "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
printf '%s\n' "${COMPREPLY[@]}"
'''


@pytest.fixture(scope="module")
def shell(tmp_path_factory):
    """(environment, script): `diskvault` on PATH as the command under test, and the bash
    completion script it prints."""
    if shutil.which("bash") is None:
        pytest.skip("bash is not installed")
    folder = tmp_path_factory.mktemp("completion")
    command = folder / "bin" / "diskvault"
    command.parent.mkdir()
    command.write_text(f'#!/bin/sh\nexec {sys.executable} -m diskvault "$@"\n')
    command.chmod(0o755)
    environment = {**os.environ, "PATH": f"{command.parent}{os.pathsep}{os.environ['PATH']}"}
    script = folder / "diskvault.bash"
    script.write_bytes(run_cli("completion", "bash", check=True).stdout)
    return environment, script


def complete(shell, *words: str, env: dict | None = None) -> list[str]:
    environment, script = shell
    result = subprocess.run(["bash", "-c", COMPLETE, "complete", str(script), *words],
                            capture_output=True, text=True, timeout=120,
                            env={**environment, **(env or {})}, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    return [line for line in result.stdout.splitlines() if line]


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> tuple[str, list[str]]:
    """An encrypted repository with series web (two snapshots) and db; its short ids."""
    folder = tmp_path_factory.mktemp("completion-repo")
    repo = str(folder / "repo")
    run_cli("init", "-r", repo, check=True)
    for name, seed in (("web", 1), ("web", 2), ("db", 3)):
        image = write_image(folder / f"{name}.img", 50_000, seed=seed)
        run_cli("backup", "-r", repo, str(image), "--name", name, check=True)
    listing = run_cli("list", "-r", repo, check=True).stdout.decode().splitlines()[1:]
    return repo, [line.split()[0] for line in listing]


def test_the_script_registers_a_completion_for_diskvault(shell):
    environment, script = shell
    result = subprocess.run(["bash", "-c", 'source "$1"; complete -p diskvault', "x",
                             str(script)], capture_output=True, text=True, env=environment)
    assert result.returncode == 0 and "-F _diskvault_completion diskvault" in result.stdout


def test_command_names_complete(shell):
    assert complete(shell, "res") == ["restore"]
    assert {"list", "ls"} <= set(complete(shell, "l"))


def test_a_snapshot_argument_completes_to_ids_series_and_latest(shell, repo):
    path, ids = repo
    assert set(complete(shell, "restore", "-r", path, "")) == {*ids, "web", "db", "latest"}
    assert complete(shell, "diff", "-r", path, ids[0], "w") == ["web"]
    assert complete(shell, "info", "", env={"DISKVAULT_REPO": ""}) == ["latest"]
    assert set(complete(shell, "info", "", env={"DISKVAULT_REPO": path})) == {
        *ids, "web", "db", "latest"}


def test_name_completes_to_the_series(shell, repo):
    path, _ = repo
    assert complete(shell, "list", "-r", path, "--name", "") == ["db", "web"]
    assert complete(shell, "prune", "-r", path, "--name", "d") == ["db"]


def test_without_the_passphrase_completion_offers_latest_and_asks_nothing(shell, repo):
    path, _ = repo
    environment = {key: value for key, value in shell[0].items()
                   if not key.startswith("DISKVAULT_PASSWORD")}
    assert complete((environment, shell[1]), "cat", "-r", path, "") == ["latest"]


@pytest.mark.parametrize("shell_name, check", [("zsh", ["zsh", "-n"]), ("fish", ["fish", "-n"])])
def test_the_zsh_and_fish_scripts_are_valid(shell_name, check, tmp_path):
    script = tmp_path / f"diskvault.{shell_name}"
    script.write_bytes(run_cli("completion", shell_name, check=True).stdout)
    assert "_DISKVAULT_COMPLETE" in script.read_text()
    if shutil.which(check[0]) is None:
        pytest.skip(f"{check[0]} is not installed: the script is not syntax-checked")
    result = subprocess.run([*check, str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
