"""Compaction: space comes back, cost follows the packs that lost data, readers keep
their data, and every remaining snapshot restores bit-exact after every step."""

from __future__ import annotations

import json
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from diskvault.errors import BadInput, CorruptData
from diskvault.maintenance.check import check
from diskvault.maintenance.compact import compact, plan_only
from diskvault.maintenance.liveness import Liveness
from diskvault.maintenance.prune import delete_snapshots, prune
from diskvault.maintenance.retention import KeepPolicy
from diskvault.store.backends.local import LocalBackend
from diskvault.store.format.packs import PackStore, pack_name, read_footer
from diskvault.store.format.snapshots import record_name
from diskvault.store.repository import Repository

from ..conftest import in_both_modes, run_cli
from .support import (PACK_HEAD_AND_TRAILER, IndexSeeks, assert_all_restore,
                      assert_plan_carried_out, back_up, chunks_by_pack, evolve, file_digests,
                      fresh_pack_bytes, nightly, pack_bytes, pack_count, pack_framing_bytes,
                      referenced, small_pack_repository)

encryption = in_both_modes()

KiB = 1024


@pytest.fixture
def small(tmp_path, encryption):
    repository = small_pack_repository(tmp_path / "repo", encryption=encryption)
    yield repository
    repository.close()


def test_compact_after_delete_frees_the_deleted_snapshots_data(small, tmp_path):
    expected = nightly(small, tmp_path, 6)
    compact(small.storage)
    before = pack_bytes(small.root)
    oldest = small.list_snapshots()[:3]
    delete_snapshots(small.storage, [r.id for r in oldest])
    for record in oldest:
        del expected[record.id]
    result = compact(small.storage, threshold=0.0)
    assert result.packs_deleted > 0 and result.bytes_freed > result.bytes_written
    assert pack_bytes(small.root) == before - result.bytes_freed + result.bytes_written
    assert_all_restore(small, expected)
    report = check(small.storage, read_data=True)
    assert not report.damaged and report.unreferenced_chunks == 0


def test_second_compact_without_changes_reviews_no_pack(small, tmp_path):
    nightly(small, tmp_path, 4)
    first = compact(small.storage)
    assert first.packs_reviewed == pack_count(small.root)
    second = compact(small.storage)
    assert (second.packs_reviewed, second.blocks_added, second.blocks_released) == (0, 0, 0)


def test_compact_after_deleting_one_of_many_reviews_only_the_packs_that_lost_data(small,
                                                                                 tmp_path):
    nightly(small, tmp_path, 16)
    compact(small.storage, threshold=0.0)
    records = small.list_snapshots()
    victim = records[7]
    others = set().union(*(referenced(small, r) for r in records if r.id != victim.id))
    unique = referenced(small, victim) - others
    homes = {pack for pack, digests in chunks_by_pack(small).items() if digests & unique}
    assert unique and len(homes) < pack_count(small.root) / 4
    delete_snapshots(small.storage, [victim.id])
    result = compact(small.storage, threshold=0.0)
    assert result.packs_reviewed == len(homes)
    assert result.blocks_added == 0 and result.blocks_released > 0


def test_a_pack_is_rewritten_only_when_its_unused_share_exceeds_the_threshold(tmp_path):
    with small_pack_repository(tmp_path / "repo", pack_target_bytes=4 * 1024 * KiB) as repo:
        rng = random.Random(5)
        data = bytearray(rng.randbytes(256 * KiB))
        first = back_up(repo, tmp_path, "vm", bytes(data))
        packs = repo.storage.packs
        data_pack = max(packs.list(), key=packs.size)  # beside it, the manifest's own pack
        data[: 100 * KiB] = rng.randbytes(100 * KiB)
        second = back_up(repo, tmp_path, "vm", bytes(data))
        delete_snapshots(repo.storage, [first.id])  # about 40 % of data_pack unused
        compact(repo.storage, threshold=0.5)
        assert data_pack in packs.list()
        rewritten = compact(repo.storage, threshold=0.3)  # reviewed before: its usage was remembered
        assert data_pack not in packs.list() and rewritten.packs_rewritten >= 1
        assert_all_restore(repo, {second.id: bytes(data)})


