"""A one-line progress display (bytes, rate, ETA) on stderr, only on a terminal."""

from __future__ import annotations

import sys
import time

from .output import human_bytes

REFRESH_S = 0.25


class ProgressLine:
    """Callable with the number of bytes done so far; ``close`` ends the line."""

    def __init__(self, label: str, total: int, enabled: bool | None = None):
        self.label = label
        self.total = total
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.started = time.monotonic()
        self._shown_at = 0.0
        self._shown = False

    def __call__(self, done: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._shown_at < REFRESH_S and done < self.total:
            return
        self._shown_at = now
        elapsed = max(now - self.started, 1e-6)
        rate = done / elapsed
        eta = (self.total - done) / rate if rate > 0 else 0
        percent = 100 * done / self.total if self.total else 100
        sys.stderr.write(f"\r{self.label}: {percent:5.1f}%  {human_bytes(done)} of "
                         f"{human_bytes(self.total)}  {rate / 1e6:.0f} MB/s  ETA {eta:.0f} s\x1b[K")
        sys.stderr.flush()
        self._shown = True

    def close(self) -> None:
        if self._shown:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()
