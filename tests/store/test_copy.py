"""copy between repositories: every pair of plaintext and encrypted, real repositories
(made where `repository_location` says), real images, bit-exact reads of the copies."""

from __future__ import annotations

import os
import shutil
from datetime import datetime, timedelta, timezone

import pytest

from diskvault.errors import BadInput, CorruptData, SnapshotNotFound
from diskvault.maintenance.check import check
from diskvault.store.copy import select_for_copy
from diskvault.store.format.config import PLAINTEXT_MODE, REPOKEY_MODE, ChunkerParams
from diskvault.store.format.packs import pack_name
from diskvault.store.format.snapshots import BackupStats, SnapshotRecord
from diskvault.store.read.image_map import image_spans
from diskvault.store.repository import Repository

from ..conftest import write_image
from .copy_support import repository_location  # noqa: F401  (a fixture)
from .copy_support import MODE_PAIR_IDS, MODE_PAIRS, file_sha, image_sha, new_repository

MiB = 1024 * 1024


@pytest.fixture
def images(tmp_path):
    """Two nights of one disk: the second shares most of the first's chunks."""
    first = write_image(tmp_path / "night1.img", 3 * MiB, "mixed", seed=1)
    second = tmp_path / "night2.img"
    data = bytearray(first.read_bytes())
    data[MiB: MiB + 200_000] = os.urandom(200_000)
    second.write_bytes(bytes(data))
    return first, second


def backed_up(repository: Repository, *sources, name: str = "vm1") -> list[SnapshotRecord]:
    return [repository.backup(source, name, ("nightly",)) for source in sources]


@pytest.mark.parametrize("modes", MODE_PAIRS, ids=MODE_PAIR_IDS)
def test_copied_snapshots_keep_id_series_time_tags_stats_and_read_back_bit_exact(
        repository_location, images, modes):
    source_mode, destination_mode = modes
    with new_repository(repository_location("source"), source_mode) as source, \
            new_repository(repository_location("destination"), destination_mode) as destination:
        originals = backed_up(source, *images)
        report = destination.copy_from(source)

        copies = destination.list_snapshots()
        assert [r.id for r in copies] == [r.id for r in originals]
        assert [r.id for r in report.copied] == [r.id for r in originals]
        for original, copy in zip(originals, copies):
            assert (copy.name, copy.time, copy.tags, copy.source, copy.size, copy.host,
                    copy.stats) == (original.name, original.time, original.tags,
                                    original.source, original.size, original.host,
                                    original.stats)
        for record, image in zip(originals, images):
            assert image_sha(destination, record.id) == file_sha(image)
        assert report.same_chunk_ids == (modes == (PLAINTEXT_MODE, PLAINTEXT_MODE))
        assert not check(destination.storage, read_data=True).damaged


@pytest.mark.parametrize("modes", MODE_PAIRS, ids=MODE_PAIR_IDS)
def test_copy_sends_only_chunks_the_destination_lacks(repository_location, images, modes):
    first, second = images
    with new_repository(repository_location("source"), modes[0]) as source, \
            new_repository(repository_location("destination"), modes[1]) as destination:
        night1, night2 = backed_up(source, first, second)
        initial = destination.copy_from(source, (night1.id,))
        nightly = destination.copy_from(source)

        assert [r.id for r in nightly.copied] == [night2.id]
        assert [r.id for r in nightly.skipped] == [night1.id]
        # The second night changed 200 KB: far fewer chunks go than on the first copy.
        assert 0 < nightly.chunks_sent < initial.chunks_sent / 3
        assert nightly.bytes_sent < 600_000
        assert nightly.chunks_skipped > 0

        again = destination.copy_from(source)
        assert (again.copied, again.chunks_sent, again.bytes_sent) == ([], 0, 0)
        assert [r.id for r in again.skipped] == [night1.id, night2.id]


