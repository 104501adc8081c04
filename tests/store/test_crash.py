"""Crash safety: a backup or a restore killed with SIGKILL at any instant.

After every kill, every earlier snapshot restores bit-exact, ``list`` works and leftover
temp files confuse nothing; a rerun of the backup completes and reuses the chunks that
reached disk; a killed restore never leaves a half-written file under the target's name.
Real subprocesses, real files, real LMDB.
"""

from __future__ import annotations

import hashlib
import json
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from diskvault.store.backends.local import LocalBackend
from diskvault.store.format.config import PLAINTEXT_MODE
from diskvault.store.format.packs import PackStore, read_footer
from diskvault.store.repository import Repository

from ..conftest import HashSink, in_both_modes, run_cli, write_image
from ..maintenance.support import rewrite_config

encryption = in_both_modes()

MiB = 1024 * 1024
SEED = 20261122
IMAGE_BYTES = 16 * MiB
CHUNK_BYTES = 16 * 1024
PACK_TARGET_BYTES = 1 * MiB       # a 16 MiB image makes ~16 packs: many moments to die in
ROUNDS = 5                        # each round: a new image, several kills, then a rerun
KILLS_PER_ROUND = 4
DEADLINE_S = 60.0
POLL_S = 0.002


# -- helpers ---------------------------------------------------------------------------
def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(4 * MiB):
            digest.update(block)
    return digest.hexdigest()


def small_pack_repository(root: Path, encryption: str = PLAINTEXT_MODE) -> Path:
    """A repository with 1 MiB packs, so that a backup writes many packs (and 16 KiB
    chunks: the check after every kill restores every snapshot, and cost goes by chunk)."""
    with Repository.init(root, chunk_size=CHUNK_BYTES, encryption=encryption) as repository:
        rewrite_config(repository, pack_target_bytes=PACK_TARGET_BYTES)
    return root


def finished_packs(repo: Path) -> set[str]:
    return set(PackStore(LocalBackend(repo)).list())


def unfinished_packs(repo: Path) -> list[Path]:
    return PackStore(LocalBackend(repo)).list_unfinished()


def cli_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "diskvault", *args]


def wait_until(condition: Callable[[], bool], process: subprocess.Popen) -> bool:
    """Poll ``condition`` until true (True) or until ``process`` exits (False)."""
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        if condition():
            return True
        if process.poll() is not None:
            return False
        time.sleep(POLL_S)
    raise AssertionError(f"no progress within {DEADLINE_S} s")


