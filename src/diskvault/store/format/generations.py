"""The repository's generation counter: ``generations/<n>``, one object per committed change
(a snapshot recorded, snapshots removed, a protection mark changed), put if absent and never
overwritten, so the highest n only grows. A host that remembers the highest n it saw
(host/seen_snapshots.py) notices a repository rolled back to an older copy even where no
series it knows lost a snapshot (a removal undone, say).

Adding needs no delete and no overwrite: a writer that finds its n taken (a backup beside it
took it) tries the next, so side-by-side backups and write-only clients both commit. Only
compact (exclusive) trims, keeping the highest few (docs/format.md, "Generations").
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

from ..backends.protocol import Backend
from .crypto import NoEncryption, RecordCipher, RecordKind, associated_data

GENERATIONS_PREFIX = "generations/"
# What compact leaves: the counter needs only the highest; the few below it say what
# changed last to someone looking at the folder.
KEPT_BY_COMPACT = 8
MAX_CHANGE_CHARS = 256


class Generations:
    """The objects under ``generations/``; names that are not a positive decimal number are
    not ours and are ignored."""

    def __init__(self, backend: Backend, cipher: RecordCipher | None = None,
                 repository_id: str = ""):
        self.backend = backend
        self._cipher = cipher or NoEncryption()
        self._repository_id = repository_id
        self._highest_listed = 0  # the last listing's highest: where the next add starts

    def numbers(self) -> list[int]:
        """Every generation's n, lowest first (one listing)."""
        found = sorted(n for n in (_number(name) for name in
                                   self.backend.list(GENERATIONS_PREFIX)) if n is not None)
        self._highest_listed = max(self._highest_listed, found[-1] if found else 0)
        return found

    def highest(self) -> int:
        """The counter: the highest n present, 0 for a repository without any."""
        numbers = self.numbers()
        return numbers[-1] if numbers else 0

    def add(self, change: str) -> int:
        """Put the next generation after a committed ``change`` (words, for people); its n.
        A taken n (another writer's) is followed by a fresh listing and the next one."""
        n = (self._highest_listed or self.highest()) + 1
        while not self.backend.put_if_absent(self._name(n), self._body(n, change)):
            n = max(n, self.highest()) + 1
        self._highest_listed = n
        return n

    def trim(self, keep: int = KEPT_BY_COMPACT) -> int:
        """Remove all but the highest ``keep`` (only under the writer lock: no one adds
        meanwhile, and the highest stays); how many were removed."""
        removed = self.numbers()[:-keep]
        for n in removed:
            self.backend.delete(self._name(n))
        return len(removed)

    def _body(self, n: int, change: str) -> bytes:
        body = json.dumps({"n": n, "change": change[:MAX_CHANGE_CHARS],
                           "time": datetime.now(timezone.utc).isoformat()}).encode()
        if not self._cipher.encrypted:
            return body
        return self._cipher.seal(body, associated_data(
            RecordKind.GENERATION, self._repository_id, self._name(n).encode()))

    @staticmethod
    def _name(n: int) -> str:
        return f"{GENERATIONS_PREFIX}{n}"


def _number(name: str) -> int | None:
    text = name[len(GENERATIONS_PREFIX):]
    if not text.isascii() or not text.isdigit() or text.startswith("0"):
        return None
    return int(text)
