"""Never lose the last copy: maintenance proves from what exists (packs listed and stat'ed),
not from what the index cache says, before it deletes a pack or forgets a snapshot."""

from __future__ import annotations

import json
import os
import shutil
import uuid

import pytest

from diskvault.errors import EXIT_FAILURE, CorruptData, IndexRebuildRefused
from diskvault.maintenance.check import check
from diskvault.maintenance.compact import _Executor, compact
from diskvault.maintenance.compact_plan import CompactionPlan, PackFate
from diskvault.maintenance.liveness import Liveness
from diskvault.maintenance.prune import delete_snapshots, prune
from diskvault.maintenance.retention import KeepPolicy
from diskvault.store.format.packs import read_footer
from diskvault.store.repository import Repository

from ..conftest import run_cli
from .support import assert_all_restore, nightly, small_pack_repository

REPAIR_FIRST = "check --repair"


@pytest.fixture
def small(tmp_path):
    repository = small_pack_repository(tmp_path / "repo")
    yield repository
    repository.close()


def compact_beside_a_reader(repository: Repository) -> tuple[set[str], set[str]]:
    """Delete the oldest snapshot and compact while a reader runs: the sources are doomed
    and wait, their live records copied into new packs. Returns (sources, new packs)."""
    before = set(repository.storage.packs.list())
    delete_snapshots(repository.storage, [repository.list_snapshots()[0].id])
    reader = repository.reader_lock()
    result = compact(repository.storage, threshold=0.0)
    reader.release()
    assert result.packs_written > 0 and result.packs_waiting > 0
    doomed = Liveness(repository.storage.index).doomed()
    return doomed, set(repository.storage.packs.list()) - before


def kept_snapshots(expected: dict[str, bytes], repository: Repository) -> dict[str, bytes]:
    ids = {r.id for r in repository.list_snapshots()}
    return {i: data for i, data in expected.items() if i in ids}


def test_compact_keeps_the_doomed_sources_when_their_copies_are_lost(small, tmp_path):
    """The copies a compaction made are lost: the index, which still points at them, is
    rebuilt from the packs that exist (the doomed sources, which hold the last copies), and
    compaction then works from that: every kept snapshot still restores bit-exact."""
    expected = nightly(small, tmp_path, 4)
    compact(small.storage, threshold=0.0)
    doomed, copies = compact_beside_a_reader(small)
    expected = kept_snapshots(expected, small)
    for pack_id in copies:  # a damaged disk, an older copy of the folder put back...
        small.storage.packs.delete(pack_id)
    compact(small.storage, threshold=0.0)
    assert_all_restore(small, expected)
    assert not check(small.storage, read_data=True).damaged


def test_restoring_an_older_copy_of_the_repository_loses_nothing_to_compact(small, tmp_path):
    expected = nightly(small, tmp_path, 4)
    compact(small.storage, threshold=0.0)
    root = small.root
    saved = tmp_path / "saved"
    shutil.copytree(root, saved, ignore=shutil.ignore_patterns("index"))
    compact_beside_a_reader(small)
    small.close()
    # The older copy comes back, but the index (a cache) remembers the later compaction.
    for part in ("packs", "snapshots"):
        shutil.rmtree(root / part)
        shutil.copytree(saved / part, root / part)
    # The index no longer matches the packs: it is rebuilt, and compaction proceeds from
    # what exists (before it could rebuild, compact refused here and asked for a repair).
    run_cli("compact", "-r", str(root), "--threshold", "0", check=True)
    with Repository.open(root) as restored:
        assert_all_restore(restored, expected)
        assert not check(restored.storage, read_data=True).damaged


def test_a_doomed_pack_that_is_again_the_indexed_copy_of_chunks_in_use_is_emptied_first(
        small, tmp_path):
    """The index points at a doomed source's records again (as a rebuild that met the
    source before its copies would): compaction copies those records out before the
    source goes, and every kept snapshot restores."""
    expected = nightly(small, tmp_path, 4)
    compact(small.storage, threshold=0.0)
    doomed, _ = compact_beside_a_reader(small)
    expected = kept_snapshots(expected, small)
    storage = small.storage
    liveness = Liveness(storage.index)
    holding = set()
    for pack_id in sorted(doomed):
        entries = read_footer(storage.packs, pack_id)
        used = [e for e, in_use in zip(entries, liveness.used([e.digest for e in entries]))
                if in_use]
        if used:  # the footer as it is: the pack's statistics stay as they were
            storage.index.add_relocated_pack(pack_id, entries, storage.packs.size(pack_id))
            holding.add(pack_id)
    assert holding
    result = compact(storage, threshold=0.0)
    assert result.chunks_copied > 0 and not result.packs_kept_as_last_copy
    assert not holding & set(storage.packs.list()) and not Liveness(storage.index).doomed()
    assert_all_restore(small, expected)
    assert not check(storage, read_data=True).damaged


