"""Open descriptors of files read in many ranges (packs), kept in a small LRU. A descriptor
evicted or forgotten while another thread reads through it is closed by its last user, so a
read never lands on a number reused for another file."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from ...lru import LRU


class OpenFiles:
    """Descriptors by object name, at most ``capacity`` of them open at once."""

    def __init__(self, capacity: int):
        self._fds: LRU[str, _CachedFd] = LRU(capacity, lambda _, cached: cached.retire())
        self._lock = threading.Lock()

    @contextmanager
    def using(self, name: str, open_fd: Callable[[], int]) -> Iterator[int]:
        """The descriptor of ``name``, opened by ``open_fd`` if none is cached."""
        with self._lock:
            cached = self._fds.get(name)
            if cached is None:
                cached = _CachedFd(open_fd())
                self._fds.put(name, cached)
            cached.users += 1
        try:
            yield cached.fd
        finally:
            with self._lock:
                cached.users -= 1
                cached.close_if_unused()

    def forget(self, name: str) -> None:
        """Drop a cached descriptor, so that a replaced or deleted object is reopened."""
        with self._lock:
            cached = self._fds.pop(name)
            if cached is not None:
                cached.retire()

    def close(self) -> None:
        with self._lock:
            for cached in self._fds.values():
                cached.retire()
            self._fds = LRU(self._fds.capacity, self._fds.on_evict)


class _CachedFd:
    """A cached descriptor and how many reads use it right now."""

    def __init__(self, fd: int):
        self.fd = fd
        self.users = 0
        self.retired = False

    def retire(self) -> None:
        """Out of the cache: close now, or when the last read through it ends."""
        self.retired = True
        self.close_if_unused()

    def close_if_unused(self) -> None:
        if self.retired and self.users == 0 and self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
