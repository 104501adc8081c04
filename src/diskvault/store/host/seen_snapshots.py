"""What this host has seen of a repository: the newest snapshot of each series, the
snapshots it removed itself, and the highest generation (format/generations.py). A
repository that no longer holds a snapshot seen here, and not removed from here, or whose
generation counter is below the one seen here, was rolled back to an older copy or
withholds records: that is reported (SnapshotGone), not used or built upon.

One JSON file per repository and place in ``$XDG_STATE_HOME/diskvault/seen/``, replaced
atomically under an flock of that folder, so two commands on this host never lose each
other's updates. Best effort where the state folder cannot be written: the check is then
off, never a reason to refuse a read (docs/format.md, "This host's memory").
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path

from ...errors import SnapshotGone
from .durable import (FOLDER_FLAGS, PRIVATE_FOLDER_MODE, atomic_replacement,
                      make_private_folder, write_all)
from .user_folders import place_key, user_state_folder

log = logging.getLogger(__name__)

MEMORY_VERSION = 1
# Ids removed here that are remembered (so a listing made just before the removal, saved
# just after it, is not taken for the truth); the oldest fall off beyond this.
REMOVED_REMEMBERED = 4096


@dataclass(frozen=True)
class SeenSnapshot:
    id: str
    series: str
    time: datetime  # the snapshot's own time: which of two is the newer
    seen_on: date   # when this host first saw it, for the report

    def gone_message(self, location: str) -> str:
        return (f"snapshot {self.id[:8]} of {self.series}, seen here on {self.seen_on}, is "
                f"gone from {location}: the repository was rolled back or a record is "
                f"withheld; if it was deleted from another host or an older copy was put "
                f"back on purpose, run 'diskvault list -r {location} --accept-missing'")


@dataclass
class Memory:
    newest: dict[str, SeenSnapshot] = field(default_factory=dict)  # by series
    removed: list[str] = field(default_factory=list)  # oldest first
    generation: int = 0  # the highest generation seen here (0: none yet)
    generation_seen_on: date | None = None


def rolled_back_message(memory: Memory, generation: int, location: str) -> str:
    return (f"the generation counter of {location} is {generation}, below the "
            f"{memory.generation} seen here on {memory.generation_seen_on}: the repository was "
            f"rolled back or records are withheld; if an older copy was put back on purpose, "
            f"run 'diskvault list -r {location} --accept-missing'")


def with_generation(memory: Memory, generation: int | None, today: date) -> None:
    """Remember ``generation`` in ``memory`` where it is higher than the one remembered."""
    if generation is not None and generation > memory.generation:
        memory.generation, memory.generation_seen_on = generation, today


def gone_snapshots(memory: Memory, present_ids: set[str]) -> list[SeenSnapshot]:
    """The remembered snapshots the repository no longer lists, by series name."""
    return [seen for series, seen in sorted(memory.newest.items())
            if seen.id not in present_ids and seen.id not in memory.removed]


def with_newest(memory: Memory, records: Iterable, today: date) -> Memory:
    """``memory`` with each series' newest record (by time, then id) where it is newer than
    the one remembered. Records removed here are never remembered again."""
    newest = dict(memory.newest)
    removed = set(memory.removed)
    for record in records:
        known = newest.get(record.name)
        if record.id in removed or (known is not None and
                                    (record.time, record.id) <= (known.time, known.id)):
            continue
        newest[record.name] = SeenSnapshot(record.id, record.name, record.time, today)
    return Memory(newest, memory.removed)


class SnapshotMemory:
    """This host's memory of the repository ``repository_id`` read at ``place``."""

    def __init__(self, repository_id: str, place: str, location: str):
        self.path = user_state_folder() / "seen" / f"{repository_id}-{place_key(place)}.json"
        self.location = location

    def check_and_remember(self, present_ids: set[str], records: Iterable,
                           exists: Callable[[str], bool] = lambda snapshot_id: False,
                           generation: int | None = None,
                           generation_now: Callable[[], int] = lambda: 0) -> None:
        """SnapshotGone if a snapshot seen here is not in ``present_ids`` and ``exists`` (one
        look at the repository now) does not find it either -- a backup beside this command
        may have recorded it, and been remembered, after the listing -- or if
        ``generation`` (the counter listed) and ``generation_now`` (listed again, for the
        same reason) are below the one seen here; else remember the newest of ``records``
        in each series, and the counter."""
        with self._changing() as memory:
            gone = [seen for seen in gone_snapshots(memory, present_ids)
                    if not exists(seen.id)]
            if gone:
                raise SnapshotGone(gone[0].gone_message(self.location))
            if generation is not None and generation < memory.generation:
                generation = max(generation, generation_now())
                if generation < memory.generation:
                    raise SnapshotGone(rolled_back_message(memory, generation,
                                                           self.location))
            memory.newest = with_newest(memory, records, _today()).newest
            with_generation(memory, generation, _today())

    def remember(self, records: Iterable, generation: int | None = None) -> None:
        """Remember ``records`` (just written here) where newer than what is remembered,
        and ``generation`` (just added here) where higher."""
        with self._changing() as memory:
            memory.newest = with_newest(memory, records, _today()).newest
            with_generation(memory, generation, _today())

    def removing(self, snapshot_id: str) -> None:
        """Note, before it is removed, that this host removes the snapshot."""
        with self._changing() as memory:
            memory.newest = {series: seen for series, seen in memory.newest.items()
                             if seen.id != snapshot_id}
            memory.removed = [*memory.removed, snapshot_id][-REMOVED_REMEMBERED:]

    def accept_missing(self, present_ids: set[str], generation: int) -> list[SeenSnapshot]:
        """Forget the snapshots seen here that are gone (a restore of an older copy or a
        deletion from another host, on purpose), and take ``generation`` as the counter
        even if lower; the forgotten snapshots are returned."""
        with self._changing() as memory:
            gone = gone_snapshots(memory, present_ids)
            memory.newest = {series: seen for series, seen in memory.newest.items()
                             if seen not in gone}
            if generation != memory.generation:
                memory.generation, memory.generation_seen_on = generation, _today()
        return gone

    @contextmanager
    def _changing(self) -> Iterator[Memory]:
        """The memory, saved afterwards if it changed, under an flock of its folder; an
        empty one, not saved, where the state folder cannot be used."""
        try:
            self.path.parent.parent.mkdir(mode=PRIVATE_FOLDER_MODE, parents=True,
                                          exist_ok=True)
            make_private_folder(self.path.parent)
            folder_fd = os.open(self.path.parent, FOLDER_FLAGS)
        except OSError as error:
            log.debug("no memory of seen snapshots at %s: %s", self.path, error)
            yield Memory()
            return
        try:
            fcntl.flock(folder_fd, fcntl.LOCK_EX)
            memory = _load(self.path)
            before = _encode(memory)
            yield memory
            if _encode(memory) != before:
                _save(self.path, memory)
        finally:
            os.close(folder_fd)  # and so the flock


