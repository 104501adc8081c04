"""The snapshot records of a repository, through its backend: saved, read (cached on this
host, checked against what this host saw), listed, chosen by their summaries, deleted."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import PurePosixPath

from ...errors import AuthenticationFailed, CorruptData
from ..backends.protocol import Backend, StrayNotice
from ..host.record_cache import RecordCache
from ..host.seen_snapshots import SeenSnapshot, SnapshotMemory
from ..host.snapshot_catalogue import SnapshotCatalogue
from .crypto import NoEncryption, RecordCipher, RecordKind, associated_data
from .generations import Generations
from .snapshot_selection import newest_of_series, select_snapshot
from .snapshots import (RECORD_SUFFIX, SNAPSHOTS_PREFIX, SnapshotRecord, SnapshotSummary,
                        is_snapshot_id, record_name, snapshot_id_of)

log = logging.getLogger(__name__)


class SnapshotRecords:
    """Every readable snapshot of one listing, oldest first: held as ``headers`` (records
    without their block lists), and read again on each pass over them, one at a time, each
    decoded and checked as on the first read. So a command costs a header a snapshot and
    one record's block list, not every record's (~2 MB each for a 1 TB image)."""

    def __init__(self, store: "SnapshotStore", headers: list[SnapshotRecord]):
        self._store = store
        self.headers = headers

    def __len__(self) -> int:
        return len(self.headers)

    def __iter__(self) -> Iterator[SnapshotRecord]:
        for header in self.headers:
            try:
                yield self._store.load(header.id)
            except FileNotFoundError:
                continue  # deleted since the listing (a prune beside this reader)


class SnapshotStore:
    """The records under ``snapshots/``: one ``snapshots/<id>.json`` per snapshot. With a
    ``memory`` (this host's, of this repository), every listing is checked against it: a
    snapshot seen here and not removed from here must still be listed, and the generation
    counter (listed with the records) must not be below the one seen here (SnapshotGone)."""

    def __init__(self, backend: Backend, cipher: RecordCipher | None = None,
                 repository_id: str | None = None, cache: RecordCache | None = None,
                 memory: SnapshotMemory | None = None,
                 catalogue: SnapshotCatalogue | None = None):
        self.backend = backend
        self._cipher = cipher or NoEncryption()
        self._repository_id = repository_id
        self.generations = Generations(backend, self._cipher, repository_id or "")
        self._cache = cache  # an object store's records kept on this host (record_cache.py)
        self._memory = memory
        self._catalogue = catalogue  # each record's series and time (snapshot_catalogue.py)
        self._stray_notice = StrayNotice(backend, SNAPSHOTS_PREFIX, "snapshot records")

    def _associated(self, snapshot_id: str) -> bytes:
        return associated_data(RecordKind.SNAPSHOT_RECORD, self._repository_id,
                               snapshot_id.encode("ascii"))

    def exists(self, snapshot_id: str) -> bool:
        return self.backend.stat(record_name(snapshot_id)) is not None

    def save(self, record: SnapshotRecord) -> None:
        data = record.to_json()
        if self._cipher.encrypted:
            data = self._cipher.seal(data, self._associated(record.id))
        self.backend.put(record_name(record.id), data)
        generation = self.generations.add(f"snapshot {record.id} of {record.name} recorded")
        if self._memory is not None:
            self._memory.remember([record], generation)

    def committed(self, change: str) -> None:
        """Count ``change`` (removals, protection marks: committed by the caller) in the
        generation counter, and remember the new counter here."""
        generation = self.generations.add(change)
        if self._memory is not None:
            self._memory.remember([], generation)

    def load(self, snapshot_id: str) -> SnapshotRecord:
        return self._read(record_name(snapshot_id))

    def _read(self, name: str) -> SnapshotRecord:
        """The record named ``name``, from the cache if it holds a copy that decodes, else
        fetched (and then cached)."""
        where = f"{self.backend.location}/{name}"
        cached = self._cache.get(name) if self._cache else None
        if cached is not None:
            try:
                return self._decode(name, cached, f"{where} (cached in {self._cache.folder})")
            except CorruptData as error:
                log.warning("%s; it is read again from the repository", error)
                self._cache.forget(name)
        data = self.backend.get(name)
        record = self._decode(name, data, where)
        if self._cache:
            self._cache.put(name, data)
        return record

    def _decode(self, name: str, data: bytes, where: str) -> SnapshotRecord:
        """The record in ``data``, which must be the one its name promises."""
        if self._cipher.encrypted:
            # Bound to the id its name gives: a record renamed, swapped or copied from
            # another repository does not open.
            snapshot_id = snapshot_id_of(name)
            try:
                data = self._cipher.open_sealed(data, self._associated(snapshot_id))
            except AuthenticationFailed:
                raise AuthenticationFailed(
                    f"snapshot record {where} failed authentication: it was damaged, altered, "
                    f"renamed or brought in from another repository; run 'diskvault "
                    f"check'") from None
        record = SnapshotRecord.from_json(data, where)
        if name != record_name(record.id):
            raise CorruptData(f"snapshot record {where} is damaged: it holds snapshot "
                              f"{record.id!r}; run 'diskvault check'")
        return record

    def delete(self, snapshot_id: str) -> None:
        if self._memory is not None:
            self._memory.removing(snapshot_id)  # first: a kill between leaves no false alarm
        self.backend.delete(record_name(snapshot_id))
        if self._cache:
            self._cache.forget(record_name(snapshot_id))

    def scan(self, each: Callable[[SnapshotRecord], None] | None = None
             ) -> tuple[SnapshotRecords, list[tuple[PurePosixPath, CorruptData]]]:
        """Every readable snapshot, oldest first, and each damaged record's name with its
        error; SnapshotGone if a snapshot this host saw is not listed. Each record is read
        and checked whole, handed to ``each`` (what a command gathers from every record in
        this one read), then only its header kept."""
        headers, damaged = [], []
        generation = self._generation()
        names = self._listed()
        for name in names:
            try:
                record = self._read(name)
            except FileNotFoundError:
                continue  # deleted while we listed
            except CorruptData as error:
                damaged.append((PurePosixPath(name), error))
                continue
            if each is not None:
                each(record)
            headers.append(record.header())
        if self._memory is not None:
            self._memory.check_and_remember({snapshot_id_of(name) for name in names}, headers,
                                            self.exists, generation, self.generations.highest)
        headers.sort(key=lambda r: (r.time, r.id))
        return SnapshotRecords(self, headers), damaged

    def summaries(self) -> list[SnapshotSummary]:
        """Every readable snapshot's id, series and time, oldest first: from the catalogue
        where it knows the record, else read (a damaged one skipped with a warning, as by
        all()); SnapshotGone as scan()."""
        generation = self._generation()
        names = self._listed()
        known = self._catalogue.load() if self._catalogue else {}
        found: dict[str, SnapshotSummary] = {}
        for name in names:
            snapshot_id = snapshot_id_of(name)
            if snapshot_id in known:
                found[snapshot_id] = SnapshotSummary(snapshot_id, *known[snapshot_id])
                continue
            try:
                record = self._read(name)
            except FileNotFoundError:
                continue  # deleted while we listed
            except CorruptData as error:
                log.warning("%s", error)
                continue
            found[snapshot_id] = SnapshotSummary(record.id, record.name, record.time)
        if self._memory is not None:
            self._memory.check_and_remember({snapshot_id_of(name) for name in names},
                                            found.values(), self.exists, generation,
                                            self.generations.highest)
        if self._catalogue and found.keys() != known.keys():
            self._catalogue.save({s.id: (s.name, s.time) for s in found.values()})
        return sorted(found.values(), key=lambda s: (s.time, s.id))

    def chosen(self, pick: Callable[[Sequence], SnapshotSummary | SnapshotRecord | None]
               ) -> SnapshotRecord | None:
        """The record ``pick`` chooses among the snapshots (None if it chooses none), chosen
        on their summaries and then read in full. A record that is not the series and time
        its summary said rebuilds the catalogue from every record, read in full, among which
        ``pick`` chooses again: a wrong hint costs a full read, never a wrong snapshot."""
        summary = pick(self.summaries())
        if summary is None:
            return None
        record = self.load(summary.id)
        if (record.name, record.time) == (summary.name, summary.time):
            return record
        headers = self.all().headers
        if self._catalogue is not None:
            log.warning("the snapshot catalogue %s does not match record %s: it is rebuilt",
                        self._catalogue.path, record.id)
            self._catalogue.save({r.id: (r.name, r.time) for r in headers})
        chosen = pick(headers)
        return None if chosen is None else self.load(chosen.id)

    def latest_of_series(self, series: str) -> SnapshotRecord | None:
        """The series' newest snapshot, None if it has none: one record read where this
        host's catalogue knows the others (host/snapshot_catalogue.py)."""
        return self.chosen(lambda found: newest_of_series(found, series))

    def find(self, selector: str) -> SnapshotRecord:
        """The snapshot ``selector`` names (id, unique prefix, ``latest``, series)."""
        if is_snapshot_id(selector) and self.exists(selector):
            # A full id: read just that record, even if another one is damaged.
            return self.load(selector)
        return self.chosen(lambda found: select_snapshot(found, selector))

    def _generation(self) -> int | None:
        """The counter, listed before the records (a change counted after the listing is
        not missed by it); None, and not listed, without a memory to check it against."""
        return self.generations.highest() if self._memory is not None else None

    def _listed(self) -> list[str]:
        """The record names listed, the cached records of any other dropped."""
        names = self.record_names()
        if self._cache:
            self._cache.keep_only(names)
        return names

    def accept_missing(self) -> list[SeenSnapshot]:
        """Forget the snapshots this host saw that are gone, so that listings work again."""
        if self._memory is None:
            return []
        generation = self.generations.highest()
        return self._memory.accept_missing(set(self.ids()), generation)

    def ids(self) -> list[str]:
        """Ids of the complete records, without reading any."""
        return [snapshot_id_of(name) for name in self.record_names()]

    def record_names(self) -> list[str]:
        """The ``snapshots/<id>.json`` objects. Anything else there is not ours: ignored,
        with one warning per process (check lists it)."""
        names, strays = self._entries()
        self._stray_notice.warn(strays)
        return names

    def strays(self) -> list[str]:
        """Names that are not records (nor records being written). The caller reports
        them: scan() then stays quiet about them."""
        self._stray_notice.reported_elsewhere()
        return self._entries()[1]

    def _entries(self) -> tuple[list[str], list[str]]:
        names, strays = [], []
        for name in self.backend.list(SNAPSHOTS_PREFIX):
            snapshot_id = name[len(SNAPSHOTS_PREFIX):].removesuffix(RECORD_SUFFIX)
            if name == record_name(snapshot_id) and is_snapshot_id(snapshot_id):
                names.append(name)
            else:
                strays.append(name)
        return names, sorted(strays + self.backend.list_foreign(SNAPSHOTS_PREFIX))

    def all_intact(self, each: Callable[[SnapshotRecord], None] | None = None
                   ) -> SnapshotRecords:
        """Every snapshot, or CorruptData if any record is damaged: for compaction, which
        would otherwise take a damaged snapshot's data for unused and delete it. ``each``
        as for scan()."""
        records, damaged = self.scan(each)
        if damaged:
            raise CorruptData(f"{damaged[0][1]}; refusing to run while a snapshot record is "
                              f"damaged (its data would look unused): run 'diskvault check'")
        return records

    def all(self, each: Callable[[SnapshotRecord], None] | None = None) -> SnapshotRecords:
        """Every readable snapshot, oldest first. A damaged record is skipped with a
        warning, so that it does not make every other snapshot unreachable ('diskvault
        check' reports it). ``each`` as for scan()."""
        records, damaged = self.scan(each)
        for _, error in damaged:
            log.warning("%s", error)
        return records