@pytest.mark.parametrize("command", ["prune", "delete"])
def test_prune_and_delete_refuse_while_the_index_points_at_a_missing_pack(small, tmp_path,
                                                                          command):
    nightly(small, tmp_path, 3)
    compact(small.storage, threshold=0.0)
    newest = small.load_snapshot(small.list_snapshots()[-1].id)
    lost = small.storage.chunks.locate(newest.blocks[0].digest).pack_id
    small.storage.packs.delete(lost)
    snapshots = {r.id for r in small.list_snapshots()}
    with pytest.raises(CorruptData, match=REPAIR_FIRST):
        if command == "prune":
            prune(small.storage, KeepPolicy(last=1))
        else:
            delete_snapshots(small.storage, [small.list_snapshots()[0].id])
    selector = ["--keep-last", "1"] if command == "prune" else [small.list_snapshots()[0].id]
    refused = run_cli(command, "-r", str(small.root), *selector)
    assert refused.returncode == EXIT_FAILURE
    assert refused.stderr.decode().count("\n") == 1 and REPAIR_FIRST in refused.stderr.decode()
    assert {r.id for r in small.list_snapshots()} == snapshots


# -- on a real object store ------------------------------------------------------------
def test_an_older_copy_of_a_bucket_prefix_put_back_loses_nothing_to_compact(
        s3_environment, tmp_path, monkeypatch):
    """Save the prefix, delete a snapshot, compact beside a reader, put the saved copy back,
    compact again: the stale cache is rebuilt and every snapshot (the deleted one is back)
    reads back in full, also from a fresh cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache-a"))
    url = f"s3://{s3_environment.bucket}/last-copy-{uuid.uuid4().hex[:12]}"
    run_cli("init", "-r", url, "--encryption", "none", check=True)
    shared = os.urandom(1 << 20)
    images = {"a": shared + os.urandom(1 << 20), "b": shared + os.urandom(256 << 10)}
    for name, data in images.items():  # b's new chunks go to a pack of their own
        (tmp_path / name).write_bytes(data)
        run_cli("backup", "-r", url, str(tmp_path / name), "--name", name, check=True)
    with Repository.open(url) as repository:
        backend = repository.storage.backend
        saved = {name: backend.get(name) for part in ("packs/", "snapshots/")
                 for name in backend.list(part)}
        first = repository.list_snapshots("a")[0]
        delete_snapshots(repository.storage, [first.id])
        with repository.reader_lock():
            waiting = json.loads(run_cli("compact", "-r", url, "--threshold", "0", "--json",
                                         check=True).stdout)
        assert waiting["packs_written"] > 0 and waiting["packs_waiting"] > 0
        for part in ("packs/", "snapshots/"):  # the older copy comes back
            for name in backend.list(part):
                if name not in saved:
                    backend.delete(name)
        for name, data in saved.items():
            backend.put(name, data)
    # The cache knows packs the bucket no longer has: it is rebuilt from the bucket, and
    # compaction proceeds from what exists.
    run_cli("compact", "-r", url, "--threshold", "0", check=True)
    fresh = {"XDG_CACHE_HOME": str(tmp_path / "cache-b")}
    run_cli("check", "-r", url, "--read-data", env=fresh, check=True)
    for name, data in images.items():
        assert run_cli("cat", "-r", url, name, env=fresh, check=True).stdout == data


def test_maintenance_relying_on_the_counts_stops_rather_than_rebuild_the_index(small,
                                                                               tmp_path):
    """A rebuild empties the reference counts beside the index: compaction, which relies on
    them from its first count to its last deletion, makes a catch-up that would rebuild the
    index (a pack gone mid-run, as an outside deletion leaves it) stop it instead; the index
    and the counts stay as they were. Outside that, the same catch-up rebuilds."""
    nightly(small, tmp_path, 3)
    compact(small.storage)
    storage = small.storage
    accounted = list(Liveness.existing(storage.index).accounted_in_order())
    assert accounted
    gone = sorted(storage.packs.list())[0]
    storage.packs.delete(gone)  # a damaged disk, an outside deletion...
    with storage.keeping_index(), pytest.raises(IndexRebuildRefused, match="rebuilt"):
        storage.catch_up_index(writer=True)
    assert gone in storage.index.known_packs()
    assert list(Liveness.existing(storage.index).accounted_in_order()) == accounted
    assert storage.catch_up_index(writer=True).rebuilt_because
    assert gone not in storage.index.known_packs()


def test_a_pack_doomed_while_it_holds_the_indexed_copy_of_chunks_in_use_is_kept_once(
        small, tmp_path):
    """The deletion's own proof, apart from the plan: a pack the plan would delete outright
    though the index still names it as the copy of chunks in use (the plan was made from
    counts that no longer hold) is kept, named once though both rounds of deletion meet it,
    and the next compaction copies its records out before it goes."""
    expected = nightly(small, tmp_path, 2)
    compact(small.storage, threshold=0.0)  # counts reconciled, nothing left to do
    storage = small.storage
    liveness = Liveness(storage.index)
    holding = next(p for p in sorted(storage.packs.list())
                   if any(liveness.used([e.digest for e in read_footer(storage.packs, p)])))
    plan = CompactionPlan(0.0, delete=[PackFate(holding, storage.packs.size(holding))])
    with storage.writer_lock("compact") as lock, storage.keeping_index():
        result = _Executor(storage, liveness, plan, lock.ensure_held).run()
    assert result.packs_kept_as_last_copy == [holding]
    assert holding in storage.packs.list() and holding in liveness.doomed()
    assert_all_restore(small, expected)
    again = compact(storage, threshold=0.0)
    assert again.chunks_copied > 0 and not again.packs_kept_as_last_copy
    assert holding not in storage.packs.list() and not Liveness(storage.index).doomed()
    assert_all_restore(small, expected)
    assert not check(storage, read_data=True).damaged