def test_threshold_must_be_below_one(small):
    with pytest.raises(BadInput):
        compact(small.storage, threshold=1.0)


def test_packs_wait_while_a_reader_runs_and_a_later_compact_deletes_them(small, tmp_path):
    expected = nightly(small, tmp_path, 4)
    oldest = small.list_snapshots()[0]
    delete_snapshots(small.storage, [oldest.id])
    del expected[oldest.id]
    packs_before = pack_count(small.root)
    reader = small.reader_lock()
    waiting = compact(small.storage, threshold=0.0)
    assert waiting.packs_deleted == 0 and waiting.packs_waiting > 0
    assert pack_count(small.root) == packs_before + waiting.packs_written
    reader.release()
    assert_all_restore(small, expected)
    done = compact(small.storage, threshold=0.0)
    assert done.packs_deleted == waiting.packs_waiting and done.packs_waiting == 0
    assert_all_restore(small, expected)


def test_a_deleted_snapshot_being_read_stays_readable_through_compact(small, tmp_path):
    expected = nightly(small, tmp_path, 3)
    victim = small.list_snapshots()[0]
    reader_lock = small.reader_lock()
    image = small.open_image(victim, chunk_cache_bytes=0)
    head = image.read(0, 1000)
    delete_snapshots(small.storage, [victim.id])
    compact(small.storage, threshold=0.0)
    assert head + image.read(1000, victim.size) == expected[victim.id]
    reader_lock.release()


def test_a_chunk_reused_while_its_pack_waits_is_copied_out_before_deletion(small, tmp_path):
    expected = nightly(small, tmp_path, 3)
    victim = small.list_snapshots()[0]
    victim_data = expected.pop(victim.id)
    delete_snapshots(small.storage, [victim.id])
    reader = small.reader_lock()
    compact(small.storage, threshold=0.0)  # the victim's packs are doomed, but wait for the reader
    reader.release()
    revived = back_up(small, tmp_path, "vm", victim_data)  # dedups against doomed packs
    assert revived.stats.new_chunks == 0
    expected[revived.id] = victim_data
    result = compact(small.storage, threshold=0.0)
    assert result.packs_deleted > 0 and result.chunks_copied > 0
    assert_all_restore(small, expected)
    assert not check(small.storage, read_data=True).damaged


def test_a_pack_whose_chunk_waits_in_a_doomed_copy_goes_once_that_copy_is_emptied(small,
                                                                                  tmp_path):
    """A chunk copied out of pack P into pack N while a reader ran (P waits, doomed), then
    unused (N waits, doomed), then backed up again (it dedups against N): the next compact
    deletes P as planned and empties N. It used to call P the last existing copy because N
    was doomed, though N stays until its live records are copied out; N's copy then found
    the chunk pointed back at P, so both were kept, and every later compact did the same."""
    expected = nightly(small, tmp_path, 2)
    first, second = small.list_snapshots()
    second_data = expected.pop(second.id)
    del expected[first.id]
    for record in (first, second):
        delete_snapshots(small.storage, [record.id])
        with small.reader_lock():
            assert compact(small.storage, threshold=0.0).packs_waiting > 0
    expected[back_up(small, tmp_path, "vm", second_data).id] = second_data
    plan = plan_only(small.storage, threshold=0.0)
    doomed = Liveness.existing(small.storage.index).doomed()
    assert {fate.pack_id for fate in plan.delete} & doomed  # P
    assert {fate.pack_id for fate in plan.rewrite} & doomed  # N
    result = compact(small.storage, threshold=0.0)
    assert result.packs_kept_as_last_copy == []
    assert_plan_carried_out(plan, result, pack_framing_bytes(small))
    assert_all_restore(small, expected)
    again = compact(small.storage, threshold=0.0)
    assert again.packs_deleted == 0 and again.packs_kept_as_last_copy == []
    assert not check(small.storage, read_data=True).damaged


