"""A synchronous connection to a QEMU monitor (QMP) or to a guest's qemu-guest-agent (QGA),
through QEMU's own ``qemu.qmp`` library: it frames the JSON, matches each answer to its
command by id and keeps events apart, so diskvault never speaks the protocol itself. The
one client of both: the point-in-time view, the dirty bitmap's rotation and the freeze.

Every step is bounded by a timeout: a monitor that another client holds (QEMU serves one
client per monitor socket; a second one waits unanswered) fails in one line instead of
hanging the backup."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from qemu.qmp import ConnectError, ExecuteError, QMPClient, QMPError

from ..errors import PointInTimeFailed, SourceError

COMMAND_TIMEOUT_S = 60.0


class CommandFailed(PointInTimeFailed):
    """QEMU (or the agent) answered a command with an error; ``error_class`` is QEMU's."""

    def __init__(self, command: str, error_class: str, description: str):
        self.command = command
        self.error_class = error_class
        self.description = description
        super().__init__(f"QEMU refused {command}: {description}")


class Monitor:
    """One open QMP (or, with ``agent``, QGA) connection; ``execute`` returns the answer's
    ``return`` value or raises CommandFailed."""

    def __init__(self, path: Path, agent: bool = False,
                 timeout_s: float = COMMAND_TIMEOUT_S):
        self.path = path
        self.timeout_s = timeout_s
        if logging.getLogger().level > logging.DEBUG:
            # Each failure becomes one line of ours; the library's own log line about it
            # would say it a second time (it shows with --debug).
            logging.getLogger("qemu.qmp").setLevel(logging.CRITICAL)
        self._loop = asyncio.new_event_loop()
        self._client = QMPClient(str(path))
        # The guest agent sends no greeting and knows no capabilities negotiation.
        self._client.await_greeting = self._client.negotiate = not agent
        what = "guest agent" if agent else "QEMU monitor"
        try:
            self._run(self._client.connect(str(path)))
        except (ConnectError, OSError) as error:
            self._loop.close()
            cause = getattr(error, "exc", None) or error
            raise SourceError(f"cannot reach the {what} at {path}: "
                              f"{getattr(cause, 'strerror', None) or cause}") from None
        except asyncio.TimeoutError:
            self._loop.run_until_complete(self._client.disconnect())
            self._loop.close()
            raise SourceError(f"the {what} at {path} did not answer in {timeout_s:g} s "
                              f"(another client, such as libvirt, may hold it)") from None

    def execute(self, command: str, **arguments) -> object:
        try:
            return self._run(self._client.execute(command, arguments or None))
        except ExecuteError as error:
            raise CommandFailed(command, error.error_class, error.error.error.desc) from None
        except asyncio.TimeoutError:
            raise PointInTimeFailed(f"{command} got no answer from {self.path} in "
                                    f"{self.timeout_s:g} s") from None
        except QMPError as error:
            raise PointInTimeFailed(f"the connection to {self.path} broke during {command} "
                                    f"({error})") from None

    def _run(self, coroutine):
        return self._loop.run_until_complete(asyncio.wait_for(coroutine, self.timeout_s))

    def close(self) -> None:
        """Hang up; a connection that broke already (QEMU gone) is just let go, so that the
        reason it broke, raised where it was met, is the one the user reads."""
        if self._loop.is_closed():
            return
        try:
            self._loop.run_until_complete(self._client.disconnect())
        except (QMPError, OSError, EOFError):
            pass
        finally:
            self._loop.close()

    def __enter__(self) -> "Monitor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
