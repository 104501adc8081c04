"""A background thread that does one small job every interval until stopped: how a writer
lock is refreshed and a reader's registration renewed while their holder runs (locking.py,
readers.py).
A beat that fails (a full disk, an object store not answering) is logged and tried again at
the next interval; a beat that returns False ends the heartbeat."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from ...errors import DiskvaultError

log = logging.getLogger(__name__)


class Heartbeat:
    """Calls ``beat`` every ``interval_s`` seconds on a daemon thread until ``stop``."""

    def __init__(self, beat: Callable[[], bool], interval_s: float, what: str):
        self._beat = beat
        self._interval_s = interval_s
        self._what = what
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name=what, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stopped.wait(self._interval_s):
            try:
                if not self._beat():
                    return
            except (OSError, DiskvaultError) as error:
                log.warning("could not %s (tried again in %g s): %s", self._what,
                            self._interval_s, error)

    def stop(self) -> None:
        """Returns once no beat runs any more."""
        self._stopped.set()
        self._thread.join()
