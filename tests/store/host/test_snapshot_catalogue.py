"""Finding a series' newest snapshot reads one record once this host's catalogue knows the
others, and a catalogue that lies costs a full read, never a wrong snapshot."""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path

from diskvault.store.format.snapshots import record_name
from diskvault.store.host.snapshot_catalogue import SnapshotCatalogue
from diskvault.store.repository import Repository

KiB = 1024


def back_up_nights(repo: Repository, make_image, series: str, nights: int) -> list[str]:
    return [repo.backup(make_image(64 * KiB, seed=night, name=f"{series}{night}.img"),
                        name=series).id for night in range(nights)]


def damage_record(repo: Repository, snapshot_id: str) -> None:
    path = Path(repo.root, record_name(snapshot_id))
    path.write_bytes(path.read_bytes().replace(b'"host":"', b'"host":"X'))


def catalogue_of(repo: Repository) -> SnapshotCatalogue:
    return SnapshotCatalogue(repo.config.repository_id, repo.storage.backend.place)


def test_a_series_newest_is_found_without_reading_any_other_record(repo, make_image, caplog):
    older = back_up_nights(repo, make_image, "vm1", 3)
    other = back_up_nights(repo, make_image, "vm2", 1)
    assert repo.find_snapshot("latest").id == other[-1]  # every record read once
    for snapshot_id in older[:-1] + other:
        damage_record(repo, snapshot_id)  # read again, each would be reported
    with caplog.at_level(logging.WARNING):
        assert repo.find_snapshot("vm1").id == older[-1]
        assert repo.find_snapshot(older[-1][:8]).id == older[-1]
    assert caplog.records == []


def test_a_catalogue_that_lies_costs_a_full_read_not_a_wrong_snapshot(repo, make_image,
                                                                      caplog):
    nights = back_up_nights(repo, make_image, "vm1", 3)
    assert repo.find_snapshot("vm1").id == nights[-1]
    catalogue = catalogue_of(repo)
    entries = catalogue.load()
    series, time = entries[nights[0]]
    entries[nights[0]] = (series, time + timedelta(days=365))  # the oldest claims to be newest
    catalogue.save(entries)
    with caplog.at_level(logging.WARNING):
        assert repo.find_snapshot("vm1").id == nights[-1]
    assert "does not match record" in caplog.text
    assert catalogue.load()[nights[0]] == (series, time)


def test_the_catalogue_is_private_and_forgets_deleted_snapshots(repo, make_image):
    nights = back_up_nights(repo, make_image, "vm1", 2)
    repo.find_snapshot("latest")
    catalogue = catalogue_of(repo)
    assert set(catalogue.load()) == set(nights)
    assert catalogue.path.stat().st_mode & 0o777 == 0o600
    assert catalogue.path.parent.stat().st_mode & 0o777 == 0o700
    Path(repo.root, record_name(nights[0])).unlink()
    repo.accept_missing_snapshots()
    assert repo.find_snapshot("latest").id == nights[-1]
    assert set(catalogue.load()) == {nights[-1]}
