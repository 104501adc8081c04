"""Hints hashed ahead: the previous snapshot's chunks that lie wholly inside a buffer just
read are hashed on other threads as soon as it is read, so that the chunker, reaching them
later, finds their digests waiting instead of stopping to hash them (a nightly's hashing
then overlaps its reading and cutting). Knows nothing of storage."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import Future

HashLater = Callable[[list], "Future[list[bytes]]"]  # hash_many started on another thread
HashMany = Callable[[list], list[bytes]]


class HintDigests:
    """Digests of hinted chunks, started per buffer (``start``), taken by offset
    (``digests``). Memory stays bounded: what the chunker has passed is forgotten."""

    def __init__(self, hash_later: HashLater):
        self._hash_later = hash_later
        # By offset, in offset order: (their buffer's digests, the hint's place among them).
        self._waiting: dict[int, tuple[Future, int]] = {}
        self.end = 0  # hints before here have been looked at

    def __len__(self) -> int:
        return len(self._waiting)

    def start(self, offset: int, buffer, hints: Iterable, position: int) -> None:
        """Start hashing the ``hints`` (in order, none before ``self.end``) wholly inside
        ``buffer``, whose bytes are the image's from ``offset``; the chunker is at
        ``position``."""
        view, end = memoryview(buffer), offset + len(buffer)
        inside = []
        for hint in hints:
            if hint.offset + hint.length > end:
                break
            inside.append(hint)
        self.end = end
        self.forget_before(position)
        if inside:
            digests = self._hash_later([view[h.offset - offset: h.offset - offset + h.length]
                                        for h in inside])
            for place, hint in enumerate(inside):
                self._waiting[hint.offset] = (digests, place)

    def digests(self, batch: list, views: list, hash_many: HashMany) -> list[bytes]:
        """The digests of the hinted chunks ``views`` (the bytes of ``batch``, in order):
        those hashed ahead, the rest now with ``hash_many``."""
        self.forget_before(batch[0].offset)
        ahead = [self._waiting.get(hint.offset) for hint in batch]
        now = iter(hash_many([view for view, found in zip(views, ahead) if found is None]))
        return [next(now) if found is None else found[0].result()[found[1]] for found in ahead]

    def forget_before(self, position: int) -> None:
        """Drop the digests of hints before ``position`` (taken, or passed over by a
        change)."""
        while self._waiting and next(iter(self._waiting)) < position:
            del self._waiting[next(iter(self._waiting))]
