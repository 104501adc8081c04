"""A guest's filesystems frozen through qemu-guest-agent around the instant a point-in-time
view is made, so the view holds what the guest's filesystems had flushed, not half-written
metadata: application-consistent where the guest's software flushes on freeze (the agent's
fsfreeze hooks), filesystem-consistent always.

The freeze is held by a watchdog process (thaw_watchdog.py) that thaws the guest when
diskvault says so, when diskvault ends in any way (SIGKILL included), or after
``limit_s``: a guest is never left frozen."""

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
# The watchdog's words: it says FROZEN, diskvault says THAW, it says how it thawed.
FROZEN, THAW, THAWED, THAWED_LATE = "frozen", "thaw", "thawed", "thawed late"


@contextmanager
def frozen_guest(agent: Path, limit_s: float = DEFAULT_FREEZE_LIMIT_S) -> Iterator[None]:
    """The guest behind the agent socket ``agent`` frozen for the block (at most
    ``limit_s``; a longer block fails, as its view may have been taken thawed)."""
    watchdog = subprocess.Popen(
        [sys.executable, "-m", "diskvault.sources.thaw_watchdog", str(agent), str(limit_s)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        start_new_session=True)  # not ours to kill: it must outlive a SIGKILL of diskvault
    with watchdog:
        said = watchdog.stdout.readline().strip()
        if said != FROZEN:
            raise PointInTimeFailed(f"the guest agent at {agent} did not freeze the guest: "
                                    f"{said.removeprefix('error ') or 'no answer'}")
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
        raise PointInTimeFailed(f"the guest was thawed after {limit_s:g} s, before its view "
                                f"was made: raise --freeze-timeout, or back up unfrozen")
    if ended != THAWED:
        raise PointInTimeFailed(f"the guest agent at {agent} did not confirm the thaw: "
                                f"{ended.removeprefix('error ') or 'no answer'}; check "
                                f"'guest-fsfreeze-status' in the guest")