def damage_records_of(repository: Repository, pack_ids: set[str]) -> None:
    """Overwrite the first half of each pack with zeros: any chunk read from there fails."""
    for pack_id in pack_ids:
        path = repository.root / pack_name(pack_id)
        size = path.stat().st_size
        with open(path, "r+b") as handle:
            handle.seek(8)
            handle.write(bytes(size // 2))


def test_copy_with_same_chunk_ids_never_reads_chunks_the_destination_has(
        repository_location, images):
    first, second = images
    with new_repository(repository_location("source"), PLAINTEXT_MODE) as source, \
            new_repository(repository_location("destination"), PLAINTEXT_MODE) as destination:
        night1, = backed_up(source, first)
        destination.copy_from(source)
        damage_records_of(source, set(source.storage.packs.list()))  # night 1's packs only
        night2, = backed_up(source, second)

        report = destination.copy_from(source)

        assert [r.id for r in report.copied] == [night2.id]
        assert image_sha(destination, night2.id) == file_sha(second)


@pytest.mark.parametrize("modes", [(PLAINTEXT_MODE, PLAINTEXT_MODE),
                                   (PLAINTEXT_MODE, REPOKEY_MODE)],
                         ids=["same-ids", "new-ids"])
def test_copy_of_damaged_source_fails_naming_the_snapshot_and_records_nothing(
        repository_location, images, modes):
    with new_repository(repository_location("source"), modes[0]) as source, \
            new_repository(repository_location("destination"), modes[1]) as destination:
        night1, = backed_up(source, images[0])
        damage_records_of(source, set(source.storage.packs.list()))

        with pytest.raises(CorruptData, match=f"snapshot {night1.short_id} .* byte offset"):
            destination.copy_from(source)

        assert destination.list_snapshots() == []
        assert not check(destination.storage).damaged


def test_copy_into_a_clone_of_the_source_folder_is_refused(tmp_path, images):
    with new_repository(tmp_path / "source", PLAINTEXT_MODE) as source:
        backed_up(source, images[0])
        shutil.copytree(source.root, tmp_path / "clone")
        with Repository.open(tmp_path / "clone") as clone:
            with pytest.raises(BadInput, match="same repository id"):
                clone.copy_from(source)


def test_init_with_chunker_params_of_another_repository_cuts_the_same_chunks(
        repository_location, images):
    with new_repository(repository_location("source"), PLAINTEXT_MODE,
                        chunk_size=8192) as source:
        params = Repository.chunker_params(source.root)
        with new_repository(repository_location("twin"), PLAINTEXT_MODE, chunk_size=None,
                            chunker=params) as twin:
            assert twin.config.chunker == source.config.chunker == ChunkerParams.from_average(8192)
            ours, = backed_up(source, images[0])
            theirs, = backed_up(twin, images[0])
            assert cuts(twin, theirs) == cuts(source, ours)
            assert len(cuts(source, ours)) > 100


def test_a_keyed_repository_with_copied_params_cuts_with_its_own_key_and_copy_cuts_anew(
        repository_location, images):
    """The sizes are copied, the key is not: an encrypted repository's cuts are its own,
    and a copy into it cuts the image as its own backup does, so the two deduplicate."""
    with new_repository(repository_location("source"), REPOKEY_MODE,
                        chunk_size=8192) as source:
        params = Repository.chunker_params(source.root)
        with new_repository(repository_location("twin"), REPOKEY_MODE, chunk_size=None,
                            chunker=params) as twin:
            ours, = backed_up(source, images[0])
            theirs, = backed_up(twin, images[0], name="own")
            assert cuts(twin, theirs) != cuts(source, ours)
            report = twin.copy_from(source)
            assert not report.same_cuts and not report.same_chunk_ids
            copied = twin.find_snapshot(ours.id)
            assert cuts(twin, copied) == cuts(twin, theirs)
            assert report.chunks_skipped == len(cuts(twin, theirs))  # all stored already
            assert image_sha(twin, ours.id) == file_sha(images[0])
            assert copied.holes_as_zeros


def test_nightly_copies_cut_anew_with_hints_as_the_destination_own_backups_cut(
        repository_location, images):
    """The second night is cut guided by the first night's copy, and cut as a full read."""
    with new_repository(repository_location("source"), PLAINTEXT_MODE) as source, \
            new_repository(repository_location("keyed"), REPOKEY_MODE) as keyed:
        night1, night2 = backed_up(source, *images)
        keyed.copy_from(source, (night1.id,))
        nightly = keyed.copy_from(source)
        assert [r.id for r in nightly.copied] == [night2.id] and not nightly.same_cuts
        own = keyed.backup(images[1], "own")  # a series of its own: no hints
        assert cuts(keyed, keyed.find_snapshot(night2.id)) == cuts(keyed, own)
        assert 0 < nightly.chunks_sent < len(cuts(keyed, own)) / 3
        assert image_sha(keyed, night2.id) == file_sha(images[1])


def cuts(repository: Repository, record: SnapshotRecord) -> list[tuple[int, int]]:
    return [(span.offset, span.length) for span in image_spans(repository.storage.chunks, record)
            if span.digest is not None]


# -- choosing what to copy: plain values ---------------------------------------------------
def record(snapshot_id: str, name: str, hours: int) -> SnapshotRecord:
    return SnapshotRecord(id=snapshot_id, name=name,
                          time=datetime(2026, 11, 1, tzinfo=timezone.utc) + timedelta(hours=hours),
                          source="/img", size=0, host="h", tags=[], stats=BackupStats())


RECORDS = [record("aaaa000000000001", "vm1", 1), record("bbbb000000000002", "vm2", 2),
           record("aaaa000000000003", "vm1", 3)]


def ids(records) -> list[str]:
    return [r.id for r in records]


def test_without_selectors_every_snapshot_the_destination_lacks_is_chosen():
    chosen, present = select_for_copy(RECORDS, {"bbbb000000000002"}, ())
    assert ids(chosen) == ["aaaa000000000001", "aaaa000000000003"]
    assert ids(present) == ["bbbb000000000002"]


def test_selectors_name_snapshots_by_id_prefix_series_and_latest_each_once():
    chosen, present = select_for_copy(RECORDS, set(), ("vm1", "latest", "bbbb", RECORDS[0].id))
    assert ids(chosen) == ["aaaa000000000001", "bbbb000000000002", "aaaa000000000003"]
    assert present == []


def test_a_selector_that_names_nothing_is_an_error():
    with pytest.raises(SnapshotNotFound):
        select_for_copy(RECORDS, set(), ("vm9",))
