"""A progress display (bytes, rate, ETA) on stderr: one line redrawn in place on a
terminal; asked for (--progress) into a file or a pipe, plain lines now and then, without
the carriage returns and escape codes a log would keep."""

from __future__ import annotations

import sys
import time

from .formatting import human_bytes

REFRESH_S = 0.25
PLAIN_REFRESH_S = 10.0


class ProgressLine:
    """Callable with the number of bytes done so far; ``close`` ends the line. Without a
    ``total`` (a tree whose size is not known in advance) it shows bytes and rate only."""

    def __init__(self, label: str, total: int | None, enabled: bool | None = None):
        self.label = label
        self.total = total
        self.terminal = sys.stderr.isatty()
        self.enabled = self.terminal if enabled is None else enabled
        self.refresh_s = REFRESH_S if self.terminal else PLAIN_REFRESH_S
        self.started = time.monotonic()
        self._shown_at = 0.0
        self._shown = False

    def __call__(self, done: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._shown_at < self.refresh_s and (self.total is None or done < self.total):
            return
        self._shown_at = now
        elapsed = max(now - self.started, 1e-6)
        rate = done / elapsed
        if self.total is None:
            text = f"{human_bytes(done)}  {rate / 1e6:.0f} MB/s"
        else:
            eta = (self.total - done) / rate if rate > 0 else 0
            percent = 100 * done / self.total if self.total else 100
            text = (f"{percent:5.1f}%  {human_bytes(done)} of {human_bytes(self.total)}  "
                    f"{rate / 1e6:.0f} MB/s  ETA {eta:.0f} s")
        sys.stderr.write(f"\r{self.label}: {text}\x1b[K" if self.terminal
                         else f"{self.label}: {text}\n")
        sys.stderr.flush()
        self._shown = True

    def close(self) -> None:
        if self._shown and self.terminal:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()
