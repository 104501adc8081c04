"""What this host remembers of each run of backup, prune and check: when, how it ended, its
one error line and, for a backup, its figures. Kept in this user's state folder
(``$XDG_STATE_HOME/diskvault/runs/<repository id>/``), one small file per series plus one for
the whole repository, so that a run that failed before it could write anything to the
repository (an unreachable bucket, a wrong passphrase, a full disk) is still found by a later
``status``. A repository that could not even be opened has no id known: its runs are kept
under the id last seen at its location, or, never opened from here, under a key made from
the location, read alongside.

Each file holds the newest ``KEPT_RUNS`` runs, rewritten whole and atomically under a lock
on its folder, so two runs that end at once both land."""

from __future__ import annotations

import fcntl
import hashlib
import json
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from urllib.parse import quote

from ..store.host.durable import (PRIVATE_FOLDER_MODE, atomic_replacement, make_private_folder,
                                  open_folder, write_all)
from ..store.host.user_folders import user_state_folder

KEPT_RUNS = 100  # per series: about seven weeks of nightly backups with their prunes
ID_FILE = "repository-id"  # in a location's folder: the id last seen there
REPOSITORY_FILE = "repository.json"  # runs not about one series: check, prune of all
SERIES_PREFIX = "series-"


@dataclass(frozen=True)
class Run:
    """One finished run. ``series`` is None for a run over the whole repository;
    ``exit_code`` 0 is success, and ``error`` is then empty. ``figures`` are a backup's
    byte counts (bytes_read, new_bytes, stored_bytes, size) and snapshot id, or a check's
    read_data flag."""

    command: str
    series: str | None
    started: datetime
    finished: datetime
    exit_code: int
    error: str = ""
    figures: dict = field(default_factory=dict)

    @property
    def succeeded(self) -> bool:
        return self.exit_code == 0

    @property
    def duration_s(self) -> float:
        return (self.finished - self.started).total_seconds()

    def to_json(self) -> dict:
        return {**asdict(self), "started": self.started.isoformat(),
                "finished": self.finished.isoformat()}

    @classmethod
    def from_json(cls, body: dict) -> "Run":
        return cls(command=str(body["command"]), series=body["series"],
                   started=datetime.fromisoformat(body["started"]),
                   finished=datetime.fromisoformat(body["finished"]),
                   exit_code=int(body["exit_code"]), error=str(body.get("error", "")),
                   figures=dict(body.get("figures", {})))


def runs_folder() -> Path:
    return user_state_folder() / "runs"


def location_key(location: str) -> str:
    """The folder name for runs of a repository whose id could not be read."""
    return "location-" + hashlib.sha256(location.encode()).hexdigest()[:32]


def last_seen_id(location: str) -> str | None:
    """The id of the repository last opened at ``location`` from this host, if any."""
    try:
        return (runs_folder() / location_key(location) / ID_FILE).read_text().strip() or None
    except OSError:
        return None


def repository_keys(location: str, repository_id: str | None) -> tuple[str, ...]:
    """The keys this repository's runs are filed under, the one to file a new run under
    first: its id (given, or last seen at ``location``), then its location's key."""
    repository_id = repository_id or last_seen_id(location)
    by_location = location_key(location)
    return (repository_id, by_location) if repository_id else (by_location,)


def note_repository_id(location: str, repository_id: str) -> None:
    """Remember which repository ``location`` held, for runs that cannot open it."""
    folder = _private_folder(location_key(location))
    path = folder / ID_FILE
    try:
        if path.read_text() == repository_id:
            return
    except OSError:
        pass
    with atomic_replacement(path) as fd:
        write_all(fd, repository_id.encode())


def _private_folder(key: str) -> Path:
    folder = runs_folder() / key
    user_state_folder().mkdir(mode=PRIVATE_FOLDER_MODE, parents=True, exist_ok=True)
    make_private_folder(folder.parent)
    make_private_folder(folder)
    return folder


def _file_name(series: str | None) -> str:
    # surrogatepass: a series named after a non-UTF-8 file name still has one file of its own
    if series is None:
        return REPOSITORY_FILE
    return f"{SERIES_PREFIX}{quote(series.encode('utf-8', 'surrogatepass'), safe='')}.json"


def _read(path: Path) -> list[Run]:
    """The runs in one file, oldest first; a damaged or foreign file counts as empty (it is
    only a memory of this host, and the next run rewrites it)."""
    try:
        return [Run.from_json(body) for body in json.loads(path.read_text())]
    except (OSError, ValueError, KeyError, TypeError):
        return []


def record_run(key: str, run: Run) -> None:
    """Add ``run`` to what is remembered of repository ``key`` (its id or location key)."""
    folder = _private_folder(key)
    path = folder / _file_name(run.series)
    with open_folder(folder) as folder_fd:
        fcntl.flock(folder_fd, fcntl.LOCK_EX)  # released when the descriptor closes
        runs = (_read(path) + [run])[-KEPT_RUNS:]
        with atomic_replacement(path) as fd:
            write_all(fd, json.dumps([r.to_json() for r in runs], indent=1).encode())


def load_runs(*keys: str) -> list[Run]:
    """Every remembered run of the repository known under any of ``keys``, oldest first."""
    runs: list[Run] = []
    for key in keys:
        folder = runs_folder() / key
        if not folder.is_dir():
            continue
        for path in folder.glob("*.json"):
            runs += _read(path)
    return sorted(runs, key=lambda run: run.finished)
