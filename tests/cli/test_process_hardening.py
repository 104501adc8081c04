"""A diskvault process that may hold a repository's key: no core dump, not dumpable, and
the passphrase variables gone from its environment and from every child's."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import TEST_PASSPHRASE, run_cli

NEW_PASSPHRASE = "a brand new passphrase"

# A passphrase command that writes down what it can see of diskvault (its parent), then
# answers with the passphrase.
SPY = """
import os, sys
folder, parent = sys.argv[1], os.getppid()
for name in ("environ", "limits"):
    with open(f"/proc/{parent}/{name}", "rb") as source, \\
            open(os.path.join(folder, "parent-" + name), "wb") as copy:
        copy.write(source.read())
with open(os.path.join(folder, "own-environ"), "w") as own:
    own.write(repr(dict(os.environ)))
print(sys.argv[2])
"""


def test_the_passphrase_command_and_proc_environ_see_no_secret_and_no_core_is_dumped(
        tmp_path):
    repo = str(tmp_path / "repo")
    run_cli("init", "-r", repo, check=True)
    spy = tmp_path / "spy.py"
    spy.write_text(SPY)
    changed = run_cli("key", "change-passphrase", "-r", repo, env={
        "DISKVAULT_PASSWORD": "",  # empty: unset, so the command is asked
        "DISKVAULT_PASSWORD_COMMAND": f"{sys.executable} {spy} {tmp_path} '{TEST_PASSPHRASE}'",
        "DISKVAULT_NEW_PASSWORD": NEW_PASSPHRASE})
    assert changed.returncode == 0, changed.stderr
    assert NEW_PASSPHRASE.encode() not in (tmp_path / "parent-environ").read_bytes()
    assert NEW_PASSPHRASE not in (tmp_path / "own-environ").read_text()
    core = next(line for line in (tmp_path / "parent-limits").read_text().splitlines()
                if line.startswith("Max core file size"))
    assert core.split()[4:6] == ["0", "0"], core
    unlocked = run_cli("list", "-r", repo, env={"DISKVAULT_PASSWORD": NEW_PASSPHRASE})
    assert unlocked.returncode == 0, unlocked.stderr


def test_a_started_command_is_not_dumpable():
    """prctl(PR_GET_DUMPABLE) in a real diskvault process, once a command has started."""
    probe = ("import ctypes, sys\n"
             "from diskvault.cli import main\n"
             "main.cli.add_command(main.click.Command('probe', callback=lambda: print(\n"
             "    ctypes.CDLL(None).prctl(3, 0, 0, 0, 0))))\n"  # 3: PR_GET_DUMPABLE
             "sys.argv = ['diskvault', 'probe']\n"
             "main.main()\n")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            timeout=60, check=True)
    assert result.stdout == "0\n"

