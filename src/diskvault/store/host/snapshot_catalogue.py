"""Which series and time each snapshot record holds, kept on this host beside what it caches
of the repository, so that finding a series' newest snapshot (backup's hints, `restore
latest`, a series name) reads one record instead of every one. A record never changes once
written (a new snapshot gets a new random id), so an entry never goes stale; those of records
no longer listed are dropped. A hint only: the record it leads to is read in full and must
agree (format/snapshots.py), else the catalogue is dropped and every record read.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import datetime

from .durable import atomic_replacement, write_all
from .user_folders import cached_index_folder, make_cached_index_folder

log = logging.getLogger(__name__)

CATALOGUE_VERSION = 1
CATALOGUE_FILE = "catalogue.json"

Entries = dict[str, tuple[str, datetime]]  # snapshot id -> (series, time)


class SnapshotCatalogue:
    """``<cache>/diskvault/<repository id>/<place key>/catalogue.json``, 0600, replaced
    atomically. Best effort: a catalogue that cannot be read or written costs reads of
    records, never a command."""

    def __init__(self, repository_id: str, place: str):
        self._repository_id = repository_id
        self._place = place
        self.path = cached_index_folder(repository_id, place).parent / CATALOGUE_FILE

    def load(self) -> Entries:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
            with open(fd, "rb") as catalogue:
                body = json.loads(catalogue.read())
            if body.get("version") != CATALOGUE_VERSION:
                raise ValueError(f"version {body.get('version')}")
            return {str(snapshot_id): (str(series), datetime.fromisoformat(time))
                    for snapshot_id, (series, time) in body["snapshots"].items()}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
            log.debug("snapshot catalogue %s not read (%s): it starts anew", self.path, error)
            return {}

    def save(self, entries: Entries) -> None:
        body = {"version": CATALOGUE_VERSION,
                "snapshots": {snapshot_id: [series, time.isoformat()]
                              for snapshot_id, (series, time) in sorted(entries.items())}}
        try:
            make_cached_index_folder(self._repository_id, self._place)
            with atomic_replacement(self.path) as fd:
                write_all(fd, json.dumps(body, separators=(",", ":")).encode())
        except OSError as error:
            log.debug("snapshot catalogue %s not written: %s", self.path, error)
