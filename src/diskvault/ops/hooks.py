"""The command a user asks to run when a backup, prune or check succeeds or fails (a mail, a
ping to a monitor). It is split like a shell would split it but run without one (a user who
wants pipes writes ``sh -c '...'``), told what happened through environment variables, kept
from the passphrase, and stopped, with everything it started, after ``HOOK_TIMEOUT_S``."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass

from ..store.keys.passphrase import environ_without_secrets
from .runs import Run

HOOK_TIMEOUT_S = 60.0  # a hung mailer must not hold the next night's timer


@dataclass(frozen=True)
class HookResult:
    """How the hook ended: ``problem`` is empty when it ran and exited 0."""

    problem: str = ""


def hook_environment(run: Run, location: str, repository_id: str | None) -> dict[str, str]:
    """What the hook is told, as DISKVAULT_* variables (empty strings for what is unknown)."""
    return {"DISKVAULT_EVENT": "success" if run.succeeded else "failure",
            "DISKVAULT_COMMAND": run.command,
            "DISKVAULT_SERIES": run.series or "",
            "DISKVAULT_EXIT_CODE": str(run.exit_code),
            "DISKVAULT_ERROR": run.error,
            "DISKVAULT_REPOSITORY": location,
            "DISKVAULT_REPOSITORY_ID": repository_id or "",
            "DISKVAULT_SNAPSHOT": str(run.figures.get("snapshot", "")),
            "DISKVAULT_STARTED": run.started.isoformat(),
            "DISKVAULT_DURATION_S": f"{run.duration_s:.1f}"}


def run_hook(command: str, variables: Mapping[str, str], environ: Mapping[str, str],
             timeout_s: float = HOOK_TIMEOUT_S, output: int | None = None) -> HookResult:
    """Run ``command`` with ``variables`` added to ``environ`` (minus any passphrase); its
    output goes where diskvault's goes (its stdout to the descriptor ``output`` if given).
    Never raises: the run it reports on is over."""
    try:
        arguments = shlex.split(command)
    except ValueError as error:
        return HookResult(f"cannot split the hook command ({error})")
    if not arguments:
        return HookResult("the hook command is empty")
    env = {**environ_without_secrets(environ), **variables}
    try:
        process = subprocess.Popen(arguments, env=env, stdin=subprocess.DEVNULL,
                                   stdout=output, start_new_session=True)
    except OSError as error:
        return HookResult(f"cannot run {arguments[0]}: {error.strerror}")
    try:
        code = process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # its own session: the whole group goes
        process.wait()
        return HookResult(f"{arguments[0]} was stopped after {timeout_s:g} s")
    return HookResult("" if code == 0 else f"{arguments[0]} exited with code {code}")
