"""A full restore's writes come from the pool threads that verify the chunks: every chunk
lands once where the image has it, a failing write stops the restore with its own error
and nothing is written after the restore has ended, and a disk that fills up still ends a
restore with one line and no file left behind."""

from __future__ import annotations

import hashlib
import os
import subprocess
import threading

import pytest

from diskvault.store.pipeline import new_pool
from diskvault.store.read.image_map import image_spans
from diskvault.store.read.read_plan import data_windows, planned_pieces

from ...conftest import run_cli, write_image

MiB = 1024 * 1024


def test_each_chunk_is_delivered_once_at_each_of_its_places_and_zero_runs_never(repo,
                                                                                tmp_path):
    image = write_image(tmp_path / "mixed.img", 3_000_000, "mixed", seed=5)
    record = repo.backup(image)
    chunks = repo.storage.chunks
    delivered: dict[int, bytes] = {}
    lock = threading.Lock()

    def deliver(pieces):
        with lock:
            for span, data in pieces:
                assert span.offset not in delivered
                delivered[span.offset] = data

    spans = list(image_spans(chunks, record))
    followed = []
    for span, data in planned_pieces(chunks, record, spans, repo.storage.pool,
                                     window_bytes=200_000, deliver=deliver):
        assert data is None
        if span.digest is not None:
            assert span.offset in delivered  # yielded only once written
        followed.append(span)
    assert followed == spans
    assert sorted(delivered) == [span.offset for span in spans if span.digest is not None]
    rebuilt = bytearray(record.size)
    for offset, data in delivered.items():
        rebuilt[offset:offset + len(data)] = data
    assert hashlib.sha256(rebuilt).digest() == hashlib.sha256(image.read_bytes()).digest()


def test_a_failing_write_ends_the_read_with_its_error_and_nothing_is_written_after(
        repo, tmp_path):
    """The target's file is closed once the restore has stopped: a write still under way
    on the pool then would land in whatever file took its descriptor. The window read
    beside the failing one is under way when the failure comes, then given a moment in
    which a reader that did not wait for it would have stopped."""
    image = write_image(tmp_path / "random.img", 8 * MiB, "random", seed=6)
    record = repo.backup(image)
    chunks = repo.storage.chunks
    spans = [span for span in image_spans(chunks, record) if span.digest is not None]
    windows = list(data_windows(spans, 1 * MiB))
    failing, beside = windows[2][0], windows[3][0]
    started, failed, stopped = threading.Event(), threading.Event(), threading.Event()
    after_stop = []

    def deliver(pieces):
        for span, _ in pieces:
            deliver_one(span)

    def deliver_one(span):
        if span == failing:
            assert started.wait(60)
            failed.set()
            raise OSError(28, "No space left on device")
        if span == beside:
            started.set()
            assert failed.wait(60)
            stopped.wait(1)  # set at once by a reader that does not wait for this write
        if stopped.is_set():
            after_stop.append(span.offset)

    pool = new_pool("test-writes", 2)
    try:
        with pytest.raises(OSError, match="No space left on device"):
            for _ in planned_pieces(chunks, record, spans, pool, window_bytes=1 * MiB,
                                    deliver=deliver):
                pass
        stopped.set()
    finally:
        pool.shutdown(wait=True)
    assert after_stop == [], "writes ran after the restore had stopped"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: mounts a small tmpfs "
                                              "(mount -t tmpfs -o size=8m tmpfs DIR)")
def test_a_restore_that_fills_the_disk_fails_with_one_line_and_leaves_no_file(repo, tmp_path):
    image = write_image(tmp_path / "random.img", 16 * MiB, "random", seed=7)
    record = repo.backup(image)
    small = tmp_path / "small"
    small.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(small)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        result = run_cli("restore", "-r", str(repo.root), record.id, str(small / "t.img"))
        leftovers = sorted(path.name for path in small.iterdir())
    finally:
        subprocess.run(["umount", str(small)], check=True)
    stderr = result.stderr.decode()
    assert result.returncode == 1, stderr
    assert stderr.strip().splitlines() == ["diskvault: error: No space left on device"]
    assert leftovers == []