def kill_at_random_moment(process: subprocess.Popen, repo: Path, rng: random.Random,
                          packs_left: int) -> str:
    """SIGKILL ``process`` at a moment chosen by ``rng``; returns how the moment was chosen.

    Three kinds of moment: after a random delay (start-up, lock, reading, anything), after a
    random number of packs were finished, and while a pack is half written. ``packs_left``
    (how many packs the backup still has to write) keeps the moment before its end.
    """
    packs_before = len(finished_packs(repo))
    kind = rng.choice(["delay", "packs finished", "pack half written"])
    if kind == "delay":
        until = time.monotonic() + rng.uniform(0.0, 0.6)
        wait_until(lambda: time.monotonic() >= until, process)
    elif kind == "packs finished":
        wanted = packs_before + rng.randint(1, max(1, packs_left // 2))
        wait_until(lambda: len(finished_packs(repo)) >= wanted, process)
    else:
        wanted = packs_before + rng.randint(0, max(0, packs_left // 2 - 1))
        wait_until(lambda: len(finished_packs(repo)) >= wanted and bool(unfinished_packs(repo)),
                   process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    return kind


def read_all_and_compare(repo: Path, expected: dict[str, str]) -> None:
    """Every snapshot in ``expected`` (id -> sha256 of its image) reads back bit-exact,
    every chunk fetched and verified (the restore path, streamed into a hash)."""
    with Repository.open(repo) as repository:
        for snapshot_id, image_sha in expected.items():
            sink = HashSink()
            repository.cat(repository.find_snapshot(snapshot_id), sink)
            assert sink.digest.hexdigest() == image_sha, (
                f"snapshot {snapshot_id} reads back wrong bytes")


def restore_all_and_compare(repo: Path, expected: dict[str, str], scratch: Path) -> None:
    """Every snapshot in ``expected`` restores to a file bit-exact."""
    for snapshot_id, image_sha in expected.items():
        target = scratch / f"{snapshot_id}.img"
        result = run_cli("restore", "-r", str(repo), snapshot_id, str(target))
        assert result.returncode == 0, result.stderr.decode()
        assert sha256_of(target) == image_sha, f"snapshot {snapshot_id} restored wrong bytes"
        target.unlink()


def listed_ids(repo: Path) -> set[str]:
    listing = run_cli("list", "-r", str(repo), "--json")
    assert listing.returncode == 0, listing.stderr.decode()
    return {snapshot["id"] for snapshot in json.loads(listing.stdout)}


def stored_record_bytes(repo: Path, pack_ids: set[str]) -> int:
    with Repository.open(repo) as repository:  # its packs check footers with its key
        return sum(entry.stored_size for pack_id in pack_ids
                   for entry in read_footer(repository.storage.packs, pack_id))


def backup_to_completion(repo: Path, image: Path, name: str) -> dict:
    result = run_cli("backup", "-r", str(repo), str(image), "--name", name, "--json",
                     "--no-progress")
    assert result.returncode == 0, result.stderr.decode()
    return json.loads(result.stdout)


# -- tests -----------------------------------------------------------------------------
def test_backup_killed_at_random_moments_leaves_earlier_snapshots_restorable(tmp_path: Path,
                                                                             encryption: str):
    rng = random.Random(SEED)
    repo = small_pack_repository(tmp_path / "repo", encryption)
    scratch = tmp_path / "restored"
    scratch.mkdir()
    expected: dict[str, str] = {}   # snapshot id -> sha256 of the image it was made from

    first_image = write_image(tmp_path / "night0.img", IMAGE_BYTES, "random", seed=SEED)
    first = backup_to_completion(repo, first_image, "night0")
    expected[first["id"]] = sha256_of(first_image)
    full_stored = first["stats"]["stored_bytes"]   # what a whole new random image costs

    kills: list[str] = []
    kills_leaving_temp_packs = rounds_reusing_packs = 0
    for night in range(1, ROUNDS + 1):
        image = write_image(tmp_path / f"night{night}.img", IMAGE_BYTES, "random",
                            seed=SEED + night)
        image_sha = sha256_of(image)
        packs_at_start = finished_packs(repo)
        for _ in range(KILLS_PER_ROUND):
            process = subprocess.Popen(
                cli_command("backup", "-r", str(repo), str(image), "--name", f"night{night}",
                            "--no-progress"),
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            packs_left = IMAGE_BYTES // PACK_TARGET_BYTES - len(
                finished_packs(repo) - packs_at_start)
            kind = kill_at_random_moment(process, repo, rng, packs_left)
            stderr = process.stderr.read().decode()
            process.stderr.close()
            assert process.returncode in (0, -signal.SIGKILL), stderr
            if process.returncode == -signal.SIGKILL:
                kills.append(kind)
                kills_leaving_temp_packs += bool(unfinished_packs(repo))

            # Every earlier snapshot is intact, and list (past any temp file) works. A
            # backup killed after its record was renamed into place made a whole snapshot.
            ids = listed_ids(repo)
            assert set(expected) <= ids
            extra = ids - set(expected)
            assert len(extra) <= 1, f"one killed backup made several snapshots: {extra}"
            if extra:
                expected[extra.pop()] = image_sha
            read_all_and_compare(repo, expected)

        # The rerun completes, restores bit-exact and reuses the packs that reached disk.
        reused = stored_record_bytes(repo, finished_packs(repo) - packs_at_start)
        rerun = backup_to_completion(repo, image, f"night{night}")
        expected[rerun["id"]] = image_sha
        if reused:
            rounds_reusing_packs += 1
            assert rerun["stats"]["stored_bytes"] < full_stored
            tolerance = 64 * 1024 + full_stored // 100   # chunk count varies between images
            assert rerun["stats"]["stored_bytes"] + reused <= full_stored + tolerance, (
                f"the rerun stored {rerun['stats']['stored_bytes']} bytes although "
                f"{reused} bytes of this image's chunks had reached disk before the kills")
        assert not unfinished_packs(repo), "the rerun left temp packs behind"
        restore_all_and_compare(repo, {rerun["id"]: image_sha}, scratch)

    assert listed_ids(repo) == set(expected)
    read_all_and_compare(repo, expected)
    # The scenarios above really happened: kills mid-backup, with half-written packs left
    # for list and restore to ignore, and reruns that had committed packs to reuse.
    # How many land mid-run depends on the machine's speed and load; half is plenty.
    assert len(kills) >= ROUNDS * KILLS_PER_ROUND // 2, (
        f"only {len(kills)} backups were killed before they finished: {kills}")
    assert kills_leaving_temp_packs >= 1
    assert rounds_reusing_packs >= ROUNDS // 2


def test_restore_killed_midway_leaves_no_file_under_the_target_name(tmp_path: Path):
    rng = random.Random(SEED)
    image = write_image(tmp_path / "disk.img", 32 * MiB, "mixed", seed=SEED)
    image_sha = sha256_of(image)
    with Repository.init(tmp_path / "repo", chunk_size=4096) as repository:
        snapshot_id = repository.backup(image).id

    target = tmp_path / "out" / "restored.img"
    target.parent.mkdir()
    killed = 0
    for _ in range(6):
        process = subprocess.Popen(
            cli_command("restore", "-r", str(tmp_path / "repo"), snapshot_id, str(target),
                        "--no-progress"),
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        # Restore writes into a temp file beside the target; kill once it is being written.
        started = wait_until(lambda: any(target.parent.iterdir()), process)
        if started:
            until = time.monotonic() + rng.uniform(0.0, 0.05)
            wait_until(lambda: time.monotonic() >= until, process)
        process.send_signal(signal.SIGKILL)
        process.wait()
        stderr = process.stderr.read().decode()
        process.stderr.close()
        if process.returncode == 0:          # finished first: whole and correct, or nothing
            assert sha256_of(target) == image_sha
            target.unlink()
            continue
        assert process.returncode == -signal.SIGKILL, stderr
        killed += 1
        assert not target.exists(), "a killed restore left a partial file under the final name"

    assert killed >= 3
    result = run_cli("restore", "-r", str(tmp_path / "repo"), snapshot_id, str(target))
    assert result.returncode == 0, result.stderr.decode()
    assert sha256_of(target) == image_sha
    assert [p.name for p in target.parent.iterdir()] == [target.name], (
        "a completed restore should leave only the target (no temp file of a killed run)")
