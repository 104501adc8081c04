"""The one least-recently-used cache, for every bounded cache in the package (image
readers' blocks and chunks, filesystem listings, the mount's open snapshots, ...).

Not thread-safe: callers that share one hold their own lock around it, usually together
with other state of theirs.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class LRU(Generic[K, V]):
    """At most ``capacity`` in total weight (each entry weighs 1 unless ``put`` says
    otherwise); the least recently used entries go first, through ``on_evict`` if given.
    The newest entry always stays, even if it alone outweighs the capacity, so that a value
    larger than the cache is still shared by the callers that asked for it at once."""

    def __init__(self, capacity: int, on_evict: Callable[[K, V], None] | None = None):
        self.capacity = capacity
        self.on_evict = on_evict
        self._entries: OrderedDict[K, tuple[V, int]] = OrderedDict()
        self._used = 0

    def get(self, key: K, default: V | None = None) -> V | None:
        """The value under ``key``, now the most recently used, or ``default``."""
        found = self._entries.get(key)
        if found is None:
            return default
        self._entries.move_to_end(key)
        return found[0]

    def put(self, key: K, value: V, weight: int = 1) -> None:
        """Keep ``value`` as the most recently used, then evict down to the capacity."""
        self.pop(key)
        self._entries[key] = (value, weight)
        self._used += weight
        while self._used > self.capacity and len(self._entries) > 1:
            old_key, (old_value, old_weight) = self._entries.popitem(last=False)
            self._used -= old_weight
            if self.on_evict is not None:
                self.on_evict(old_key, old_value)

    def pop(self, key: K, default: V | None = None) -> V | None:
        """Remove ``key`` without calling ``on_evict``: the caller takes the value over."""
        found = self._entries.pop(key, None)
        if found is None:
            return default
        self._used -= found[1]
        return found[0]

    def values(self) -> Iterator[V]:
        """The values, least recently used first (a snapshot: the cache may change after)."""
        return iter([value for value, _ in self._entries.values()])

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)