def test_compact_refuses_when_a_snapshot_manifest_cannot_be_read(small, tmp_path):
    expected = nightly(small, tmp_path, 2)
    records = [small.load_snapshot(r.id) for r in small.list_snapshots()]  # with blocks
    block = records[-1].blocks[0].digest
    home = small.storage.chunks.locate(block).pack_id
    # The pack may hold blocks of the older snapshot too (block cuts follow chunk ids).
    users = [r.short_id for r in records
             if any(small.storage.chunks.locate(b.digest).pack_id == home for b in r.blocks)]
    small.storage.packs.delete(home)
    packs = pack_count(small.root)
    with pytest.raises(CorruptData, match="|".join(users)):
        compact(small.storage)
    assert pack_count(small.root) == packs
    assert expected


def test_a_damaged_record_in_use_leaves_its_pack_alone(small, tmp_path):
    nightly(small, tmp_path, 4)
    compact(small.storage, threshold=0.0)
    records = small.list_snapshots()
    victim, rest = records[1], records[:1] + records[2:]
    still_used = set().union(*(referenced(small, r) for r in rest))
    unique = referenced(small, victim) - still_used
    home, digests = next((pack, digests) for pack, digests in chunks_by_pack(small).items()
                         if digests & unique and digests & still_used)
    target = next(iter(digests & still_used))
    location = small.storage.chunks.locate(target)
    path = small.root / pack_name(home)
    raw = bytearray(path.read_bytes())
    raw[location.offset] ^= 0xFF
    path.write_bytes(raw)
    delete_snapshots(small.storage, [victim.id])
    result = compact(small.storage, threshold=0.0)
    assert result.packs_damaged == [home]
    assert path.exists() and small.storage.chunks.locate(target) == location


def test_compact_recovers_from_a_deleted_index(small, tmp_path):
    expected = nightly(small, tmp_path, 4)
    root = small.root
    small.close()
    shutil.rmtree(root / "index")
    with Repository.open(root) as reopened:
        oldest = reopened.list_snapshots()[0]
        delete_snapshots(reopened.storage, [oldest.id])
        del expected[oldest.id]
        result = compact(reopened.storage, threshold=0.0)
        assert result.blocks_added > 0 and result.packs_deleted > 0
        assert_all_restore(reopened, expected)
        assert not check(reopened.storage, read_data=True).damaged


def test_compact_looks_each_freed_chunk_up_four_times_at_most(tmp_path):
    """Counting (2: its count, its home pack), planning (1: its count) and dropping its index
    entry (1: its count, by a cursor that walks the index in key order). It was six: the
    plan and the deletion each looked every record up in the counts and in the index, and
    the deletion read each doomed footer again and deleted entry by entry at random pages."""
    repository = small_pack_repository(tmp_path / "repo", pack_target_bytes=32 * KiB)
    rng = random.Random(5)
    first = back_up(repository, tmp_path, "a", rng.randbytes(2048 * KiB))
    back_up(repository, tmp_path, "b", rng.randbytes(64 * KiB))
    compact(repository.storage, 0.0)  # the counts exist: this compaction reconciles a delete
    chunks_before = repository.storage.index.chunk_count()
    delete_snapshots(repository.storage, [first.id])
    with IndexSeeks() as seeks:
        result = compact(repository.storage, 0.0)
    freed = chunks_before - repository.storage.index.chunk_count()
    assert freed > 1000 and result.packs_deleted > 30
    # The rest (a quarter per freed chunk here) is per pack, per block and per chunk kept.
    assert seeks.count <= 4.25 * freed, seeks.count / freed
    repository.close()


