"""check and compact agree on the chunks no snapshot uses: check's hint names what
actually frees them, and says nothing when there are none."""

from __future__ import annotations

import json
import random

from diskvault.maintenance.check import check
from diskvault.maintenance.prune import delete_snapshots
from diskvault.store.index import sorted_runs

from ...conftest import run_cli
from ..support import KiB, back_up, small_pack_repository


def check_output(root, *options: str) -> str:
    return run_cli("check", "-r", str(root), *options, check=True).stdout.decode()


def test_check_names_the_threshold_that_frees_unused_chunks_and_is_silent_at_none(tmp_path):
    with small_pack_repository(tmp_path / "repo", pack_target_bytes=4 * 1024 * KiB) as repo:
        rng = random.Random(5)
        data = bytearray(rng.randbytes(256 * KiB))
        first = back_up(repo, tmp_path, "vm", bytes(data))
        data[: 16 * KiB] = rng.randbytes(16 * KiB)  # about 6 % of the data pack dies
        back_up(repo, tmp_path, "vm", bytes(data))
        delete_snapshots(repo.storage, [first.id])
        root = repo.root
    run_cli("compact", "-r", str(root), check=True)  # keeps packs at most 20 % unused
    report = json.loads(check_output(root, "--json"))
    assert report["unreferenced_chunks"] > 0 and report["reclaimable_chunks"] == 0
    hint = check_output(root)
    assert "'compact --threshold 0' removes them" in hint
    assert "compact removes them" not in hint
    run_cli("compact", "-r", str(root), "--threshold", "0", check=True)
    assert "used by no snapshot" not in check_output(root)
    assert json.loads(check_output(root, "--json"))["unreferenced_chunks"] == 0


def test_check_says_compact_removes_unused_chunks_of_packs_it_rewrites(tmp_path):
    with small_pack_repository(tmp_path / "repo") as repo:
        rng = random.Random(7)
        first = back_up(repo, tmp_path, "vm", rng.randbytes(128 * KiB))
        back_up(repo, tmp_path, "vm", rng.randbytes(128 * KiB))
        delete_snapshots(repo.storage, [first.id])
        root = repo.root
    report = json.loads(check_output(root, "--json"))
    assert report["reclaimable_chunks"] == report["unreferenced_chunks"] > 0
    assert "used by no snapshot: compact removes them" in check_output(root)
    run_cli("compact", "-r", str(root), check=True)
    assert "used by no snapshot" not in check_output(root)


def test_check_counts_the_same_when_the_chunks_in_use_spill_to_disk_often(tmp_path,
                                                                          monkeypatch):
    with small_pack_repository(tmp_path / "repo") as repo:
        rng = random.Random(9)
        first = back_up(repo, tmp_path, "vm", rng.randbytes(192 * KiB))
        back_up(repo, tmp_path, "vm", rng.randbytes(192 * KiB))
        delete_snapshots(repo.storage, [first.id])
        whole = check(repo.storage)
        monkeypatch.setattr(sorted_runs, "RUN_RECORDS", 7)  # a run on disk every 7 chunks
        monkeypatch.setattr(sorted_runs, "MERGE_FAN_IN", 3)  # and runs merged in levels
        spilled = check(repo.storage)
    assert (spilled.chunks_referenced, spilled.unreferenced_chunks, spilled.damaged) == (
        whole.chunks_referenced, whole.unreferenced_chunks, False)
    assert spilled.chunks_referenced > 100 and spilled.unreferenced_chunks > 100