def _save(path: Path, memory: Memory) -> None:
    try:
        with atomic_replacement(path) as fd:
            write_all(fd, _encode(memory))
    except OSError as error:
        log.debug("the memory of seen snapshots %s was not saved: %s", path, error)


def _today() -> date:
    return datetime.now(timezone.utc).date()


def _load(path: Path) -> Memory:
    try:
        body = json.loads(path.read_bytes())
        if body.get("version") != MEMORY_VERSION:
            raise ValueError(f"version {body.get('version')}")
        return Memory(
            {series: SeenSnapshot(seen["id"], series, datetime.fromisoformat(seen["time"]),
                                  date.fromisoformat(seen["seen_on"]))
             for series, seen in body["newest"].items()},
            [str(snapshot_id) for snapshot_id in body["removed"]],
            int(body.get("generation", 0)),
            date.fromisoformat(body["generation_seen_on"]) if body.get("generation") else None)
    except FileNotFoundError:
        return Memory()
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        log.warning("the memory of seen snapshots %s cannot be read (%s): it starts anew",
                    path, error)
        return Memory()


def _encode(memory: Memory) -> bytes:
    body = {
        "version": MEMORY_VERSION,
        "newest": {series: {"id": seen.id, "time": seen.time.isoformat(),
                            "seen_on": seen.seen_on.isoformat()}
                   for series, seen in sorted(memory.newest.items())},
        "removed": memory.removed}
    if memory.generation:  # absent until one is seen: a memory written before reads alike
        body["generation"] = memory.generation
        body["generation_seen_on"] = memory.generation_seen_on.isoformat()
    return json.dumps(body, separators=(",", ":")).encode()
