"""Protection marks: an empty object ``protected/<snapshot id>`` per protected snapshot.

A mark, not a field of the record: protecting needs no rewrite of a record that is written
once and never changed (nor a new seal in an encrypted repository), and the set of
protected ids is one listing. The mark keeps prune and delete of this program away from a
snapshot; it is not a defence against someone who may delete objects. On a bucket with
Object Lock it is one: the snapshot's record is also put under a legal hold, which the
storage keeps until it is lifted (unprotect), whatever the retention says.
"""

from __future__ import annotations

from ..backends.protocol import Backend
from .snapshots import is_snapshot_id, record_name

PROTECTED_PREFIX = "protected/"


class ProtectionMarks:
    """The marks under ``protected/``; anything there that is not ``<16 hex digits>`` is
    not ours and is ignored."""

    def __init__(self, backend: Backend):
        self.backend = backend

    def ids(self) -> frozenset[str]:
        names = (name[len(PROTECTED_PREFIX):] for name in self.backend.list(PROTECTED_PREFIX))
        return frozenset(name for name in names if is_snapshot_id(name))

    def protect(self, snapshot_id: str) -> bool:
        """Mark the snapshot (and hold its record, with Object Lock); False if it already
        was marked."""
        if self.backend.object_lock is not None:
            self.backend.object_lock.hold(record_name(snapshot_id), True)
        return self.backend.put_if_absent(PROTECTED_PREFIX + snapshot_id, b"")

    def unprotect(self, snapshot_id: str) -> bool:
        """Remove the mark (and lift the hold, with Object Lock); False if there was none."""
        name = PROTECTED_PREFIX + snapshot_id
        if self.backend.stat(name) is None:
            return False
        self.backend.delete(name)
        if self.backend.object_lock is not None:
            self.backend.object_lock.hold(record_name(snapshot_id), False)
        return True
