"""The guest freeze's watchdog: a small process of its own that freezes the guest's
filesystems through qemu-guest-agent and is sure to thaw them.

qemu-guest-agent on Linux has no timeout of its own: a guest frozen and forgotten stays
frozen (its writers hang) until someone thaws it. So the conversation with the agent is
held by this process, not by diskvault: it freezes, says ``frozen N`` (N filesystems) on
its stdout, then thaws as soon as diskvault writes ``thaw``, closes the pipe (diskvault
ended, even by SIGKILL: the kernel closes its end), or the time limit passes, whichever is
first. It runs
in a session of its own, so a Ctrl-C at the terminal reaches diskvault only, and a SIGTERM
thaws too. It says ``thawed`` (or ``thawed late``, when the limit passed before diskvault
asked) and ends.

Run as: python -m diskvault.sources.thaw_watchdog AGENT_SOCKET LIMIT_S
"""

from __future__ import annotations

import select
import signal
import sys
import time
from pathlib import Path

from ..errors import DiskvaultError
from .guest_freeze import FROZEN, THAWED, THAWED_LATE
from .qmp import Monitor

AGENT_TIMEOUT_S = 10.0


def _say(line: str) -> None:
    try:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
    except BrokenPipeError:
        pass  # diskvault is gone; the thaw is what matters


def _interrupted(*_) -> None:
    raise KeyboardInterrupt


def _wait_for_word(limit_s: float) -> bool:
    """True when diskvault asked (``thaw`` or its end), False when ``limit_s`` passed."""
    deadline = time.monotonic() + limit_s
    while (left := deadline - time.monotonic()) > 0:
        if select.select([sys.stdin], [], [], left)[0]:
            return True  # a line, or the end of the pipe: either way, thaw now
    return False


def main(agent_path: str, limit_s: float) -> int:
    signal.signal(signal.SIGTERM, _interrupted)
    try:
        agent = Monitor(Path(agent_path), agent=True, timeout_s=AGENT_TIMEOUT_S)
    except DiskvaultError as error:
        _say(f"error {error}")
        return 1
    with agent:
        in_time = True
        try:
            agent.execute("guest-sync", id=int(time.time()) & 0x7FFFFFFF)
            _say(f"{FROZEN} {agent.execute('guest-fsfreeze-freeze')}")
            in_time = _wait_for_word(limit_s)
        except DiskvaultError as error:
            _say(f"error {error}")
        except KeyboardInterrupt:
            pass
        finally:
            agent.execute("guest-fsfreeze-thaw")  # also after a failed freeze: it may have half
        _say(THAWED if in_time else THAWED_LATE)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], float(sys.argv[2])))