def test_every_footer_stays_readable_after_compact(small, tmp_path):
    nightly(small, tmp_path, 5)
    delete_snapshots(small.storage, [small.list_snapshots()[1].id])
    compact(small.storage, threshold=0.0)
    for pack_id in small.storage.packs.list():
        assert read_footer(small.storage.packs, pack_id)


# -- SIGKILL at random moments ----------------------------------------------------------
KILL_ROUNDS = 6
DEADLINE_S = 60.0
POLL_S = 0.001


def wait_until(condition, process: subprocess.Popen) -> None:
    """Poll ``condition`` until it holds or ``process`` has exited."""
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        if condition() or process.poll() is not None:
            return
        time.sleep(POLL_S)
    raise AssertionError(f"compact made no progress within {DEADLINE_S} s")


def pack_files(root: Path) -> tuple[set[str], list[Path]]:
    packs = PackStore(LocalBackend(root))
    return set(packs.list()), packs.list_unfinished()


def kill_at_random_moment(process: subprocess.Popen, root: Path, rng: random.Random) -> str:
    """SIGKILL ``process`` after a random delay, once it has finished or deleted a random
    number of packs, or while it writes a pack; returns the kind of moment chosen."""
    before, _ = pack_files(root)
    kind = rng.choice(["delay", "packs written", "pack half written", "packs deleted"])
    count = rng.randint(1, 4)
    if kind == "delay":
        until = time.monotonic() + rng.uniform(0.0, 0.6)
        condition = lambda: time.monotonic() >= until  # noqa: E731
    elif kind == "packs written":
        condition = lambda: len(pack_files(root)[0] - before) >= count  # noqa: E731
    elif kind == "pack half written":
        condition = lambda: bool(pack_files(root)[1])  # noqa: E731
    else:
        condition = lambda: len(before - pack_files(root)[0]) >= count  # noqa: E731
    wait_until(condition, process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    return kind


def assert_restorable_and_sound(root: Path, expected: dict[str, bytes]) -> None:
    with Repository.open(root) as repository:
        assert_all_restore(repository, expected)
        report = check(repository.storage)
        assert not report.damaged, report.problems


@pytest.mark.slow
def test_compact_killed_at_random_moments_loses_nothing_and_a_rerun_finishes(tmp_path):
    template = tmp_path / "template"
    with small_pack_repository(template, pack_target_bytes=24 * KiB) as repository:
        expected = nightly(repository, tmp_path, 8, size=384 * KiB)
        oldest = repository.list_snapshots()[:4]
        delete_snapshots(repository.storage, [r.id for r in oldest])
        for record in oldest:
            del expected[record.id]
        contents = [("vm", data) for data in expected.values()]
        bound = fresh_pack_bytes(tmp_path, repository, contents)
    rng = random.Random(20261123)
    killed = []
    for round_number in range(KILL_ROUNDS):
        root = tmp_path / f"round{round_number}"
        shutil.copytree(template, root)
        for _ in range(2):  # a second kill hits the rerun of an interrupted compact
            process = subprocess.Popen(
                [sys.executable, "-m", "diskvault", "compact", "-r", str(root),
                 "--threshold", "0"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            kind = kill_at_random_moment(process, root, rng)
            stderr = process.stderr.read().decode()
            process.stderr.close()
            assert process.returncode in (0, -signal.SIGKILL), stderr
            if process.returncode == -signal.SIGKILL:
                killed.append(kind)
            assert_restorable_and_sound(root, expected)
        rerun = run_cli("compact", "-r", str(root), "--threshold", "0", "--json", check=True)
        assert json.loads(rerun.stdout)["packs_waiting"] == 0
        assert_restorable_and_sound(root, expected)
        with Repository.open(root) as repository:
            report = check(repository.storage)
            assert report.unreferenced_chunks == 0 and not report.orphan_packs
        assert pack_bytes(root) <= bound + PACK_HEAD_AND_TRAILER * pack_count(root)
        shutil.rmtree(root)
    # Timing varies with load: require that a fair share of attempts really killed mid-run.
    assert len(killed) >= KILL_ROUNDS // 2, killed


# -- property: random backups, deletes, prunes and compacts ---------------------------
class MaintenanceMachine(RuleBasedStateMachine):
    """After every step every remaining snapshot restores bit-exact; after a compact with
    no reader, pack bytes stay within the bound of a fresh repository (see compact.py).
    Steps pick snapshots by backup order, never by their random ids, so that hypothesis
    replays and shrinks a failure as the same sequence."""

    def __init__(self):
        super().__init__()
        self.folder = Path(tempfile.mkdtemp(prefix="dv-machine-"))
        self.repo = small_pack_repository(self.folder / "repo", pack_target_bytes=48 * KiB)
        self.images = {"a": bytearray(random.Random(1).randbytes(48 * KiB)),
                       "b": bytearray(random.Random(2).randbytes(96 * KiB))}
        self.expected: dict[str, bytes] = {}
        self.series: dict[str, str] = {}
        self.forgotten: list[tuple[str, bytes]] = []  # contents of deleted snapshots

    def _record(self, name: str, data: bytes) -> None:
        record = back_up(self.repo, self.folder, name, data)
        self.expected[record.id] = data
        self.series[record.id] = name

    def _forget(self, snapshot_id: str) -> None:
        self.forgotten.append((self.series.pop(snapshot_id),
                               self.expected.pop(snapshot_id)))

    @initialize()
    def first_backups(self):
        for name, data in self.images.items():
            self._record(name, bytes(data))

    @rule(name=st.sampled_from(["a", "b"]), seed=st.integers(0, 2**16))
    def backup(self, name, seed):
        self._record(name, bytes(evolve(self.images[name], random.Random(seed))))

    @precondition(lambda self: self.forgotten)
    @rule(pick=st.integers(0, 2**16))
    def back_up_forgotten_content_again(self, pick):
        self._record(*self.forgotten[pick % len(self.forgotten)])

    @precondition(lambda self: self.expected)
    @rule(pick=st.integers(0, 2**16))
    def delete(self, pick):
        snapshot_id = list(self.expected)[pick % len(self.expected)]
        delete_snapshots(self.repo.storage, [snapshot_id])
        self._forget(snapshot_id)

    @precondition(lambda self: self.expected)
    @rule(last=st.integers(1, 3), name=st.sampled_from([None, "a", "b"]))
    def prune(self, last, name):
        if name is not None and name not in self.series.values():
            return
        plan = prune(self.repo.storage, KeepPolicy(last=last), name=name)
        for record in plan.removed:
            self._forget(record.id)

    @rule(threshold=st.sampled_from([0.0, 0.2, 0.5]), reading=st.booleans())
    def compact(self, threshold, reading):
        before = file_digests(self.repo.root)
        plan = plan_only(self.repo.storage, threshold)
        assert file_digests(self.repo.root) == before
        liveness = Liveness.existing(self.repo.storage.index)
        doomed = sorted(liveness.doomed()) if liveness else []
        reader = self.repo.reader_lock() if reading else None
        result = compact(self.repo.storage, threshold)
        event(f"compact: deleted packs {result.packs_deleted > 0}, "
              f"copied chunks {result.chunks_copied > 0}, reading {reading}")
        outcome = f"doomed before: {doomed}\nplan: {plan}\nresult: {result}"
        if reader is not None:
            assert result.packs_deleted == 0, outcome
            reader.release()
            return
        assert result.packs_waiting == 0 and not result.packs_kept_as_last_copy, outcome
        assert_plan_carried_out(plan, result)
        contents = [(self.series[i], self.expected[i]) for i in self.expected]
        bound = (fresh_pack_bytes(self.folder, self.repo, contents) / (1 - threshold)
                 + PACK_HEAD_AND_TRAILER * pack_count(self.repo.root))
        assert pack_bytes(self.repo.root) <= bound

    @precondition(lambda self: self.expected)
    @rule(pick=st.integers(0, 2**16))
    def delete_and_compact_while_reading_it(self, pick):
        snapshot_id = list(self.expected)[pick % len(self.expected)]
        record = next(r for r in self.repo.list_snapshots() if r.id == snapshot_id)
        data = self.expected[snapshot_id]
        reader = self.repo.reader_lock()
        image = self.repo.open_image(record, chunk_cache_bytes=0)
        delete_snapshots(self.repo.storage, [snapshot_id])
        self._forget(snapshot_id)
        compact(self.repo.storage, 0.0)
        assert image.read(0, record.size) == data
        reader.release()

    @invariant()
    def every_snapshot_restores(self):
        assert_all_restore(self.repo, self.expected)

    def teardown(self):
        try:
            if self.expected:
                report = check(self.repo.storage, read_data=True)
                assert not report.damaged, report.problems
        finally:
            self.repo.close()
            shutil.rmtree(self.folder, ignore_errors=True)


TestMaintenanceMachine = MaintenanceMachine.TestCase
TestMaintenanceMachine.settings = settings(
    max_examples=15, stateful_step_count=12, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


def test_compact_dry_run_changes_no_byte_and_names_what_compact_then_frees(small, tmp_path):
    expected = nightly(small, tmp_path, nights=6)
    compact(small.storage)
    oldest = small.list_snapshots()[:3]
    delete_snapshots(small.storage, [r.id for r in oldest])
    before = file_digests(small.root)
    plan = plan_only(small.storage, threshold=0.0)
    assert file_digests(small.root) == before
    assert plan.delete + plan.rewrite and plan.bytes_to_free > 0
    assert {f.pack_id for f in plan.delete + plan.rewrite} <= set(small.storage.packs.list())
    stored = pack_bytes(small.root)
    result = compact(small.storage, threshold=0.0)
    assert_plan_carried_out(plan, result, pack_framing_bytes(small))
    assert stored - pack_bytes(small.root) == plan.bytes_to_free - (
        pack_framing_bytes(small) * result.packs_written)
    for record in oldest:
        del expected[record.id]
    assert_all_restore(small, expected)


def test_compact_dry_run_on_a_never_compacted_repository_sees_deleted_data(small, tmp_path):
    nightly(small, tmp_path, nights=4)
    delete_snapshots(small.storage, [small.list_snapshots()[0].id])
    before = file_digests(small.root)
    plan = plan_only(small.storage, threshold=0.0)  # its tables do not exist yet
    assert file_digests(small.root) == before
    assert plan.packs_reviewed == pack_count(small.root) and plan.bytes_to_free > 0
    assert_plan_carried_out(plan, compact(small.storage, threshold=0.0), pack_framing_bytes(small))


def test_compact_refuses_while_a_snapshot_record_is_damaged(repo, make_image, tmp_path):
    """A damaged record's chunks would look unused: compact must not delete them."""
    kept = repo.backup(make_image(300_000, seed=1), name="a")
    damaged = repo.backup(make_image(300_000, seed=2), name="b")
    record_path = repo.root / record_name(damaged.id)
    intact_json = record_path.read_bytes()
    record_path.write_bytes(intact_json[:40])
    packs_before = sorted(repo.storage.packs.list())
    with pytest.raises(CorruptData, match="refusing"):
        compact(repo.storage, threshold=0.0)
    assert sorted(repo.storage.packs.list()) == packs_before
    record_path.write_bytes(intact_json)  # once the record is put right, it still restores
    repo.restore(repo.find_snapshot(damaged.id), tmp_path / "b.img")
    repo.restore(kept, tmp_path / "a.img")
