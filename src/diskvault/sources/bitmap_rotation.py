"""Rotating a QEMU dirty bitmap so that no change is ever lost (docs/vm-sources.md).

Bitmap B counts the writes since the instant of the base snapshot's view. The QMP
``transaction`` that makes a backup's point-in-time view (fleecing.py) also adds B's
successor (``B.diskvault-next``, enabled, as persistent as B) and disables B: B then holds
exactly the changes between the two instants (QEMU exports only a disabled bitmap
read-only) and the successor every write from the view's instant on.
Once the snapshot record is written and the export is gone (an exported bitmap is busy),
``commit`` makes the successor B again: clear B, merge the successor in, enable B, remove
the successor, in one transaction. A backup that fails ``abandon``s instead: the successor
is merged back into B, which is enabled again, so B counts from the old base as before. A
backup killed in between leaves both; the next run merges them back first (``recover``).
So B always covers the time since the last snapshot recorded with it.

Which snapshot that is, QEMU keeps too: ``commit`` also replaces an empty, disabled marker
bitmap named ``B.diskvault-since-<snapshot id>`` (the largest granularity QEMU takes: a few
bits; as persistent as B). So a next backup knows the snapshot B counts from
(``counts_from``), and does not build on an older one when that snapshot was deleted."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from ..errors import DiskvaultError, SourceError

log = logging.getLogger(__name__)

SUCCESSOR_SUFFIX = ".diskvault-next"
MARKER_INFIX = ".diskvault-since-"
MARKER_GRANULARITY = 1 << 31  # QEMU's largest: the marker holds no changes, only its name


@dataclass(frozen=True)
class BitmapRotation:
    """Bitmap ``bitmap`` on block node ``node`` of the QEMU behind ``monitor`` (anything
    with ``execute(command, **arguments)`` that returns QMP's answer or raises: qmp.Monitor)."""
    monitor: object
    node: str
    bitmap: str
    persistent: bool

    @property
    def successor(self) -> str:
        return self.bitmap + SUCCESSOR_SUFFIX

    @classmethod
    def find(cls, monitor, bitmap: str, node: str | None = None) -> "BitmapRotation":
        """The rotation of the one bitmap named ``bitmap`` (on ``node``, if given);
        SourceError if there is none or more than one."""
        found = [(entry["node-name"], bitmap_entry)
                 for entry in monitor.execute("query-named-block-nodes", flat=True)
                 for bitmap_entry in entry.get("dirty-bitmaps", [])
                 if bitmap_entry["name"] == bitmap and node in (None, entry["node-name"])]
        where = f" on node {node}" if node else ""
        if not found:
            raise SourceError(f"QEMU has no dirty bitmap {bitmap}{where}: add it "
                              f"(block-dirty-bitmap-add, persistent for a qcow2; or qemu-img "
                              f"bitmap --add --enable) and back up once in full")
        if len({name for name, _ in found}) > 1:
            raise SourceError(f"QEMU has a dirty bitmap {bitmap} on several nodes "
                              f"({', '.join(name for name, _ in found)}): name the node")
        name, entry = found[0]
        return cls(monitor, name, bitmap, bool(entry.get("persistent")))

    def counts_from(self) -> str | None:
        """The id of the snapshot B counts the changes since, if one marker says so."""
        marked = self._markers()
        return marked[0][len(self.bitmap + MARKER_INFIX):] if len(marked) == 1 else None

    def recover(self) -> bool:
        """Merge back what a killed run left (its successor); whether there was any."""
        if not self._exists(self.successor):
            return False
        self.abandon()
        return True

    def start_actions(self) -> list[dict]:
        """The ``transaction`` actions that start the rotation at the instant of a view."""
        return [self._action("block-dirty-bitmap-add", name=self.successor,
                             persistent=self.persistent),
                self._action("block-dirty-bitmap-disable", name=self.bitmap)]

    @contextmanager
    def settled(self) -> Iterator[Callable[[str], None]]:
        """Around a read whose view's transaction carried ``start_actions``: yields what to
        call with the id of the snapshot once it is recorded. When the block ends (after
        the export: an exported bitmap is busy), B moves on to that snapshot (``commit``);
        with none recorded, what was started is merged back (``recover``). When the block
        failed, a failure here is only logged: the error the user reads is the block's,
        and the next run merges back what is left."""
        recorded: list[str] = []
        try:
            yield recorded.append
        except BaseException:
            try:
                self._settle(recorded)
            except DiskvaultError as error:
                log.warning("%s (the next backup with dirty bitmap %s merges it back)",
                            error, self.bitmap)
            raise
        self._settle(recorded)

    def _settle(self, recorded: list[str]) -> None:
        if recorded:
            self.commit(recorded[-1])
        else:
            self.recover()

    def commit(self, snapshot_id: str) -> None:
        """B counts from the instant the read of ``snapshot_id`` (recorded) began."""
        self.monitor.execute("transaction", actions=[
            self._action("block-dirty-bitmap-clear", name=self.bitmap),
            *self._merge_back(),
            *(self._action("block-dirty-bitmap-remove", name=name) for name in self._markers()),
            self._action("block-dirty-bitmap-add",
                         name=self.bitmap + MARKER_INFIX + snapshot_id,
                         persistent=self.persistent, disabled=True,
                         granularity=MARKER_GRANULARITY)])

    def abandon(self) -> None:
        """B counts from the old base again, every write since included."""
        self.monitor.execute("transaction", actions=self._merge_back())

    def _merge_back(self) -> list[dict]:
        return [self._action("block-dirty-bitmap-merge", target=self.bitmap,
                             bitmaps=[self.successor]),
                self._action("block-dirty-bitmap-enable", name=self.bitmap),
                self._action("block-dirty-bitmap-remove", name=self.successor)]

    def _action(self, kind: str, **data) -> dict:
        return {"type": kind, "data": {"node": self.node, **data}}

    def _exists(self, name: str) -> bool:
        return name in self._names()

    def _markers(self) -> list[str]:
        return [name for name in self._names() if name.startswith(self.bitmap + MARKER_INFIX)]

    def _names(self) -> list[str]:
        """The names of the bitmaps on the node."""
        return [bitmap["name"]
                for entry in self.monitor.execute("query-named-block-nodes", flat=True)
                if entry["node-name"] == self.node
                for bitmap in entry.get("dirty-bitmaps", [])]
