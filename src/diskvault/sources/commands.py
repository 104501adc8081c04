"""The user's commands around the instant a point-in-time view is made: ``pre`` (flush and
freeze an application, stop a writer) just before, ``post`` (thaw, restart) just after, and
``post`` on every way out once ``pre`` has started, so nothing stays frozen.

Each is split like a shell would split it and run without one (``sh -c '...'`` for a
pipeline), with its output on stderr (stdout may carry --json), and stopped with everything
it started after its time is up (ops/hooks.py runs it)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import PointInTimeFailed
from ..ops.hooks import HOOK_TIMEOUT_S, run_hook

log = logging.getLogger(__name__)
STDERR_FD = 2  # the commands' output: diskvault's stdout may be --json


@dataclass(frozen=True)
class ViewCommands:
    """The commands as the user gave them (None: none), and how long each may run."""
    pre: str | None = None
    post: str | None = None
    timeout_s: float = HOOK_TIMEOUT_S


class AroundTheInstant:
    """``with AroundTheInstant(commands, source):`` runs ``pre`` on entry; ``done()`` runs
    ``post`` once the view exists, and leaving without ``done()`` runs it all the same."""

    def __init__(self, commands: ViewCommands, source: Path):
        self.commands = commands
        self._variables = {"DISKVAULT_SOURCE": str(source)}
        self._post_due = False

    def __enter__(self) -> "AroundTheInstant":
        self._post_due = True
        if self.commands.pre:
            problem = self._run(self.commands.pre, "pre")
            if problem:
                self._leave_quietly()
                raise PointInTimeFailed(f"the --pre-command failed ({problem}): nothing was "
                                        f"read or recorded")
        return self

    def done(self, outcome: str = "nothing was recorded") -> None:
        """The view is made: run ``post`` now; a failure fails the backup."""
        self._post_due = False
        if self.commands.post:
            problem = self._run(self.commands.post, "post")
            if problem:
                raise PointInTimeFailed(f"the --post-command failed ({problem}): {outcome}; "
                                        f"see that whatever the --pre-command stopped runs "
                                        f"again")

    def __exit__(self, error_type, error, traceback) -> None:
        if not self._post_due:
            return
        if error is None:
            self.done("the snapshot was recorded")
        else:
            self._leave_quietly()

    def _leave_quietly(self) -> None:
        """``post`` on the way out of a failure: its own failure is a warning, the first
        error is the one the user reads."""
        self._post_due = False
        if self.commands.post:
            problem = self._run(self.commands.post, "post")
            if problem:
                log.warning("the --post-command failed too (%s)", problem)

    def _run(self, command: str, event: str) -> str:
        result = run_hook(command, {**self._variables, "DISKVAULT_EVENT": event},
                          os.environ, self.commands.timeout_s, output=STDERR_FD)
        return result.problem
