"""The README's commands as a user who is not root and has no sudo: scripts/setup.sh installs
diskvault under ~/.local without asking for a password (the packages are there) and says
where the command is; the command then works with cron's PATH; and a sample of the suite
passes as that user. Slow: setup builds a virtual environment and installs from PyPI."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import write_image

CHECKOUT = Path(__file__).resolve().parent.parent
CRON_PATH = "/usr/bin:/bin"

pytestmark = pytest.mark.slow


def user_checkout(other_user, *parts: str) -> Path:
    """A copy of this checkout's ``parts`` that the user owns (ours may be private)."""
    copy = other_user.scratch / "checkout"
    for part in parts:
        source = CHECKOUT / part
        if source.is_dir():
            shutil.copytree(source, copy / part,
                            ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache"))
        else:
            copy.mkdir(exist_ok=True)
            shutil.copy2(source, copy / part)
    subprocess.run(["chown", "-R", f"{other_user.uid}:{other_user.gid}", str(other_user.scratch)],
                   check=True)
    return copy


def as_user(other_user, argv: list[str], path: str, cwd: Path | None = None,
            timeout: float = 120, **environment: str) -> subprocess.CompletedProcess:
    """``argv`` as the user with only what a login or cron gives: HOME and ``path``."""
    home = other_user.scratch / "home"
    variables = [f"{key}={value}" for key, value in
                 {"HOME": str(home), "PATH": path, "LANG": "C.UTF-8", **environment}.items()]
    command = ["env", "-i", *variables]
    if cwd is not None:
        command += ["sh", "-c", 'cd "$0" && exec "$@"', str(cwd)]
    return other_user.run(*command, *argv, timeout=timeout)


def test_setup_as_a_user_without_sudo_installs_a_command_that_works_from_cron(other_user):
    checkout = user_checkout(other_user, "scripts", "src", "pyproject.toml", "README.md")
    home = other_user.scratch / "home"
    as_user(other_user, ["true"], CRON_PATH)  # makes the home
    setup = as_user(other_user, ["scripts/setup.sh"], f"/usr/local/bin:{CRON_PATH}",
                    cwd=checkout, timeout=900)
    stderr = setup.stderr.decode()
    assert setup.returncode == 0, stderr
    command = home / ".local" / "bin" / "diskvault"
    assert f"the command is {command}" in stderr
    assert f"{command.parent} is not on your PATH yet" in stderr
    assert "sudo" not in stderr and "password" not in stderr
    share = home / ".local" / "share"
    assert (share / "man" / "man1" / "diskvault-backup.1").is_file()
    assert (share / "bash-completion" / "completions" / "diskvault").is_file()

    # The README's crontab line: a PATH= line naming the folder, nothing else set.
    cron_path = f"{command.parent}:{CRON_PATH}"
    image = write_image(other_user.scratch / "vm1.img", 300_000, "mixed", seed=4)
    repo, restored = other_user.scratch / "repo", other_user.scratch / "restored.img"
    for argv in (["init", "-r", str(repo), "--encryption", "none"],
                 ["backup", "-r", str(repo), str(image), "--name", "vm1"],
                 ["restore", "-r", str(repo), "vm1", str(restored)]):
        result = as_user(other_user, ["diskvault", *argv], cron_path)
        assert result.returncode == 0, result.stderr.decode()
    listing = as_user(other_user, ["diskvault", "list", "-r", str(repo), "--json"], cron_path)
    assert [s["name"] for s in json.loads(listing.stdout)] == ["vm1"]
    assert restored.read_bytes() == image.read_bytes()


def test_a_sample_of_the_suite_passes_as_a_user(other_user):
    """The tests that failed for a user (mkfs and sfdisk are in /usr/sbin, off a user's
    PATH) pass or skip with a true reason."""
    checkout = user_checkout(other_user, "src", "tests", "pyproject.toml")
    if as_user(other_user, [sys.executable, "-c", "import pytest"], CRON_PATH).returncode:
        pytest.skip(f"the test interpreter {sys.executable} cannot be run by another user "
                    f"(a private folder on its path)")
    result = as_user(other_user, [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                  "--basetemp", str(other_user.scratch / "pytest"),
                                  "tests/image/test_volumes.py", "tests/cli/output/test_space.py"],
                     f"/usr/local/bin:{CRON_PATH}", cwd=checkout, timeout=900,
                     PYTHONPATH=str(checkout / "src"))
    output = result.stdout.decode()
    assert result.returncode == 0, output[-3000:]
    assert "is not installed" not in output  # every tool there is found
