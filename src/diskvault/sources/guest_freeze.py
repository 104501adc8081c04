"""A guest's filesystems frozen through qemu-guest-agent around the instant a point-in-time
view is made, so the view holds what the guest's filesystems had flushed, not half-written
metadata: application-consistent where the guest's software flushes on freeze (the agent's
fsfreeze hooks), filesystem-consistent always.

The freeze is held by a watchdog process (thaw_watchdog.py) that thaws the guest when
diskvault says so, when diskvault ends in any way (SIGKILL included), or after the time
limit: a guest is never left frozen."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import PointInTimeFailed

log = logging.getLogger(__name__)
DEFAULT_FREEZE_LIMIT_S = 10.0
# The watchdog's words: it says FROZEN and how many filesystems, diskvault says THAW, the
# watchdog says how it thawed.
FROZEN, THAW, THAWED, THAWED_LATE = "frozen", "thaw", "thawed", "thawed late"


class GuestFreeze:
    """Freezes of the guest behind the agent socket ``agent``, each at most ``limit_s``;
    ``filesystems`` is how many the last one froze (None before one was made)."""

    def __init__(self, agent: Path, limit_s: float = DEFAULT_FREEZE_LIMIT_S):
        self.agent = agent
        self.limit_s = limit_s
        self.filesystems: int | None = None

    @contextmanager
    def held(self) -> Iterator[None]:
        """The guest frozen for the block; a block longer than the limit fails, as what it
        did may have happened thawed."""
        watchdog = subprocess.Popen(
            [sys.executable, "-m", "diskvault.sources.thaw_watchdog", str(self.agent),
             str(self.limit_s)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            text=True, start_new_session=True)  # not ours to kill: it outlives a SIGKILL
        with watchdog:
            word, _, count = watchdog.stdout.readline().strip().partition(" ")
            if word != FROZEN:
                raise PointInTimeFailed(f"the guest agent at {self.agent} did not freeze the "
                                        f"guest: {count or 'no answer'}")
            self.filesystems = int(count)
            frozen_at = time.monotonic()
            try:
                yield
            finally:
                try:
                    watchdog.stdin.write(THAW + "\n")
                    watchdog.stdin.close()
                except BrokenPipeError:
                    pass  # it ended already: what it says next tells how
                ended = watchdog.stdout.readline().strip()
                log.info("the guest was frozen for %.3f s", time.monotonic() - frozen_at)
        if ended == THAWED_LATE:
            raise PointInTimeFailed(f"the guest was thawed after {self.limit_s:g} s, before "
                                    f"its view was made: raise --freeze-timeout, or back up "
                                    f"unfrozen")
        if ended != THAWED:
            raise PointInTimeFailed(f"the guest agent at {self.agent} did not confirm the "
                                    f"thaw: {ended.removeprefix('error ') or 'no answer'}; "
                                    f"check 'guest-fsfreeze-status' in the guest")
