"""The hook command: told what happened, run without a shell, never given the passphrase,
stopped with what it started when it hangs."""

import os
import sys
import time
from datetime import datetime, timezone

from diskvault.ops.hooks import hook_environment, run_hook
from diskvault.ops.runs import Run

NOW = datetime(2026, 12, 7, 2, 30, tzinfo=timezone.utc)
FAILED = Run("backup", "vm1", NOW, NOW, 74, "the object store kept failing; rerun later")


def dump_environment(path) -> str:
    """A hook that writes its DISKVAULT_* variables and arguments into ``path``."""
    code = ("import os, sys, json; json.dump({'argv': sys.argv[1:], 'env': {k: v for k, v in "
            "os.environ.items() if k.startswith('DISKVAULT_')}}, open(sys.argv[1], 'w'))")
    return f"{sys.executable} -c \"{code}\" {path} 'two words' ';' '$HOME'"


def test_hook_is_told_the_series_exit_code_and_error_line(tmp_path):
    import json
    out = tmp_path / "hook.json"
    variables = hook_environment(FAILED, "/backups/vm1", "ab" * 16)
    environ = {**os.environ, "DISKVAULT_PASSWORD": "secret"}
    assert run_hook(dump_environment(out), variables, environ).problem == ""
    seen = json.loads(out.read_text())
    assert seen["env"]["DISKVAULT_EVENT"] == "failure"
    assert seen["env"]["DISKVAULT_SERIES"] == "vm1"
    assert seen["env"]["DISKVAULT_EXIT_CODE"] == "74"
    assert seen["env"]["DISKVAULT_ERROR"] == FAILED.error
    assert seen["env"]["DISKVAULT_REPOSITORY"] == "/backups/vm1"
    assert "DISKVAULT_PASSWORD" not in seen["env"]
    # no shell: quotes group words, and ';' and '$HOME' arrive as they were written
    assert seen["argv"][1:] == ["two words", ";", "$HOME"]


def test_a_hanging_hook_and_its_children_are_stopped(tmp_path):
    pid_file = tmp_path / "child.pid"
    hook = f"sh -c 'sleep 300 & echo $! > {pid_file}; wait'"
    result = run_hook(hook, {}, os.environ, timeout_s=1)
    assert "stopped after 1 s" in result.problem
    assert ended(int(pid_file.read_text()))


def ended(pid: int, deadline_s: float = 30) -> bool:
    """Whether ``pid`` is gone or a zombie (killed, waiting for a reaper) within the deadline:
    a signal is delivered asynchronously."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as stat_file:
                if stat_file.read().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False


def test_a_failing_or_missing_hook_is_reported_not_raised():
    assert run_hook("false", {}, os.environ).problem == "false exited with code 1"
    assert "cannot run" in run_hook("/nonexistent/notify", {}, os.environ).problem
    assert "cannot split" in run_hook("echo 'unclosed", {}, os.environ).problem
